package gpu

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// Sampler polls the memory used on some GPUs while an engine runs and keeps
// the peak per device.
type Sampler struct {
	l       Lister
	indices []int
	mu      sync.Mutex
	peak    map[int]uint64
	stop    context.CancelFunc
	done    chan struct{}
}

// StartSampler samples once at once, then every interval, until Stop.
func StartSampler(ctx context.Context, l Lister, indices []int, every time.Duration) *Sampler {
	if every <= 0 {
		every = 2 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Sampler{l: l, indices: append([]int(nil), indices...), peak: map[int]uint64{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.sample(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *Sampler) sample(ctx context.Context) {
	if len(s.indices) == 0 {
		return
	}
	devs, err := s.l.Devices(ctx)
	if err != nil {
		return
	}
	want := map[int]bool{}
	for _, i := range s.indices {
		want[i] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range devs {
		if want[d.Index] && d.Available && d.MemUsed > s.peak[d.Index] {
			s.peak[d.Index] = d.MemUsed
		}
	}
}

// Stop ends sampling (after one last sample) and returns the peaks.
func (s *Sampler) Stop() map[int]uint64 {
	s.stop()
	<-s.done
	s.sample(context.Background())
	return s.Peak()
}

// Peak returns the highest memory use seen per GPU index, in bytes.
func (s *Sampler) Peak() map[int]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]uint64, len(s.peak))
	for k, v := range s.peak {
		out[k] = v
	}
	return out
}

// PeakResult is the peaks as a result field: GPU index → MiB.
func PeakResult(peak map[int]uint64) map[string]any {
	out := map[string]any{}
	for i, v := range peak {
		out[strconv.Itoa(i)] = v >> 20
	}
	return out
}
