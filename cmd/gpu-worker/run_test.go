package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/manifest"
)

// enginesDir makes a folder that passes for the engines' (the probe is a
// script, so nothing in it is imported).
func fakeEnginesDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "gpuworker_engines"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A claim timeout under three heartbeats is refused with a clear message,
// whether it comes from a flag, the environment or the config file.
func TestShortClaimTimeoutRefused(t *testing.T) {
	eng := fakeEnginesDir(t)
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfgFile, []byte("claim-timeout: 10m\nheartbeat-interval: 5m\n"), 0o644)
	base := []string{"run", "--project-dir", t.TempDir(), "--engines-dir", eng, "--python", "/bin/true"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"flags", []string{"--claim-timeout", "10m", "--heartbeat-interval", "5m"}, nil},
		{"environment", nil, map[string]string{"GPU_WORKER_CLAIM_TIMEOUT": "10m", "GPU_WORKER_HEARTBEAT_INTERVAL": "5m"}},
		{"config file", []string{"--config", cfgFile}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var stderr bytes.Buffer
			code := realMain(append(append([]string{}, base...), tc.args...), &bytes.Buffer{}, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), "claim timeout 10m0s is shorter than 3 heartbeat intervals (5m0s)") {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
		})
	}
}

// An engine grace that leaves no time of the stop budget for the final
// write is refused too.
func TestEngineGraceOverStopBudgetRefused(t *testing.T) {
	var stderr bytes.Buffer
	code := realMain([]string{"run", "--project-dir", t.TempDir(), "--engines-dir", fakeEnginesDir(t), "--python", "/bin/true",
		"--engine-grace", "140s", "--stop-timeout", "140s"}, &bytes.Buffer{}, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "for the final write") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}

// The first scan does not wait for the engines' probe (seconds of Python
// start-up and torch import); the claim does.
func TestScanRunsWhileProbing(t *testing.T) {
	srv := gitlabtest.New(t)
	srv.CreateProject("team/a")
	srv.UserCommit(t, "team/a", "queue", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" +
		"  - {job_id: j1, job_type: tts, mode: training, model: {type: StableTTS, size: tiny}, epochs: 1, allow_cpu: true}\n")})
	dir := t.TempDir()
	gate := filepath.Join(dir, "probe-may-finish")
	python := filepath.Join(dir, "python")
	os.WriteFile(python, []byte("#!/bin/sh\nwhile [ ! -e '"+gate+"' ]; do sleep 0.02; done\nexit 0\n"), 0o755)
	var out lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- realMain([]string{"run", "--gitlab-url", srv.URL(), "--token", gitlabtest.DefaultToken, "--projects", "team/a",
			"--work-dir", filepath.Join(dir, "work"), "--loop-interval", "-1", "--allow-cpu", "--gpus", "none",
			"--python", python, "--engines-dir", fakeEnginesDir(t)}, &out, &out)
	}()
	deadline := time.Now().Add(time.Minute)
	for srv.RequestCount("GET files") == 0 {
		if time.Now().After(deadline) {
			os.WriteFile(gate, nil, 0o644)
			t.Fatalf("no manifest read while the probe ran\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.RequestCount("POST commits"); n != 0 {
		t.Fatalf("%d commits before the probe finished", n)
	}
	os.WriteFile(gate, nil, 0o644)
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("worker still running\n%s", out.String())
	}
	b, ok := srv.ReadFile("team/a", manifest.ResponsePath("j1"))
	if !ok {
		t.Fatalf("job not claimed after the probe\n%s", out.String())
	}
	r, _ := manifest.ParseResponse(b)
	if r.State != manifest.StateFailed || r.ErrorMessage == nil || !strings.Contains(*r.ErrorMessage, "no .codex notebooks") {
		t.Fatalf("response %+v", r)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// --only PROJECT:JOB stays within --projects: a worker limited to some
// projects does not claim in another.
func TestOnlyWithinProjects(t *testing.T) {
	srv := gitlabtest.New(t)
	srv.CreateProject("team/a")
	srv.CreateProject("team/b")
	srv.UserCommit(t, "team/b", "queue", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" +
		"  - {job_id: j1, job_type: tts, mode: training, model: {type: StableTTS, size: tiny}, epochs: 1, allow_cpu: true}\n")})
	dir := t.TempDir()
	base := []string{"run", "--gitlab-url", srv.URL(), "--token", gitlabtest.DefaultToken, "--projects", "team/a, team/c",
		"--work-dir", filepath.Join(dir, "work"), "--allow-cpu", "--gpus", "none", "--python", "/bin/true", "--engines-dir", fakeEnginesDir(t)}
	var out bytes.Buffer
	code := realMain(append(base, "--only", "team/b:j1"), &out, &out)
	if code != 2 || !strings.Contains(out.String(), "--only names project team/b, which --projects (team/a, team/c) does not serve") {
		t.Fatalf("--only outside --projects: exit %d\n%s", code, out.String())
	}
	if n := srv.RequestCount("POST commits"); n != 0 {
		t.Errorf("%d commits", n)
	}
	out.Reset()
	if code := realMain(append(base, "--only", "team/a:j1"), &out, &out); code != 1 || !strings.Contains(out.String(), "job j1 is in no project's manifest") {
		t.Fatalf("--only within --projects: exit %d\n%s", code, out.String())
	}
}
