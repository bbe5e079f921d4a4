package handlers

import (
	"context"
	"gpu-worker/contract"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gpu-worker/engine"
	"gpu-worker/gpu"
	"gpu-worker/manifest"
	"gpu-worker/worker"
)

func TestRunnerFor(t *testing.T) {
	base := &engine.Runner{Python: "/venv/bin/python", Env: []string{"A=1"}}
	wide := worker.Slot{Name: "gpu2+3", GPUs: []int{2, 3}}
	two := runnerFor(base, wide, &manifest.Job{GPUs: 2})
	if two.Env[len(two.Env)-1] != "CUDA_VISIBLE_DEVICES=2,3" {
		t.Errorf("env %v", two.Env)
	}
	want := []string{"/venv/bin/python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"}
	if !reflect.DeepEqual(two.Launcher, want) {
		t.Errorf("launcher %v", two.Launcher)
	}
	one := runnerFor(base, wide, &manifest.Job{})
	if one.Env[len(one.Env)-1] != "CUDA_VISIBLE_DEVICES=2" || one.Launcher != nil {
		t.Errorf("single-GPU job in a wide slot: env %v launcher %v", one.Env, one.Launcher)
	}
	// A job asking for more than the slot has gets the slot.
	four := runnerFor(base, worker.Slot{GPUs: []int{1}}, &manifest.Job{GPUs: 4})
	if four.Launcher != nil || four.Env[len(four.Env)-1] != "CUDA_VISIBLE_DEVICES=1" {
		t.Errorf("narrow slot: %+v", four)
	}
	cpu := runnerFor(base, worker.Slot{Name: "cpu"}, &manifest.Job{GPUs: 2})
	if !reflect.DeepEqual(cpu.Env, base.Env) || cpu.Launcher != nil {
		t.Errorf("cpu slot changed the runner: %+v", cpu)
	}
	if len(base.Env) != 1 {
		t.Errorf("base runner modified: %v", base.Env)
	}
}

// The estimate is the job's model's; a job whose model is not resolved is
// never waved through with "needs nothing".
func TestEstimateMemoryFromModel(t *testing.T) {
	spec := &manifest.ModelSpec{Memory: func(j *manifest.Job) uint64 { return uint64(*j.Knobs.BatchSize) * gpu.GiB }}
	if got := EstimateMemory(&manifest.Job{Spec: spec, Knobs: manifest.Knobs{BatchSize: contract.Ptr(3)}}); got != 3*gpu.GiB {
		t.Errorf("estimate %d, want the model's 3 GiB", got)
	}
	if got := EstimateMemory(&manifest.Job{ModelType: "Whatever"}); got < 8*gpu.GiB {
		t.Errorf("unresolved model estimated at %d bytes", got)
	}
}

// climbing is a GPU 0 whose use climbs by 1 GiB at each read, with plenty
// free; GPU 1 is another slot's.
type climbing struct{ n atomic.Int64 }

func (c *climbing) Devices(context.Context) ([]gpu.Device, error) {
	used := uint64(c.n.Add(1)) * gpu.GiB
	return []gpu.Device{
		{Index: 0, MemTotal: 80 * gpu.GiB, MemUsed: used, MemFree: 80*gpu.GiB - used, Available: true},
		{Index: 1, MemTotal: 80 * gpu.GiB, MemUsed: 60 * gpu.GiB, MemFree: 20 * gpu.GiB, Available: true},
	}, nil
}

func TestWatchMemory(t *testing.T) {
	ctx := context.Background()
	slot := worker.Slot{Name: "gpu0", GPUs: []int{0}}
	job := &manifest.Job{Mode: manifest.Inference, Spec: &manifest.ModelSpec{Memory: func(*manifest.Job) uint64 { return 2 * gpu.GiB }}}
	c := &climbing{}
	done, err := watchMemory(ctx, c, slot, job)
	if err != nil {
		t.Fatal(err)
	}
	// The check, the first sample and the last one (at done) read at least
	// three times: the peak is the last read's, on GPU 0 only.
	peak := done()
	if got, _ := peak["0"].(uint64); got < 3*1024 || got != uint64(c.n.Load())*1024 || len(peak) != 1 {
		t.Errorf("peak %v after %d reads", peak, c.n.Load())
	}
	full := gpu.Static{{Index: 0, MemTotal: 80 * gpu.GiB, MemFree: gpu.GiB, Available: true}}
	if _, err := watchMemory(ctx, full, slot, job); err == nil {
		t.Errorf("a full GPU was accepted")
	}
	done, err = watchMemory(ctx, gpu.None{}, worker.Slot{Name: "cpu"}, job)
	if err != nil || len(done()) != 0 {
		t.Errorf("cpu slot: %v", err)
	}
}

func enginesPython(t *testing.T) string {
	t.Helper()
	if py := os.Getenv("GPU_WORKER_PYTHON"); py != "" {
		return py
	}
	out, err := exec.Command(filepath.Join("..", "scripts", "engines-env.sh")).Output()
	if err != nil {
		t.Fatalf("the engines' Python environment is required (scripts/engines-env.sh): %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "bin", "python")
}

// ddpEngine is one rank of a launch: each rank leaves a mark in a shared
// folder, and rank 0 reports once every rank the launcher started did. No
// torch import in the ranks keeps the test quick; what is under test is the
// launch command.
const ddpEngine = `
import json, os, sys, time
cfg = json.load(open(sys.argv[4]))
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
open(os.path.join(cfg["marks"], "rank%d" % rank), "w").write(os.environ["LOCAL_RANK"])
if rank == 0:
    deadline = time.time() + 60
    while len(os.listdir(cfg["marks"])) < world and time.time() < deadline:
        time.sleep(0.05)
    print(json.dumps({"event": "result", "world_size": world, "ranks": sorted(os.listdir(cfg["marks"])),
                      "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}), flush=True)
`

// TestRunnerForLaunchesDistributedRun starts a two-process run through the
// launcher runnerFor sets for a two-GPU job.
func TestRunnerForLaunchesDistributedRun(t *testing.T) {
	base := &engine.Runner{Python: enginesPython(t), EnginesDir: fakeEngines(t, ddpEngine), Grace: time.Second}
	r := runnerFor(base, worker.Slot{Name: "gpu2+3", GPUs: []int{2, 3}}, &manifest.Job{GPUs: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log strings.Builder
	res, err := r.Run(ctx, "fake", "train", map[string]any{"marks": t.TempDir()}, t.TempDir(), &log, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	ranks, _ := res["ranks"].([]any)
	if res["world_size"] != float64(2) || len(ranks) != 2 || ranks[1] != "rank1" || res["visible"] != "2,3" {
		t.Errorf("distributed result %v\n%s", res, log.String())
	}
}

// fakeEngines is a folder holding a stand-in gpuworker_engines package
// whose __main__ is script.
func fakeEngines(t *testing.T, script string) string {
	t.Helper()
	dir := t.TempDir()
	pkg := filepath.Join(dir, "gpuworker_engines")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"__init__.py": "", "__main__.py": script} {
		if err := os.WriteFile(filepath.Join(pkg, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A slot's devices as engines see them: none for a CPU slot, the indices
// in nvidia-smi's order otherwise.
func TestDeviceEnv(t *testing.T) {
	if got := DeviceEnv(nil); !slices.Equal(got, []string{"CUDA_VISIBLE_DEVICES="}) {
		t.Errorf("no GPU: %q", got)
	}
	if got := DeviceEnv([]int{2, 0}); !slices.Equal(got, []string{"CUDA_DEVICE_ORDER=PCI_BUS_ID", "CUDA_VISIBLE_DEVICES=2,0"}) {
		t.Errorf("GPUs 2 and 0: %q", got)
	}
}
