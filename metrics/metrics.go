// Package metrics exposes the worker's Prometheus series and health on
// HTTP: jobs, scans, GitLab API traffic, LFS bytes, engine restarts, GPU
// memory and the progress of running jobs.
package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gpu-worker/gpu"
	"gpu-worker/manifest"
	"gpu-worker/worker"
)

const ns = "gpu_worker"

// Buckets in round numbers: jobs take minutes to days, scans milliseconds
// to minutes (many projects, slow server).
var (
	jobBuckets  = []float64{60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 24 * 3600, 72 * 3600}
	scanBuckets = []float64{0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300}
)

// Options configures New.
type Options struct {
	Version string
	// GPUs is read at every scrape for memory per device; nil: none.
	GPUs gpu.Lister
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// Observer: the process only observes the queue and runs no job, so
	// the job series start empty rather than at zero.
	Observer bool
}

// Metrics holds the series and serves them.
type Metrics struct {
	reg *prometheus.Registry
	now func() time.Time

	jobsRunning  *prometheus.GaugeVec
	jobsTotal    *prometheus.CounterVec
	jobDuration  *prometheus.HistogramVec
	scanDuration prometheus.Histogram
	apiRequests  *prometheus.CounterVec
	apiRetries   *prometheus.CounterVec
	apiErrors    *prometheus.CounterVec
	lfsBytes     *prometheus.CounterVec
	jobEpoch     *prometheus.GaugeVec
	jobEpochs    *prometheus.GaugeVec
	jobETA       *prometheus.GaugeVec
	restarts     prometheus.Counter

	mu       sync.Mutex
	started  map[string]labels // running job id → its labels
	lastScan time.Time
	failed   map[string]time.Time // request key → when it failed (retry detection)

	sent atomic.Int64 // GitLab requests sent, for per-scan counts
}

// Series that count events exist at zero from the start, so that rate()
// and increase() see their first event and sums over idle workers are 0,
// not empty.
var (
	knownJobTypes  = []string{manifest.TTS, manifest.ASR}
	knownModes     = []string{manifest.Training, manifest.Inference, manifest.TrainingAndInference}
	knownEndStates = []string{"completed", "failed", "canceled", "interrupted", "lost"}
	knownEndpoints = []string{"projects", "project", "files", "raw", "commits", "tree", "lfs batch", "lfs object"}
)

type labels struct{ typ, mode string }

func jobLabels(j *manifest.Job) labels {
	l := labels{typ: j.JobType, mode: j.Mode}
	if l.typ == "" {
		l.typ = "unknown"
	}
	if l.mode == "" {
		l.mode = "unknown"
	}
	return l
}

// New registers every series on a fresh registry.
func New(o Options) *Metrics {
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		now:     o.Now,
		started: map[string]labels{},
		failed:  map[string]time.Time{},
		jobsRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "jobs_running",
			Help: "Jobs running now."}, []string{"job_type", "mode"}),
		jobsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "jobs_total",
			Help: "Jobs ended, by final state (completed, failed, canceled, interrupted, lost)."}, []string{"job_type", "mode", "state"}),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "job_duration_seconds",
			Help: "Wall time of ended jobs.", Buckets: jobBuckets}, []string{"job_type", "mode", "state"}),
		scanDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "scan_duration_seconds",
			Help: "Time of one scan of all projects for a job to claim.", Buckets: scanBuckets}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "api_requests_total",
			Help: "HTTP requests to GitLab by endpoint and status code (\"error\": no answer)."}, []string{"endpoint", "status"}),
		apiRetries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "api_retries_total",
			Help: "Requests repeating one that failed transiently."}, []string{"endpoint"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "api_errors_total",
			Help: "GitLab requests that failed transiently: 5xx, 429, 408 or no answer."}, []string{"endpoint"}),
		lfsBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "lfs_bytes_total",
			Help: "Git LFS object bytes moved, by direction (up, down)."}, []string{"direction"}),
		jobEpoch: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "job_epoch",
			Help: "Current epoch of a running job."}, []string{"job_id", "job_type", "mode"}),
		jobEpochs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "job_epochs",
			Help: "Epochs a running job will train."}, []string{"job_id", "job_type", "mode"}),
		jobETA: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "job_eta_seconds",
			Help: "Estimated time left of a running job."}, []string{"job_id", "job_type", "mode"}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "engine_restarts_total",
			Help: "Engine runs restarted with a smaller batch after running out of GPU memory."}),
	}
	m.reg.MustRegister(m.jobsRunning, m.jobsTotal, m.jobDuration, m.scanDuration, m.apiRequests, m.apiRetries, m.apiErrors,
		m.lfsBytes, m.jobEpoch, m.jobEpochs, m.jobETA, m.restarts,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "build_info",
			Help: "Always 1; the version is a label.", ConstLabels: prometheus.Labels{"version": o.Version}},
			func() float64 { return 1 }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if o.GPUs != nil {
		m.reg.MustRegister(newGPUCollector(o.GPUs))
	}
	// An observer runs no job: its job series stay empty.
	if !o.Observer {
		for _, typ := range knownJobTypes {
			for _, mode := range knownModes {
				m.jobsRunning.WithLabelValues(typ, mode)
				for _, st := range knownEndStates {
					m.jobsTotal.WithLabelValues(typ, mode, st)
				}
			}
		}
	}
	for _, ep := range knownEndpoints {
		m.apiRetries.WithLabelValues(ep)
		m.apiErrors.WithLabelValues(ep)
	}
	return m
}

// RequestsSent is the number of GitLab requests sent through Transport.
func (m *Metrics) RequestsSent() int64 { return m.sent.Load() }

// Registry is where the series live (tests, extra collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Hooks observe the worker: pass them in worker.Config.Hooks.
func (m *Metrics) Hooks() worker.Hooks {
	return worker.Hooks{
		JobStarted:  m.jobStarted,
		JobFinished: m.jobFinished,
		Progress:    m.progress,
		ScanDone:    m.scanDone,
	}
}

// EngineRestarted counts an engine run restarted with a smaller batch
// after it ran out of GPU memory (pass it as handlers.Config.OOMRetried).
func (m *Metrics) EngineRestarted() { m.restarts.Inc() }

func (m *Metrics) jobStarted(j *manifest.Job) {
	l := jobLabels(j)
	m.mu.Lock()
	m.started[j.ID] = l
	m.mu.Unlock()
	m.jobsRunning.WithLabelValues(l.typ, l.mode).Inc()
}

// jobFinished also hears jobs failed at claim time, which never started.
func (m *Metrics) jobFinished(j *manifest.Job, state string, d time.Duration) {
	l := jobLabels(j)
	m.mu.Lock()
	_, ran := m.started[j.ID]
	delete(m.started, j.ID)
	m.mu.Unlock()
	if ran {
		m.jobsRunning.WithLabelValues(l.typ, l.mode).Dec()
		m.jobDuration.WithLabelValues(l.typ, l.mode, state).Observe(d.Seconds())
	}
	m.jobsTotal.WithLabelValues(l.typ, l.mode, state).Inc()
	for _, v := range []*prometheus.GaugeVec{m.jobEpoch, m.jobEpochs, m.jobETA} {
		v.DeleteLabelValues(j.ID, l.typ, l.mode)
	}
}

func (m *Metrics) progress(j *manifest.Job, p worker.Progress) {
	l := jobLabels(j)
	if p.Epochs > 0 {
		m.jobEpoch.WithLabelValues(j.ID, l.typ, l.mode).Set(float64(p.Epoch))
		m.jobEpochs.WithLabelValues(j.ID, l.typ, l.mode).Set(float64(p.Epochs))
	}
	if p.ETA > 0 {
		m.jobETA.WithLabelValues(j.ID, l.typ, l.mode).Set(p.ETA.Seconds())
	}
}

func (m *Metrics) scanDone(d time.Duration) {
	m.scanDuration.Observe(d.Seconds())
	m.mu.Lock()
	m.lastScan = m.now()
	m.mu.Unlock()
}

// Health is the state /healthz reports.
type Health struct {
	Status      string    `json:"status"`
	RunningJobs int       `json:"running_jobs"`
	LastScan    time.Time `json:"last_scan,omitzero"`
	Reason      string    `json:"reason,omitempty"`
}

// Check reports the worker unhealthy when it is idle and has not finished
// a scan within maxScanAge since start or the last scan: its loop is stuck.
// Busy slots legitimately stop scanning, so running jobs count as healthy.
func (m *Metrics) Check(since time.Time, maxScanAge time.Duration) Health {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := Health{Status: "ok", RunningJobs: len(m.started), LastScan: m.lastScan}
	last := m.lastScan
	if last.IsZero() {
		last = since
	}
	if maxScanAge > 0 && h.RunningJobs == 0 && m.now().Sub(last) > maxScanAge {
		h.Status = "unhealthy"
		h.Reason = "no scan finished for " + m.now().Sub(last).Round(time.Second).String()
	}
	return h
}

// Ready reports whether a scan has finished since start: a worker has
// then claimed what it could, an observer has counted the queue.
func (m *Metrics) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.lastScan.IsZero()
}

// Handler serves /metrics, /healthz (health as Check computes it) and
// /readyz (200 once a scan finished).
func (m *Metrics) Handler(since time.Time, maxScanAge time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !m.Ready() {
			http.Error(w, "no scan finished yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		h := m.Check(since, maxScanAge)
		w.Header().Set("Content-Type", "application/json")
		if h.Status != "ok" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(h)
	})
	return mux
}

// Serve answers on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	if log != nil {
		log.Error("metrics server stopped", "err", err)
	}
	return err
}

// gpuCollector reads device memory at scrape time.
type gpuCollector struct {
	l           gpu.Lister
	used, total *prometheus.Desc
}

func newGPUCollector(l gpu.Lister) *gpuCollector {
	return &gpuCollector{
		l: l,
		used: prometheus.NewDesc(ns+"_gpu_memory_used_bytes", "GPU memory in use (all processes).",
			[]string{"gpu", "name"}, nil),
		total: prometheus.NewDesc(ns+"_gpu_memory_total_bytes", "GPU memory installed.",
			[]string{"gpu", "name"}, nil),
	}
}

func (c *gpuCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.used
	ch <- c.total
}

func (c *gpuCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	devs, err := c.l.Devices(ctx)
	if err != nil {
		return
	}
	for _, d := range devs {
		if !d.Available {
			continue
		}
		i := strconv.Itoa(d.Index)
		ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(d.MemUsed), i, d.Name)
		ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(d.MemTotal), i, d.Name)
	}
}
