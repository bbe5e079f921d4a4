package metrics

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/gpu"
	"gpu-worker/manifest"
	"gpu-worker/project"
	"gpu-worker/worker"
)

// scrape reads /metrics into series text → value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

type clientSource struct{ c *gitlab.Client }

func (s clientSource) Projects(ctx context.Context) ([]project.Project, error) {
	ps, err := s.c.Projects(ctx, gitlab.ListOptions{})
	out := make([]project.Project, len(ps))
	for i, p := range ps {
		out[i] = p
	}
	return out, err
}

const oneJob = `version: 1
jobs:
  - job_id: j1
    job_type: asr
    mode: training
    model: {type: W2V2BERT}
    epochs: 3
`

// TestScrapeWhileJobRuns runs a job through the worker against the GitLab
// emulator and scrapes /metrics during and after it.
func TestScrapeWhileJobRuns(t *testing.T) {
	s := gitlabtest.New(t)
	s.CreateProject("team/mark")
	s.UserCommit(t, "team/mark", "add job", map[string][]byte{manifest.Path: []byte(oneJob)})
	// The first tree listing fails once: the client retries it.
	s.InjectFault(gitlabtest.Fault{Endpoint: "GET tree", Nth: 1, Status: http.StatusServiceUnavailable})

	m := New(Options{Version: "test", GPUs: gpu.Static{{Index: 0, Name: "Fake", MemTotal: 80 * gpu.GiB, MemUsed: gpu.GiB, Available: true}}})
	client, err := gitlab.New(gitlab.Config{BaseURL: s.URL(), Token: gitlabtest.DefaultToken,
		HTTPClient: &http.Client{Transport: m.Transport(nil)}, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler(time.Now(), time.Hour))
	defer srv.Close()

	payload := make([]byte, 1000)
	for i := range payload {
		payload[i] = byte(i)
	}
	running, proceed := make(chan struct{}), make(chan struct{})
	h := worker.HandlerFunc(func(ctx context.Context, env *worker.JobEnv) (*worker.Outcome, error) {
		env.Report(worker.Progress{Epoch: 1, Epochs: 3, ETA: 90 * time.Second})
		src := filepath.Join(env.WorkDir, "model.bin")
		os.WriteFile(src, payload, 0o644)
		ptr, err := env.Project.PutLFS(ctx, src)
		if err != nil {
			return nil, err
		}
		if err := env.Project.GetLFS(ctx, ptr, filepath.Join(env.WorkDir, "back.bin")); err != nil {
			return nil, err
		}
		close(running)
		<-proceed
		return &worker.Outcome{}, nil
	})
	w := worker.New(worker.Config{WorkerID: "w1", WorkDir: t.TempDir(), LoopInterval: -1, Hooks: m.Hooks()},
		clientSource{client}, worker.Registry{"asr/w2v2bert/training": h}, nil)
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	select {
	case <-running:
	case err := <-done:
		t.Fatalf("worker ended before the job ran: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("job never started")
	}

	during := scrape(t, srv.URL)
	job := `{job_id="j1",job_type="asr",mode="training"}`
	expect := map[string]float64{
		`gpu_worker_jobs_running{job_type="asr",mode="training"}`:     1,
		`gpu_worker_job_epoch` + job:                                  1,
		`gpu_worker_job_epochs` + job:                                 3,
		`gpu_worker_job_eta_seconds` + job:                            90,
		`gpu_worker_lfs_bytes_total{direction="up"}`:                  1000,
		`gpu_worker_lfs_bytes_total{direction="down"}`:                1000,
		`gpu_worker_api_retries_total{endpoint="tree"}`:               1,
		`gpu_worker_api_errors_total{endpoint="tree"}`:                1,
		`gpu_worker_api_requests_total{endpoint="tree",status="503"}`: 1,
		`gpu_worker_gpu_memory_total_bytes{gpu="0",name="Fake"}`:      80 * gpu.GiB,
		`gpu_worker_build_info{version="test"}`:                       1,
	}
	for k, want := range expect {
		if got, ok := during[k]; !ok || got != want {
			t.Errorf("during the job: %s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	commitsDuring := during[`gpu_worker_api_requests_total{endpoint="commits",status="201"}`]
	if commitsDuring < 1 {
		t.Errorf("the claim commit was not counted: %v", commitsDuring)
	}
	if during[`gpu_worker_scan_duration_seconds_count`] < 1 {
		t.Errorf("no scan counted")
	}

	close(proceed)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	after := scrape(t, srv.URL)
	if v := after[`gpu_worker_jobs_running{job_type="asr",mode="training"}`]; v != 0 {
		t.Errorf("still running after the job: %v", v)
	}
	if v := after[`gpu_worker_jobs_total{job_type="asr",mode="training",state="completed"}`]; v != 1 {
		t.Errorf("completed jobs: %v", v)
	}
	if v := after[`gpu_worker_job_duration_seconds_count{job_type="asr",mode="training",state="completed"}`]; v != 1 {
		t.Errorf("duration observations: %v", v)
	}
	if _, ok := after[`gpu_worker_job_epoch`+job]; ok {
		t.Errorf("progress series outlived the job")
	}
	if after[`gpu_worker_api_requests_total{endpoint="commits",status="201"}`] <= commitsDuring {
		t.Errorf("the final commit was not counted")
	}

	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var hz Health
	json.NewDecoder(resp.Body).Decode(&hz)
	if resp.StatusCode != 200 || hz.Status != "ok" || hz.LastScan.IsZero() {
		t.Errorf("healthz: %d %+v", resp.StatusCode, hz)
	}
}

func TestHealthGoesStaleWhenIdleLoopStops(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := New(Options{Now: func() time.Time { return now }})
	h := m.Hooks()
	start := now
	h.ScanDone(time.Second)
	now = now.Add(10 * time.Minute)
	if c := m.Check(start, 15*time.Minute); c.Status != "ok" {
		t.Errorf("recent scan: %+v", c)
	}
	now = now.Add(10 * time.Minute)
	if c := m.Check(start, 15*time.Minute); c.Status != "unhealthy" || c.Reason == "" {
		t.Errorf("stale scan: %+v", c)
	}
	j := &manifest.Job{ID: "x", JobType: "tts", Mode: "training"}
	h.JobStarted(j)
	if c := m.Check(start, 15*time.Minute); c.Status != "ok" || c.RunningJobs != 1 {
		t.Errorf("busy worker: %+v", c)
	}
	// A job failed at claim never started: running must not go negative.
	h.JobFinished(&manifest.Job{ID: "bad"}, manifest.StateFailed, 0)
	h.JobFinished(j, manifest.StateCompleted, time.Minute)
	srv := httptest.NewServer(m.Handler(start, 15*time.Minute))
	defer srv.Close()
	got := scrape(t, srv.URL)
	if got[`gpu_worker_jobs_running{job_type="tts",mode="training"}`] != 0 ||
		got[`gpu_worker_jobs_total{job_type="unknown",mode="unknown",state="failed"}`] != 1 {
		t.Errorf("series: %v", got)
	}
	resp, _ := http.Get(srv.URL + "/healthz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("healthz when stale: %d", resp.StatusCode)
	}
}

func TestEndpoint(t *testing.T) {
	cases := map[string]string{
		"https://g/api/v4/projects?membership=true":                             "projects",
		"https://g/api/v4/projects/team%2Fmark":                                 "project",
		"https://g/api/v4/projects/7/repository/files/gpu_jobs%2Fmanifest.yaml": "files",
		"https://g/api/v4/projects/7/repository/files/a%2Fb.wav/raw?lfs=true":   "raw",
		"https://g/api/v4/projects/7/repository/commits":                        "commits",
		"https://g/api/v4/projects/7/repository/tree?recursive=true":            "tree",
		"https://g/api/v4/personal_access_tokens/self":                          "personal_access_tokens",
		"https://g/team/mark.git/info/lfs/objects/batch":                        "lfs batch",
		"https://g/team/mark.git/gitlab-lfs/objects/abc/10":                     "lfs object",
		"https://bucket.s3.example/obj?X-Amz-Signature=1":                       "lfs object",
	}
	for u, want := range cases {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if got := Endpoint(req); got != want {
			t.Errorf("%s: %q, want %q", u, got, want)
		}
	}
}
