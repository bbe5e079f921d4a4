package gpu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gpu-worker/engine"
	"gpu-worker/manifest"
	"gpu-worker/worker"
)

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

// TestRunnerForLaunchesDistributedRun starts a two-process run through the
// launcher RunnerFor sets for a two-GPU job.
func TestRunnerForLaunchesDistributedRun(t *testing.T) {
	dir := t.TempDir()
	pkg := filepath.Join(dir, "gpuworker_engines")
	os.MkdirAll(pkg, 0o755)
	os.WriteFile(filepath.Join(pkg, "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(pkg, "__main__.py"), []byte(ddpEngine), 0o644)
	base := &engine.Runner{Python: enginesPython(t), EnginesDir: dir, Grace: time.Second}
	r := RunnerFor(base, worker.Slot{Name: "gpu2+3", GPUs: []int{2, 3}}, &manifest.Job{GPUs: 2})
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
