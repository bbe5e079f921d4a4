package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"gpu-worker/manifest"
	"gpu-worker/project"
)

// LeaseExpiredError is the cause of a job stopped because its lease could
// not be renewed for so long that another worker may take it over: the
// engine stops before two of them run the job. It counts as a lost lease.
type LeaseExpiredError struct {
	Since time.Duration // since the last renewal
}

func (e *LeaseExpiredError) Error() string {
	return fmt.Sprintf("lease not renewed for %s (heartbeats failing); stopping so that no two workers run the job",
		e.Since.Round(time.Second))
}

func (e *LeaseExpiredError) Is(target error) bool { return target == ErrLeaseLost }

// heartbeat renews the lease and uploads the job log every interval. Each
// renewal is bounded by CallTimeout, so a silent server cannot hold the
// lease lock; when renewals keep failing until the claim is about to go
// stale, the job is stopped (self-fencing).
func (w *Worker) heartbeat(ctx context.Context, l *lease, p project.Project, prog *progressBox, jl *jobLog, cancel context.CancelCauseFunc, log *slog.Logger) {
	t := time.NewTicker(w.cfg.HeartbeatInterval)
	defer t.Stop()
	fence := time.NewTimer(w.untilFence(l))
	defer fence.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-fence.C:
			err := &LeaseExpiredError{Since: w.cfg.Now().Sub(l.renewed())}
			log.Error("stopping the job: its lease could not be renewed", "err", err)
			cancel(err)
			return
		case <-t.C:
		}
		cctx, done := context.WithTimeout(ctx, w.cfg.CallTimeout)
		err := l.write(cctx, "Heartbeat job "+l.jobID, func(r *manifest.Response) {
			prog.apply(r, w.cfg.Now())
			r.Timestamp = w.cfg.Now()
		}, []project.Action{jl.action(cctx, p)})
		done()
		switch {
		case errors.Is(err, ErrLeaseLost):
			cancel(ErrLeaseLost)
			return
		case err != nil && ctx.Err() == nil:
			log.Warn("heartbeat failed; will retry", "err", err, "lease_left", w.untilFence(l).Round(time.Second))
		case err == nil:
			fence.Reset(w.untilFence(l))
		}
	}
}

// untilFence is how long the job may go on without another renewal: until
// a margin before the claim goes stale for other workers — one heartbeat
// interval, or the engine's checkpoint grace and half a minute if longer,
// at most half the claim timeout.
func (w *Worker) untilFence(l *lease) time.Duration {
	margin := max(w.cfg.HeartbeatInterval, w.cfg.EngineGrace+30*time.Second)
	margin = min(margin, w.cfg.ClaimTimeout/2)
	return l.renewed().Add(w.cfg.ClaimTimeout - margin).Sub(w.cfg.Now())
}

// watchCancel polls the manifest cheaply (its blob id) and cancels the job
// when the user cancels or removes it. Failed checks are logged, the first
// at once and then at most every errorLogEvery.
func (w *Worker) watchCancel(ctx context.Context, p project.Project, jobID string, cancel context.CancelCauseFunc, log *slog.Logger) {
	t := time.NewTicker(w.cfg.CancelCheckInterval)
	defer t.Stop()
	seen := ""
	failures := &rateLog{every: errorLogEvery}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, done := context.WithTimeout(ctx, w.cfg.CallTimeout)
		cause, err := checkManifest(cctx, p, jobID, &seen, log)
		done()
		switch {
		case cause != nil:
			cancel(cause)
			return
		case err != nil && ctx.Err() == nil:
			failures.warn(log, w.cfg.Now(), "cancel check failed; will retry", err)
		}
	}
}

// errorLogEvery spaces out repeated warnings of a failing background loop.
const errorLogEvery = 10 * time.Minute

// checkManifest returns why the job must stop (canceled, removed), if it must.
func checkManifest(ctx context.Context, p project.Project, jobID string, seen *string, log *slog.Logger) (error, error) {
	info, err := p.StatFile(ctx, manifest.Path)
	if errors.Is(err, project.ErrNotFound) {
		return ErrRemoved, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stat manifest: %w", err)
	}
	if info.BlobID == *seen {
		return nil, nil
	}
	f, err := p.ReadFile(ctx, manifest.Path)
	if errors.Is(err, project.ErrNotFound) {
		return ErrRemoved, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	*seen = f.BlobID
	m, err := manifest.Parse(f.Content)
	if err != nil {
		log.Warn("manifest unreadable during job; not treating as cancel", "err", err)
		return nil, nil
	}
	switch j := m.Find(jobID); {
	case j == nil:
		return ErrRemoved, nil
	case j.Canceled:
		return ErrCanceledByUser, nil
	}
	return nil, nil
}

// rateLog logs the first of a run of failures and then one line per
// interval with the number left unlogged.
type rateLog struct {
	mu      sync.Mutex
	every   time.Duration
	last    time.Time
	skipped int
}

func (r *rateLog) warn(log *slog.Logger, now time.Time, msg string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.skipped++
		return
	}
	log.Warn(msg, "err", err, "failures_not_logged", r.skipped)
	r.last, r.skipped = now, 0
}
