package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gpu-worker/gitlab/gitlabtest"
)

// quietEngines is a gpuworker_engines folder made of the project's real
// entry point plus a stabletts engine whose train command prints nothing:
// it records its pid and a child's (same process group) and sleeps.
// stubborn engines also ignore SIGTERM.
func quietEngines(t *testing.T, stubborn bool) string {
	t.Helper()
	dir := t.TempDir()
	pkg := filepath.Join(dir, "gpuworker_engines")
	os.MkdirAll(filepath.Join(pkg, "stabletts"), 0o755)
	// The real entry point and configurations: the engine reads the
	// worker's config as it would; only what the command does is fake.
	for _, name := range []string{"__init__.py", "__main__.py", "events.py", "config.py", "untrusted.py", "stabletts/config.py"} {
		b, err := os.ReadFile(filepath.Join(enginesDir, "gpuworker_engines", name))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(pkg, name), b, 0o644)
	}
	os.WriteFile(filepath.Join(pkg, "stabletts", "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(pkg, "stabletts", "cli.py"), []byte(`import os, signal, subprocess, time

STUBBORN = `+map[bool]string{true: "True", false: "False"}[stubborn]+`


def train(config, stop):
    if STUBBORN:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(["sleep", "600"])
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "pids.tmp"), "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    os.rename(os.path.join(here, "pids.tmp"), os.path.join(here, "pids"))
    while True:
        time.sleep(3600)


COMMANDS = {"train": train}
`), 0o644)
	return dir
}

// enginePIDs waits for the quiet engine to start and returns its pid and
// its child's.
func enginePIDs(t *testing.T, engines string, out *bytes.Buffer) []int {
	t.Helper()
	file := filepath.Join(engines, "gpuworker_engines", "stabletts", "pids")
	var pids []int
	waitFor(t, "the engine to start\n"+tail(out.String()), 5*time.Minute, func() bool {
		b, err := os.ReadFile(file)
		if err != nil {
			return false
		}
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			pids = append(pids, n)
		}
		return true
	})
	for _, pid := range pids {
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	}
	return pids
}

// alive reports a process that exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && !strings.Contains(string(st), ") Z ")
}

// noneAliveWithin fails unless every pid is gone within d.
func noneAliveWithin(t *testing.T, d time.Duration, pids []int) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := 0
		for _, pid := range pids {
			if alive(pid) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the engine's processes %v still alive after %v", left, pids, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) startQuiet(engines string, extra ...string) (*exec.Cmd, *bytes.Buffer) {
	e.t.Helper()
	e.setManifest(job("quiet", "tts", "training", "StableTTS", "    epochs: 100\n"))
	cmd := e.command("w1", append([]string{"--engines-dir", engines}, extra...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	return cmd, &out
}

// SIGKILL of the worker binary leaves no engine process (nor its children)
// after 5 s, with an engine that prints nothing.
func TestKilledWorkerLeavesNoEngine(t *testing.T) {
	e := newEnv(t, verses(3, 0, 0))
	engines := quietEngines(t, false)
	cmd, out := e.startQuiet(engines)
	pids := enginePIDs(t, engines, out)
	cmd.Process.Kill() // the worker alone: the engines have their own group
	cmd.Wait()
	noneAliveWithin(t, 5*time.Second, pids)
}

// A second signal during a shutdown kills the engines' process groups
// before the worker exits.
func TestSecondSignalKillsEngines(t *testing.T) {
	e := newEnv(t, verses(3, 0, 0))
	engines := quietEngines(t, true)
	cmd, out := e.startQuiet(engines, "--engine-grace", "60s")
	pids := enginePIDs(t, engines, out)
	cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, "the shutdown to begin", time.Minute, func() bool { return strings.Contains(out.String(), "shutting down") })
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("worker exit: %v\n%s", err, tail(out.String()))
	}
	noneAliveWithin(t, 5*time.Second, pids)
}

// A shutdown whose final write hangs still ends within --stop-timeout, and
// leaves no engine behind.
func TestShutdownEndsWithinStopTimeout(t *testing.T) {
	e := newEnv(t, verses(3, 0, 0))
	engines := quietEngines(t, true)
	cmd, out := e.startQuiet(engines, "--engine-grace", "1s", "--stop-timeout", "11s")
	pids := enginePIDs(t, engines, out)
	e.srv.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Rate: 1, Latency: time.Hour})
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("a shutdown whose final write never landed exited 0\n%s", tail(out.String()))
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("worker still stopping after 90 s with --stop-timeout 11s\n%s", tail(out.String()))
	}
	if !strings.Contains(out.String(), "shutdown took longer than --stop-timeout") {
		t.Errorf("no word of the stop timeout\n%s", tail(out.String()))
	}
	noneAliveWithin(t, 5*time.Second, pids)
}
