package gpu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gpu-worker/engine"
	"gpu-worker/local"
	"gpu-worker/manifest"
	"gpu-worker/project"
	"gpu-worker/worker"
)

func fourGPUs() []Device {
	var out []Device
	for i := 0; i < 4; i++ {
		out = append(out, Device{Index: i, Name: "H100", MemTotal: 80 * GiB, MemFree: 80 * GiB, Available: true})
	}
	return out
}

func TestParseSlots(t *testing.T) {
	devs := fourGPUs()
	devs[2].Available = false // a lost GPU is never scheduled
	cases := []struct {
		spec string
		want [][]int
	}{
		{"", [][]int{{0}, {1}, {3}}},
		{"all", [][]int{{0}, {1}, {3}}},
		{"none", nil},
		{"3,0", [][]int{{3}, {0}}},
		{"1+0, 3", [][]int{{0, 1}, {3}}},
	}
	for _, c := range cases {
		got, err := ParseSlots(c.spec, devs)
		if err != nil {
			t.Fatalf("%q: %v", c.spec, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: got %v, want %v", c.spec, got, c.want)
		}
	}
	for _, bad := range []string{"2", "7", "0,0", "0+1,1", "x", "-1"} {
		if _, err := ParseSlots(bad, devs); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
	if _, err := ParseSlots("all", nil); !errors.Is(err, ErrNoDevice) {
		t.Errorf("all on a host without GPUs: %v", err)
	}
	if g, err := ParseSlots("auto", nil); err != nil || len(g) != 0 {
		t.Errorf("auto on a host without GPUs: %v %v", g, err)
	}
}

func TestBuildSlots(t *testing.T) {
	slots := BuildSlots([][]int{{0, 1}, {3}})
	if len(slots) != 2 || slots[0].Name != "gpu0+1" || slots[1].Name != "gpu3" {
		t.Fatalf("slots: %+v", slots)
	}
	if !slices.Contains(slots[0].Env, "CUDA_VISIBLE_DEVICES=0,1") || !slices.Contains(slots[1].Env, "CUDA_VISIBLE_DEVICES=3") {
		t.Errorf("env: %+v", slots)
	}
	if Widest(slots) != 2 {
		t.Errorf("widest %d", Widest(slots))
	}
	cpu := BuildSlots(nil)
	if len(cpu) != 1 || len(cpu[0].GPUs) != 0 || !slices.Contains(cpu[0].Env, "CUDA_VISIBLE_DEVICES=") {
		t.Errorf("cpu slot: %+v", cpu)
	}
}

func TestRunnerFor(t *testing.T) {
	base := &engine.Runner{Python: "/venv/bin/python", Env: []string{"A=1"}}
	wide := worker.Slot{Name: "gpu2+3", GPUs: []int{2, 3}}
	two := RunnerFor(base, wide, &manifest.Job{GPUs: 2})
	if two.Env[len(two.Env)-1] != "CUDA_VISIBLE_DEVICES=2,3" {
		t.Errorf("env %v", two.Env)
	}
	want := []string{"/venv/bin/python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"}
	if !reflect.DeepEqual(two.Launcher, want) {
		t.Errorf("launcher %v", two.Launcher)
	}
	one := RunnerFor(base, wide, &manifest.Job{})
	if one.Env[len(one.Env)-1] != "CUDA_VISIBLE_DEVICES=2" || one.Launcher != nil {
		t.Errorf("single-GPU job in a wide slot: env %v launcher %v", one.Env, one.Launcher)
	}
	// A job asking for more than the slot has gets the slot.
	four := RunnerFor(base, worker.Slot{GPUs: []int{1}}, &manifest.Job{GPUs: 4})
	if four.Launcher != nil || four.Env[len(four.Env)-1] != "CUDA_VISIBLE_DEVICES=1" {
		t.Errorf("narrow slot: %+v", four)
	}
	cpu := RunnerFor(base, worker.Slot{Name: "cpu"}, &manifest.Job{GPUs: 2})
	if !reflect.DeepEqual(cpu.Env, base.Env) || cpu.Launcher != nil {
		t.Errorf("cpu slot changed the runner: %+v", cpu)
	}
	if len(base.Env) != 1 {
		t.Errorf("base runner modified: %v", base.Env)
	}
}

// TestSlotsRunJobsConcurrently runs the worker with slots built from a fake
// two-GPU host: two jobs run at the same time, each engine environment
// naming only its own GPU.
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
	groups, err := ParseSlots("all", fourGPUs()[:2])
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]string{}
	both := make(chan struct{})
	arrived := 0
	h := worker.HandlerFunc(func(ctx context.Context, env *worker.JobEnv) (*worker.Outcome, error) {
		r := RunnerFor(&engine.Runner{}, env.Slot, env.Job)
		var cvd string
		for _, e := range r.Env {
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
		Slots: BuildSlots(groups),
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

type staticSource []project.Project

func (s staticSource) Projects(context.Context) ([]project.Project, error) { return s, nil }

func TestCheckFree(t *testing.T) {
	devs := fourGPUs()
	devs[1].MemFree = 2 * GiB
	l := Static(devs)
	ctx := context.Background()
	if err := CheckFree(ctx, l, []int{0, 2}, 10*GiB); err != nil {
		t.Errorf("enough memory: %v", err)
	}
	err := CheckFree(ctx, l, []int{0, 1}, 10*GiB)
	var ime *InsufficientMemoryError
	if !errors.As(err, &ime) || ime.Device != 1 || !strings.Contains(err.Error(), "2.0 GiB free") {
		t.Errorf("short device: %v", err)
	}
	if err := CheckFree(ctx, l, []int{9}, GiB); !errors.Is(err, ErrNoDevice) {
		t.Errorf("missing device: %v", err)
	}
	if err := CheckFree(ctx, None{}, nil, 10*GiB); err != nil {
		t.Errorf("cpu slot: %v", err)
	}
}

// The estimate is the job's model's; a job whose model is not resolved is
// never waved through with "needs nothing".
func TestEstimateMemoryFromModel(t *testing.T) {
	spec := &manifest.ModelSpec{Memory: func(j *manifest.Job) uint64 { return uint64(*j.Knobs.BatchSize) * GiB }}
	if got := EstimateMemory(&manifest.Job{Spec: spec, Knobs: manifest.Knobs{BatchSize: func() *int { n := 3; return &n }()}}); got != 3*GiB {
		t.Errorf("estimate %d, want the model's 3 GiB", got)
	}
	if got := EstimateMemory(&manifest.Job{ModelType: "Whatever"}); got < 8*GiB {
		t.Errorf("unresolved model estimated at %d bytes", got)
	}
}
