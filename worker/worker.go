// Package worker is the daemon: scan projects, claim a job exclusively,
// run its handler under a heartbeat lease and a cancel watch, and write the
// outcome back in one commit.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

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
	MaxJobRetries       int
	Slots               []Slot
	// Models resolves each job's model (its fields and defaults); nil
	// takes jobs as parsed.
	Models manifest.Catalog
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

	drainOnce sync.Once
	drain     chan struct{}
}

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
	def(&cfg.ClaimTimeout, 24*time.Hour)
	if cfg.KeepJobs <= 0 {
		cfg.KeepJobs = 5
	}
	if cfg.MaxJobRetries <= 0 {
		cfg.MaxJobRetries = 3
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
	w := &Worker{cfg: cfg, src: src, handlers: handlers, log: log, drain: make(chan struct{})}
	w.scan = newScanner(cfg.ClaimTimeout, w.runnable, log)
	w.scan.models = cfg.Models
	return w
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

// runnable: invalid jobs are claimed to be failed; valid ones need a handler
// and a host that can run them.
func (w *Worker) runnable(j *manifest.Job) bool {
	if j.Invalid != nil {
		return true
	}
	if _, ok := w.handlers[j.Kind()]; !ok {
		return false
	}
	return w.cfg.CanRun == nil || w.cfg.CanRun(j) == nil
}

// Run serves until ctx ends (running jobs are interrupted and handed back),
// Drain is called, or — with a negative loop interval — nothing is left.
func (w *Worker) Run(ctx context.Context) error {
	free := make(chan Slot, len(w.cfg.Slots))
	for _, s := range w.cfg.Slots {
		free <- s
	}
	done := make(chan struct{}, len(w.cfg.Slots))
	var wg sync.WaitGroup
	running := 0
	defer wg.Wait()
	for {
		if ctx.Err() != nil || w.draining() {
			return nil
		}
		var slot Slot
		select {
		case slot = <-free:
		case <-done:
			running--
			continue
		case <-ctx.Done():
			return nil
		case <-w.drain:
			return nil
		}
		start := time.Now()
		c, l, err := w.claimNext(ctx, slot)
		if w.cfg.Hooks.ScanDone != nil {
			w.cfg.Hooks.ScanDone(time.Since(start))
		}
		if err != nil && ctx.Err() == nil {
			w.log.Warn("scan failed", "err", err)
		}
		if c == nil {
			free <- slot
			if w.cfg.LoopInterval < 0 && running == 0 {
				return nil
			}
			wait := w.cfg.LoopInterval
			if wait < 0 {
				wait = time.Hour // only a finishing job can bring more work
			}
			select {
			case <-time.After(wait):
			case <-done:
				running--
			case <-ctx.Done():
				return nil
			case <-w.drain:
				return nil
			}
			continue
		}
		running++
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.runJob(ctx, c, l, slot)
			w.retain()
			free <- slot
			done <- struct{}{}
		}()
	}
}

// claimNext scans the projects and claims the first job it can.
func (w *Worker) claimNext(ctx context.Context, slot Slot) (*candidate, *lease, error) {
	projects, err := w.src.Projects(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list projects: %w", err)
	}
	var errs []error
	for _, p := range projects {
		cands, err := w.scan.scan(ctx, p, w.cfg.Now())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name(), err))
		}
		for i := range cands {
			c := &cands[i]
			l, err := w.claimOrFail(ctx, c)
			w.scan.forget(p)
			if err == nil && l != nil {
				return c, l, nil
			}
			if err != nil && !errors.Is(err, ErrTaken) {
				errs = append(errs, err)
			}
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
		}
	}
	return nil, nil, errors.Join(errs...)
}

// claimOrFail claims a job to run it (lease returned), or claims and fails
// at once a job that cannot run (nil lease, nil error).
func (w *Worker) claimOrFail(ctx context.Context, c *candidate) (*lease, error) {
	now := w.cfg.Now()
	job := c.job
	var why string
	switch {
	case job.Invalid != nil:
		why = "invalid job: " + job.Invalid.Error()
	case !job.Timeout.IsZero() && now.After(job.Timeout):
		why = (&TimeoutError{At: job.Timeout}).Error()
	case c.stale != nil && c.stale.resp.RetryCount+1 > w.cfg.MaxJobRetries:
		why = fmt.Sprintf("job abandoned %d times by workers that stopped; giving up after %d retries (last worker: %s)",
			c.stale.resp.RetryCount+1, w.cfg.MaxJobRetries, c.stale.resp.WorkerID)
	}
	first := manifest.Response{State: manifest.StateRunning, StatusMessage: "claimed; preparing"}
	if why != "" {
		first = manifest.Response{State: manifest.StateFailed, ErrorMessage: &why}
	}
	l, err := claim(ctx, c.proj, job.ID, w.cfg.WorkerID, now, c.stale, first)
	if err != nil {
		return nil, err
	}
	if why != "" {
		w.log.Warn("job failed before it started", "project", c.proj.Name(), "job", job.ID, "reason", why)
		if w.cfg.Hooks.JobFinished != nil {
			w.cfg.Hooks.JobFinished(job, manifest.StateFailed, 0)
		}
		return nil, nil
	}
	w.log.Info("claimed job", "project", c.proj.Name(), "job", job.ID, "kind", job.Kind(), "retry", l.resp.RetryCount)
	return l, nil
}

// retain keeps the KeepJobs newest job folders.
func (w *Worker) retain() {
	entries, err := os.ReadDir(w.cfg.WorkDir)
	if err != nil {
		return
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "job_") {
			dirs = append(dirs, e.Name())
		}
	}
	// Names end in a UTC datetime; the newest sort last by modification time.
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
