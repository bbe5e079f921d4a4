package metrics

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"gpu-worker/manifest"
	"gpu-worker/worker"
)

func TestQueueSeriesAndReport(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	m := New(Options{Version: "test", Now: func() time.Time { return now }, Observer: true})
	// The needs are the caller's: here a job's GPUs, and 1 GiB per GPU.
	q := m.NewQueue([]ModelLabel{{"tts", "StableTTS"}, {"asr", "MMS"}}, func(j *manifest.Job) (int, uint64) {
		return max(j.GPUs, 1), uint64(max(j.GPUs, 1)) << 30
	})
	mux := http.NewServeMux()
	mux.Handle("/queue", q)
	mux.Handle("/", m.Handler(now, time.Hour))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// Before the first scan: nothing to scale on, and not ready.
	for _, path := range []string{"/queue", "/readyz"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s before the first scan: %d", path, resp.StatusCode)
		}
	}
	for series := range scrape(t, srv.URL) {
		if strings.HasPrefix(series, "gpu_worker_jobs_") || strings.HasPrefix(series, "gpu_worker_job_oldest") {
			t.Errorf("%s before the first scan", series)
		}
	}

	tts := &manifest.Job{ID: "v", JobType: "tts", Mode: "training", ModelType: "StableTTS"}
	asr := &manifest.Job{ID: "a", JobType: "asr", Mode: "training", ModelType: "W2V2BERT", ModelSize: "tiny", GPUs: 2}
	q.Update(worker.Queue{At: now, Took: 40 * time.Millisecond, Jobs: []worker.QueuedJob{
		{Project: "team/a", Job: tts, State: worker.QueueRunnable, Since: now.Add(-2 * time.Hour)},
		{Project: "team/a", Job: asr, State: worker.QueueRunnable, Since: now.Add(-time.Minute)},
		{Project: "team/b", Job: &manifest.Job{ID: "r", JobType: "tts", Mode: "inference", ModelType: "StableTTS"}, State: worker.QueueRunning,
			Since: now.Add(-time.Hour), WorkerID: "gpu-1", Heartbeat: now.Add(-time.Minute)},
		{Project: "team/b", Job: &manifest.Job{ID: "bad", JobType: "tts", ModelType: "StableTTS"}, State: worker.QueueFailing, Since: now},
	}}, 7, nil)
	got := scrape(t, srv.URL)
	for series, want := range map[string]float64{
		`gpu_worker_jobs_runnable{job_type="tts",model="StableTTS"}`: 1,
		`gpu_worker_jobs_runnable{job_type="asr",model="W2V2BERT"}`:  1,
		`gpu_worker_jobs_runnable{job_type="asr",model="MMS"}`:       0,
		`gpu_worker_jobs_claimed{job_type="tts",model="StableTTS"}`:  1,
		`gpu_worker_jobs_claimed{job_type="asr",model="MMS"}`:        0,
		`gpu_worker_job_oldest_runnable_age_seconds`:                 7200,
		`gpu_worker_scan_requests`:                                   7,
		`gpu_worker_scans_total{result="ok"}`:                        1,
		`gpu_worker_scan_duration_seconds_count`:                     1,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	for series := range got {
		if strings.HasPrefix(series, "gpu_worker_jobs_total") || strings.HasPrefix(series, "gpu_worker_jobs_running") {
			t.Errorf("an observer exports the worker's series %s", series)
		}
	}

	// A scan that cannot list the projects keeps the last queue.
	q.Update(worker.Queue{}, 1, errors.New("list projects: 503"))
	resp, err := http.Get(srv.URL + "/queue")
	if err != nil {
		t.Fatal(err)
	}
	var rep QueueReport
	json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if rep.Runnable != 2 || rep.Running != 1 || rep.Wanted != 3 || len(rep.Jobs) != 4 || !strings.Contains(rep.Error, "503") || rep.ScanRequests != 7 {
		t.Fatalf("after a failed scan: %+v", rep)
	}
	if j := rep.Jobs[1]; j.ID != "a" || j.Size != "tiny" || j.Model != "W2V2BERT" || j.AgeSeconds != 60 || j.GPUs != 2 || j.MemoryEstimateBytes != 2<<30 {
		t.Errorf("job a: %+v", j)
	}
	if got := scrape(t, srv.URL)[`gpu_worker_scans_total{result="error"}`]; got != 1 {
		t.Errorf("failed scans counted %v", got)
	}
}

// A worker's event series exist at zero before the first event, so that
// increase() sees the first one and sums over idle workers are 0.
func TestWorkerSeriesStartAtZero(t *testing.T) {
	m := New(Options{Version: "test"})
	srv := httptest.NewServer(m.Handler(time.Now(), time.Hour))
	defer srv.Close()
	got := scrape(t, srv.URL)
	for _, series := range []string{
		`gpu_worker_jobs_total{job_type="tts",mode="training",state="completed"}`,
		`gpu_worker_jobs_total{job_type="asr",mode="inference",state="failed"}`,
		`gpu_worker_jobs_running{job_type="asr",mode="training_and_inference"}`,
		`gpu_worker_api_retries_total{endpoint="files"}`,
		`gpu_worker_api_errors_total{endpoint="commits"}`,
		`gpu_worker_engine_restarts_total`,
	} {
		if v, ok := got[series]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0", series, v, ok)
		}
	}
	m.EngineRestarted()
	m.EngineRestarted()
	if v := scrape(t, srv.URL)[`gpu_worker_engine_restarts_total`]; v != 2 {
		t.Errorf("engine restarts %v, want 2", v)
	}
}
