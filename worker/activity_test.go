package worker

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/manifest"
)

// ageFleet makes every project of the emulator look idle for d.
func ageFleet(srv *gitlabtest.Server, d time.Duration) {
	for i := 0; i < 100; i++ {
		srv.Project(fmt.Sprintf("team/p%03d", i)).SetLastActivity(time.Now().Add(-d))
	}
}

// A job queued within the hour after a project's last activity leaves
// last_activity_at where it was (GitLab refreshes it hourly); the next scan
// still finds it.
func TestJobQueuedWithinTheHourIsFound(t *testing.T) {
	srv := gitlabtest.New(t)
	srv.CreateProject("team/a")
	srv.UserCommit(t, "team/a", "manifest", map[string][]byte{manifest.Path: []byte("version: 1\njobs: []\n")})
	var ran atomic.Int32
	w := testWorker(t, "w1", gitlab.Source{Client: newClient(t, srv)}, registryOf(func(context.Context, *JobEnv) (*Outcome, error) {
		ran.Add(1)
		return &Outcome{}, nil
	}), nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := srv.LastActivity("team/a")
	srv.UserCommit(t, "team/a", "queue", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" + jobYAML("j1", ""))})
	if !srv.LastActivity("team/a").Equal(before) {
		t.Fatal("the emulator moved last_activity_at within the hour")
	}
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ran.Load() != 1 {
		t.Fatalf("the job queued within the hour ran %d times", ran.Load())
	}
}

// A fleet active within the hour costs at most one request per project per
// scan (the manifest's HEAD), plus the listing.
func TestRecentlyActiveScanCost(t *testing.T) {
	srv := gitlabtest.New(t)
	idleFleet(t, srv)
	w := testWorker(t, "w1", gitlab.Source{Client: newClient(t, srv)}, registryOf(func(context.Context, *JobEnv) (*Outcome, error) {
		t.Error("a finished job ran")
		return nil, nil
	}), nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for scan := 0; scan < 2; scan++ {
		srv.ResetCounts()
		if err := w.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n, heads := srv.TotalRequests(), srv.RequestCount("HEAD files"); n > 101 || heads > 100 {
			t.Errorf("scan cost %d requests (%d HEADs) for 100 projects", n, heads)
		}
	}
}

// BenchmarkActiveScan: requests per scan of 100 projects active within the hour.
func BenchmarkActiveScan(b *testing.B) {
	srv := gitlabtest.New(b)
	idleFleet(b, srv)
	benchScan(b, srv)
}

// BenchmarkCommitToClaim: seconds from a manifest commit to the claim, for a
// worker idle between scans of 100 projects every second; even runs queue
// into projects idle for two hours, odd ones into one active within the hour.
func BenchmarkCommitToClaim(b *testing.B) {
	srv := gitlabtest.New(b)
	idleFleet(b, srv)
	ageFleet(srv, 2*time.Hour)
	srv.UserCommit(b, "team/p099", "recent edit", map[string][]byte{"README.md": []byte("edited")})
	claimed := make(chan string, 1)
	cfg := Config{WorkerID: "bench", WorkDir: filepath.Join(b.TempDir(), "w"), LoopInterval: time.Second}
	w := New(cfg, gitlab.Source{Client: newClient(b, srv)}, registryOf(func(_ context.Context, env *JobEnv) (*Outcome, error) {
		claimed <- env.Job.ID
		return &Outcome{}, nil
	}), slog.New(slog.DiscardHandler))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	var took [2]time.Duration
	var worst time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Let the worker finish and fall asleep, then queue at a random
		// moment of its interval.
		time.Sleep(1500*time.Millisecond + time.Duration(i)*137*time.Millisecond%time.Second)
		proj := fmt.Sprintf("team/p%03d", 50+i/2%49)
		if i%2 == 1 {
			proj = "team/p099"
		}
		id := fmt.Sprintf("bench%d", i)
		start := time.Now()
		srv.UserCommit(b, proj, "queue", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" + jobYAML(id, ""))})
		for got := <-claimed; got != id; got = <-claimed {
		}
		d := time.Since(start)
		took[i%2] += d
		worst = max(worst, d)
	}
	b.StopTimer()
	stop()
	<-done
	halves := [2]float64{float64((b.N + 1) / 2), float64(b.N / 2)}
	b.ReportMetric(took[0].Seconds()/max(halves[0], 1), "s/claim-idle-project")
	b.ReportMetric(took[1].Seconds()/max(halves[1], 1), "s/claim-active-project")
	b.ReportMetric(worst.Seconds(), "s/worst-claim")
}
