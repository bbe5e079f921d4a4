package gpu

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"gpu-worker/manifest"
	"gpu-worker/worker"
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

func TestWatch(t *testing.T) {
	ctx := context.Background()
	r := &rising{}
	slot := worker.Slot{Name: "gpu0", GPUs: []int{0}}
	job := &manifest.Job{Mode: manifest.Inference, Spec: &manifest.ModelSpec{Memory: func(*manifest.Job) uint64 { return 2 * GiB }}}
	done, err := Watch(ctx, freeAndRising{r}, slot, job)
	if err != nil {
		t.Fatal(err)
	}
	// At least the first sample and the last one (at done) are taken.
	if peak := done(); peak["0"].(uint64) < 3*1024 || len(peak) != 1 {
		t.Errorf("peak %v", peak)
	}
	full := Static{{Index: 0, MemTotal: 80 * GiB, MemFree: GiB, Available: true}}
	if _, err := Watch(ctx, full, slot, job); err == nil {
		t.Errorf("a full GPU was accepted")
	}
	done, err = Watch(ctx, None{}, worker.Slot{Name: "cpu"}, job)
	if err != nil || len(done()) != 0 {
		t.Errorf("cpu slot: %v", err)
	}
}

// freeAndRising reports plenty of free memory while use climbs.
type freeAndRising struct{ r *rising }

func (f freeAndRising) Devices(ctx context.Context) ([]Device, error) {
	devs, err := f.r.Devices(ctx)
	for i := range devs {
		devs[i].MemFree = devs[i].MemTotal - devs[i].MemUsed
	}
	return devs, err
}
