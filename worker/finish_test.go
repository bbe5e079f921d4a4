package worker

import (
	"bytes"
	"context"
	"fmt"
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

// A shut-down job is written with a state the job panel knows (running,
// with the reason in termination_reason), and another worker takes it over
// at once, long before the claim timeout.
func TestShutdownHandsBackWithKnownState(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	shutDownWhileRunning(t, tp)
	raw, err := os.ReadFile(filepath.Join(tp.dir, manifest.ResponsePath("j1")))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("interrupted")) {
		t.Errorf("response.yaml mentions a state the panel does not know:\n%s", raw)
	}
	r := tp.response("j1")
	if r.State != manifest.StateRunning || r.TerminationReason == nil || *r.TerminationReason != manifest.ReasonHandedBack ||
		!strings.Contains(r.StatusMessage, "another worker") {
		t.Fatalf("after shutdown: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(tp.dir, manifest.JobDir("j1"), "models/partial.pt")); err != nil {
		t.Errorf("partial outputs not committed: %v", err)
	}
	// The claim timeout is an hour: only the hand-back lets w2 in now.
	ran := false
	w2 := testWorker(t, "w2", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		ran = true
		return &Outcome{}, nil
	}), nil)
	if err := w2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := tp.response("j1"); !ran || r.State != manifest.StateCompleted || r.WorkerID != "w2" || r.TerminationReason != nil {
		t.Fatalf("takeover: ran %v, %+v", ran, r)
	}
	// The log continues the first worker's.
	logs, _ := os.ReadFile(filepath.Join(tp.dir, manifest.JobDir("j1"), "logs.txt"))
	if first, taken := bytes.Index(logs, []byte("worker=w1")), bytes.Index(logs, []byte("--- taken over ---")); first < 0 || taken < first || !bytes.Contains(logs[taken:], []byte("worker=w2")) {
		t.Errorf("logs.txt after takeover:\n%s", logs)
	}
}

func TestHandedBackIsStaleAtOnce(t *testing.T) {
	now := time.Now()
	back := manifest.Response{State: manifest.StateRunning, Timestamp: now, TerminationReason: manifest.Ptr(manifest.ReasonHandedBack)}
	running := manifest.Response{State: manifest.StateRunning, Timestamp: now}
	legacy := manifest.Response{State: "interrupted", Timestamp: now}
	if !back.Stale(now, time.Hour) || !legacy.Stale(now, time.Hour) || running.Stale(now, time.Hour) {
		t.Errorf("stale: handed back %v, legacy %v, running %v", back.Stale(now, time.Hour), legacy.Stale(now, time.Hour), running.Stale(now, time.Hour))
	}
	if back.Terminal() {
		t.Error("a handed-back job is not over")
	}
}

// The final write of a canceled job fails (GitLab answers 503 to every
// commit); a later scan's retry lands it, though scans skip canceled jobs.
func TestCanceledJobFinalWriteRetriedLater(t *testing.T) {
	srv := gitlabtest.New(t)
	srv.CreateProject("team/a")
	srv.UserCommit(t, "team/a", "queue", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" + jobYAML("c1", ""))})
	started := make(chan string, 1)
	w := testWorker(t, "w1", gitlab.Source{Client: newClient(t, srv)}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		out, err := blockUntilDone(started)(ctx, env)
		srv.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Rate: 1, Status: 503})
		return out, err
	}), nil)
	done := make(chan error)
	go func() { done <- w.Run(context.Background()) }()
	<-started
	srv.UserCommit(t, "team/a", "cancel", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" + jobYAML("c1", ", canceled: true"))})
	// Run keeps retrying a pending write (every 30s here); once the write
	// is queued, stop it to drive the retries from the test.
	finishes(t, "queueing the failed write", func() {
		for w.finishes.len() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	})
	w.Drain()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r := emulatorResponse(t, srv, "team/a", "c1"); r.State != manifest.StateRunning {
		t.Fatalf("the failed write landed anyway: %+v", r)
	}
	if len(w.finishes.items) != 1 {
		t.Fatalf("%d final writes kept for retry", len(w.finishes.items))
	}

	// Still failing: kept for the next scan.
	w.retryFinishes(context.Background())
	if len(w.finishes.items) != 1 {
		t.Fatalf("a failed retry dropped the write (%d kept)", len(w.finishes.items))
	}
	srv.ClearFaults()
	w.retryFinishes(context.Background()) // what the scan loop calls before each scan
	r := emulatorResponse(t, srv, "team/a", "c1")
	if r.State != manifest.StateCanceled || r.TerminationReason == nil || *r.TerminationReason != manifest.ReasonCanceled {
		t.Fatalf("after the retry: %+v", r)
	}
	if _, ok := srv.ReadFile("team/a", manifest.JobDir("c1")+"/models/partial.pt"); !ok {
		t.Error("partial outputs not committed by the retry")
	}
	if logs, ok := srv.ReadFile("team/a", manifest.JobDir("c1")+"/logs.txt"); !ok || !strings.Contains(string(logs), "job ended") {
		t.Errorf("logs.txt = %q", logs)
	}
	if len(w.finishes.items) != 0 {
		t.Errorf("landed write still queued")
	}
}

// A retry of a write another worker overtook is dropped, never forced.
func TestRetriedFinalWriteDroppedWhenLeaseLost(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	l, err := claim(context.Background(), tp.p, "j1", owner{workerID: "w1", token: "t1"}, limits.Default(), time.Now(), nil, manifest.Response{State: manifest.StateRunning})
	if err != nil {
		t.Fatal(err)
	}
	w := testWorker(t, "w1", single{tp.p}, nil, nil)
	other := manifest.Response{WorkerID: "w2", State: manifest.StateRunning, Timestamp: time.Now(), RetryCount: 1}
	tp.userWrite(manifest.ResponsePath("j1"), string(other.Marshal()))
	w.keepForRetry(&finalWrite{lease: l, proj: tp.p, job: &manifest.Job{ID: "j1"}, state: manifest.StateCompleted,
		prog: &progressBox{}, redact: func(s string) string { return s }, logs: func() []byte { return []byte("log\n") }, now: time.Now})
	w.retryFinishes(context.Background())
	if len(w.finishes.items) != 0 {
		t.Error("a write whose lease is lost stays queued")
	}
	if r := tp.response("j1"); r.WorkerID != "w2" || r.State != manifest.StateRunning {
		t.Fatalf("the retry overwrote another worker's claim: %+v", r)
	}
}

// conflictingChanges fails with a moved branch a few times, then lands.
type conflictingChanges struct {
	fails int
	calls int
}

func (c *conflictingChanges) Commit(ctx context.Context, p project.Project, message string, g Guard) error {
	c.calls++
	if c.calls <= c.fails {
		return &project.ConflictError{Kind: project.BranchMoved}
	}
	acts := g.Final(Written{Result: map[string]any{"cells_transcribed": 1}, Message: "completed: 1 cell"})
	res, err := p.Commit(ctx, message, acts)
	if err == nil {
		g.Landed(res)
	}
	return err
}

func TestFinalWriteRetriesMovedBranch(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	ch := &conflictingChanges{fails: 3}
	w := testWorker(t, "w1", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		return &Outcome{Result: map[string]any{"cells_transcribed": 2, "model": "m"}, Changes: ch}, nil
	}), nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := tp.response("j1")
	if ch.calls != 4 || r.State != manifest.StateCompleted || r.Result["cells_transcribed"] != 1 || r.Result["model"] != "m" || r.StatusMessage != "completed: 1 cell" {
		t.Fatalf("after %d calls: %+v", ch.calls, r)
	}
}

// A job failed before it started gets a logs.txt saying why, appended to
// what earlier workers left.
func TestFailedBeforeStartLog(t *testing.T) {
	tp := newTestProject(t, "")
	w := testWorker(t, "w1", single{tp.p}, nil, nil)
	job := &manifest.Job{ID: "bad", JobType: "tts", Mode: "training"}
	why := "invalid job: epochs: must be a whole number, got \"ten\" (token glpat-SECRET-TOKEN)"
	resp, act := w.failedBeforeStart(context.Background(), tp.p, job, why)
	resp.WorkerID = "w1"
	if _, err := tp.p.Commit(context.Background(), "claim", []project.Action{
		{Kind: project.Create, Path: manifest.ResponsePath("bad"), Content: resp.Marshal()}, act,
	}); err != nil {
		t.Fatal(err)
	}
	logs, err := os.ReadFile(filepath.Join(tp.dir, manifest.JobDir("bad"), "logs.txt"))
	if err != nil || !strings.Contains(string(logs), "job failed before it started") || !strings.Contains(string(logs), "must be a whole number") || strings.Contains(string(logs), "SECRET") {
		t.Fatalf("logs.txt = %q, %v", logs, err)
	}
	if r := tp.response("bad"); r.State != manifest.StateFailed || r.ErrorMessage == nil || !strings.Contains(*r.ErrorMessage, "must be a whole number") {
		t.Fatalf("response %+v", r)
	}
	// Taken over past the retry limit: the earlier log is kept.
	tp.userWrite(manifest.JobDir("bad")+"/logs.txt", "earlier worker's log\n")
	_, act = w.failedBeforeStart(context.Background(), tp.p, job, "job abandoned 4 times")
	if act.Kind != project.Update || !strings.HasPrefix(string(act.Content), "earlier worker's log\n") || !strings.Contains(string(act.Content), "abandoned 4 times") {
		t.Errorf("takeover log action %s %q", act.Kind, act.Content)
	}
}

// syncBuffer is a console a test can read while the worker writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A shutdown hands back a job that was stopped, not one whose handler
// finished its work anyway.
func TestShutdownVerdict(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(ErrShutdown)
	w := &Worker{}
	if state, reason, _ := w.verdict(ctx, context.Cause(ctx)); state != manifest.StateRunning || reason != manifest.ReasonHandedBack {
		t.Errorf("stopped handler: %s %s", state, reason)
	}
	if state, _, _ := w.verdict(ctx, nil); state != manifest.StateCompleted {
		t.Errorf("finished handler: %s", state)
	}
}

// A job canceled while handed back (no live worker holds it) is closed by
// the next scan, not left "running" for ever; it does not run.
func TestCanceledHandedBackJobIsClosed(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	shutDownWhileRunning(t, tp)
	if r := tp.response("j1"); !r.HandedBack() {
		t.Fatalf("not handed back: %+v", r)
	}
	tp.userWrite(manifest.Path, "version: 1\njobs:\n"+jobYAML("j1", ", canceled: true"))
	ran := false
	w2 := testWorker(t, "w2", single{tp.p}, registryOf(func(context.Context, *JobEnv) (*Outcome, error) {
		ran = true
		return &Outcome{}, nil
	}), nil)
	if err := w2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := tp.response("j1")
	if ran || r.State != manifest.StateCanceled || r.TerminationReason == nil || *r.TerminationReason != manifest.ReasonCanceled {
		t.Fatalf("ran %v, response %+v", ran, r)
	}
}

// shutDownWhileRunning runs worker w1 on tp and shuts it down while its job
// is running.
func shutDownWhileRunning(t *testing.T, tp *testProject) {
	t.Helper()
	started := make(chan string, 1)
	w1 := testWorker(t, "w1", single{tp.p}, registryOf(blockUntilDone(started)), nil)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w1.Run(ctx) }()
	<-started
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A final write reported as failed that had in fact landed is found
// written by its retry: our own ended response.yaml is no other worker's.
func TestRetriedFinalWriteThatLanded(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	var tries atomic.Int32
	p := &faulty{Project: tp.p, commit: func(ctx context.Context, msg string, acts []project.Action, next commitFunc) (*project.CommitResult, error) {
		res, err := next(ctx, msg, acts)
		if strings.HasPrefix(msg, "Job j1 completed") && tries.Add(1) == 1 && err == nil {
			return nil, fmt.Errorf("%w: 502 Bad Gateway", project.ErrOutcomeUnknown)
		}
		return res, err
	}}
	var runs atomic.Int32
	w := testWorker(t, "w1", single{p}, registryOf(countRuns(&runs)), nil)
	w.retryWait = 10 * time.Millisecond
	var logs syncBuffer
	w.log = slog.New(slog.NewTextHandler(&logs, nil))
	finishes(t, "Run", func() {
		if err := w.Run(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if r := tp.response("j1"); runs.Load() != 1 || r.State != manifest.StateCompleted || r.WorkerID != "w1" {
		t.Fatalf("ran %d times; response %+v", runs.Load(), r)
	}
	if out := logs.String(); strings.Contains(out, "another worker owns the job") || !strings.Contains(out, "an earlier try landed") {
		t.Errorf("log:\n%s", out)
	}
	if n := w.finishes.len(); n != 0 {
		t.Errorf("%d final writes still pending", n)
	}
}
