package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"gpu-worker/manifest"
	"gpu-worker/project"
)

// candidate is a job this worker may claim.
type candidate struct {
	proj  project.Project
	job   *manifest.Job
	stale *staleClaim // non-nil: take over an abandoned claim
}

// activity is implemented by projects that know when they last changed
// (GitLab's last_activity_at); unchanged projects then cost no request.
type activity interface {
	LastActivity() time.Time
}

// scanner finds claimable jobs while spending as few requests as it can:
// the manifest's blob id says whether anything changed, and response.yaml
// files are read once per version.
type scanner struct {
	claimTimeout time.Duration
	runnable     func(*manifest.Job) bool
	log          *slog.Logger
	states       map[string]*projectState
	// models resolves each job's model; nil takes jobs as parsed.
	models manifest.Catalog
}

// parse reads a manifest, resolving its jobs' models.
func (s *scanner) parse(data []byte) (*manifest.Manifest, error) {
	if s.models == nil {
		return manifest.Parse(data)
	}
	return s.models.Parse(data)
}

type projectState struct {
	manifestBlob string
	man          *manifest.Manifest
	responses    map[string]cachedResponse // by path
	lastActivity time.Time
	// pending: last scan found claimable jobs (we may have been busy).
	pending bool
	// recheckAt: when a claim held by another worker may go stale.
	recheckAt time.Time
}

type cachedResponse struct {
	blobID       string
	lastCommitID string
	resp         *manifest.Response
}

func newScanner(claimTimeout time.Duration, runnable func(*manifest.Job) bool, log *slog.Logger) *scanner {
	return &scanner{claimTimeout: claimTimeout, runnable: runnable, log: log, states: map[string]*projectState{}}
}

func (s *scanner) due(st *projectState, now time.Time) bool {
	return st.pending || (!st.recheckAt.IsZero() && !now.Before(st.recheckAt))
}

// scan returns the project's claimable jobs in the order to try them.
func (s *scanner) scan(ctx context.Context, p project.Project, now time.Time) ([]candidate, error) {
	st := s.states[p.Name()]
	if st == nil {
		st = &projectState{responses: map[string]cachedResponse{}}
		s.states[p.Name()] = st
	}
	if a, ok := p.(activity); ok {
		last := a.LastActivity()
		if !last.IsZero() && last.Equal(st.lastActivity) && st.manifestBlob != "" && !s.due(st, now) {
			return nil, nil
		}
		defer func() { st.lastActivity = last }()
	}
	info, err := p.StatFile(ctx, manifest.Path)
	if errors.Is(err, project.ErrNotFound) {
		*st = projectState{responses: map[string]cachedResponse{}, manifestBlob: "-"}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stat manifest: %w", err)
	}
	if info.BlobID == st.manifestBlob && !s.due(st, now) {
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
			return nil, nil
		}
		for _, msg := range st.man.Skipped {
			s.log.Warn("manifest entry ignored", "project", p.Name(), "entry", msg)
		}
	}
	if st.man == nil || len(st.man.Jobs) == 0 {
		st.pending, st.recheckAt = false, time.Time{}
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
	st.recheckAt = time.Time{}
	for _, job := range st.man.Sorted() {
		if job.Canceled || !s.runnable(job) {
			continue
		}
		path := manifest.ResponsePath(job.ID)
		blob, claimed := blobs[path]
		if !claimed {
			out = append(out, candidate{proj: p, job: job})
			continue
		}
		c, ok := st.responses[path]
		if !ok || c.blobID != blob {
			f, err := p.ReadFile(ctx, path)
			if errors.Is(err, project.ErrNotFound) {
				out = append(out, candidate{proj: p, job: job})
				continue
			}
			if err != nil {
				return out, fmt.Errorf("read %s: %w", path, err)
			}
			r, perr := manifest.ParseResponse(f.Content)
			if perr != nil {
				s.log.Warn("unreadable response.yaml; leaving the job alone", "project", p.Name(), "job", job.ID, "err", perr)
				r = &manifest.Response{State: "unreadable"}
			}
			c = cachedResponse{blobID: f.BlobID, lastCommitID: f.LastCommitID, resp: r}
			st.responses[path] = c
		}
		switch {
		case c.resp.Terminal():
		case c.resp.Stale(now, s.claimTimeout):
			out = append(out, candidate{proj: p, job: job, stale: &staleClaim{resp: *c.resp, lastCommitID: c.lastCommitID}})
		case c.resp.State == manifest.StateRunning:
			at := c.resp.Timestamp.Add(s.claimTimeout + time.Second)
			if st.recheckAt.IsZero() || at.Before(st.recheckAt) {
				st.recheckAt = at
			}
		}
	}
	st.pending = len(out) > 0
	return out, nil
}

// forget drops what the scanner knows of a project, so the next scan reads
// it afresh (after we changed it ourselves).
func (s *scanner) forget(p project.Project) {
	if st := s.states[p.Name()]; st != nil {
		st.pending = true
	}
}
