package engine

import (
	"context"
	"encoding/json"
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

// TestMain doubles as a stand-in worker process (see startWorker), as the
// sandbox shim, and as a worker whose kernel refuses namespaces.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == SandboxCommand {
		os.Exit(SandboxMain(os.Args[2:]))
	}
	if os.Getenv(probeInNamespaceEnv) != "" {
		os.Exit(probeWithoutUserNamespaces())
	}
	if spec := os.Getenv("ENGINE_TEST_WORKER"); spec != "" {
		os.Exit(standInWorker(spec))
	}
	os.Exit(m.Run())
}

// lifecycleEngine is a fake gpuworker_engines for output and environment tests.
const lifecycleEngine = `
import json, os, sys, time
command, cfg = sys.argv[2], sys.argv[4]
config = json.load(open(cfg))
if command == "longline":
    sys.stdout.write('{"event": "progress", "message": "' + "x" * (17 << 20) + '"}\n')
    sys.stdout.flush()
    time.sleep(60)
elif command == "env":
    print(json.dumps({"event": "result", "env": dict(os.environ)}), flush=True)
elif command == "stubborn":
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(config["pidfile"], "w").write(str(os.getpid()))
    print(json.dumps({"event": "progress", "epoch": 1, "epochs": 2}), flush=True)
    time.sleep(60)
`

func lifecycleRunner(t *testing.T) *Runner {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required for engine tests")
	}
	dir := t.TempDir()
	pkg := filepath.Join(dir, "gpuworker_engines")
	os.MkdirAll(pkg, 0o755)
	os.WriteFile(filepath.Join(pkg, "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(pkg, "__main__.py"), []byte(lifecycleEngine), 0o644)
	return &Runner{Python: py, EnginesDir: dir, Grace: 500 * time.Millisecond}
}

// finishes fails the test if f has not returned after a minute: a hang
// detector, not a measure of speed.
func finishes(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s still running after a minute", what)
	}
}

// A stdout line over the limit fails the run with a clear message and
// stops the engine, instead of leaving it blocked on a full pipe.
func TestOverlongLineFailsAndStopsEngine(t *testing.T) {
	r := lifecycleRunner(t)
	var err error
	finishes(t, "an engine that printed an overlong line", func() {
		_, err = r.Run(context.Background(), "fake", "longline", map[string]any{}, t.TempDir(), nil, nil)
	})
	var e *Error
	if !errors.As(err, &e) || !strings.Contains(e.Message, "printed a line longer than 16 MiB") {
		t.Fatalf("err = %v", err)
	}
}

// Engines get an allow-listed environment: no token or other secret of the
// worker, but what PyTorch, CUDA and Hugging Face need, the runner's extra
// variables and the worker's pid.
func TestEngineEnvironmentIsAllowListed(t *testing.T) {
	t.Setenv("GITLAB_TOKEN", "glpat-secret")
	t.Setenv("GPU_WORKER_TOKEN_FILE", "/etc/secret")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
	t.Setenv("HF_HOME", "/models/hf")
	t.Setenv("CUDA_CACHE_PATH", "/cache/cuda")
	t.Setenv("OMP_NUM_THREADS", "1")
	t.Setenv("LC_ALL", "C.UTF-8")
	t.Setenv("PYTHONPATH", "/somewhere/else")
	r := lifecycleRunner(t)
	r.Env = []string{"CUDA_VISIBLE_DEVICES=1"}
	res, err := r.Run(context.Background(), "fake", "env", map[string]any{}, t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for k, v := range res["env"].(map[string]any) {
		env[k] = v.(string)
	}
	for _, secret := range []string{"GITLAB_TOKEN", "GPU_WORKER_TOKEN_FILE", "AWS_SECRET_ACCESS_KEY"} {
		if _, ok := env[secret]; ok {
			t.Errorf("%s reached the engine", secret)
		}
	}
	want := map[string]string{
		"HF_HOME": "/models/hf", "CUDA_CACHE_PATH": "/cache/cuda", "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8",
		"CUDA_VISIBLE_DEVICES": "1", "PYTHONPATH": r.EnginesDir, "PYTHONUNBUFFERED": "1",
		ParentPIDEnv: strconv.Itoa(os.Getpid()),
	}
	if env["PATH"] == "" || env["HOME"] != os.Getenv("HOME") {
		t.Errorf("PATH %q, HOME %q", env["PATH"], env["HOME"])
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
}

// KillAll stops every running engine's group at once, SIGTERM or not.
func TestKillAllStopsRunningEngines(t *testing.T) {
	r := lifecycleRunner(t)
	r.Grace = time.Hour
	pidfile := filepath.Join(t.TempDir(), "engine.pid")
	var err error
	finishes(t, "an engine after KillAll", func() {
		_, err = r.Run(context.Background(), "fake", "stubborn", map[string]any{"pidfile": pidfile}, t.TempDir(), nil, func(e Event) {
			if e.Kind == "progress" && KillAll() != 1 {
				t.Error("KillAll saw no running engine")
			}
		})
	})
	if err == nil {
		t.Fatal("a killed engine reported success")
	}
	waitGone(t, pidfile)
}

// realEntry is a gpuworker_engines package made of the project's real entry
// point (__main__.py and the modules it reads) plus a quiet engine that
// prints nothing.
func realEntry(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	pkg := filepath.Join(dir, "gpuworker_engines")
	os.MkdirAll(filepath.Join(pkg, "quiet"), 0o755)
	for _, name := range []string{"__init__.py", "__main__.py", "events.py", "config.py", "untrusted.py"} {
		b, err := os.ReadFile(filepath.Join("..", "engines", "gpuworker_engines", name))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(pkg, name), b, 0o644)
	}
	os.WriteFile(filepath.Join(pkg, "quiet", "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(pkg, "quiet", "config.py"), []byte(`from dataclasses import dataclass

from ..config import Settings, knob


@dataclass(kw_only=True)
class Sleep(Settings):
    """Sleeps until stopped."""
    pidfile: str = knob("", help="where to write the pid")


CONFIGS = {"sleep": Sleep}
`), 0o644)
	os.WriteFile(filepath.Join(pkg, "quiet", "cli.py"), []byte(`import os, time

def sleep(config, stop):
    open(config.pidfile, "w").write(str(os.getpid()))
    while True:
        time.sleep(3600)

COMMANDS = {"sleep": sleep}
`), 0o644)
	return dir
}

type standIn struct {
	Python, EnginesDir, PIDFile, WorkDir string
	Launcher                             []string
}

// standInWorker runs one quiet engine and waits to be killed.
func standInWorker(spec string) int {
	var s standIn
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		return 2
	}
	r := &Runner{Python: s.Python, EnginesDir: s.EnginesDir, Launcher: s.Launcher}
	r.Run(context.Background(), "quiet", "sleep", map[string]any{"pidfile": s.PIDFile}, s.WorkDir, os.Stderr, nil)
	return 1
}

// A SIGKILLed worker leaves no engine behind: the engine notices within a
// few seconds, also when a launcher sits between the two.
func TestEngineStopsWhenWorkerIsKilled(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required for engine tests")
	}
	for _, tc := range []struct {
		name     string
		launcher []string
	}{
		{"direct", nil},
		{"under a launcher", []string{"/bin/sh", "-c", `"$0" "$@"; exit $?`, py}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := standIn{Python: py, EnginesDir: realEntry(t), PIDFile: filepath.Join(t.TempDir(), "engine.pid"), WorkDir: t.TempDir(), Launcher: tc.launcher}
			spec, _ := json.Marshal(s)
			worker := exec.Command(os.Args[0], "-test.run=^$")
			worker.Env = append(os.Environ(), "ENGINE_TEST_WORKER="+string(spec))
			worker.Stderr = os.Stderr
			if err := worker.Start(); err != nil {
				t.Fatal(err)
			}
			var pid int
			deadline := time.Now().Add(time.Minute)
			for pid == 0 {
				if time.Now().After(deadline) {
					worker.Process.Kill()
					t.Fatal("the engine never started")
				}
				b, _ := os.ReadFile(s.PIDFile)
				pid, _ = strconv.Atoi(string(b))
				time.Sleep(20 * time.Millisecond)
			}
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
			worker.Process.Kill()
			worker.Wait()
			waitGone(t, s.PIDFile) // 5 s
		})
	}
}
