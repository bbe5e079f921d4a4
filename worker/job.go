package worker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"gpu-worker/manifest"
	"gpu-worker/project"
)

// runJob runs a claimed job to its end and writes the outcome. It returns
// how the job ended: a response.yaml state, "interrupted" (handed back) or
// "lost" (another worker owns it now).
func (w *Worker) runJob(parent context.Context, c *candidate, l *lease, slot Slot) string {
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
	if l.resp.RetryCount > 0 {
		jl.continueFrom(parent, p)
	}
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
	console := &progressLog{log: w.log.With("job", job.ID), now: w.cfg.Now}
	env := &JobEnv{
		Job: job, Project: p, WorkDir: dir, Log: log, LogWriter: jl.raw,
		RetryCount: l.resp.RetryCount, Slot: slot, names: jl.names,
		report: func(pr Progress) {
			prog.set(pr)
			console.show(pr)
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
		return "lost"
	}
	log.Info("job ended", "state", state, "reason", reason, "error", errMsg)
	f := &finalWrite{lease: l, proj: p, job: job, state: state, reason: reason, errMsg: errMsg,
		out: out, prog: prog, redact: jl.redact, logs: jl.tail, now: w.cfg.Now}
	fctx, fcancel := w.finishContext(parent)
	defer fcancel()
	if err := f.write(fctx, log); err != nil {
		if errors.Is(err, ErrLeaseLost) {
			log.Warn("lease lost while writing the outcome; another worker owns the job now")
		} else {
			log.Error("could not write the job's outcome; later scans try again", "err", err)
			w.keepForRetry(f)
		}
	}
	if reason == manifest.ReasonHandedBack {
		state = "interrupted"
	}
	w.finished(job, state, started)
	return state
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

// verdict maps how the job ended to response.yaml's state and reason. A job
// stopped by a shutdown stays running, marked as handed back, so that any
// worker takes it over at once.
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
	case errors.Is(cause, ErrShutdown) && runErr != nil:
		// A handler that finished despite the shutdown has its results.
		return manifest.StateRunning, manifest.ReasonHandedBack, ""
	case runErr != nil:
		return manifest.StateFailed, "", runErr.Error()
	}
	return manifest.StateCompleted, "", ""
}
