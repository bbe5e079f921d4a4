package gpu

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gpu-worker/manifest"
	"gpu-worker/worker"
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

// Watch is what a handler does around an engine run: check that the job's
// GPUs in its slot have the memory the job is estimated to need
// (*InsufficientMemoryError when not), then sample them. Call done when the
// engine has stopped: it returns the peak per GPU in MiB, for the result
// (empty on a CPU slot).
func Watch(ctx context.Context, l Lister, slot worker.Slot, j *manifest.Job) (done func() map[string]any, err error) {
	share := Share(slot, j)
	if err := CheckFree(ctx, l, share, EstimateMemory(j)); err != nil {
		return nil, err
	}
	s := StartSampler(ctx, l, share, 2*time.Second)
	return func() map[string]any { return PeakResult(s.Stop()) }, nil
}

// EstimateMemory is a job's GPU memory need, checked against a device's
// free memory before the engine starts: its model's estimate (a
// conservative default until the job's model is resolved, never "no
// check"). The peak reported in each result is the way to tune them.
func EstimateMemory(j *manifest.Job) uint64 {
	if j.Spec == nil || j.Spec.Memory == nil {
		return unresolvedModelMemory
	}
	return j.Spec.Memory(j)
}

// unresolvedModelMemory is assumed for a job whose model is not known.
const unresolvedModelMemory = 16 * GiB
