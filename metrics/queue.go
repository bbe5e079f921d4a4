package metrics

import (
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gpu-worker/manifest"
	"gpu-worker/worker"
)

// ModelLabel is a (job_type, model) pair the queue series always carry,
// at zero when no job of the model waits, so that sums are never empty.
type ModelLabel struct{ JobType, Model string }

// Queue publishes an observer's latest scan: the queue series on the
// Metrics' registry and the /queue JSON. Before the first scan it reports
// nothing, so that an autoscaler reading it holds rather than scale to
// zero on a restart.
type Queue struct {
	m     *Metrics
	known []ModelLabel
	needs Needs

	runnable, claimed, oldest, requests, scannedAt *prometheus.Desc
	scans                                          *prometheus.CounterVec

	mu      sync.Mutex
	snap    worker.Queue
	scanned bool
	reqs    int
	lastErr string
}

// Needs is what a job asks of a host: GPUs and GPU memory in bytes, as
// the code that runs jobs reckons them.
type Needs func(j *manifest.Job) (gpus int, memory uint64)

// NewQueue registers the queue series on m; the report shows each job's
// needs (nil: none shown).
func (m *Metrics) NewQueue(known []ModelLabel, needs Needs) *Queue {
	if needs == nil {
		needs = func(*manifest.Job) (int, uint64) { return 0, 0 }
	}
	q := &Queue{
		m:     m,
		known: known,
		needs: needs,
		runnable: prometheus.NewDesc(ns+"_jobs_runnable",
			"Jobs a worker would claim and run now: queued, handed back, or with a claim gone stale within the retry limit.",
			[]string{"job_type", "model"}, nil),
		claimed: prometheus.NewDesc(ns+"_jobs_claimed",
			"Jobs claimed by a worker whose heartbeat is live, across the fleet (a worker's own are gpu_worker_jobs_running).",
			[]string{"job_type", "model"}, nil),
		oldest: prometheus.NewDesc(ns+"_job_oldest_runnable_age_seconds",
			"Age of the oldest runnable job (since its submitted_at, or since the observer first saw it); 0 when none.", nil, nil),
		requests: prometheus.NewDesc(ns+"_scan_requests",
			"GitLab requests the last scan made.", nil, nil),
		scannedAt: prometheus.NewDesc(ns+"_queue_scanned_timestamp_seconds",
			"When the last scan that counted the queue ended (Unix time).", nil, nil),
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "scans_total",
			Help: "Scans of the queue by result (ok; partial: some projects unreadable; error: projects not listed)."}, []string{"result"}),
	}
	for _, r := range []string{"ok", "partial", "error"} {
		q.scans.WithLabelValues(r)
	}
	m.reg.MustRegister(q, q.scans)
	return q
}

// Update records a scan: its queue, the requests it made and its error.
// A scan that could not list the projects keeps the previous queue.
func (q *Queue) Update(snap worker.Queue, requests int, err error) {
	listed := !snap.At.IsZero()
	result := "ok"
	switch {
	case err != nil && !listed:
		result = "error"
	case err != nil:
		result = "partial"
	}
	q.scans.WithLabelValues(result).Inc()
	q.mu.Lock()
	q.lastErr = ""
	if err != nil {
		q.lastErr = err.Error()
	}
	if listed {
		q.snap, q.scanned, q.reqs = snap, true, requests
	}
	q.mu.Unlock()
	if listed {
		q.m.scanDone(snap.Took)
	}
}

// QueueReport is the /queue document (and `gpu-worker queue --json`).
// KEDA's metrics-api scaler reads one of its numbers: "runnable" for a
// ScaledJob, "wanted" (runnable + running) for a ScaledObject.
type QueueReport struct {
	Runnable                 int        `json:"runnable"`
	Running                  int        `json:"running"`
	Wanted                   int        `json:"wanted"`
	OldestRunnableAgeSeconds float64    `json:"oldest_runnable_age_seconds"`
	ScannedAt                time.Time  `json:"scanned_at"`
	ScanSeconds              float64    `json:"scan_seconds"`
	ScanRequests             int        `json:"scan_requests"`
	Error                    string     `json:"error,omitempty"`
	Jobs                     []QueueJob `json:"jobs"`
}

// QueueJob is one job of a QueueReport.
type QueueJob struct {
	Project             string    `json:"project"`
	ID                  string    `json:"id"`
	Type                string    `json:"type"`
	Mode                string    `json:"mode"`
	Model               string    `json:"model"`
	Size                string    `json:"size"`
	GPUs                int       `json:"gpus"`
	Priority            int       `json:"priority"`
	MemoryEstimateBytes uint64    `json:"memory_estimate_bytes"`
	State               string    `json:"state"`
	Reason              string    `json:"reason"`
	Since               time.Time `json:"since"`
	AgeSeconds          float64   `json:"age_seconds"`
	WorkerID            string    `json:"worker_id,omitempty"`
	RetryCount          int       `json:"retry_count,omitempty"`
	LastHeartbeat       time.Time `json:"last_heartbeat,omitzero"`
}

// errNoScan: nothing to report before the first scan.
var errNoScan = errors.New("no scan of the queue has finished yet")

// Report is the latest scan as a document, ages as of now.
func (q *Queue) Report() (QueueReport, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.scanned {
		return QueueReport{}, errNoScan
	}
	now := q.m.now()
	r := QueueReport{ScannedAt: q.snap.At, ScanSeconds: q.snap.Took.Seconds(), ScanRequests: q.reqs, Error: q.lastErr, Jobs: []QueueJob{}}
	for _, j := range q.snap.Jobs {
		gpus, memory := q.needs(j.Job)
		row := QueueJob{Project: j.Project, ID: j.Job.ID, Type: j.Job.JobType, Mode: j.Job.Mode, Model: modelName(j.Job),
			Size: j.Job.ModelSize, GPUs: gpus, Priority: j.Job.Priority, MemoryEstimateBytes: memory,
			State: j.State, Reason: j.Reason, Since: j.Since, AgeSeconds: max(now.Sub(j.Since).Seconds(), 0),
			WorkerID: j.WorkerID, RetryCount: j.RetryCount, LastHeartbeat: j.Heartbeat}
		if row.Size == "" {
			row.Size = "default"
		}
		switch j.State {
		case worker.QueueRunnable:
			r.Runnable++
			r.OldestRunnableAgeSeconds = max(r.OldestRunnableAgeSeconds, row.AgeSeconds)
		case worker.QueueRunning:
			r.Running++
		}
		r.Jobs = append(r.Jobs, row)
	}
	r.Wanted = r.Runnable + r.Running
	return r, nil
}

// ServeHTTP answers /queue: the report as JSON, or 503 before the first
// scan.
func (q *Queue) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rep, err := q.Report()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(rep)
}

// modelName is the job's canonical model, as written when unresolved.
func modelName(j *manifest.Job) string {
	if j.Spec != nil {
		return j.Spec.Name
	}
	if j.ModelType == "" {
		return "unknown"
	}
	return j.ModelType
}

func (q *Queue) Describe(ch chan<- *prometheus.Desc) {
	ch <- q.runnable
	ch <- q.claimed
	ch <- q.oldest
	ch <- q.requests
	ch <- q.scannedAt
}

func (q *Queue) Collect(ch chan<- prometheus.Metric) {
	rep, err := q.Report()
	if err != nil {
		return
	}
	runnable, claimed := map[ModelLabel]int{}, map[ModelLabel]int{}
	for _, k := range q.known {
		runnable[k], claimed[k] = 0, 0
	}
	for _, j := range rep.Jobs {
		k := ModelLabel{JobType: j.Type, Model: j.Model}
		switch j.State {
		case worker.QueueRunnable:
			runnable[k]++
		case worker.QueueRunning:
			claimed[k]++
		}
	}
	for k, n := range runnable {
		ch <- prometheus.MustNewConstMetric(q.runnable, prometheus.GaugeValue, float64(n), k.JobType, k.Model)
	}
	for k, n := range claimed {
		ch <- prometheus.MustNewConstMetric(q.claimed, prometheus.GaugeValue, float64(n), k.JobType, k.Model)
	}
	ch <- prometheus.MustNewConstMetric(q.oldest, prometheus.GaugeValue, rep.OldestRunnableAgeSeconds)
	ch <- prometheus.MustNewConstMetric(q.requests, prometheus.GaugeValue, float64(rep.ScanRequests))
	ch <- prometheus.MustNewConstMetric(q.scannedAt, prometheus.GaugeValue, float64(rep.ScannedAt.UnixNano())/1e9)
}
