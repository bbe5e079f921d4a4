package engine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeEngine is a stand-in gpuworker_engines package: its behaviour is
// chosen by the command name so each test exercises one path of Run.
const fakeEngine = `
import json, os, signal, subprocess, sys, time
engine, command, cfg = sys.argv[1], sys.argv[2], sys.argv[4]
config = json.load(open(cfg))
def emit(**kw): print(json.dumps(kw), flush=True)
if command == "ok":
    print("loading model", file=sys.stderr, flush=True)
    print("a stray print")
    for e in range(1, 4):
        emit(event="progress", epoch=e, epochs=3, loss=1.0/e, eta_s=3-e)
    emit(event="result", echo=config["value"], paths=["a", "b"])
elif command == "fail":
    emit(event="error", message="dataset has no items")
    sys.exit(1)
elif command == "oom":
    emit(event="error", message="CUDA out of memory", kind="oom")
    sys.exit(1)
elif command == "crash":
    sys.exit(3)
elif command in ("checkpoint", "stubborn"):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open(config["pidfile"], "w").write(str(child.pid))
    def on_term(*_):
        if command == "stubborn":
            return
        emit(event="checkpoint", path="ckpt.pt", kind="resumable", epoch=2)
        sys.exit(75)
    signal.signal(signal.SIGTERM, on_term)
    emit(event="progress", epoch=1, epochs=10)
    while True:
        time.sleep(0.05)
`

func newRunner(t *testing.T) *Runner {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required for engine tests")
	}
	dir := t.TempDir()
	pkg := filepath.Join(dir, "gpuworker_engines")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(pkg, "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(pkg, "__main__.py"), []byte(fakeEngine), 0o644)
	return &Runner{Python: py, EnginesDir: dir, Grace: 500 * time.Millisecond}
}

func TestRunStreamsEventsAndResult(t *testing.T) {
	r := newRunner(t)
	var log bytes.Buffer
	var epochs []int
	res, err := r.Run(context.Background(), "fake", "ok", map[string]any{"value": 42}, t.TempDir(), &log, func(e Event) {
		if e.Kind == "progress" {
			epochs = append(epochs, e.Epoch)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(epochs) != 3 || epochs[2] != 3 {
		t.Errorf("progress epochs = %v", epochs)
	}
	if res["echo"] != float64(42) || res["event"] != nil {
		t.Errorf("result = %v", res)
	}
	for _, want := range []string{"loading model", "a stray print"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q: %s", want, log.String())
		}
	}
}

func TestRunReportsEngineError(t *testing.T) {
	r := newRunner(t)
	_, err := r.Run(context.Background(), "fake", "fail", map[string]any{}, t.TempDir(), nil, nil)
	var e *Error
	if !errors.As(err, &e) || e.Message != "dataset has no items" || e.ExitCode != 1 {
		t.Fatalf("err = %#v", err)
	}
	_, err = r.Run(context.Background(), "fake", "oom", map[string]any{}, t.TempDir(), nil, nil)
	if !IsOOM(err) {
		t.Fatalf("oom not recognised: %v", err)
	}
	_, err = r.Run(context.Background(), "fake", "crash", map[string]any{}, t.TempDir(), nil, nil)
	if !errors.As(err, &e) || e.ExitCode != 3 || IsOOM(err) {
		t.Fatalf("crash: %v", err)
	}
}

func TestCancelSendsSIGTERMToTheGroup(t *testing.T) {
	r := newRunner(t)
	pidfile := filepath.Join(t.TempDir(), "child.pid")
	ctx, cancel := context.WithCancelCause(context.Background())
	var got []Event
	_, err := r.Run(ctx, "fake", "checkpoint", map[string]any{"pidfile": pidfile}, t.TempDir(), nil, func(e Event) {
		got = append(got, e)
		if e.Kind == "progress" {
			cancel(errors.New("user canceled"))
		}
	})
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("err = %v, want ErrInterrupted", err)
	}
	if last := got[len(got)-1]; last.Kind != "checkpoint" || last.Path != "ckpt.pt" || last.Checkpoint != "resumable" {
		t.Errorf("last event = %+v", last)
	}
	waitGone(t, pidfile)
}

func TestStubbornEngineIsKilledAfterGrace(t *testing.T) {
	r := newRunner(t)
	pidfile := filepath.Join(t.TempDir(), "child.pid")
	ctx, cancel := context.WithCancelCause(context.Background())
	start := time.Now()
	_, err := r.Run(ctx, "fake", "stubborn", map[string]any{"pidfile": pidfile}, t.TempDir(), nil, func(e Event) {
		if e.Kind == "progress" {
			cancel(errors.New("job timeout"))
		}
	})
	if err == nil || !strings.Contains(err.Error(), "job timeout") {
		t.Fatalf("err = %v, want the cancel cause", err)
	}
	if time.Since(start) < r.Grace {
		t.Errorf("killed before the grace period")
	}
	waitGone(t, pidfile)
}

// waitGone checks that the engine's child process died with its group.
func waitGone(t *testing.T, pidfile string) {
	t.Helper()
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(string(b))
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		// a zombie still answers signal 0; check its state too
		if err := syscall.Kill(pid, 0); err != nil {
			return
		}
		if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && strings.Contains(string(st), ") Z ") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("child %d of the engine still alive", pid)
}
