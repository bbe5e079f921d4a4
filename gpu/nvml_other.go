//go:build !(linux && cgo)

package gpu

import "errors"

func openNVML() (Lister, error) {
	return nil, errors.New("this build has no NVML support (build on Linux with cgo enabled to use GPUs)")
}
