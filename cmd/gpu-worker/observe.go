package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"gpu-worker/config"
	"gpu-worker/handlers"
	"gpu-worker/manifest"
	"gpu-worker/metrics"
	"gpu-worker/worker"
)

// observeFlags are the settings observe and queue share with run, under
// the same names, so that one config file serves them all.
type observeFlags struct {
	*common
	loop, retries     *int
	claimTimeout      *time.Duration
	listen, logFormat *string
	limitFlags
}

func newObserveFlags(name string, stderr io.Writer, listen bool) (*config.Set, *observeFlags) {
	s, c := opsFlags(name, stderr)
	f := &observeFlags{common: c}
	f.loop = s.Int("loop-interval", 300, "seconds between scans of the queue")
	f.claimTimeout = s.Duration("claim-timeout", worker.DefaultClaimTimeout, "the workers' claim timeout: a claim without heartbeat this long is runnable again")
	f.retries = s.Int("max-job-retries", worker.DefaultMaxJobRetries, "the workers' takeover limit: a stale claim past it is failed, not run")
	f.logFormat = s.String("log-format", "text", "text or json")
	s.Env("loop-interval", "LOOP_INTERVAL")
	s.Env("claim-timeout", "GPU_WORKER_CLAIM_TIMEOUT")
	s.Env("max-job-retries", "GPU_WORKER_MAX_JOB_RETRIES")
	s.Env("log-format", "GPU_WORKER_LOG_FORMAT")
	f.limitFlags = addLimitFlags(s)
	if listen {
		f.listen = s.String("listen-address", ":9402", "serve /queue (JSON), /metrics, /healthz and /readyz here")
		s.Env("listen-address", "GPU_WORKER_LISTEN_ADDRESS")
		s.Alias("listen", "listen-address")
	}
	return s, f
}

// observer is the queue as the workers see it, with the series and the
// report that publish it.
type observer struct {
	obs   *worker.Observer
	m     *metrics.Metrics
	queue *metrics.Queue
	log   *slog.Logger
}

func (f *observeFlags) observer(log *slog.Logger) (*observer, error) {
	lim, err := f.limits()
	if err != nil {
		return nil, err
	}
	m := metrics.New(metrics.Options{Version: version, Observer: true})
	b, err := f.backend(log, backendOptions{http: &http.Client{Transport: m.Transport(nil)}})
	if err != nil {
		return nil, err
	}
	handled := handlers.Registry(handlers.Config{})
	var known []metrics.ModelLabel
	for _, md := range handlers.Models() {
		known = append(known, metrics.ModelLabel{JobType: md.Spec.JobType, Model: md.Spec.Name})
	}
	obs := worker.NewObserver(worker.ObserverConfig{
		ClaimTimeout: *f.claimTimeout, MaxJobRetries: *f.retries, Models: handlers.Catalog(), Limits: lim,
		Handled: func(j *manifest.Job) bool { _, ok := handled[j.Kind()]; return ok },
	}, b.source(), log)
	needs := func(j *manifest.Job) (int, uint64) { return handlers.JobGPUs(j), handlers.EstimateMemory(j) }
	return &observer{obs: obs, m: m, queue: m.NewQueue(known, needs), log: log}, nil
}

// scan counts the queue once and publishes it.
func (o *observer) scan(ctx context.Context) error {
	before := o.m.RequestsSent()
	q, err := o.obs.Scan(ctx)
	o.queue.Update(q, int(o.m.RequestsSent()-before), err)
	return err
}

func observeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, f := newObserveFlags("gpu-worker observe", stderr, true)
	if err := parseOps(s, f.common, stderr, args); err != nil {
		return err
	}
	if *f.loop <= 0 {
		return usageErr(stderr, "observe", "--loop-interval must be a positive number of seconds")
	}
	if *f.claimTimeout <= 0 || *f.retries <= 0 {
		return usageErr(stderr, "observe", "--claim-timeout and --max-job-retries must be positive")
	}
	log := newLogger(stderr, *f.logFormat, []string{*f.token})
	o, err := f.observer(log)
	if err != nil {
		return usageErr(stderr, "observe", "%v", err)
	}
	ln, err := net.Listen("tcp", *f.listen)
	if err != nil {
		return fmt.Errorf("listen address: %w", err)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	interval := time.Duration(*f.loop) * time.Second
	mux := http.NewServeMux()
	mux.Handle("/queue", o.queue)
	mux.Handle("/", o.m.Handler(time.Now(), 3*interval+10*time.Minute))
	served := make(chan error, 1)
	go func() { served <- metrics.Serve(ctx, ln, mux, log) }()
	log.Info("observing the queue", "address", ln.Addr().String(), "loop_interval", interval)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("observer stopped")
			return <-served
		case err := <-served:
			return fmt.Errorf("serve: %w", err)
		case <-t.C:
		}
		if err := o.scan(ctx); err != nil && ctx.Err() == nil {
			log.Warn("scan failed; the queue keeps what the last scan of each project found", "err", err)
		}
		t.Reset(interval)
	}
}

func queueCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, f := newObserveFlags("gpu-worker queue", stderr, false)
	asJSON := s.Bool("json", false, "print the /queue document instead of a table")
	if err := parseOps(s, f.common, stderr, args); err != nil {
		return err
	}
	o, err := f.observer(quietLogger(stderr))
	if errors.Is(err, errNoBackend) {
		return usageErr(stderr, "queue", "%v", err)
	}
	if err != nil {
		return err
	}
	scanErr := o.scan(ctx)
	rep, err := o.queue.Report()
	if err != nil {
		return scanErr
	}
	if *asJSON {
		if err := writeQueueJSON(stdout, rep); err != nil {
			return err
		}
	} else if err := writeQueueTable(stdout, rep); err != nil {
		return err
	}
	return scanErr
}
