package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/manifest"
	"gpu-worker/project"
)

// runInBackground runs w; the channel yields Run's error.
func runInBackground(w *Worker) <-chan error {
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	return done
}

func idleWorker(t *testing.T, src Source, reg Registry, idle time.Duration) *Worker {
	return testWorker(t, "w1", src, reg, func(c *Config) {
		c.LoopInterval = 20 * time.Millisecond
		c.ExitWhenIdle = idle
	})
}

// On an empty queue the worker exits after the idle time, not before.
func TestExitWhenIdleOnEmptyQueue(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs: []\n")
	start := time.Now()
	done := runInBackground(idleWorker(t, single{tp.p}, registryOf(nil), 300*time.Millisecond))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Fatalf("exited after %v, before the idle time", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("an idle worker did not exit")
	}
}

// A job longer than the idle time keeps the worker; the idle time counts
// from the job's end.
func TestExitWhenIdleNotDuringAJob(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("long", ""))
	started, release := make(chan struct{}), make(chan struct{})
	done := runInBackground(idleWorker(t, single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		close(started)
		<-release
		return &Outcome{}, nil
	}), 200*time.Millisecond))
	<-started
	select {
	case err := <-done:
		t.Fatalf("exited during a job (err %v)", err)
	case <-time.After(time.Second): // five idle times
	}
	ended := time.Now()
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(ended); d < 200*time.Millisecond {
			t.Errorf("exited %v after the job, before the idle time", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after the job")
	}
	if r := tp.response("long"); r.State != manifest.StateCompleted {
		t.Fatalf("job %s", r.State)
	}
}

// A final write that does not land keeps the worker until it does.
func TestExitWhenIdleNotWhileAnOutcomeIsPending(t *testing.T) {
	srv := gitlabtest.New(t)
	srv.CreateProject("team/a")
	srv.UserCommit(t, "team/a", "queue", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" + jobYAML("j1", ""))})
	finishing := make(chan struct{})
	done := runInBackground(idleWorker(t, gitlab.NewSource(newClient(t, srv), nil), registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		// From here on, every commit fails: the outcome cannot land.
		srv.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Rate: 1, Status: 500})
		close(finishing)
		return &Outcome{}, nil
	}), 200*time.Millisecond))
	<-finishing
	select {
	case err := <-done:
		t.Fatalf("exited with the outcome unwritten (err %v)", err)
	case <-time.After(2 * time.Second):
	}
	if r := emulatorResponse(t, srv, "team/a", "j1"); r.State != manifest.StateRunning {
		t.Fatalf("outcome landed despite the faults: %s", r.State)
	}
	srv.ClearFaults()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no exit once the outcome could land")
	}
	if r := emulatorResponse(t, srv, "team/a", "j1"); r.State != manifest.StateCompleted {
		t.Fatalf("job %s after the exit", r.State)
	}
}

// RunOne runs the job it is given, whatever its priority, and nothing else.
func TestRunOneRunsThatJobOnly(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("urgent", ", priority: 10")+jobYAML("low", ", priority: -5")+jobYAML("other", ""))
	var ran []string
	w := testWorker(t, "w1", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		ran = append(ran, env.Job.ID)
		return &Outcome{}, nil
	}), nil)
	if err := w.RunOne(context.Background(), "low"); err != nil {
		t.Fatal(err)
	}
	if len(ran) != 1 || ran[0] != "low" || tp.response("low").State != manifest.StateCompleted {
		t.Fatalf("ran %v", ran)
	}
	for _, c := range tp.commits() {
		if !strings.Contains(c.Message, "low") {
			t.Errorf("commit %q is not about the job asked for", c.Message)
		}
	}
}

// RunOne says why it cannot run a job, and touches no one else's claim.
func TestRunOneRefusals(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("held", "")+jobYAML("done", "")+jobYAML("stopped", ", canceled: true")+jobYAML("fails", "")+
		"  - {job_id: bad, job_type: tts, mode: training, model: {type: StableTTS}, epochs: ten}\n")
	tp.userWrite(manifest.ResponsePath("held"), string(claimFile(manifest.StateRunning, time.Minute, 0, false)))
	tp.userWrite(manifest.ResponsePath("done"), string(claimFile(manifest.StateCompleted, time.Minute, 0, false)))
	w := testWorker(t, "w1", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		if env.Job.ID != "fails" {
			t.Errorf("ran %s", env.Job.ID)
		}
		return nil, context.DeadlineExceeded
	}), nil)
	for id, want := range map[string]string{
		"held":    "claimed by worker other",
		"done":    "already completed",
		"stopped": "canceled",
		"missing": "in no project's manifest",
		"bad":     "closed instead of run: invalid job",
		"fails":   "ended failed",
	} {
		err := w.RunOne(context.Background(), id)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", id, err, want)
		}
	}
	if r := tp.response("held"); r.WorkerID != "other" || r.State != manifest.StateRunning {
		t.Errorf("held: %+v", r)
	}
	if r := tp.response("bad"); r.State != manifest.StateFailed {
		t.Errorf("bad: %s", r.State)
	}
}

// Scans that fail see no job: a worker cut off from GitLab still exits
// (the observer, keeping its last counts, has another started).
func TestExitWhenIdleWhileGitLabIsDown(t *testing.T) {
	srv := gitlabtest.New(t)
	srv.CreateProject("team/a")
	srv.InjectFault(gitlabtest.Fault{Endpoint: "GET projects", Rate: 1, Status: 503})
	done := runInBackground(idleWorker(t, gitlab.NewSource(newClient(t, srv), nil), registryOf(nil), 300*time.Millisecond))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a worker that cannot scan never exited")
	}
	if srv.FaultsFired() == 0 {
		t.Fatal("no scan failed")
	}
}

// A worker that processes what is available and exits waits for a final
// write whose commit outcome was unknown: the retry lands it before Run
// returns, so the job does not show running until the claim timeout.
func TestLoopOnceWaitsForPendingOutcome(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	// The write and its first retries are lost (the scan loop retries
	// before every scan, so one loss alone would land on the next).
	var lost atomic.Int32
	p := &faulty{Project: tp.p, commit: func(ctx context.Context, msg string, acts []project.Action, next commitFunc) (*project.CommitResult, error) {
		if strings.HasPrefix(msg, "Job j1 completed") && lost.Add(1) <= 4 {
			return nil, fmt.Errorf("%w: 502 Bad Gateway", project.ErrOutcomeUnknown)
		}
		return next(ctx, msg, acts)
	}}
	var runs atomic.Int32
	w := testWorker(t, "w1", single{p}, registryOf(countRuns(&runs)), nil)
	w.retryWait = 20 * time.Millisecond
	select {
	case err := <-runInBackground(w):
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no exit")
	}
	if r := tp.response("j1"); runs.Load() != 1 || r.State != manifest.StateCompleted {
		t.Fatalf("ran %d times; exited with the job %s", runs.Load(), r.State)
	}
	if lost.Load() != 5 {
		t.Errorf("%d tries of the final write, want 5", lost.Load())
	}
	if n := w.finishes.len(); n != 0 {
		t.Errorf("%d final writes still pending", n)
	}
}

// After a shutdown, RunOne's final write gets what is left of the stop
// timeout, as Run's does, not the usual five minutes.
func TestRunOneFinalWriteBoundedByStopTimeout(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	deadlines := make(chan time.Time, 1)
	p := &faulty{Project: tp.p, commit: func(ctx context.Context, msg string, acts []project.Action, next commitFunc) (*project.CommitResult, error) {
		if strings.HasPrefix(msg, "Job j1 ") {
			dl, _ := ctx.Deadline()
			deadlines <- dl
		}
		return next(ctx, msg, acts)
	}}
	started := make(chan string, 1)
	w := testWorker(t, "w1", single{p}, registryOf(blockUntilDone(started)), func(c *Config) { c.StopTimeout = 30 * time.Second })
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.RunOne(ctx, "j1") }()
	<-started
	stop()
	if err := <-done; err == nil {
		t.Fatal("a job interrupted by the shutdown reported success")
	}
	dl := <-deadlines
	if dl.IsZero() || time.Until(dl) > 30*time.Second {
		t.Errorf("final write after the shutdown: deadline %v, want within the 30s stop timeout", time.Until(dl))
	}
	if r := tp.response("j1"); r.TerminationReason == nil || *r.TerminationReason != manifest.ReasonHandedBack {
		t.Errorf("job not handed back: %+v", r)
	}
}

// RunOne does not give up on a claim whose commit failed without saying
// whether it landed: it looks again, adopts the claim when it is ours,
// and claims once more when it did not land.
func TestRunOneUnsureClaim(t *testing.T) {
	for _, landed := range []bool{true, false} {
		t.Run(fmt.Sprintf("landed=%v", landed), func(t *testing.T) {
			tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
			var claims atomic.Int32
			p := &faulty{Project: tp.p, commit: func(ctx context.Context, msg string, acts []project.Action, next commitFunc) (*project.CommitResult, error) {
				if !isClaim(msg) || claims.Add(1) > 1 {
					return next(ctx, msg, acts)
				}
				if landed {
					if _, err := next(ctx, msg, acts); err != nil {
						return nil, err
					}
				}
				return nil, errors.New("commit outcome unknown: 502 Bad Gateway")
			}}
			var runs atomic.Int32
			w := testWorker(t, "w1", single{p}, registryOf(countRuns(&runs)), nil)
			w.retryWait = 10 * time.Millisecond
			if err := w.RunOne(context.Background(), "j1"); err != nil {
				t.Fatal(err)
			}
			r := tp.response("j1")
			if runs.Load() != 1 || r.State != manifest.StateCompleted || r.WorkerID != "w1" || r.RetryCount != 0 {
				t.Fatalf("ran %d times; response %+v", runs.Load(), r)
			}
			want := int32(1) // adopted: no second claim commit
			if !landed {
				want = 2
			}
			if claims.Load() != want {
				t.Errorf("%d claim commits, want %d", claims.Load(), want)
			}
		})
	}
}
