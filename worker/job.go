package worker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"gpu-worker/codex"
	"gpu-worker/engine"
	"gpu-worker/manifest"
	"gpu-worker/project"
)

// finishTimeout bounds the final commit, which runs after the job's
// context is done.
const finishTimeout = 5 * time.Minute

// runJob runs a claimed job to its end and writes the outcome.
func (w *Worker) runJob(parent context.Context, c *candidate, l *lease, slot Slot) {
	job, p := c.job, c.proj
	started := w.cfg.Now()
	if w.cfg.Hooks.JobStarted != nil {
		w.cfg.Hooks.JobStarted(job)
	}
	dir := filepath.Join(w.cfg.WorkDir, "job_"+job.ID+"_"+started.UTC().Format("2006-01-02T15-04-05"))
	jl, err := openJobLog(dir, job.ID, w.cfg.Secrets, w.log.Handler())
	if err != nil {
		w.log.Error("job log", "err", err)
		jl = discardJobLog(job.ID, w.cfg.Secrets, w.log.Handler())
	}
	defer jl.Close()
	log := jl.logger.With("job", job.ID)
	log.Info("job started", "project", p.Name(), "kind", job.Kind(), "worker", w.cfg.WorkerID, "slot", slot.Name, "retry", l.resp.RetryCount)

	// Shutdown reaches the job as a cause of its own; the job context is
	// otherwise independent of the worker's, so finishing still works.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	defer cancel(nil)
	stopShutdown := context.AfterFunc(parent, func() { cancel(ErrShutdown) })
	defer stopShutdown()
	if !job.Timeout.IsZero() {
		t := time.AfterFunc(time.Until(job.Timeout), func() { cancel(&TimeoutError{At: job.Timeout}) })
		defer t.Stop()
	}

	prog := &progressBox{}
	env := &JobEnv{
		Job: job, Project: p, WorkDir: dir, Log: log, LogWriter: jl.raw,
		Engine: w.engineFor(slot), RetryCount: l.resp.RetryCount, Slot: slot,
		report: func(pr Progress) {
			prog.set(pr)
			if w.cfg.Hooks.Progress != nil {
				w.cfg.Hooks.Progress(job, pr)
			}
		},
		commit: func(cctx context.Context, message string, actions []project.Action) error {
			err := l.write(cctx, message, func(r *manifest.Response) { prog.apply(r, w.cfg.Now()) }, actions)
			if errors.Is(err, ErrLeaseLost) {
				cancel(ErrLeaseLost)
			}
			return err
		},
	}

	loops, stopLoops := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.heartbeat(loops, l, p, prog, jl, cancel, log) }()
	go func() { defer wg.Done(); w.watchCancel(loops, p, job.ID, cancel, log) }()

	out, runErr := w.callHandler(ctx, env)
	stopLoops()
	wg.Wait()

	state, reason, errMsg := w.verdict(ctx, runErr)
	if errors.Is(context.Cause(ctx), ErrLeaseLost) {
		log.Warn("lease lost: another worker owns the job now; writing nothing")
		w.finished(job, "lost", started)
		return
	}
	log.Info("job ended", "state", state, "reason", reason, "error", errMsg)
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(parent), finishTimeout)
	defer fcancel()
	if err := w.finish(fctx, l, p, job, out, state, reason, errMsg, prog, jl); err != nil {
		log.Error("could not write the job's outcome", "err", err)
	}
	w.finished(job, state, started)
}

func (w *Worker) finished(job *manifest.Job, state string, started time.Time) {
	if w.cfg.Hooks.JobFinished != nil {
		w.cfg.Hooks.JobFinished(job, state, w.cfg.Now().Sub(started))
	}
}

// callHandler runs the handler, turning a panic into an error.
func (w *Worker) callHandler(ctx context.Context, env *JobEnv) (out *Outcome, err error) {
	h, ok := w.handlers[env.Job.Kind()]
	if !ok {
		return nil, fmt.Errorf("no handler for %s", env.Job.Kind())
	}
	defer func() {
		if r := recover(); r != nil {
			env.Log.Error("handler panicked", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error: %v", r)
		}
	}()
	return h.Run(ctx, env)
}

// verdict maps how the job ended to response.yaml's state and reason.
func (w *Worker) verdict(ctx context.Context, runErr error) (state, reason, errMsg string) {
	cause := context.Cause(ctx)
	var te *TimeoutError
	switch {
	case errors.Is(cause, ErrCanceledByUser):
		return manifest.StateCanceled, manifest.ReasonCanceled, ""
	case errors.Is(cause, ErrRemoved):
		return manifest.StateCanceled, manifest.ReasonRemoved, ""
	case errors.As(cause, &te):
		return manifest.StateFailed, "", te.Error()
	case errors.Is(cause, ErrShutdown):
		return manifest.StateInterrupted, "worker shut down", ""
	case runErr != nil:
		return manifest.StateFailed, "", runErr.Error()
	}
	return manifest.StateCompleted, "", ""
}

// finish writes the terminal response.yaml, the job log and the handler's
// outputs in one commit guarded by the lease.
func (w *Worker) finish(ctx context.Context, l *lease, p project.Project, job *manifest.Job, out *Outcome,
	state, reason, errMsg string, prog *progressBox, jl *jobLog) error {
	now := w.cfg.Now()
	update := func(r *manifest.Response) {
		prog.apply(r, now)
		r.State = state
		r.Timestamp = now
		r.ExpectedCompletion = nil
		if errMsg != "" {
			r.ErrorMessage = manifest.Ptr(jl.redact(errMsg))
		}
		if reason != "" {
			r.TerminationReason = manifest.Ptr(reason)
		}
		r.StatusMessage = statusFor(state, reason, errMsg)
		if out != nil {
			if out.Result != nil {
				r.Result = out.Result
			}
			if out.Message != "" && state == manifest.StateCompleted {
				r.StatusMessage = out.Message
			}
		}
	}
	msg := fmt.Sprintf("Job %s %s [skip ci]", job.ID, state)
	logs := jl.action(ctx, p)
	var actions []project.Action
	var patches map[string][]codex.Patch
	var bases map[string]*codex.Notebook
	if out != nil {
		actions, patches, bases = out.Actions, out.Patches, out.Bases
	}
	err := w.commitFinal(ctx, l, p, msg, update, append(actions, logs), patches, bases)
	if err == nil || errors.Is(err, ErrLeaseLost) {
		return err
	}
	// The outputs could not land (too large, rejected...): say so rather
	// than leave the job running until it goes stale.
	jl.logger.Error("results could not be committed", "err", err)
	failMsg := "could not commit results: " + err.Error()
	return l.write(ctx, fmt.Sprintf("Job %s failed [skip ci]", job.ID), func(r *manifest.Response) {
		update(r)
		r.State = manifest.StateFailed
		r.ErrorMessage = manifest.Ptr(jl.redact(failMsg))
		r.StatusMessage = statusFor(manifest.StateFailed, "", failMsg)
	}, []project.Action{jl.action(ctx, p)})
}

func (w *Worker) commitFinal(ctx context.Context, l *lease, p project.Project, msg string,
	update func(*manifest.Response), actions []project.Action, patches map[string][]codex.Patch, bases map[string]*codex.Notebook) error {
	if len(patches) == 0 {
		return l.write(ctx, msg, update, actions)
	}
	for attempt := 0; ; attempt++ {
		final, next := l.finalAction(update)
		res, err := codex.Commit(ctx, p, msg, patches, append([]project.Action{final}, actions...), codex.CommitOptions{Bases: bases, Logger: w.log})
		if err == nil {
			l.mu.Lock()
			l.resp = next
			if res != nil && len(res.Commits) > 0 {
				l.lastCommitID = res.Commits[len(res.Commits)-1]
			}
			l.mu.Unlock()
			return nil
		}
		c := project.ConflictOf(err)
		if c == nil || attempt >= commitRetries {
			return err
		}
		if c.Path == manifest.ResponsePath(l.jobID) {
			l.mu.Lock()
			rerr := l.recheck(ctx)
			l.mu.Unlock()
			if rerr != nil {
				return rerr
			}
		}
	}
}

func statusFor(state, reason, errMsg string) string {
	switch state {
	case manifest.StateCompleted:
		return "completed"
	case manifest.StateCanceled:
		return "canceled: " + reason
	case manifest.StateInterrupted:
		return "interrupted by a worker shutdown; another worker will resume it"
	}
	return "failed: " + errMsg
}

// progressBox holds the latest progress between heartbeats.
type progressBox struct {
	mu sync.Mutex
	p  Progress
	ok bool
}

// set records p; a report without epochs (a phase's status line) keeps
// the epochs already known.
func (b *progressBox) set(p Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.Epochs == 0 && b.ok {
		p.Epoch, p.Epochs = b.p.Epoch, b.p.Epochs
	}
	b.p, b.ok = p, true
}

func (b *progressBox) apply(r *manifest.Response, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.ok {
		return
	}
	if b.p.Epochs > 0 {
		r.EpochsCompleted = manifest.Ptr(b.p.Epoch)
	}
	if b.p.ETA > 0 {
		r.ExpectedCompletion = manifest.Ptr(now.Add(b.p.ETA))
	}
	if b.p.Message != "" {
		r.StatusMessage = b.p.Message
	}
}

func (w *Worker) engineFor(slot Slot) *engine.Runner {
	r := w.cfg.Engine
	r.Env = append(append([]string{}, r.Env...), slot.Env...)
	return &r
}
