package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"time"

	"gpu-worker/limits"
	"gpu-worker/manifest"
)

// States of a job in the queue as an observer sees it.
const (
	// QueueRunnable: a worker would claim the job and run it now (queued,
	// handed back, or a claim gone stale within the retry limit).
	QueueRunnable = "runnable"
	// QueueRunning: claimed by a worker whose heartbeat is live.
	QueueRunning = "running"
	// QueueFailing: a worker would claim the job only to fail it (invalid,
	// past its deadline, abandoned too often).
	QueueFailing = "failing"
	// QueueClosing: canceled while its claim was abandoned; a worker would
	// only write it canceled.
	QueueClosing = "closing"
)

// QueuedJob is one job of the queue.
type QueuedJob struct {
	Project string
	Job     *manifest.Job
	State   string
	// Reason says why the job is in its state: "queued", "handed back",
	// "claim expired" for runnable jobs; why a worker would fail it.
	Reason string
	// Since is the job's submitted_at, or when this observer first saw it.
	Since time.Time
	// WorkerID, RetryCount and Heartbeat come from the job's claim, if any.
	WorkerID   string
	RetryCount int
	Heartbeat  time.Time
}

// Queue is what one scan of every project found.
type Queue struct {
	Jobs []QueuedJob
	At   time.Time     // when the scan ended
	Took time.Duration // how long it took
}

// Count is the number of jobs in a state.
func (q Queue) Count(state string) int {
	n := 0
	for _, j := range q.Jobs {
		if j.State == state {
			n++
		}
	}
	return n
}

// ObserverConfig holds what an observer must share with the workers it
// observes for "runnable" to mean what they would claim.
type ObserverConfig struct {
	ClaimTimeout  time.Duration
	MaxJobRetries int
	// Models resolves each job's model; nil takes jobs as parsed.
	Models manifest.Catalog
	// Handled reports the jobs workers have a handler for; nil: all.
	Handled func(*manifest.Job) bool
	// Limits bound what a scan reads, as the workers' do (each zero bound:
	// its default).
	Limits limits.Limits
	// Now is the clock that claims are judged by (tests); default time.Now.
	Now func() time.Time
}

// Observer measures the queue with the workers' own scanner and never
// writes: no claim, no commit.
type Observer struct {
	cfg   ObserverConfig
	src   Source
	log   *slog.Logger
	scan  *scanner
	views map[string][]QueuedJob // by project, from its last good scan
	seen  map[string]time.Time   // first sighting of jobs without submitted_at
}

// NewObserver applies the workers' defaults and builds an observer.
func NewObserver(cfg ObserverConfig, src Source, log *slog.Logger) *Observer {
	if cfg.ClaimTimeout <= 0 {
		cfg.ClaimTimeout = DefaultClaimTimeout
	}
	if cfg.MaxJobRetries <= 0 {
		cfg.MaxJobRetries = DefaultMaxJobRetries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	o := &Observer{cfg: cfg, src: src, log: log, views: map[string][]QueuedJob{}, seen: map[string]time.Time{}}
	// A worker's rule, less its host's (GPUs, engines): the observer
	// counts what some worker would take.
	o.scan = newScanner(cfg.ClaimTimeout, func(j *manifest.Job) bool { return takes(j, cfg.Handled, nil) }, log)
	o.scan.models = cfg.Models
	o.scan.limits = cfg.Limits.OrDefault()
	o.scan.watchClaims = true
	return o
}

// Scan looks at every project once. A project that could not be read keeps
// the jobs of its last good scan, and the error says which; when the
// projects cannot be listed, Scan returns only the error.
func (o *Observer) Scan(ctx context.Context) (Queue, error) {
	start := time.Now()
	projects, err := o.src.Projects(ctx)
	if err != nil {
		return Queue{}, fmt.Errorf("list projects: %w", err)
	}
	var errs []error
	listed := map[string]bool{}
	for _, p := range projects {
		name := p.Name()
		listed[name] = true
		now := o.cfg.Now()
		cands, err := o.scan.scan(ctx, p, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		o.views[name] = o.view(name, cands, now)
	}
	for name := range o.views {
		if !listed[name] {
			delete(o.views, name)
			delete(o.scan.states, name)
		}
	}
	q := Queue{At: time.Now()}
	q.Took = q.At.Sub(start)
	kept := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(o.views)) {
		for _, j := range o.views[name] {
			q.Jobs = append(q.Jobs, j)
			kept[jobKey(name, j.Job.ID)] = true
		}
	}
	for k := range o.seen {
		if !kept[k] {
			delete(o.seen, k)
		}
	}
	return q, errors.Join(errs...)
}

// view is a project's jobs as a worker would see them now: the scan's
// candidates judged as claimOrFail judges them, and the live claims.
func (o *Observer) view(project string, cands []candidate, now time.Time) []QueuedJob {
	var out []QueuedJob
	for i := range cands {
		c := &cands[i]
		j := QueuedJob{Project: project, Job: c.job, State: QueueRunnable, Reason: "queued", Since: o.since(project, c.job, now)}
		if c.stale != nil {
			j.WorkerID, j.RetryCount, j.Heartbeat = c.stale.resp.WorkerID, c.stale.resp.RetryCount, c.stale.resp.Timestamp
			j.Reason = "claim expired"
			if c.stale.resp.HandedBack() {
				j.Reason = "handed back"
			}
		}
		if why := closeReason(c, now, o.cfg.MaxJobRetries); why != "" {
			j.State, j.Reason = QueueFailing, why
			if c.closeCanceled {
				j.State = QueueClosing
			}
		}
		out = append(out, j)
	}
	if st := o.scan.states[project]; st != nil {
		for _, l := range st.live {
			out = append(out, QueuedJob{Project: project, Job: l.job, State: QueueRunning, Reason: "claimed",
				Since: o.since(project, l.job, now), WorkerID: l.resp.WorkerID, RetryCount: l.resp.RetryCount, Heartbeat: l.resp.Timestamp})
		}
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].State == QueueRunnable && out[b].State != QueueRunnable })
	return out
}

// since is when a job entered the queue: its submitted_at, or when this
// observer first saw it.
func (o *Observer) since(project string, j *manifest.Job, now time.Time) time.Time {
	key := jobKey(project, j.ID)
	first, ok := o.seen[key]
	if !ok {
		first = now
		o.seen[key] = now
	}
	if !j.SubmittedAt.IsZero() {
		return j.SubmittedAt
	}
	return first
}
