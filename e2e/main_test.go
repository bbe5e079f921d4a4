// Package e2e runs the real gpu-worker binary with the real engines (tiny
// models, CPU), real ffmpeg and the GitLab emulator.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gpu-worker/codex"
	"gpu-worker/demoproject"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/manifest"
	"gpu-worker/project"
)

var binary, python, enginesDir string

func TestMain(m *testing.M) {
	os.Exit(setup(m))
}

func setup(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		panic(err)
	}
	enginesDir = filepath.Join(root, "engines")
	tmp, err := os.MkdirTemp("", "gpu-worker-e2e-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(tmp)
	binary = filepath.Join(tmp, "gpu-worker")
	build := exec.Command("go", "build", "-o", binary, "./cmd/gpu-worker")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build gpu-worker: %v\n%s", err, out)
		return 1
	}
	python = os.Getenv("GPU_WORKER_PYTHON")
	if python == "" {
		out, err := exec.Command(filepath.Join(root, "scripts", "engines-env.sh")).Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "the engines' Python environment is required (scripts/engines-env.sh): %v\n", err)
			return 1
		}
		python = filepath.Join(strings.TrimSpace(string(out)), "bin", "python")
	}
	return m.Run()
}

// sentences are short so espeak-ng and the tiny models stay fast.
var sentences = []string{
	"the lord is my shepherd", "in the beginning was the word", "love your neighbour",
	"the light shines in the darkness", "blessed are the meek", "ask and it will be given",
	"peace be with you", "the truth will set you free", "let there be light", "go and do likewise",
}

// verses: the first `recorded` have text and audio, then `textOnly` have
// text and no audio, then `audioOnly` have audio and no text.
func verses(recorded, textOnly, audioOnly int) []demoproject.Verse {
	var vs []demoproject.Verse
	for i := 0; i < recorded+textOnly+audioOnly; i++ {
		v := demoproject.Verse{Ref: fmt.Sprintf("MRK 1:%d", i+1), Text: sentences[i%len(sentences)]}
		switch {
		case i < recorded:
			v.Record = true
		case i < recorded+textOnly:
		default:
			v.Record, v.Blank = true, true
		}
		vs = append(vs, v)
	}
	return vs
}

type env struct {
	t    *testing.T
	srv  *gitlabtest.Server
	path string
	work string
}

const projectPath = "team/mark"

func newEnv(t *testing.T, vs []demoproject.Verse) *env {
	t.Helper()
	p, err := demoproject.Generate(context.Background(), demoproject.Options{Book: "MRK", Verses: vs})
	if err != nil {
		t.Fatal(err)
	}
	srv := gitlabtest.New(t)
	srv.CreateProject(projectPath)
	for _, obj := range p.Objects {
		srv.PutLFSObject(obj)
	}
	srv.UserCommit(t, projectPath, "Import project", p.Files)
	return &env{t: t, srv: srv, path: projectPath, work: t.TempDir()}
}

func (e *env) setManifest(jobs ...string) {
	e.srv.UserCommit(e.t, e.path, "Queue jobs", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" + strings.Join(jobs, ""))})
}

// job writes one manifest entry in the extension's style.
func job(id, typ, mode, model string, extra string) string {
	return fmt.Sprintf("  - job_id: %q\n    job_type: %s\n    mode: %s\n    submitted_at: %q\n    model: {type: %s, size: tiny%s}\n    allow_cpu: true\n",
		id, typ, mode, time.Now().UTC().Format(time.RFC3339Nano), model, "") + extra
}

func (e *env) command(workerID string, extra ...string) *exec.Cmd {
	args := append([]string{"run", "--gitlab-url", e.srv.URL(), "--token", "test-token", "--projects", e.path,
		"--work-dir", filepath.Join(e.work, workerID), "--loop-interval", "-1", "--allow-cpu",
		"--worker-id", workerID, "--python", python, "--engines-dir", enginesDir}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// run runs a worker until it has nothing left to do.
func (e *env) run(workerID string, extra ...string) string {
	e.t.Helper()
	cmd := e.command(workerID, extra...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		e.t.Fatalf("worker %s: %v\n%s", workerID, err, tail(out.String()))
	}
	return out.String()
}

func tail(s string) string {
	if len(s) > 6000 {
		return "…" + s[len(s)-6000:]
	}
	return s
}

func (e *env) file(path string) ([]byte, bool) { return e.srv.ReadFile(e.path, path) }

func (e *env) response(id string) *manifest.Response {
	e.t.Helper()
	b, ok := e.file(manifest.ResponsePath(id))
	if !ok {
		e.t.Fatalf("job %s has no response.yaml", id)
	}
	r, err := manifest.ParseResponse(b)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) wantState(id, state string) *manifest.Response {
	e.t.Helper()
	r := e.response(id)
	if r.State != state {
		msg := ""
		if r.ErrorMessage != nil {
			msg = *r.ErrorMessage
		}
		logs, _ := e.file(manifest.JobDir(id) + "/logs.txt")
		e.t.Fatalf("job %s: state %s (%s), want %s\nlogs.txt:\n%s", id, r.State, msg, state, tail(string(logs)))
	}
	return r
}

// lfsFile checks that path is an LFS pointer whose object the server holds.
func (e *env) lfsFile(path string) []byte {
	e.t.Helper()
	b, ok := e.file(path)
	if !ok {
		e.t.Fatalf("%s missing", path)
	}
	ptr, err := project.ParsePointer(b)
	if err != nil {
		e.t.Fatalf("%s is not an LFS pointer: %q", path, b)
	}
	obj, ok := e.srv.LFSObject(ptr.OID)
	if !ok || int64(len(obj)) != ptr.Size {
		e.t.Fatalf("%s: LFS object %s missing or wrong size", path, ptr.OID)
	}
	return obj
}

func (e *env) notebook() *codex.Notebook {
	e.t.Helper()
	b, ok := e.file("files/target/MRK.codex")
	if !ok {
		e.t.Fatal("notebook missing")
	}
	nb, err := codex.Parse("files/target/MRK.codex", b)
	if err != nil {
		e.t.Fatalf("notebook no longer parses: %v", err)
	}
	return nb
}

// lastCommitTouching returns the newest commit that changed path.
func (e *env) lastCommitTouching(path string) gitlabtest.Commit {
	cs := e.srv.Commits(e.path)
	for i := len(cs) - 1; i >= 0; i-- {
		for _, a := range cs[i].Actions {
			if a.Path == path {
				return cs[i]
			}
		}
	}
	e.t.Fatalf("no commit touched %s", path)
	return gitlabtest.Commit{}
}

func paths(c gitlabtest.Commit) map[string]bool {
	out := map[string]bool{}
	for _, a := range c.Actions {
		out[a.Path] = true
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

var _ = sync.Mutex{}
