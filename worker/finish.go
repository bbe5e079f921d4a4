package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"gpu-worker/manifest"
	"gpu-worker/project"
)

// finishTimeout bounds one attempt at a job's final write. Once the worker
// is stopping, the write gets only what is left of the stop budget
// (Worker.finishContext): with the engine's checkpoint grace, a stop must
// fit the 150 s that systemd and Kubernetes give.
const finishTimeout = 5 * time.Minute

// finalWrite is a job's last commit: its state, the handler's outputs and
// the job log, guarded by the lease. One that could not land is kept and
// retried by later scans.
type finalWrite struct {
	lease                 *lease
	proj                  project.Project
	job                   *manifest.Job
	state, reason, errMsg string
	out                   *Outcome
	prog                  *progressBox
	redact                func(string) string
	logs                  func() []byte // the job log's tail
	now                   func() time.Time
}

// write commits the outcome; when the outputs cannot land it still ends the
// job without them, rather than leave it running until it goes stale.
func (f *finalWrite) write(ctx context.Context, log *slog.Logger) error {
	logs := logAction(ctx, f.proj, f.job.ID, f.logs())
	var actions []project.Action
	if f.out != nil {
		actions = append(actions, f.out.Actions...)
	}
	err := f.commit(ctx, f.message(), append(actions, logs))
	if errors.Is(err, errLanded) {
		log.Info("job outcome found written: an earlier try landed after all")
		return nil
	}
	if err == nil || errors.Is(err, ErrLeaseLost) {
		return err
	}
	if errors.Is(err, project.ErrOutcomeUnknown) {
		// The results may still land: an outcome "without results" written
		// now could contradict them. A later scan tries again; the lease
		// guard keeps them from landing twice.
		log.Warn("results' commit outcome unknown; trying again later", "err", err)
		return err
	}
	log.Error("results could not be committed", "err", err)
	ferr := f.lease.write(ctx, fmt.Sprintf("Job %s %s without results", f.job.ID, f.label()), f.withoutOutputs(err), []project.Action{logs})
	if ferr != nil {
		return fmt.Errorf("write outcome: %w (results: %w)", ferr, err)
	}
	return nil
}

func (f *finalWrite) label() string {
	if f.reason == manifest.ReasonHandedBack {
		return "handed back"
	}
	return f.state
}

// message is the final commit's (lease writes add "[skip ci]" themselves).
func (f *finalWrite) message() string { return fmt.Sprintf("Job %s %s", f.job.ID, f.label()) }

// commit lands the outputs with the final response.yaml: Changes through
// the guard (re-planned on every attempt), other outputs in one write.
func (f *finalWrite) commit(ctx context.Context, msg string, actions []project.Action) error {
	if f.out == nil || f.out.Changes == nil {
		return f.lease.write(ctx, msg, f.update(Written{}), actions)
	}
	for attempt := 0; ; attempt++ {
		g := &leaseGuard{l: f.lease, final: f.update, extra: actions, now: f.now}
		err := f.out.Changes.Commit(ctx, f.proj, msg+" [skip ci]", g)
		if err == nil {
			return nil
		}
		c := project.ConflictOf(err)
		if c == nil || attempt >= commitRetries {
			return err
		}
		if c.Path == manifest.ResponsePath(f.job.ID) {
			f.lease.mu.Lock()
			rerr := f.lease.recheck(ctx)
			f.lease.mu.Unlock()
			if rerr != nil {
				return rerr
			}
			continue
		}
		if err := sleepCtx(ctx, backoff(attempt)); err != nil {
			return err
		}
	}
}

// update sets the final response.yaml; w is what Changes write.
func (f *finalWrite) update(w Written) func(*manifest.Response) {
	now := f.now()
	return func(r *manifest.Response) {
		f.prog.apply(r, now)
		r.State = f.state
		r.Timestamp = now
		r.ExpectedCompletion = nil
		if f.errMsg != "" {
			r.ErrorMessage = manifest.Ptr(f.redact(f.errMsg))
		}
		if f.reason != "" {
			r.TerminationReason = manifest.Ptr(f.reason)
		}
		r.StatusMessage = statusFor(f.state, f.reason, f.errMsg)
		if f.out == nil {
			return
		}
		if res := mergeResult(f.out.Result, w.Result); res != nil {
			r.Result = res
		}
		msg := w.Message
		if msg == "" {
			msg = f.out.Message
		}
		if msg != "" && f.state == manifest.StateCompleted {
			r.StatusMessage = msg
		}
	}
}

// withoutOutputs is the final response when the outputs could not land: a
// completed job becomes failed; a canceled or handed-back one keeps its
// state (its log says what was lost).
func (f *finalWrite) withoutOutputs(cause error) func(*manifest.Response) {
	note := "could not commit results: " + cause.Error()
	return func(r *manifest.Response) {
		f.update(Written{})(r)
		r.Result = nil
		if f.state == manifest.StateCompleted || f.state == manifest.StateFailed {
			msg := note
			if f.errMsg != "" {
				msg = f.errMsg + "; " + note
			}
			r.State = manifest.StateFailed
			r.ErrorMessage = manifest.Ptr(f.redact(msg))
			r.StatusMessage = statusFor(manifest.StateFailed, "", msg)
		}
	}
}

// mergeResult is the handler's result with the fields of what landed.
func mergeResult(planned, written map[string]any) map[string]any {
	if len(written) == 0 {
		return planned
	}
	out := make(map[string]any, len(planned)+len(written))
	for k, v := range planned {
		out[k] = v
	}
	for k, v := range written {
		out[k] = v
	}
	return out
}

func statusFor(state, reason, errMsg string) string {
	switch {
	case state == manifest.StateCompleted:
		return "completed"
	case state == manifest.StateCanceled:
		return "canceled: " + reason
	case reason == manifest.ReasonHandedBack:
		return "worker shut down; waiting for another worker to take the job over"
	}
	return "failed: " + errMsg
}

// leaseGuard is the lease as Changes see it: each commit updates
// response.yaml guarded by the commit of our previous write.
type leaseGuard struct {
	l     *lease
	final func(Written) func(*manifest.Response)
	extra []project.Action
	now   func() time.Time
	steps int
	next  manifest.Response // what the last action asked for writes
}

func (g *leaseGuard) Step() []project.Action {
	g.steps++
	// Each step's content differs, so the file's guard moves with it.
	act, next := g.l.finalAction(func(r *manifest.Response) {
		r.Timestamp = g.now()
		r.StatusMessage = fmt.Sprintf("writing results (part %d)", g.steps)
	})
	g.next = next
	return []project.Action{act}
}

func (g *leaseGuard) Final(w Written) []project.Action {
	act, next := g.l.finalAction(g.final(w))
	g.next = next
	return append([]project.Action{act}, g.extra...)
}

func (g *leaseGuard) Landed(res *project.CommitResult) {
	g.l.mu.Lock()
	defer g.l.mu.Unlock()
	g.l.resp, g.l.guard = g.next, res.GuardOf(manifest.ResponsePath(g.l.jobID))
}

// finishQueue holds final writes that did not land.
type finishQueue struct {
	mu    sync.Mutex
	items []*finalWrite
}

func (q *finishQueue) add(f *finalWrite) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items = append(q.items, f)
}

func (q *finishQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

func (q *finishQueue) take() []*finalWrite {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	q.items = nil
	return out
}

// keepForRetry queues a final write that failed; its log is kept as it is
// now, the job folder may be gone by the next try.
func (w *Worker) keepForRetry(f *finalWrite) {
	data := f.logs()
	f.logs = func() []byte { return data }
	w.finishes.add(f)
}

// retryFinishes retries the final writes that did not land. The scan loop
// calls it before each scan, so a job's outcome lands once the project can
// be written again — also for canceled jobs, which scans skip.
func (w *Worker) retryFinishes(ctx context.Context) {
	for _, f := range w.finishes.take() {
		if ctx.Err() != nil {
			w.finishes.add(f)
			continue
		}
		log := w.log.With("job", f.job.ID)
		fctx, cancel := context.WithTimeout(ctx, finishTimeout)
		err := f.write(fctx, log)
		cancel()
		switch {
		case err == nil:
			log.Info("job outcome written on a later try", "state", f.state)
		case errors.Is(err, ErrLeaseLost):
			log.Warn("job outcome not written: another worker owns the job now")
		default:
			log.Warn("job outcome still not written; the next scan tries again", "err", err)
			w.finishes.add(f)
		}
	}
}

// failedBeforeStart is the claim of a job that cannot run (invalid fields,
// past its deadline, abandoned too often): the failed response.yaml and the
// logs.txt that says why (after any log earlier workers left), to commit
// together as one claim.
func (w *Worker) failedBeforeStart(ctx context.Context, p project.Project, job *manifest.Job, why string) (manifest.Response, project.Action) {
	secrets := nonEmpty(w.cfg.Secrets)
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&redactor{w: &buf, secrets: secrets}, nil))
	log.Error("job failed before it started", "job", job.ID, "kind", job.Kind(), "worker", w.cfg.WorkerID, "reason", why)
	path := manifest.JobDir(job.ID) + "/logs.txt"
	act := project.Action{Kind: project.Create, Path: path, Content: buf.Bytes()}
	if prev, err := p.ReadFile(ctx, path); err == nil {
		act = project.Action{Kind: project.Update, Path: path, Content: append(append(prev.Content, '\n'), buf.Bytes()...)}
	}
	msg := (&jobLog{secrets: secrets}).redact(why)
	return manifest.Response{State: manifest.StateFailed, ErrorMessage: &msg, StatusMessage: statusFor(manifest.StateFailed, "", msg)}, act
}
