package worker

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/limits"
	"gpu-worker/manifest"
	"gpu-worker/project"
)

// faulty wraps a project; commit, when set, replaces Commit (next is the
// real one), and stat replaces StatFile the same way.
type faulty struct {
	project.Project
	commit func(ctx context.Context, msg string, acts []project.Action, next commitFunc) (*project.CommitResult, error)
	stat   func(ctx context.Context, path string, next func(context.Context, string) (*project.FileInfo, error)) (*project.FileInfo, error)
}

type commitFunc func(context.Context, string, []project.Action) (*project.CommitResult, error)

func (f *faulty) Commit(ctx context.Context, msg string, acts []project.Action) (*project.CommitResult, error) {
	if f.commit != nil {
		return f.commit(ctx, msg, acts, f.Project.Commit)
	}
	return f.Project.Commit(ctx, msg, acts)
}

func (f *faulty) StatFile(ctx context.Context, path string) (*project.FileInfo, error) {
	if f.stat != nil {
		return f.stat(ctx, path, f.Project.StatFile)
	}
	return f.Project.StatFile(ctx, path)
}

func isClaim(msg string) bool { return strings.HasPrefix(msg, "Claim job") }

// countRuns is a handler that counts its runs.
func countRuns(n *atomic.Int32) HandlerFunc {
	return func(context.Context, *JobEnv) (*Outcome, error) {
		n.Add(1)
		return &Outcome{Result: map[string]any{"ok": true}}, nil
	}
}

// The claim's commit answers 502 and lands only after the client checked
// the history, so the re-sent create is refused "already exists": the file
// is ours, and the job runs.
func TestLateLandingClaimIsOurs(t *testing.T) {
	srv := gitlabtest.New(t)
	srv.CreateProject("team/a")
	srv.UserCommit(t, "team/a", "queue", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" + jobYAML("j1", ""))})
	srv.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Nth: 1, LandLate: true})
	var runs atomic.Int32
	w := testWorker(t, "w1", gitlab.Source{Client: newClient(t, srv)}, registryOf(countRuns(&runs)), nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := emulatorResponse(t, srv, "team/a", "j1")
	if runs.Load() != 1 || r.State != manifest.StateCompleted || r.WorkerID != "w1" || r.RetryCount != 0 {
		t.Fatalf("ran %d times; response %+v", runs.Load(), r)
	}
}

// The same on the local backend: the first claim lands but is reported as
// "already exists".
func TestLateLandingClaimIsOursLocal(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	var once sync.Once
	p := &faulty{Project: tp.p, commit: func(ctx context.Context, msg string, acts []project.Action, next commitFunc) (*project.CommitResult, error) {
		res, err := next(ctx, msg, acts)
		if isClaim(msg) && err == nil {
			once.Do(func() { res, err = nil, &project.ConflictError{Kind: project.AlreadyExists, Path: acts[0].Path} })
		}
		return res, err
	}}
	var runs atomic.Int32
	w := testWorker(t, "w1", single{p}, registryOf(countRuns(&runs)), nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := tp.response("j1"); runs.Load() != 1 || r.State != manifest.StateCompleted || r.RetryCount != 0 {
		t.Fatalf("ran %d times; response %+v", runs.Load(), r)
	}
}

// A claim whose commit failed without saying whether it landed is taken up
// by the next scan when it turns out to be ours.
func TestUnsureClaimAdoptedNextScan(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	var once sync.Once
	p := &faulty{Project: tp.p, commit: func(ctx context.Context, msg string, acts []project.Action, next commitFunc) (*project.CommitResult, error) {
		res, err := next(ctx, msg, acts)
		if isClaim(msg) && err == nil {
			once.Do(func() { res, err = nil, errors.New("commit outcome unknown: 502 Bad Gateway") })
		}
		return res, err
	}}
	var runs atomic.Int32
	w := testWorker(t, "w1", single{p}, registryOf(countRuns(&runs)), nil)
	for round := 0; round < 2; round++ {
		if err := w.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if r := tp.response("j1"); runs.Load() != 1 || r.State != manifest.StateCompleted || r.RetryCount != 0 {
		t.Fatalf("ran %d times; response %+v", runs.Load(), r)
	}
}

// A worker restarted under the same id resumes its own claim at once; a
// claim renewed after it started belongs to a live twin and is left alone.
func TestRestartedWorkerResumesItsClaim(t *testing.T) {
	for _, backend := range []string{"local", "emulator"} {
		t.Run(backend, func(t *testing.T) {
			var src Source
			var write func(id string, r manifest.Response)
			var read func(id string) *manifest.Response
			jobs := "version: 1\njobs:\n" + jobYAML("mine", "") + jobYAML("twin", "")
			if backend == "local" {
				tp := newTestProject(t, jobs)
				src = single{tp.p}
				write = func(id string, r manifest.Response) { tp.userWrite(manifest.ResponsePath(id), string(r.Marshal())) }
				read = tp.response
			} else {
				srv := gitlabtest.New(t)
				srv.CreateProject("team/a")
				srv.UserCommit(t, "team/a", "queue", map[string][]byte{manifest.Path: []byte(jobs)})
				src = gitlab.Source{Client: newClient(t, srv)}
				write = func(id string, r manifest.Response) {
					srv.UserCommit(t, "team/a", "claim", map[string][]byte{manifest.ResponsePath(id): r.Marshal()})
				}
				read = func(id string) *manifest.Response { return emulatorResponse(t, srv, "team/a", id) }
			}
			write("mine", manifest.Response{WorkerID: "w1", OwnerToken: "before-restart", State: manifest.StateRunning, Timestamp: time.Now().Add(-time.Minute)})
			var ran []string
			var mu sync.Mutex
			w := testWorker(t, "w1", src, registryOf(func(_ context.Context, env *JobEnv) (*Outcome, error) {
				mu.Lock()
				ran = append(ran, env.Job.ID)
				mu.Unlock()
				return &Outcome{}, nil
			}), nil)
			write("twin", manifest.Response{WorkerID: "w1", OwnerToken: "live-twin", State: manifest.StateRunning, Timestamp: time.Now().Add(2 * time.Second)})
			if err := w.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if strings.Join(ran, ",") != "mine" {
				t.Fatalf("ran %v, want only the claim from before the restart", ran)
			}
			if r := read("mine"); r.State != manifest.StateCompleted || r.RetryCount != 1 || r.OwnerToken == "before-restart" || r.OwnerToken == "" {
				t.Errorf("resumed claim: %+v", r)
			}
			if r := read("twin"); r.OwnerToken != "live-twin" || r.State != manifest.StateRunning {
				t.Errorf("the twin's claim was touched: %+v", r)
			}
		})
	}
}

// With two slots, a job finishing (and retention running) must not delete
// the folder of the job still running in the other slot.
func TestRetentionSkipsRunningJobs(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("long", ", submitted_at: '2026-01-01T00:00:00Z'")+jobYAML("short", ", submitted_at: '2026-01-02T00:00:00Z'"))
	var scans atomic.Int32
	longStarted := make(chan struct{})
	w := testWorker(t, "w1", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		if env.Job.ID == "short" {
			<-longStarted
			return &Outcome{}, nil
		}
		data := filepath.Join(env.WorkDir, "dataset.jsonl")
		if err := os.WriteFile(data, []byte("{}\n"), 0o644); err != nil {
			return nil, err
		}
		close(longStarted)
		// Scan 1 claimed long, 2 claimed short, 3 followed short's end and
		// its retention.
		for scans.Load() < 3 {
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := os.Stat(data); err != nil {
			return nil, errors.New("dataset deleted while the job ran")
		}
		return &Outcome{}, nil
	}), func(c *Config) {
		c.KeepJobs = 1
		c.Slots = []Slot{{Name: "a"}, {Name: "b"}}
		c.Hooks.ScanDone = func(time.Duration) { scans.Add(1) }
	})
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := tp.response("long"); r.State != manifest.StateCompleted {
		t.Fatalf("long: %+v", r)
	}
}

// A heartbeat stuck on a silent server gives up after CallTimeout, so the
// lease lock is free for the job's own commits.
func TestStuckHeartbeatReleasesLeaseLock(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	stuck := make(chan struct{})
	var once sync.Once
	p := &faulty{Project: tp.p, commit: func(ctx context.Context, msg string, acts []project.Action, next commitFunc) (*project.CommitResult, error) {
		if strings.HasPrefix(msg, "Heartbeat") {
			once.Do(func() { close(stuck) })
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return next(ctx, msg, acts)
	}}
	w := testWorker(t, "w1", single{p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		<-stuck
		path := manifest.JobDir("j1") + "/checkpoints/resume.pt"
		if err := env.Commit(ctx, "Checkpoint", []project.Action{{Kind: project.Create, Path: path, Content: []byte("ckpt")}}); err != nil {
			return nil, err
		}
		return &Outcome{}, nil
	}), func(c *Config) {
		c.HeartbeatInterval, c.ClaimTimeout, c.CallTimeout = 20*time.Millisecond, time.Hour, 50*time.Millisecond
	})
	finishes(t, "a job whose heartbeat hangs", func() {
		if err := w.Run(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if r := tp.response("j1"); r.State != manifest.StateCompleted {
		t.Fatalf("response %+v", r)
	}
}

// Heartbeats failing until the claim is about to go stale stop the job
// with a cause saying so, and nothing more is written.
func TestSelfFencing(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	p := &faulty{Project: tp.p, commit: func(ctx context.Context, msg string, acts []project.Action, next commitFunc) (*project.CommitResult, error) {
		if isClaim(msg) {
			return next(ctx, msg, acts)
		}
		return nil, errors.New("503 Service Unavailable")
	}}
	var cause error
	w := testWorker(t, "w1", single{p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		<-ctx.Done()
		cause = context.Cause(ctx)
		return nil, cause
	}), func(c *Config) { c.HeartbeatInterval, c.ClaimTimeout = 20*time.Millisecond, 200*time.Millisecond })
	finishes(t, "a job that cannot renew its lease", func() {
		if err := w.Run(context.Background()); err != nil {
			t.Error(err)
		}
	})
	var le *LeaseExpiredError
	if !errors.As(cause, &le) || !errors.Is(cause, ErrLeaseLost) || !strings.Contains(cause.Error(), "lease not renewed") {
		t.Fatalf("job stopped with %v", cause)
	}
	if r := tp.response("j1"); r.State != manifest.StateRunning || len(tp.commits()) != 1 {
		t.Fatalf("after fencing: %+v, %d commits", r, len(tp.commits()))
	}
}

// Failed cancel checks are logged, once per run of failures within the
// rate limit, with the error.
func TestCancelCheckErrorsLogged(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	var failed atomic.Int32
	var jobRunning atomic.Bool
	p := &faulty{Project: tp.p, stat: func(ctx context.Context, path string, next func(context.Context, string) (*project.FileInfo, error)) (*project.FileInfo, error) {
		if path == manifest.Path && jobRunning.Load() {
			failed.Add(1)
			return nil, errors.New("connection reset by peer")
		}
		return next(ctx, path)
	}}
	var logs syncBuffer
	w := testWorker(t, "w1", single{p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		jobRunning.Store(true)
		for failed.Load() < 5 {
			time.Sleep(5 * time.Millisecond)
		}
		jobRunning.Store(false)
		return &Outcome{}, nil
	}), nil)
	w.log = slog.New(slog.NewTextHandler(&logs, nil))
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if n := strings.Count(out, "cancel check failed"); n != 1 || !strings.Contains(out, "connection reset by peer") {
		t.Fatalf("%d cancel-check warnings after %d failures:\n%s", n, failed.Load(), out)
	}
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

func TestClaimTimeoutAtLeastThreeBeats(t *testing.T) {
	err := Config{HeartbeatInterval: 5 * time.Minute, ClaimTimeout: 10 * time.Minute}.Validate()
	if err == nil || !strings.Contains(err.Error(), "claim timeout 10m0s is shorter than 3 heartbeat intervals (5m0s)") {
		t.Fatalf("got %v", err)
	}
	if err := (Config{HeartbeatInterval: 5 * time.Minute, ClaimTimeout: 15 * time.Minute}).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Config{ClaimTimeout: 10 * time.Minute}).Validate(); err == nil {
		t.Fatal("the default heartbeat (5m) with a 10m claim timeout was accepted")
	}
}

// The final write after a shutdown gets what is left of the stop timeout,
// not the usual five minutes.
func TestFinishContextBoundedByStopTimeout(t *testing.T) {
	w := testWorker(t, "w1", single{newTestProject(t, "").p}, nil, func(c *Config) { c.StopTimeout = 30 * time.Second })
	running, cancel := context.WithCancel(context.Background())
	fctx, done := w.finishContext(running)
	if dl, ok := fctx.Deadline(); !ok || time.Until(dl) < 4*time.Minute {
		t.Errorf("final write before any shutdown: deadline %v", dl)
	}
	done()
	w.mu.Lock()
	w.stopAt = time.Now()
	w.mu.Unlock()
	cancel()
	fctx, done = w.finishContext(running)
	defer done()
	if dl, ok := fctx.Deadline(); !ok || time.Until(dl) > 30*time.Second {
		t.Errorf("final write during a shutdown: deadline %v, want within the 30s stop timeout", dl)
	}
}

// readCounter counts the content reads of each path.
type readCounter struct {
	project.Project
	mu    sync.Mutex
	reads map[string]int
}

func (r *readCounter) ReadFile(ctx context.Context, path string) (*project.File, error) {
	r.mu.Lock()
	r.reads[path]++
	r.mu.Unlock()
	return r.Project.ReadFile(ctx, path)
}

// A response.yaml over the worker's max-manifest-bytes is judged by its
// size, as the manifest is, without fetching it; the job is left alone.
func TestOversizedResponseNotRead(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	stale := string(claimFile(manifest.StateRunning, 2*time.Hour, 0, false)) + "# " + strings.Repeat("x", 4096) + "\n"
	tp.userWrite(manifest.ResponsePath("j1"), stale)
	p := &readCounter{Project: tp.p, reads: map[string]int{}}
	var runs atomic.Int32
	w := testWorker(t, "w1", single{p}, registryOf(countRuns(&runs)), func(c *Config) {
		c.Limits = limits.Limits{ManifestBytes: 2048}
	})
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := p.reads[manifest.ResponsePath("j1")]; n != 0 || runs.Load() != 0 {
		t.Fatalf("response.yaml over the limit read %d times; job run %d times", n, runs.Load())
	}
	if r := tp.response("j1"); r.WorkerID != "other" {
		t.Fatalf("the claim was taken over: %+v", r)
	}
}
