package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"gpu-worker/limits"
	"gpu-worker/manifest"
	"gpu-worker/project"
)

// candidate is a job this worker may claim.
type candidate struct {
	proj  project.Project
	job   *manifest.Job
	stale *staleClaim // non-nil: take over an abandoned claim
	// closeCanceled: the job was canceled while its claim was abandoned;
	// taking it over only writes it canceled.
	closeCanceled bool
	own           *staleClaim // non-nil: our own claim, landed unseen; adopt it
}

// activity is implemented by projects that know when they last changed
// (GitLab's last_activity_at, with when it was read).
type activity interface {
	LastActivity() time.Time
	ListedAt() time.Time
}

// activityLag: GitLab moves last_activity_at at most once an hour, so only
// a check made more than that (plus a margin for clocks) after the value
// proves that a later change would have moved it.
const activityLag = time.Hour + 15*time.Minute

// scanSelf is what the scanner knows of this worker process.
type scanSelf struct {
	owner       owner
	started     time.Time
	runningHere func(proj, jobID string) bool
	unsure      func(proj, jobID string) bool
}

// restarted reports a claim left by this worker id before this process
// started: resumed at once, not after the claim timeout. A claim renewed
// since we started belongs to a live twin under the same id and is left
// to the timeout.
func (me scanSelf) restarted(r *manifest.Response) bool {
	return me.owner.workerID != "" && r.State == manifest.StateRunning && r.WorkerID == me.owner.workerID &&
		r.OwnerToken != me.owner.token && r.Timestamp.Before(me.started)
}

// scanner finds claimable jobs while spending as few requests as it can:
// the manifest's blob id says whether anything changed, and response.yaml
// files are read once per version.
type scanner struct {
	claimTimeout time.Duration
	runnable     func(*manifest.Job) bool
	log          *slog.Logger
	states       map[string]*projectState
	self         scanSelf
	clock        func() time.Time // compared with GitLab's times, not the job clock
	// models resolves each job's model; nil takes jobs as parsed.
	models manifest.Catalog
	// limits bound what a manifest may make us read.
	limits limits.Limits
	// watchClaims rescans projects with live claims on every scan, so an
	// observer sees them end; a worker leaves them to the claim timeout.
	watchClaims bool
}

// parse reads a manifest, resolving its jobs' models.
func (s *scanner) parse(data []byte) (*manifest.Manifest, error) {
	if s.models == nil {
		return manifest.ParseWith(data, s.limits)
	}
	return s.models.ParseWith(data, s.limits)
}

type projectState struct {
	manifestBlob string
	man          *manifest.Manifest
	responses    map[string]cachedResponse // by path
	// lastActivity is the project's last_activity_at when the manifest was
	// last checked, at checkedAt.
	lastActivity time.Time
	checkedAt    time.Time
	// pending: last scan found claimable jobs (we may have been busy).
	pending bool
	// recheckAt: when a claim held by another worker may go stale.
	recheckAt time.Time
	// live: the claims the last full look found held with a live heartbeat.
	live []liveClaim
}

// liveClaim is a job some worker holds and renews.
type liveClaim struct {
	job  *manifest.Job
	resp *manifest.Response
}

type cachedResponse struct {
	blobID string
	guard  string
	resp   *manifest.Response
}

func newScanner(claimTimeout time.Duration, runnable func(*manifest.Job) bool, log *slog.Logger) *scanner {
	return &scanner{claimTimeout: claimTimeout, runnable: runnable, log: log, states: map[string]*projectState{},
		clock: time.Now, limits: limits.Default(),
		self: scanSelf{runningHere: func(string, string) bool { return false }, unsure: func(string, string) bool { return false }}}
}

func (s *scanner) due(st *projectState, now time.Time) bool {
	return st.pending || (!st.recheckAt.IsZero() && !now.Before(st.recheckAt)) || (s.watchClaims && len(st.live) > 0)
}

// scan returns the project's claimable jobs in the order to try them.
func (s *scanner) scan(ctx context.Context, p project.Project, now time.Time) ([]candidate, error) {
	st := s.states[p.Name()]
	if st == nil {
		st = &projectState{responses: map[string]cachedResponse{}}
		s.states[p.Name()] = st
	}
	var last time.Time
	if a, ok := p.(activity); ok {
		last = a.LastActivity()
		if st.manifestBlob != "" && !s.due(st, now) && quiet(st, last, a.ListedAt()) {
			return nil, nil
		}
	}
	checked := s.clock()
	info, err := p.StatFile(ctx, manifest.Path)
	if errors.Is(err, project.ErrNotFound) {
		*st = projectState{responses: map[string]cachedResponse{}, manifestBlob: "-", lastActivity: last, checkedAt: checked}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stat manifest: %w", err)
	}
	st.lastActivity, st.checkedAt = last, checked
	if info.BlobID == st.manifestBlob && !s.due(st, now) {
		return nil, nil
	}
	if err := limits.CheckBytes(manifest.Path, info.Size, s.limits.ManifestBytes, "max-manifest-bytes"); err != nil && info.BlobID != st.manifestBlob {
		s.log.Warn("skipping project: manifest over the limit", "project", p.Name(), "err", err)
		st.manifestBlob, st.man = info.BlobID, nil
		st.pending, st.recheckAt = false, time.Time{}
		return nil, nil
	}
	if info.BlobID != st.manifestBlob {
		f, err := p.ReadFile(ctx, manifest.Path)
		if err != nil {
			return nil, fmt.Errorf("read manifest: %w", err)
		}
		st.manifestBlob = f.BlobID
		st.man, err = s.parse(f.Content)
		if err != nil {
			s.log.Warn("skipping project: malformed manifest", "project", p.Name(), "err", err)
			st.live = nil
			return nil, nil
		}
		for _, msg := range st.man.Skipped {
			s.log.Warn("manifest entry ignored", "project", p.Name(), "entry", msg)
		}
	}
	if st.man == nil || len(st.man.Jobs) == 0 {
		st.pending, st.recheckAt, st.live = false, time.Time{}, nil
		return nil, nil
	}
	tree, err := p.ListTree(ctx, "gpu_jobs")
	if err != nil && !errors.Is(err, project.ErrNotFound) {
		return nil, fmt.Errorf("list gpu_jobs: %w", err)
	}
	blobs := map[string]string{}
	for _, e := range tree {
		if strings.HasSuffix(e.Path, "/response.yaml") {
			blobs[e.Path] = e.BlobID
		}
	}
	var out []candidate
	var live []liveClaim
	st.recheckAt = time.Time{}
	for _, job := range st.man.Sorted() {
		if s.self.runningHere(p.Name(), job.ID) || (!job.Canceled && !s.runnable(job)) {
			continue
		}
		path := manifest.ResponsePath(job.ID)
		blob, claimed := blobs[path]
		if !claimed {
			if !job.Canceled {
				out = append(out, candidate{proj: p, job: job})
			}
			continue
		}
		c, ok := st.responses[path]
		if !ok || c.blobID != blob {
			f, err := readResponse(ctx, p, path, s.limits)
			if errors.Is(err, project.ErrNotFound) {
				if !job.Canceled {
					out = append(out, candidate{proj: p, job: job})
				}
				continue
			}
			if err != nil {
				return out, fmt.Errorf("read %s: %w", path, err)
			}
			r := f.resp
			if f.bad != nil {
				s.log.Warn("unreadable response.yaml; leaving the job alone", "project", p.Name(), "job", job.ID, "err", f.bad)
				r = &manifest.Response{State: "unreadable"}
			}
			c = cachedResponse{blobID: f.BlobID, guard: f.Guard, resp: r}
			st.responses[path] = c
		}
		switch {
		case c.resp.Terminal():
		case job.Canceled:
			// Canceled while no live worker held it (handed back, or its
			// worker stopped): close it, or it would show running forever.
			if c.resp.Stale(now, s.claimTimeout) || s.self.restarted(c.resp) {
				out = append(out, candidate{proj: p, job: job, closeCanceled: true,
					stale: &staleClaim{resp: *c.resp, guard: c.guard}})
			} else if c.resp.State == manifest.StateRunning {
				// Its worker stops it at the next cancel check.
				live = append(live, liveClaim{job: job, resp: c.resp})
			}
		case s.self.owner.holds(c.resp) && s.self.unsure(p.Name(), job.ID):
			out = append(out, candidate{proj: p, job: job, own: &staleClaim{resp: *c.resp, guard: c.guard}})
		case s.self.restarted(c.resp):
			out = append(out, candidate{proj: p, job: job, stale: &staleClaim{resp: *c.resp, guard: c.guard}})
		case c.resp.Stale(now, s.claimTimeout):
			out = append(out, candidate{proj: p, job: job, stale: &staleClaim{resp: *c.resp, guard: c.guard}})
		case c.resp.State == manifest.StateRunning:
			at := c.resp.Timestamp.Add(s.claimTimeout + time.Second)
			if st.recheckAt.IsZero() || at.Before(st.recheckAt) {
				st.recheckAt = at
			}
			live = append(live, liveClaim{job: job, resp: c.resp})
		}
	}
	st.pending, st.live = len(out) > 0, live
	return out, nil
}

// quiet reports a project whose manifest cannot have changed since it was
// last checked: last_activity_at has not moved, it was read after that
// check, and the check came late enough after it that any later change
// would have moved it.
func quiet(st *projectState, last, listedAt time.Time) bool {
	return !last.IsZero() && last.Equal(st.lastActivity) &&
		!st.checkedAt.Before(last.Add(activityLag)) && !listedAt.Before(st.checkedAt)
}

// forget marks a project due after we tried a claim on it: the next scan
// looks at its jobs again even when neither its manifest nor its activity
// moved (our own commit may not show in last_activity_at). Cached manifest
// and response.yaml files stay; changed blob ids replace them.
func (s *scanner) forget(p project.Project) {
	if st := s.states[p.Name()]; st != nil {
		st.pending = true
	}
}
