package gpu

import (
	"context"
	"errors"
	"fmt"
)

// InsufficientMemoryError says a device lacks the memory a job needs.
type InsufficientMemoryError struct {
	Device int
	Free   uint64
	Need   uint64
}

func (e *InsufficientMemoryError) Error() string {
	return fmt.Sprintf("GPU %d has %.1f GiB free; the job needs about %.1f GiB",
		e.Device, float64(e.Free)/GiB, float64(e.Need)/GiB)
}

// ErrNoDevice reports a slot naming a GPU the host does not have.
var ErrNoDevice = errors.New("no such GPU")

// CheckFree checks that every GPU in indices has need bytes free. A zero
// need or an empty index list always passes (CPU slots).
func CheckFree(ctx context.Context, l Lister, indices []int, need uint64) error {
	if need == 0 || len(indices) == 0 {
		return nil
	}
	devs, err := l.Devices(ctx)
	if err != nil {
		return fmt.Errorf("read GPU memory: %w", err)
	}
	byIndex := map[int]Device{}
	for _, d := range devs {
		byIndex[d.Index] = d
	}
	for _, i := range indices {
		d, ok := byIndex[i]
		if !ok || !d.Available {
			return fmt.Errorf("GPU %d: %w", i, ErrNoDevice)
		}
		if d.MemFree < need {
			return &InsufficientMemoryError{Device: i, Free: d.MemFree, Need: need}
		}
	}
	return nil
}
