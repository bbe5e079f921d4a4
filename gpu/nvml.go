//go:build linux && cgo

package gpu

import (
	"context"
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// nvmlLister reads devices through NVML, loaded at run time: a binary built
// here starts on hosts without the driver.
type nvmlLister struct {
	mu  sync.Mutex
	lib nvml.Interface
}

func openNVML() (Lister, error) { return openWith(nvml.New()) }

func openWith(lib nvml.Interface) (Lister, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return nil, fmt.Errorf("NVIDIA driver library (libnvidia-ml.so.1) not found: no GPUs usable")
		}
		return nil, fmt.Errorf("NVML init: %v", ret)
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("NVML device count: %v", ret)
	}
	if n == 0 {
		lib.Shutdown()
		return nil, fmt.Errorf("NVIDIA driver reports no GPUs")
	}
	return &nvmlLister{lib: lib}, nil
}

// Devices reads every device; one that cannot be read is listed as
// unavailable rather than failing the whole list.
func (l *nvmlLister) Devices(context.Context) ([]Device, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, ret := l.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("NVML device count: %v", ret)
	}
	out := make([]Device, 0, n)
	for i := 0; i < n; i++ {
		d := Device{Index: i}
		h, ret := l.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			out = append(out, d)
			continue
		}
		d.Name, _ = h.GetName()
		d.UUID, _ = h.GetUUID()
		mem, ret := h.GetMemoryInfo()
		if ret == nvml.SUCCESS {
			d.MemTotal, d.MemUsed, d.MemFree = mem.Total, mem.Used, mem.Free
			d.Available = true
		}
		out = append(out, d)
	}
	return out, nil
}
