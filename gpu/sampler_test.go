package gpu

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// rising is a fake device list whose GPU 0 use climbs to a peak and falls.
type rising struct{ n atomic.Int64 }

func (r *rising) Devices(context.Context) ([]Device, error) {
	curve := []uint64{1, 3, 7, 5, 2}
	i := int(r.n.Add(1)) - 1
	used := curve[min(i, len(curve)-1)] * GiB
	return []Device{
		{Index: 0, MemTotal: 80 * GiB, MemUsed: used, Available: true},
		{Index: 1, MemTotal: 80 * GiB, MemUsed: 60 * GiB, Available: true},
	}, nil
}

func TestSamplerKeepsPeak(t *testing.T) {
	r := &rising{}
	s := StartSampler(context.Background(), r, []int{0}, time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for r.n.Load() < 6 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	peak := s.Stop()
	if peak[0] != 7*GiB {
		t.Errorf("peak %d GiB, want 7", peak[0]/GiB)
	}
	if _, ok := peak[1]; ok {
		t.Errorf("sampled a GPU outside the slot: %v", peak)
	}
	if res := PeakResult(peak); res["0"] != uint64(7*1024) {
		t.Errorf("result %v", res)
	}
}
