package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/manifest"
)

// observedFleet makes n projects shaped like idleFleet's (a tenth with ten
// finished jobs, four tenths with an empty manifest, half without one),
// with one project in fifty holding a queued job and one in fifty a job
// claimed by a live worker: the projects an observer reads on every scan.
func observedFleet(b *testing.B, srv *gitlabtest.Server, n int) {
	for i := 0; i < n; i++ {
		path := fmt.Sprintf("team/p%04d", i)
		srv.CreateProject(path)
		files := map[string][]byte{}
		var m strings.Builder
		m.WriteString("version: 1\njobs:\n")
		switch {
		case i%50 == 1:
			m.WriteString(jobYAML("queued", ""))
		case i%50 == 2:
			m.WriteString(jobYAML("busy", ""))
			files[manifest.ResponsePath("busy")] = claimFile(manifest.StateRunning, time.Minute, 0, false)
		case i%10 == 0:
			for j := 0; j < 10; j++ {
				id := fmt.Sprintf("j%d", j)
				m.WriteString(jobYAML(id, ""))
				files[manifest.ResponsePath(id)] = claimFile(manifest.StateCompleted, time.Hour, 0, false)
			}
		case i%10 < 5:
			m.Reset()
			m.WriteString("version: 1\njobs: []\n")
		default:
			files["README.md"] = []byte("hi")
			m.Reset()
		}
		if m.Len() > 0 {
			files[manifest.Path] = []byte(m.String())
		}
		srv.UserCommit(b, path, "setup", files)
	}
}

// BenchmarkObserverScan: requests and time of one observer scan of 100 and
// 1,000 projects, idle for two hours (their last_activity_at says so) or
// active within the hour (one manifest HEAD each).
func BenchmarkObserverScan(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, idle := range []bool{true, false} {
			name := fmt.Sprintf("projects=%d/active", n)
			if idle {
				name = fmt.Sprintf("projects=%d/idle", n)
			}
			b.Run(name, func(b *testing.B) {
				srv := gitlabtest.New(b)
				observedFleet(b, srv, n)
				if idle {
					for i := 0; i < n; i++ {
						srv.Project(fmt.Sprintf("team/p%04d", i)).SetLastActivity(time.Now().Add(-2 * time.Hour))
					}
				}
				obs := testObserver(b, srv, registryOf(nil))
				srv.ResetCounts()
				start := time.Now()
				q, err := obs.Scan(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				first, firstTook := srv.TotalRequests(), time.Since(start)
				if want := 2 * n / 50; q.Count(QueueRunnable)+q.Count(QueueRunning) != want {
					b.Fatalf("counted %d runnable + %d running, want %d in all", q.Count(QueueRunnable), q.Count(QueueRunning), want)
				}
				srv.ResetCounts()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := obs.Scan(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(first), "requests/first-scan")
				b.ReportMetric(firstTook.Seconds(), "s/first-scan")
				b.ReportMetric(float64(srv.TotalRequests())/float64(b.N), "requests/scan")
			})
		}
	}
}
