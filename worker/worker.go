// Package worker is the daemon: scan projects, claim a job exclusively,
// run its handler under a heartbeat lease and a cancel watch, and write the
// outcome back in one commit.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"gpu-worker/limits"
	"gpu-worker/manifest"
	"gpu-worker/project"
)

// Source lists the projects to serve.
type Source interface {
	Projects(ctx context.Context) ([]project.Project, error)
}

// Slot is one place a job can run: a GPU (or a set of them), or the CPU.
type Slot struct {
	Name string
	Env  []string // e.g. CUDA_VISIBLE_DEVICES=1
	GPUs []int
}

// Config holds the daemon's settings.
type Config struct {
	WorkerID            string
	WorkDir             string
	LoopInterval        time.Duration // < 0: process what is available, then exit
	KeepJobs            int
	HeartbeatInterval   time.Duration
	CancelCheckInterval time.Duration
	ClaimTimeout        time.Duration
	// CallTimeout bounds each heartbeat and cancel check (default: half
	// the heartbeat interval, at least 10s).
	CallTimeout time.Duration
	// StopTimeout is the time a shutdown may take from the signal to the
	// end of the final writes (default 140s: the deployments give 150s).
	StopTimeout   time.Duration
	MaxJobRetries int
	// ExitWhenIdle > 0: Run returns once no job has been runnable for this
	// long, never while a job runs or a final write waits to be retried.
	ExitWhenIdle time.Duration
	Slots        []Slot
	// EngineGrace is the time an engine gets to checkpoint after SIGTERM
	// (the shutdown budget must leave room for it).
	EngineGrace time.Duration
	// Models resolves each job's model (its fields and defaults); nil
	// takes jobs as parsed.
	Models manifest.Catalog
	// Limits bound what a project can make the worker read (each zero
	// bound: its default).
	Limits limits.Limits
	// CanRun says whether this host can run a job (engines, ffmpeg, GPU).
	CanRun func(*manifest.Job) error
	// Secrets are redacted from job logs.
	Secrets []string
	// Hooks lets the metrics package observe the worker.
	Hooks Hooks
	Now   func() time.Time
}

// Hooks are optional observers.
type Hooks struct {
	JobStarted  func(job *manifest.Job)
	JobFinished func(job *manifest.Job, state string, d time.Duration)
	Progress    func(job *manifest.Job, p Progress)
	ScanDone    func(d time.Duration)
}

// Worker runs jobs from a Source with handlers from a Registry.
type Worker struct {
	cfg      Config
	src      Source
	handlers Registry
	log      *slog.Logger
	scan     *scanner
	finishes finishQueue
	me       owner
	started  time.Time

	mu      sync.Mutex
	running map[string]bool // project + job id of the jobs this process runs
	unsure  map[string]bool // claims whose commit may have landed unseen

	drainOnce sync.Once
	drain     chan struct{}
	stopAt    time.Time // when a shutdown began; guarded by mu

	// retryWait spaces the tries of a final write that did not land (zero:
	// retryEvery's default; tests shorten it).
	retryWait time.Duration
}

// The defaults every worker and observer share: an observer counts as
// runnable what workers with these settings would claim.
const (
	DefaultClaimTimeout  = 24 * time.Hour
	DefaultMaxJobRetries = 3
)

// MinClaimTimeoutBeats is how many heartbeat intervals a claim timeout must
// span: shorter, and a slow heartbeat lets a second worker take a job that
// is still running.
const MinClaimTimeoutBeats = 3

// Validate rejects settings that would break a claim's exclusivity or the
// shutdown budget. Zero values stand for the defaults New applies.
func (c Config) Validate() error {
	hb, ct := c.HeartbeatInterval, c.ClaimTimeout
	if hb <= 0 {
		hb = 5 * time.Minute
	}
	if ct <= 0 {
		ct = DefaultClaimTimeout
	}
	if ct < MinClaimTimeoutBeats*hb {
		return fmt.Errorf("claim timeout %s is shorter than %d heartbeat intervals (%s): another worker could take over a job that is still running; raise the claim timeout to at least %s or shorten the heartbeat interval",
			ct, MinClaimTimeoutBeats, hb, MinClaimTimeoutBeats*hb)
	}
	if c.StopTimeout > 0 && c.EngineGrace+minFinalWrite > c.StopTimeout {
		return fmt.Errorf("engine grace %s leaves less than %s of the stop timeout (%s) for the final write; shorten the engine grace or raise the stop timeout",
			c.EngineGrace, minFinalWrite, c.StopTimeout)
	}
	return nil
}

// minFinalWrite is the least time a shutdown keeps for the final commit
// after the engines had their grace.
const minFinalWrite = 10 * time.Second

// New applies defaults and builds a worker.
func New(cfg Config, src Source, handlers Registry, log *slog.Logger) *Worker {
	if cfg.WorkerID == "" {
		cfg.WorkerID, _ = os.Hostname()
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = "work"
	}
	// Engines run in their own directory; every path handed to them is absolute.
	if abs, err := filepath.Abs(cfg.WorkDir); err == nil {
		cfg.WorkDir = abs
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.HeartbeatInterval, 5*time.Minute)
	def(&cfg.CancelCheckInterval, 30*time.Second)
	def(&cfg.ClaimTimeout, DefaultClaimTimeout)
	def(&cfg.CallTimeout, max(cfg.HeartbeatInterval/2, 10*time.Second))
	def(&cfg.StopTimeout, 140*time.Second)
	if cfg.KeepJobs <= 0 {
		cfg.KeepJobs = 5
	}
	if cfg.MaxJobRetries <= 0 {
		cfg.MaxJobRetries = DefaultMaxJobRetries
	}
	if len(cfg.Slots) == 0 {
		cfg.Slots = []Slot{{Name: "default"}}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	w := &Worker{cfg: cfg, src: src, handlers: handlers, log: log, drain: make(chan struct{}),
		me: owner{workerID: cfg.WorkerID, token: newOwnerToken()}, started: cfg.Now(),
		running: map[string]bool{}, unsure: map[string]bool{}}
	w.scan = newScanner(cfg.ClaimTimeout, w.runnable, log)
	w.scan.models = cfg.Models
	w.scan.limits = cfg.Limits.OrDefault()
	w.scan.self = scanSelf{owner: w.me, started: w.started, runningHere: w.isRunning, unsure: w.isUnsure}
	return w
}

// newOwnerToken names this process: the worker id alone cannot tell a
// worker from the one that ran under the same id before a restart.
func newOwnerToken() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func jobKey(proj, jobID string) string { return proj + "\x00" + jobID }

func (w *Worker) isRunning(proj, jobID string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running[jobKey(proj, jobID)]
}

func (w *Worker) isUnsure(proj, jobID string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.unsure[jobKey(proj, jobID)]
}

func (w *Worker) setRunning(proj, jobID string, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if on {
		w.running[jobKey(proj, jobID)] = true
	} else {
		delete(w.running, jobKey(proj, jobID))
	}
}

// finishContext bounds a job's final write: finishTimeout normally, and
// once a shutdown began, what is left of StopTimeout.
func (w *Worker) finishContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx := context.WithoutCancel(parent)
	if parent.Err() != nil {
		return context.WithDeadline(ctx, w.markStop().Add(w.cfg.StopTimeout))
	}
	return context.WithTimeout(ctx, finishTimeout)
}

// noteStop records when ctx ends, the start of a shutdown that bounds the
// final writes (finishContext); the returned func stops watching.
func (w *Worker) noteStop(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() { w.markStop() })
}

// markStop returns when the shutdown began, taking now if nothing has said
// so yet: a final write may come before noteStop's goroutine has run.
func (w *Worker) markStop() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopAt.IsZero() {
		w.stopAt = time.Now()
	}
	return w.stopAt
}

// Drain stops claiming new jobs; running ones finish, then Run returns.
func (w *Worker) Drain() { w.drainOnce.Do(func() { close(w.drain) }) }

func (w *Worker) draining() bool {
	select {
	case <-w.drain:
		return true
	default:
		return false
	}
}

// runnable is what this worker takes (see takes).
func (w *Worker) runnable(j *manifest.Job) bool {
	return takes(j, func(j *manifest.Job) bool { _, ok := w.handlers[j.Kind()]; return ok }, w.cfg.CanRun)
}

// takes is the rule of which jobs a worker claims, which an observer
// applies too: invalid jobs, to fail them; valid ones with a handler
// (handled; nil: every job) on a host that can run them (canRun; nil: any).
func takes(j *manifest.Job, handled func(*manifest.Job) bool, canRun func(*manifest.Job) error) bool {
	if j.Invalid != nil {
		return true
	}
	if handled != nil && !handled(j) {
		return false
	}
	return canRun == nil || canRun(j) == nil
}

// Run serves until ctx ends (running jobs are interrupted and handed back),
// Drain is called, or — with a negative loop interval — nothing is left.
func (w *Worker) Run(ctx context.Context) error {
	defer w.noteStop(ctx)()
	free := make(chan Slot, len(w.cfg.Slots))
	for _, s := range w.cfg.Slots {
		free <- s
	}
	done := make(chan struct{}, len(w.cfg.Slots))
	var wg sync.WaitGroup
	running := 0
	defer wg.Wait()
	// busyAt is when the worker last had or saw work (idle exit).
	busyAt := time.Now()
	for {
		if ctx.Err() != nil || w.draining() {
			return nil
		}
		var slot Slot
		select {
		case slot = <-free:
		case <-done:
			running--
			busyAt = time.Now()
			continue
		case <-ctx.Done():
			return nil
		case <-w.drain:
			return nil
		}
		start := time.Now()
		c, l, seen, err := w.claimNext(ctx, slot)
		if w.cfg.Hooks.ScanDone != nil {
			w.cfg.Hooks.ScanDone(time.Since(start))
		}
		if err != nil && ctx.Err() == nil {
			w.log.Warn("scan failed", "err", err)
		}
		if c == nil {
			free <- slot
			// A final write waiting for its retry keeps even a worker that
			// processes what is available and exits: the job would show
			// running until the claim timeout.
			if w.cfg.LoopInterval < 0 && running == 0 && w.finishes.len() == 0 {
				return nil
			}
			// A job seen but taken by another worker was there all the
			// same. A failed scan saw nothing: a worker that cannot read
			// GitLab for the idle time exits, and the observer, which keeps
			// its last counts, has another one started.
			if running > 0 || seen > 0 || w.finishes.len() > 0 {
				busyAt = time.Now()
			} else if w.cfg.ExitWhenIdle > 0 && time.Since(busyAt) >= w.cfg.ExitWhenIdle {
				w.log.Info("no runnable job for --exit-when-idle; exiting", "idle", time.Since(busyAt).Round(time.Second))
				return nil
			}
			wait := w.cfg.LoopInterval
			if wait < 0 {
				wait = time.Hour // only a finishing job can bring more work
				if w.finishes.len() > 0 {
					wait = w.retryEvery()
				}
			}
			if w.cfg.ExitWhenIdle > 0 && running == 0 {
				// Look once more when the idle time is up, not a loop later.
				wait = max(min(wait, w.cfg.ExitWhenIdle-time.Since(busyAt)), 0)
			}
			select {
			case <-time.After(wait):
			case <-done:
				running--
				busyAt = time.Now()
			case <-ctx.Done():
				return nil
			case <-w.drain:
				return nil
			}
			continue
		}
		running++
		wg.Add(1)
		key := c.proj.Name()
		w.setRunning(key, c.job.ID, true)
		go func() {
			defer wg.Done()
			w.runJob(ctx, c, l, slot)
			w.setRunning(key, c.job.ID, false)
			w.retain()
			free <- slot
			done <- struct{}{}
		}()
	}
}

// claimNext scans the projects and claims the first job it can; seen
// counts the claimable jobs the scan found.
func (w *Worker) claimNext(ctx context.Context, slot Slot) (c *candidate, l *lease, seen int, err error) {
	// Final writes that could not land earlier (canceled jobs among them)
	// come first: a job must not stay "running" with nobody on it.
	w.retryFinishes(ctx)
	projects, err := w.src.Projects(ctx)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("list projects: %w", err)
	}
	var errs []error
	for _, p := range projects {
		cands, err := w.scan.scan(ctx, p, w.cfg.Now())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name(), err))
		}
		seen += len(cands)
		for i := range cands {
			c := &cands[i]
			l, _, err := w.claimOrFail(ctx, c)
			w.scan.forget(p)
			if err == nil && l != nil {
				return c, l, seen, nil
			}
			if err != nil && !errors.Is(err, ErrTaken) {
				errs = append(errs, err)
			}
			if ctx.Err() != nil {
				return nil, nil, seen, ctx.Err()
			}
		}
	}
	return nil, nil, seen, errors.Join(errs...)
}

// claimOrFail claims a job to run it (lease returned), or claims and fails
// at once a job that cannot run (nil lease, nil error, closed says why).
func (w *Worker) claimOrFail(ctx context.Context, c *candidate) (l *lease, closed string, err error) {
	now := w.cfg.Now()
	job := c.job
	why := closeReason(c, now, w.cfg.MaxJobRetries)
	first := manifest.Response{State: manifest.StateRunning, StatusMessage: "claimed; preparing"}
	var extra []project.Action
	switch {
	case c.closeCanceled:
		first = manifest.Response{State: manifest.StateCanceled, TerminationReason: manifest.Ptr(manifest.ReasonCanceled),
			StatusMessage: "canceled: " + manifest.ReasonCanceled, Result: c.stale.resp.Result}
	case why != "":
		// A job failed before it starts still gets its logs.txt.
		var logAct project.Action
		first, logAct = w.failedBeforeStart(ctx, c.proj, job, why)
		extra = []project.Action{logAct}
	}
	key := jobKey(c.proj.Name(), job.ID)
	if c.own != nil {
		w.log.Info("our claim landed after its commit was reported failed; taking it up", "project", c.proj.Name(), "job", job.ID)
		l = adopt(c.proj, job.ID, w.me, w.scan.limits, c.own)
		if why != "" {
			err = l.write(ctx, fmt.Sprintf("Job %s failed", job.ID), func(r *manifest.Response) {
				r.State, r.ErrorMessage, r.Timestamp, r.StatusMessage = first.State, first.ErrorMessage, now, first.StatusMessage
			}, extra)
		}
	} else {
		if c.stale != nil && c.stale.resp.WorkerID == w.me.workerID {
			w.log.Info("resuming this worker's claim from before a restart", "project", c.proj.Name(), "job", job.ID)
		}
		l, err = claim(ctx, c.proj, job.ID, w.me, w.scan.limits, now, c.stale, first, extra...)
	}
	w.mu.Lock()
	var unsure *claimUnsureError
	if errors.As(err, &unsure) {
		w.unsure[key] = true
	} else {
		delete(w.unsure, key)
	}
	w.mu.Unlock()
	if err != nil {
		return nil, "", err
	}
	if why != "" {
		if c.closeCanceled {
			w.log.Info("closed a canceled job its worker had left", "project", c.proj.Name(), "job", job.ID)
		} else {
			w.log.Warn("job failed before it started", "project", c.proj.Name(), "job", job.ID, "reason", why)
		}
		if w.cfg.Hooks.JobFinished != nil {
			w.cfg.Hooks.JobFinished(job, first.State, 0)
		}
		return nil, why, nil
	}
	w.log.Info("claimed job", "project", c.proj.Name(), "job", job.ID, "kind", job.Kind(), "retry", l.resp.RetryCount)
	return l, "", nil
}

// closeReason is why claiming a candidate would end the job at once
// instead of running it: canceled while abandoned, invalid, past its
// deadline, or abandoned too often. Empty: the job runs.
func closeReason(c *candidate, now time.Time, maxRetries int) string {
	job := c.job
	switch {
	case c.closeCanceled:
		return manifest.ReasonCanceled
	case job.Invalid != nil:
		return "invalid job: " + job.Invalid.Error()
	case !job.Timeout.IsZero() && now.After(job.Timeout):
		return (&TimeoutError{At: job.Timeout}).Error()
	case c.stale != nil && c.stale.resp.RetryCount+1 > maxRetries:
		return fmt.Sprintf("job abandoned %d times by workers that stopped; giving up after %d retries (last worker: %s)",
			c.stale.resp.RetryCount+1, maxRetries, c.stale.resp.WorkerID)
	}
	return ""
}

// retain keeps the KeepJobs newest job folders, never removing one of a
// job still running here (another slot may be in the middle of it).
func (w *Worker) retain() {
	entries, err := os.ReadDir(w.cfg.WorkDir)
	if err != nil {
		return
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "job_") && !w.folderInUse(e.Name()) {
			dirs = append(dirs, e.Name())
		}
	}
	// Oldest first by modification time; the name orders only unreadable ones.
	sort.Slice(dirs, func(a, b int) bool {
		ia, _ := os.Stat(filepath.Join(w.cfg.WorkDir, dirs[a]))
		ib, _ := os.Stat(filepath.Join(w.cfg.WorkDir, dirs[b]))
		if ia == nil || ib == nil {
			return dirs[a] < dirs[b]
		}
		return ia.ModTime().Before(ib.ModTime())
	})
	for len(dirs) > w.cfg.KeepJobs {
		if err := os.RemoveAll(filepath.Join(w.cfg.WorkDir, dirs[0])); err != nil {
			w.log.Warn("remove old job folder", "dir", dirs[0], "err", err)
		}
		dirs = dirs[1:]
	}
}

// folderInUse reports whether a work folder (job_<id>_<datetime>) belongs
// to a job running here.
func (w *Worker) folderInUse(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for key := range w.running {
		_, id, _ := strings.Cut(key, "\x00")
		rest, ok := strings.CutPrefix(name, "job_"+id+"_")
		if ok && len(rest) == len("2006-01-02T15-04-05") {
			return true
		}
	}
	return false
}
