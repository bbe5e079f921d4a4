//go:build !unix

package ops

import "errors"

// FreeDisk is not measured on this platform.
func FreeDisk(string) (uint64, error) {
	return 0, errors.New("free disk space not measurable on this platform")
}
