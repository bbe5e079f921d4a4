// Package gpu knows the host's GPUs: which there are, which of them an
// operator groups into slots (--gpus), how much memory they have free and
// how much an engine used. It knows nothing of jobs: what a job gets is
// decided by whoever runs it, by device index.
package gpu

import (
	"context"
	"sort"
)

// Device is one GPU as the driver reports it. Index is NVML's (PCI bus
// order); engines see the same numbering because slots set
// CUDA_DEVICE_ORDER=PCI_BUS_ID.
type Device struct {
	Index     int
	UUID      string
	Name      string
	MemTotal  uint64 // bytes
	MemUsed   uint64 // bytes
	MemFree   uint64 // bytes
	Available bool   // false: present but unreadable (lost, no permission)
}

// Lister reports the host's devices with their current memory use.
type Lister interface {
	Devices(ctx context.Context) ([]Device, error)
}

// Static is a fixed device list: hosts without GPUs and tests.
type Static []Device

// Devices returns a copy of the list.
func (s Static) Devices(context.Context) ([]Device, error) {
	return append([]Device(nil), s...), nil
}

// None is a host without usable GPUs; Reason says why.
type None struct{ Reason string }

// Devices returns no devices.
func (None) Devices(context.Context) ([]Device, error) { return nil, nil }

// Discover opens NVML. Without a driver or library it returns None with the
// reason instead of failing: the worker then runs CPU jobs only. A command
// discovers once and hands the lister to what needs it.
func Discover() (Lister, string) {
	l, err := openNVML()
	if err != nil {
		return None{Reason: err.Error()}, err.Error()
	}
	return l, ""
}

// GiB is a gibibyte, for estimates and messages.
const GiB = 1 << 30

func indicesOf(devs []Device) []int {
	out := make([]int, 0, len(devs))
	for _, d := range devs {
		if d.Available {
			out = append(out, d.Index)
		}
	}
	sort.Ints(out)
	return out
}
