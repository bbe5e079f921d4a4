package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sigsyaml "sigs.k8s.io/yaml"

	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/gpu"
	"gpu-worker/manifest"
	"gpu-worker/metrics"
	"gpu-worker/worker"
)

// expectations of every dashboard query, by panel title and refId, as the
// scene in TestDashboardAndScalerQueries sets it up.
type check func([]sample) error

// equals: one or more series, all with value v.
func equals(v float64) check {
	return func(s []sample) error {
		if len(s) == 0 {
			return fmt.Errorf("no data")
		}
		for _, x := range s {
			if math.Abs(x.value-v) > 1e-9 {
				return fmt.Errorf("got %v, want %g", s, v)
			}
		}
		return nil
	}
}

// atLeast: one or more series, all finite and ≥ v.
func atLeast(v float64) check {
	return func(s []sample) error {
		if len(s) == 0 {
			return fmt.Errorf("no data")
		}
		for _, x := range s {
			if math.IsNaN(x.value) || math.IsInf(x.value, 0) || x.value < v {
				return fmt.Errorf("got %v, want all ≥ %g", s, v)
			}
		}
		return nil
	}
}

// bySeries: the series whose label has each value must match its check;
// other series must be 0.
func bySeries(label string, want map[string]check) check {
	return func(s []sample) error {
		if len(s) == 0 {
			return fmt.Errorf("no data")
		}
		groups, err := matchGroups(label, s, want)
		if err != nil {
			return err
		}
		for v, g := range groups {
			if _, ok := want[v]; !ok {
				if err := equals(0)(g); err != nil {
					return fmt.Errorf("%s=%q: %w", label, v, err)
				}
			}
		}
		return nil
	}
}

// matchGroups splits samples by a label's value and checks the groups
// want names.
func matchGroups(label string, s []sample, want map[string]check) (map[string][]sample, error) {
	groups := map[string][]sample{}
	for _, x := range s {
		groups[x.labels[label]] = append(groups[x.labels[label]], x)
	}
	for v, c := range want {
		if err := c(groups[v]); err != nil {
			return nil, fmt.Errorf("%s=%q: %w", label, v, err)
		}
	}
	return groups, nil
}

// including: the series whose label has each value must match its check;
// others only need to be finite and not negative.
func including(label string, want map[string]check) check {
	return func(s []sample) error {
		if err := atLeast(0)(s); err != nil {
			return err
		}
		_, err := matchGroups(label, s, want)
		return err
	}
}

const (
	gpuUsed  = 20 * gpu.GiB
	gpuTotal = 80 * gpu.GiB
)

var dashboardExpectations = map[string]check{
	"Runnable jobs/A":                     equals(3),
	"Running jobs/A":                      equals(1),
	"Oldest runnable job/A":               atLeast(2 * 3600),
	"Workers wanted / up/A":               equals(4),
	"Workers wanted / up/B":               equals(1),
	"Queue by model/A":                    bySeries("model", map[string]check{"W2V2BERT": equals(3)}),
	"Queue by model/B":                    bySeries("model", map[string]check{"StableTTS": equals(1)}),
	"Jobs ended by outcome (last hour)/A": bySeries("state", map[string]check{"completed": atLeast(0.5), "failed": atLeast(0.5)}),
	"Training progress/A":                 equals(0.2),
	"Training progress/B":                 equals(2),
	"Time left per job/A":                 equals(300),
	"GPU memory used/A":                   equals(gpuUsed),
	"GPU memory used/B":                   equals(0.25),
	"GitLab API requests/A":               including("endpoint", map[string]check{"files": atLeast(1e-6), "projects": atLeast(1e-6)}),
	"GitLab errors and retries/A":         bySeries("endpoint", map[string]check{"files": atLeast(0.5)}),
	"GitLab errors and retries/B":         bySeries("endpoint", map[string]check{"files": atLeast(0.5)}),
	"Scan duration/A":                     bySeries("job", map[string]check{"observer": atLeast(1e-9), "worker": atLeast(1e-9)}),
	"Scan duration/B":                     atLeast(1),
}

type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name, Type, Query string
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type, UID string
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// dashboardQueries reads deploy/grafana/gpu-worker.json: every query by
// "panel title/refId".
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("grafana", "gpu-worker.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil || d.Title == "" || d.UID == "" {
		t.Fatalf("gpu-worker.json: %v", err)
	}
	if len(d.Templating.List) != 1 || d.Templating.List[0].Type != "datasource" || d.Templating.List[0].Query != "prometheus" {
		t.Errorf("want one Prometheus datasource variable, got %+v", d.Templating.List)
	}
	out := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${"+d.Templating.List[0].Name+"}" || len(p.Targets) == 0 {
				t.Errorf("panel %q: datasource %+v, %d queries", p.Title, p.Datasource, len(p.Targets))
			}
			for _, tg := range p.Targets {
				key := p.Title + "/" + tg.RefID
				if _, dup := out[key]; dup || tg.Expr == "" || strings.Contains(tg.Expr, "$") {
					t.Errorf("%s: duplicate, empty, or with a Grafana variable: %q", key, tg.Expr)
				}
				out[key] = tg.Expr
			}
		}
	}
	walk(d.Panels)
	return out
}

// kedaQuery is the Prometheus query of the shipped ScaledObject.
func kedaQuery(t *testing.T) string {
	t.Helper()
	for _, d := range readDocs(t, filepath.Join("keda", "scaledobject-prometheus.yaml")) {
		var so struct {
			Spec struct {
				Triggers []struct {
					Type     string            `json:"type"`
					Metadata map[string]string `json:"metadata"`
				} `json:"triggers"`
			} `json:"spec"`
		}
		sigsyaml.Unmarshal(d.raw, &so)
		for _, tr := range so.Spec.Triggers {
			if tr.Type == "prometheus" {
				return tr.Metadata["query"]
			}
		}
	}
	t.Fatal("no prometheus trigger")
	return ""
}

// buildBinary builds gpu-worker for the test.
func buildBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gpu-worker")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/gpu-worker")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startObserver runs `gpu-worker observe` against the emulator and returns
// its address.
func startObserver(t testing.TB, bin string, srv *gitlabtest.Server) string {
	t.Helper()
	logs := &lockedWriter{w: &bytes.Buffer{}}
	cmd := exec.Command(bin, "observe", "--gitlab-url", srv.URL(), "--token", gitlabtest.DefaultToken,
		"--listen-address", "127.0.0.1:0", "--loop-interval", "1")
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Env = append(os.Environ(), "GPU_WORKER_CONFIG=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("observe did not stop cleanly: %v\n%s", err, logs.String())
		}
	})
	addr := regexp.MustCompile(`address=(127\.0\.0\.1:\d+)`)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m := addr.FindStringSubmatch(logs.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("observe never listened:\n%s", logs.String())
		}
	}
}

// The scene: a worker with two slots that runs TTS training and has
// finished one job and failed an invalid one; a third runs at epoch 2 of
// 10 with 300 s left; three ASR jobs (which this worker cannot run) wait;
// one GitLab read failed once and was retried. Prometheus scrapes the
// observer and the worker; the KEDA trigger query and every dashboard
// query must return what the scene implies.
func TestDashboardAndScalerQueries(t *testing.T) {
	bin := buildBinary(t)
	srv := gitlabtest.New(t)
	srv.CreateProject("team/mark")
	srv.UserCommit(t, "team/mark", "empty queue", map[string][]byte{manifest.Path: []byte("version: 1\njobs: []\n")})

	m := metrics.New(metrics.Options{Version: "test", GPUs: gpu.Static{{Index: 0, Name: "Test GPU", MemTotal: gpuTotal, MemUsed: gpuUsed, Available: true}}})
	client, err := gitlab.New(gitlab.Config{BaseURL: srv.URL(), Token: gitlabtest.DefaultToken,
		HTTPClient: &http.Client{Transport: m.Transport(nil)}, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	running, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	handler := worker.HandlerFunc(func(ctx context.Context, env *worker.JobEnv) (*worker.Outcome, error) {
		if env.Job.ID == "run1" {
			env.Report(worker.Progress{Epoch: 2, Epochs: 10, ETA: 300 * time.Second})
			once.Do(func() { close(running) })
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return &worker.Outcome{}, nil
	})
	w := worker.New(worker.Config{WorkerID: "w1", WorkDir: t.TempDir(), LoopInterval: time.Second, Hooks: m.Hooks(),
		Slots: []worker.Slot{{Name: "a"}, {Name: "b"}}, HeartbeatInterval: time.Hour, ClaimTimeout: 24 * time.Hour},
		gitlab.NewSource(client, nil), worker.Registry{"tts/stabletts/training": handler}, slog.New(slog.DiscardHandler))
	ctx, stop := context.WithCancel(context.Background())
	workerDone := make(chan error, 1)
	go func() { workerDone <- w.Run(ctx) }()
	wln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go metrics.Serve(ctx, wln, m.Handler(time.Now(), time.Hour), nil)
	t.Cleanup(func() {
		close(release)
		stop()
		<-workerDone
	})

	observer := startObserver(t, bin, srv)
	prom := startPrometheus(t, map[string]string{"observer": observer, "worker": wln.Addr().String()})
	prom.waitFor(t, "up", 30*time.Second, func(s []sample) error {
		if len(s) != 2 || s[0].value != 1 || s[1].value != 1 {
			return fmt.Errorf("targets %v", s)
		}
		return nil
	})
	// Both have been scraped with their counters at zero; now the events.
	srv.InjectFault(gitlabtest.Fault{Endpoint: "GET files", Nth: 1, Status: http.StatusServiceUnavailable})
	submitted := time.Now().UTC().Add(-2 * time.Hour).Format(time.RFC3339)
	srv.UserCommit(t, "team/mark", "queue", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" +
		"  - {job_id: done1, job_type: tts, mode: training, model: {type: StableTTS}, priority: 30}\n" +
		"  - {job_id: bad1, job_type: tts, mode: training, model: {type: StableTTS}, epochs: ten, priority: 20}\n" +
		"  - {job_id: run1, job_type: tts, mode: training, model: {type: StableTTS}, priority: 10}\n" +
		"  - {job_id: q1, job_type: asr, mode: training, model: {type: W2V2BERT}, submitted_at: '" + submitted + "'}\n" +
		"  - {job_id: q2, job_type: asr, mode: training, model: {type: W2V2BERT}}\n" +
		"  - {job_id: q3, job_type: asr, mode: training, model: {type: W2V2BERT}}\n")})
	select {
	case <-running:
	case <-time.After(30 * time.Second):
		t.Fatal("run1 never started")
	}

	// KEDA's two readings: the ScaledObject's query, and /queue.
	query := kedaQuery(t)
	prom.waitFor(t, query, 30*time.Second, func(s []sample) error { return equals(4)(s) })
	// The observer's count settles within a scan of the last change.
	var rep metrics.QueueReport
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + observer + "/queue")
		if err != nil {
			t.Fatal(err)
		}
		rep = metrics.QueueReport{}
		json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if rep.Runnable == 3 && rep.Running == 1 && rep.Wanted == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/queue: runnable %d, running %d, wanted %d; want 3, 1, 4", rep.Runnable, rep.Running, rep.Wanted)
		}
	}
	prom.waitFor(t, `sum(increase(gpu_worker_api_retries_total[1h]))`, 30*time.Second, func(s []sample) error { return atLeast(0.5)(s) })
	// A rate needs two samples: let the series the events created get a
	// few scrapes (one a second).
	time.Sleep(3 * time.Second)

	queries := dashboardQueries(t)
	for key := range dashboardExpectations {
		if _, ok := queries[key]; !ok {
			t.Errorf("expectation for %s, which the dashboard lacks", key)
		}
	}
	for key, expr := range queries {
		want, ok := dashboardExpectations[key]
		if !ok {
			t.Errorf("%s: no expected value for %s", key, expr)
			continue
		}
		got, err := prom.query(expr)
		if err == nil {
			err = want(got)
		}
		if err != nil {
			t.Errorf("%s: %s: %v", key, expr, err)
		}
	}
}
