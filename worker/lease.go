package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"gpu-worker/limits"
	"gpu-worker/manifest"
	"gpu-worker/project"
)

// Why a job stopped, as context causes.
var (
	ErrCanceledByUser = errors.New(manifest.ReasonCanceled)
	ErrRemoved        = errors.New(manifest.ReasonRemoved)
	ErrLeaseLost      = errors.New(manifest.ReasonReclaim)
	ErrShutdown       = errors.New("worker shutting down")
	// ErrTaken: another worker claimed the job first.
	ErrTaken = errors.New("job already claimed")
	// errLanded: response.yaml already holds this process's final state,
	// from a write whose outcome was unknown but which landed.
	errLanded = errors.New("job outcome already written")
)

// TimeoutError is the cause of a job stopped at its manifest deadline.
type TimeoutError struct{ At time.Time }

func (e *TimeoutError) Error() string {
	return "timeout reached at " + e.At.UTC().Format(time.RFC3339)
}

// lease is this worker's claim on a job: response.yaml and its guard as our
// last write left it. Every write is an update carrying that guard.
type lease struct {
	proj     project.Project
	jobID    string
	workerID string
	owner    string // this process's owner token
	lim      limits.Limits

	mu    sync.Mutex
	resp  manifest.Response
	guard string
}

const commitRetries = 5

// claim creates response.yaml (the claim) or takes over a stale one. stale
// is the response read during the scan, with its Guard; nil = new. lim
// bounds the response.yaml read back after a refusal.
func claim(ctx context.Context, p project.Project, jobID string, me owner, lim limits.Limits, now time.Time, stale *staleClaim, first manifest.Response, extra ...project.Action) (*lease, error) {
	path := manifest.ResponsePath(jobID)
	first.WorkerID = me.workerID
	first.OwnerToken = me.token
	first.Timestamp = now
	act := project.Action{Kind: project.Create, Path: path}
	msg := fmt.Sprintf("Claim job %s by %s [skip ci]", jobID, me.workerID)
	if stale != nil {
		first.RetryCount = stale.resp.RetryCount + 1
		act = project.Action{Kind: project.Update, Path: path, Guard: stale.guard}
		msg = fmt.Sprintf("Take over job %s by %s (retry %d) [skip ci]", jobID, me.workerID, first.RetryCount)
	}
	act.Content = first.Marshal()
	newLease := func(r manifest.Response, guard string) *lease {
		return &lease{proj: p, jobID: jobID, workerID: me.workerID, owner: me.token, lim: lim, resp: r, guard: guard}
	}
	for attempt := 0; ; attempt++ {
		res, err := p.Commit(ctx, msg, append([]project.Action{act}, extra...))
		if err == nil {
			return newLease(first, res.GuardOf(path)), nil
		}
		c := project.ConflictOf(err)
		if c == nil {
			return nil, &claimUnsureError{err: fmt.Errorf("claim job %s: %w", jobID, err)}
		}
		if c.Kind == project.BranchMoved && attempt < commitRetries {
			if err := sleepCtx(ctx, backoff(attempt)); err != nil {
				return nil, err
			}
			continue
		}
		// Refused: taken, unless the 400 came from a race that left no
		// file, or our own earlier attempt landed after we were told it
		// had failed (then the re-sent commit is what was refused).
		f, rerr := readResponse(ctx, p, path, lim)
		if errors.Is(rerr, project.ErrNotFound) {
			if stale == nil && attempt < commitRetries {
				continue
			}
			return nil, ErrTaken
		}
		if rerr != nil {
			return nil, &claimUnsureError{err: fmt.Errorf("claim job %s: check after %v: %w", jobID, c, rerr)}
		}
		if f.bad == nil && me.holds(f.resp) {
			return newLease(*f.resp, f.Guard), nil
		}
		return nil, ErrTaken
	}
}

// owner names this worker process in response.yaml.
type owner struct {
	workerID string
	token    string
}

// holds reports whether r was written by this very process.
func (o owner) holds(r *manifest.Response) bool {
	return r.WorkerID == o.workerID && r.OwnerToken == o.token && !r.Terminal()
}

// claimUnsureError: the claim's commit failed in a way that does not say
// whether it landed; the scanner adopts the claim if it shows up as ours.
type claimUnsureError struct{ err error }

func (e *claimUnsureError) Error() string { return e.err.Error() }
func (e *claimUnsureError) Unwrap() error { return e.err }

// adopt takes up a claim of ours whose commit landed although we were told
// it had not: no write is needed, the file already names us.
func adopt(p project.Project, jobID string, me owner, lim limits.Limits, own *staleClaim) *lease {
	return &lease{proj: p, jobID: jobID, workerID: me.workerID, owner: me.token, lim: lim, resp: own.resp, guard: own.guard}
}

// staleClaim is a response.yaml another worker abandoned.
type staleClaim struct {
	resp  manifest.Response
	guard string
}

// write updates response.yaml (plus extra actions) if we still hold the
// lease; ErrLeaseLost when another worker wrote it meanwhile.
func (l *lease) write(ctx context.Context, message string, update func(r *manifest.Response), extra []project.Action) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.resp
	update(&next)
	next.WorkerID, next.OwnerToken = l.workerID, l.owner
	for attempt := 0; ; attempt++ {
		acts := append([]project.Action{{Kind: project.Update, Path: manifest.ResponsePath(l.jobID),
			Content: next.Marshal(), Guard: l.guard}}, extra...)
		res, err := l.proj.Commit(ctx, message+" [skip ci]", acts)
		if err == nil {
			l.resp, l.guard = next, res.GuardOf(manifest.ResponsePath(l.jobID))
			return nil
		}
		c := project.ConflictOf(err)
		if c == nil || attempt >= commitRetries {
			return err
		}
		switch {
		case c.Kind == project.BranchMoved:
			if err := sleepCtx(ctx, backoff(attempt)); err != nil {
				return err
			}
		case c.Path == manifest.ResponsePath(l.jobID) || c.Path == "":
			if err := l.recheck(ctx); err != nil {
				return err
			}
		default:
			return err // a conflict on one of the caller's files
		}
	}
}

// recheck re-reads response.yaml after a conflict: still ours → adopt its
// guard; ours and ended → errLanded (only our final write ends it);
// anyone else's → the lease is lost.
func (l *lease) recheck(ctx context.Context) error {
	f, err := readResponse(ctx, l.proj, manifest.ResponsePath(l.jobID), l.lim)
	if errors.Is(err, project.ErrNotFound) {
		return ErrLeaseLost
	}
	if err != nil {
		return err
	}
	if f.bad != nil {
		return ErrLeaseLost
	}
	if r := f.resp; r.Terminal() && r.WorkerID == l.workerID && r.OwnerToken == l.owner {
		return errLanded
	}
	if !(owner{l.workerID, l.owner}).holds(f.resp) {
		return ErrLeaseLost
	}
	l.guard = f.Guard
	return nil
}

// finalAction returns the update of response.yaml that update makes,
// guarded by the lease's last write and owned by this worker, with the
// response it writes; leaseGuard's Step and Final put it in each commit of
// a job's outcome (Landed records it once landed).
func (l *lease) finalAction(update func(r *manifest.Response)) (project.Action, manifest.Response) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.resp
	update(&next)
	next.WorkerID, next.OwnerToken = l.workerID, l.owner
	return project.Action{Kind: project.Update, Path: manifest.ResponsePath(l.jobID),
		Content: next.Marshal(), Guard: l.guard}, next
}

// renewed is when the lease was last renewed, as other workers see it.
func (l *lease) renewed() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.resp.Timestamp
}

// responseFile is a response.yaml as read: its version, and the response
// or why it cannot be used (over a limit, malformed).
type responseFile struct {
	project.FileInfo
	resp *manifest.Response
	bad  error
}

// readResponse reads a job's response.yaml within lim. Its size is checked
// before its content is fetched, as the manifest's is: anyone with push
// rights can write the file. The error is the read's (project.ErrNotFound
// among them); a file that cannot be used comes back with bad set.
func readResponse(ctx context.Context, p project.Project, path string, lim limits.Limits) (*responseFile, error) {
	info, err := p.StatFile(ctx, path)
	if err != nil {
		return nil, err
	}
	if err := limits.CheckBytes(path, info.Size, lim.ManifestBytes, "max-manifest-bytes"); err != nil {
		return &responseFile{FileInfo: *info, bad: err}, nil
	}
	f, err := p.ReadFile(ctx, path)
	if err != nil {
		return nil, err
	}
	r, err := manifest.ParseResponseWith(f.Content, lim)
	return &responseFile{FileInfo: f.FileInfo, resp: r, bad: err}, nil
}

func backoff(attempt int) time.Duration {
	return time.Duration(50*(1<<attempt)) * time.Millisecond
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
