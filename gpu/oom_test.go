package gpu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"gpu-worker/engine"
)

func TestRunWithOOMRetryHalvesBatch(t *testing.T) {
	const fits = 3 // batches above this run out of memory
	var calls [][2]int
	run := func(b, a int) error {
		calls = append(calls, [2]int{b, a})
		if b > fits {
			return &engine.Error{Message: "CUDA out of memory", Kind: "oom"}
		}
		return nil
	}
	var notes [][2]int
	before := OOMRetries()
	err := RunWithOOMRetry(context.Background(), run, 16, 1, 4, func(b, a int) { notes = append(notes, [2]int{b, a}) })
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]int{{16, 1}, {8, 2}, {4, 4}, {2, 8}}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("calls %v, want %v", calls, want)
	}
	for _, c := range calls {
		if c[0]*c[1] != 16 {
			t.Errorf("effective batch changed: %v", c)
		}
	}
	if !reflect.DeepEqual(notes, want[1:]) {
		t.Errorf("retry notes %v", notes)
	}
	if got := OOMRetries() - before; got != 3 {
		t.Errorf("restart counter moved by %d, want 3", got)
	}
}

func TestRunWithOOMRetryLimits(t *testing.T) {
	calls := 0
	oom := func(int, int) error { calls++; return &engine.Error{Message: "oom", Kind: "oom"} }
	err := RunWithOOMRetry(context.Background(), oom, 8, 1, 2, nil)
	if !engine.IsOOM(err) || calls != 3 {
		t.Errorf("after the limit: calls %d err %v", calls, err)
	}
	calls = 0
	err = RunWithOOMRetry(context.Background(), oom, 1, 1, 5, nil)
	if !engine.IsOOM(err) || calls != 1 {
		t.Errorf("batch 1 cannot halve: calls %d err %v", calls, err)
	}
	calls = 0
	other := errors.New("dataset empty")
	err = RunWithOOMRetry(context.Background(), func(int, int) error { calls++; return other }, 8, 1, 3, nil)
	if !errors.Is(err, other) || calls != 1 {
		t.Errorf("other errors are not retried: calls %d err %v", calls, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls = 0
	err = RunWithOOMRetry(ctx, oom, 8, 1, 3, nil)
	if err == nil || calls != 1 {
		t.Errorf("canceled context: calls %d err %v", calls, err)
	}
}

// oomEngine is a stand-in engines package that runs out of memory on
// batches larger than the config's "fits".
const oomEngine = `
import json, sys
cfg = json.load(open(sys.argv[4]))
def emit(**kw): print(json.dumps(kw), flush=True)
if cfg["batch_size"] > cfg["fits"]:
    emit(event="error", message="CUDA out of memory. Tried to allocate 2.00 GiB", kind="oom")
    sys.exit(1)
emit(event="result", batch_size=cfg["batch_size"], accum=cfg["gradient_accumulation_steps"])
`

func TestRunWithOOMRetryRealEngineProcess(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required")
	}
	dir := t.TempDir()
	pkg := filepath.Join(dir, "gpuworker_engines")
	os.MkdirAll(pkg, 0o755)
	os.WriteFile(filepath.Join(pkg, "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(pkg, "__main__.py"), []byte(oomEngine), 0o644)
	r := &engine.Runner{Python: py, EnginesDir: dir, Grace: time.Second}
	work := t.TempDir()
	var result map[string]any
	var notes []string
	err = RunWithOOMRetry(context.Background(), func(b, a int) error {
		cfg := map[string]any{"batch_size": b, "gradient_accumulation_steps": a, "fits": 4}
		res, err := r.Run(context.Background(), "stub", "train", cfg, work, nil, nil)
		result = res
		return err
	}, 16, 2, 3, func(b, a int) { notes = append(notes, OOMNote(b, a)) })
	if err != nil {
		t.Fatal(err)
	}
	if result["batch_size"] != float64(4) || result["accum"] != float64(8) {
		t.Errorf("final run: %v", result)
	}
	if len(notes) != 2 || notes[1] != OOMNote(4, 8) {
		t.Errorf("notes %q", notes)
	}
}
