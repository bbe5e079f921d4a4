package worker

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/manifest"
)

func newClient(t testing.TB, srv *gitlabtest.Server) *gitlab.Client {
	c, err := gitlab.New(gitlab.Config{BaseURL: srv.URL(), Token: gitlabtest.DefaultToken,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxRetries: 12,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func emulatorResponse(t *testing.T, srv *gitlabtest.Server, proj, id string) *manifest.Response {
	t.Helper()
	b, ok := srv.ReadFile(proj, manifest.ResponsePath(id))
	if !ok {
		t.Fatalf("%s: no response.yaml", id)
	}
	r, err := manifest.ParseResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// With 10% of requests failing (5xx, 429, drops, commits applied but
// answered 502), every job still reaches a terminal state exactly once.
func TestFaultyGitLabJobsAllFinish(t *testing.T) {
	srv := gitlabtest.New(t)
	srv.CreateProject("team/a")
	var b strings.Builder
	b.WriteString("version: 1\njobs:\n")
	for i := 0; i < 20; i++ {
		b.WriteString(jobYAML(fmt.Sprintf("f%02d", i), ""))
	}
	srv.UserCommit(t, "team/a", "queue", map[string][]byte{manifest.Path: []byte(b.String())})
	srv.InjectFault(gitlabtest.Fault{Rate: 0.03, Status: 503})
	srv.InjectFault(gitlabtest.Fault{Rate: 0.02, Status: 429, RetryAfter: 10 * time.Millisecond})
	srv.InjectFault(gitlabtest.Fault{Rate: 0.02, Drop: true})
	srv.InjectFault(gitlabtest.Fault{Rate: 0.03, Endpoint: "POST commits", ApplyThenFail: true})
	runs := map[string]int{}
	w := testWorker(t, "w1", gitlab.Source{Client: newClient(t, srv)}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		runs[env.Job.ID]++
		if rand.Intn(4) == 0 {
			return nil, fmt.Errorf("engine failed")
		}
		return &Outcome{Result: map[string]any{"ok": true}}, nil
	}), nil)
	// A scan that hits a failure leaves its jobs for the next scan.
	for round := 0; round < 10; round++ {
		if err := w.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if srv.FaultsFired() == 0 {
		t.Fatal("no fault fired")
	}
	creates := map[string]int{}
	for _, c := range srv.Commits("team/a") {
		for _, a := range c.Actions {
			if a.Kind == "create" && strings.HasSuffix(a.Path, "/response.yaml") {
				creates[a.Path]++
			}
		}
	}
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("f%02d", i)
		r := emulatorResponse(t, srv, "team/a", id)
		if !r.Terminal() || runs[id] != 1 || creates[manifest.ResponsePath(id)] != 1 {
			t.Errorf("%s: state %s, ran %d times, created %d times", id, r.State, runs[id], creates[manifest.ResponsePath(id)])
		}
	}
	t.Logf("faults fired: %d of %d requests", srv.FaultsFired(), srv.TotalRequests())
}

// idleFleet makes 100 projects: 10 with 10 finished jobs, 40 with an empty
// manifest, 50 without one.
func idleFleet(t testing.TB, srv *gitlabtest.Server) {
	for i := 0; i < 100; i++ {
		path := fmt.Sprintf("team/p%03d", i)
		srv.CreateProject(path)
		switch {
		case i < 10:
			files := map[string][]byte{}
			var b strings.Builder
			b.WriteString("version: 1\njobs:\n")
			for j := 0; j < 10; j++ {
				id := fmt.Sprintf("j%d", j)
				b.WriteString(jobYAML(id, ""))
				r := manifest.Response{WorkerID: "old", State: manifest.StateCompleted, Timestamp: time.Now().Add(-time.Hour)}
				files[manifest.ResponsePath(id)] = r.Marshal()
			}
			files[manifest.Path] = []byte(b.String())
			srv.UserCommit(t, path, "jobs", files)
		case i < 50:
			srv.UserCommit(t, path, "manifest", map[string][]byte{manifest.Path: []byte("version: 1\njobs: []\n")})
		default:
			srv.UserCommit(t, path, "readme", map[string][]byte{"README.md": []byte("hi")})
		}
	}
}

// TestIdleScanCost: the first scan reads each finished job's state once;
// later scans of a fleet idle for two hours cost the project listing only.
func TestIdleScanCost(t *testing.T) {
	srv := gitlabtest.New(t)
	idleFleet(t, srv)
	ageFleet(srv, 2*time.Hour)
	w := testWorker(t, "w1", gitlab.Source{Client: newClient(t, srv)}, registryOf(func(context.Context, *JobEnv) (*Outcome, error) {
		t.Error("a finished job ran")
		return nil, nil
	}), nil)
	srv.ResetCounts()
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := srv.TotalRequests()
	if reads := srv.RequestCount("GET files"); reads > 100+10*10 {
		t.Errorf("first scan: %d file reads; want ≤ 1 manifest + 10 responses per project", reads)
	}
	for scan := 0; scan < 3; scan++ {
		srv.ResetCounts()
		if err := w.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := srv.TotalRequests(); n > 1 {
			t.Errorf("scan %d cost %d requests for 100 projects idle for two hours", scan+2, n)
		}
	}
	t.Logf("first scan %d requests, later scans %d", first, srv.TotalRequests())
	// A change in one project is noticed.
	srv.UserCommit(t, "team/p003", "new job", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" + jobYAML("new", ""))})
	ran := false
	w.handlers = registryOf(func(context.Context, *JobEnv) (*Outcome, error) { ran = true; return &Outcome{}, nil })
	if err := w.Run(context.Background()); err != nil || !ran {
		t.Fatalf("new job not run (err %v)", err)
	}
}

// BenchmarkIdleScan reports requests per scan over 100 projects idle for
// two hours (BenchmarkActiveScan: active within the hour).
func BenchmarkIdleScan(b *testing.B) {
	srv := gitlabtest.New(b)
	idleFleet(b, srv)
	ageFleet(srv, 2*time.Hour)
	benchScan(b, srv)
}

func benchScan(b *testing.B, srv *gitlabtest.Server) {
	cfg := Config{WorkerID: "bench", WorkDir: filepath.Join(b.TempDir(), "w"), LoopInterval: -1}
	w := New(cfg, gitlab.Source{Client: newClient(b, srv)}, registryOf(func(context.Context, *JobEnv) (*Outcome, error) { return &Outcome{}, nil }), slog.New(slog.DiscardHandler))
	srv.ResetCounts()
	w.Run(context.Background())
	first := srv.TotalRequests()
	srv.ResetCounts()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.Run(context.Background())
	}
	b.ReportMetric(float64(first), "requests/first-scan")
	b.ReportMetric(float64(srv.TotalRequests())/float64(b.N), "requests/scan")
}
