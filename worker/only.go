package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gpu-worker/manifest"
	"gpu-worker/project"
)

// RunOne runs one job now, whatever its priority, and returns once its
// outcome is written. It finds the job with the scan every worker uses and
// claims it the same way, so a job another worker holds stays theirs. The
// error says why a job could not be claimed, or how it ended when it did
// not complete.
func (w *Worker) RunOne(ctx context.Context, jobID string) error {
	defer w.noteStop(ctx)()
	projects, err := w.src.Projects(ctx)
	if err != nil {
		return fmt.Errorf("list projects: %w", err)
	}
	found, err := w.findOne(ctx, projects, jobID)
	if err != nil {
		return err
	}
	l, closing, err := w.claimOrFail(ctx, found)
	var unsure *claimUnsureError
	if errors.As(err, &unsure) {
		// The claim may have landed: left alone, the job would show running
		// with no heartbeat until the claim timeout. Look again: a claim
		// of ours is adopted, a missing one made once more.
		w.log.Warn("claim outcome unknown; looking at the job again", "job", jobID, "err", err)
		w.scan.forget(found.proj)
		if err := sleepCtx(ctx, w.retryEvery()); err != nil {
			return fmt.Errorf("claim job %s: %w", jobID, err)
		}
		if found, err = w.findOne(ctx, []project.Project{found.proj}, jobID); err != nil {
			return err
		}
		l, closing, err = w.claimOrFail(ctx, found)
	}
	if err != nil {
		return fmt.Errorf("claim job %s: %w", jobID, err)
	}
	if l == nil {
		return fmt.Errorf("job %s was closed instead of run: %s", jobID, closing)
	}
	key := found.proj.Name()
	w.setRunning(key, jobID, true)
	state := w.runJob(ctx, found, l, w.slotFor(found.job))
	w.setRunning(key, jobID, false)
	w.retain()
	for w.finishes.len() > 0 {
		if err := sleepCtx(ctx, w.retryEvery()); err != nil {
			return fmt.Errorf("job %s ended %s; stopped before its outcome was written", jobID, state)
		}
		w.retryFinishes(ctx)
	}
	if state != manifest.StateCompleted {
		return fmt.Errorf("job %s ended %s", jobID, state)
	}
	return nil
}

// findOne scans the projects for the job and returns it as a candidate to
// claim; the error says why there is none.
func (w *Worker) findOne(ctx context.Context, projects []project.Project, jobID string) (*candidate, error) {
	var (
		found *candidate
		where []string
		why   string
		errs  []error
	)
	for _, p := range projects {
		cands, err := w.scan.scan(ctx, p, w.cfg.Now())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name(), err))
			continue
		}
		st := w.scan.states[p.Name()]
		if st == nil || st.man == nil || st.man.Find(jobID) == nil {
			continue
		}
		where = append(where, p.Name())
		for i := range cands {
			if cands[i].job.ID == jobID {
				found = &cands[i]
			}
		}
		if found == nil {
			why = w.notClaimable(st, st.man.Find(jobID))
		}
	}
	switch {
	case len(where) == 0 && len(errs) > 0:
		return nil, fmt.Errorf("job %s not found; some projects could not be read: %w", jobID, errors.Join(errs...))
	case len(where) == 0:
		return nil, fmt.Errorf("job %s is in no project's manifest", jobID)
	case len(where) > 1:
		return nil, fmt.Errorf("job %s is in several projects (%s); name one as PROJECT:JOB", jobID, strings.Join(where, ", "))
	case found == nil:
		return nil, fmt.Errorf("job %s in %s cannot be claimed: %s", jobID, where[0], why)
	}
	return found, nil
}

// notClaimable says why a scan offered no claim of a job in a project's
// manifest.
func (w *Worker) notClaimable(st *projectState, j *manifest.Job) string {
	if j.Canceled {
		return "canceled"
	}
	if _, ok := w.handlers[j.Kind()]; !ok && j.Invalid == nil {
		return "no handler for " + j.Kind()
	}
	if w.cfg.CanRun != nil && j.Invalid == nil {
		if err := w.cfg.CanRun(j); err != nil {
			return "this host cannot run it: " + err.Error()
		}
	}
	c, ok := st.responses[manifest.ResponsePath(j.ID)]
	switch {
	case !ok:
		return "not claimable now"
	case c.resp.Terminal():
		return "already " + c.resp.State
	case c.resp.State == manifest.StateRunning:
		return fmt.Sprintf("claimed by worker %s, last heartbeat %s ago (another worker may take it over after --claim-timeout %s)",
			c.resp.WorkerID, w.cfg.Now().Sub(c.resp.Timestamp).Round(time.Second), w.cfg.ClaimTimeout)
	}
	return "its response.yaml has state " + c.resp.State
}

// slotFor is the first slot wide enough for the job, else the first.
func (w *Worker) slotFor(j *manifest.Job) Slot {
	for _, s := range w.cfg.Slots {
		if len(s.GPUs) >= max(j.GPUs, 1) {
			return s
		}
	}
	return w.cfg.Slots[0]
}

// retryEvery spaces the tries of a final write that did not land.
func (w *Worker) retryEvery() time.Duration {
	if w.retryWait > 0 {
		return w.retryWait
	}
	if w.cfg.LoopInterval > 0 && w.cfg.LoopInterval < 30*time.Second {
		return w.cfg.LoopInterval
	}
	return 30 * time.Second
}
