package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gpu-worker/gpu"
	"gpu-worker/local"
	"gpu-worker/manifest"
	"gpu-worker/worker"
)

func TestBuildSlots(t *testing.T) {
	slots := buildSlots([][]int{{0, 1}, {3}})
	if len(slots) != 2 || slots[0].Name != "gpu0+1" || slots[1].Name != "gpu3" {
		t.Fatalf("slots: %+v", slots)
	}
	if !slices.Contains(slots[0].Env, "CUDA_VISIBLE_DEVICES=0,1") || !slices.Contains(slots[1].Env, "CUDA_VISIBLE_DEVICES=3") {
		t.Errorf("env: %+v", slots)
	}
	if widest(slots) != 2 {
		t.Errorf("widest %d", widest(slots))
	}
	cpu := buildSlots(nil)
	if len(cpu) != 1 || len(cpu[0].GPUs) != 0 || !slices.Contains(cpu[0].Env, "CUDA_VISIBLE_DEVICES=") || widest(cpu) != 0 {
		t.Errorf("cpu slot: %+v", cpu)
	}
}

// TestSlotsRunJobsConcurrently runs the worker with the slots --gpus all
// gives on a fake two-GPU host: two jobs run at the same time, each slot's
// engine environment naming only its own GPU.
func TestSlotsRunJobsConcurrently(t *testing.T) {
	dir := t.TempDir()
	man := "version: 1\njobs:\n"
	for _, id := range []string{"a", "b"} {
		man += "  - job_id: " + id + "\n    job_type: asr\n    mode: training\n    model: {type: W2V2BERT}\n    epochs: 1\n"
	}
	os.MkdirAll(filepath.Join(dir, "gpu_jobs"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, manifest.Path), []byte(man), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	two := gpu.Static{{Index: 0, Available: true}, {Index: 1, Available: true}}
	devs, _ := two.Devices(context.Background())
	groups, err := gpu.ParseSlots("all", devs)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]string{}
	both := make(chan struct{})
	arrived := 0
	h := worker.HandlerFunc(func(ctx context.Context, env *worker.JobEnv) (*worker.Outcome, error) {
		var cvd string
		for _, e := range env.Slot.Env {
			if v, ok := strings.CutPrefix(e, "CUDA_VISIBLE_DEVICES="); ok {
				cvd = v
			}
		}
		mu.Lock()
		seen[env.Job.ID] = cvd
		arrived++
		if arrived == 2 {
			close(both)
		}
		mu.Unlock()
		select { // each job waits for the other: they must overlap
		case <-both:
		case <-time.After(10 * time.Second):
			return nil, errors.New("the other job never ran alongside")
		}
		return &worker.Outcome{}, nil
	})
	w := worker.New(worker.Config{
		WorkerID: "w", WorkDir: t.TempDir(), LoopInterval: -1,
		Slots: buildSlots(groups),
	}, staticSource{p}, worker.Registry{"asr/w2v2bert/training": h}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen["a"] == seen["b"] || seen["a"] == "" || seen["b"] == "" {
		t.Fatalf("jobs did not get one GPU each: %v", seen)
	}
	for _, id := range []string{"a", "b"} {
		b, err := os.ReadFile(filepath.Join(dir, manifest.ResponsePath(id)))
		if err != nil || !strings.Contains(string(b), "state: completed") {
			t.Errorf("job %s: %s %v", id, b, err)
		}
	}
}
