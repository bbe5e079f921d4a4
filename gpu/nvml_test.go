//go:build linux && cgo

package gpu

import (
	"context"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

func TestNVMLListerReadsDevices(t *testing.T) {
	dev := func(name string, used uint64, ok bool) nvml.Device {
		return &mock.Device{
			GetNameFunc: func() (string, nvml.Return) { return name, nvml.SUCCESS },
			GetUUIDFunc: func() (string, nvml.Return) { return "GPU-" + name, nvml.SUCCESS },
			GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
				if !ok {
					return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST
				}
				return nvml.Memory{Total: 80 * GiB, Used: used, Free: 80*GiB - used}, nvml.SUCCESS
			},
		}
	}
	devs := []nvml.Device{dev("a", 5*GiB, true), dev("b", 0, false)}
	lib := &mock.Interface{
		InitFunc:                   func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:               func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc:         func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) { return devs[i], nvml.SUCCESS },
	}
	l, err := openWith(lib)
	if err != nil {
		t.Fatal(err)
	}
	got, err := l.Devices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "a" || got[0].MemUsed != 5*GiB || got[0].MemFree != 75*GiB || !got[0].Available {
		t.Errorf("device 0: %+v", got)
	}
	if got[1].Available || got[1].Index != 1 {
		t.Errorf("lost device listed as usable: %+v", got[1])
	}
}

func TestNVMLWithoutLibraryDegrades(t *testing.T) {
	lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
	if _, err := openWith(lib); err == nil || !strings.Contains(err.Error(), "libnvidia-ml") {
		t.Errorf("missing library: %v", err)
	}
}
