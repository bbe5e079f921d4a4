package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/manifest"
)

// writeEndpoints are every request that changes a project.
var writeEndpoints = []string{"POST commits", "POST files", "PUT files", "DELETE files", "POST lfs batch", "PUT lfs object"}

func requireNoWrites(t *testing.T, srv *gitlabtest.Server, proj string, commitsBefore int) {
	t.Helper()
	for _, e := range writeEndpoints {
		if n := srv.RequestCount(e); n != 0 {
			t.Errorf("the observer sent %d %s requests", n, e)
		}
	}
	if n := len(srv.Commits(proj)); n != commitsBefore {
		t.Errorf("the observer left %d commits", n-commitsBefore)
	}
}

func claimFile(state string, age time.Duration, retries int, handedBack bool) []byte {
	r := manifest.Response{WorkerID: "other", State: state, Timestamp: time.Now().Add(-age), RetryCount: retries}
	if handedBack {
		r.TerminationReason = manifest.Ptr(manifest.ReasonHandedBack)
	}
	return r.Marshal()
}

func testObserver(t testing.TB, srv *gitlabtest.Server, reg Registry) *Observer {
	return NewObserver(ObserverConfig{ClaimTimeout: time.Hour, MaxJobRetries: 3,
		Handled: func(j *manifest.Job) bool { _, ok := reg[j.Kind()]; return ok }},
		gitlab.NewSource(newClient(t, srv), nil), slog.New(slog.DiscardHandler))
}

func byState(q Queue) map[string][]string {
	out := map[string][]string{}
	for _, j := range q.Jobs {
		out[j.State] = append(out[j.State], j.Job.ID)
	}
	for _, ids := range out {
		sort.Strings(ids)
	}
	return out
}

// The observer counts as runnable exactly what a worker then claims and
// runs, as failing what it claims only to fail, as closing what it only
// writes canceled, and as running what it leaves to a live claim; it never
// writes.
func TestObserverCountsWhatAWorkerWouldClaim(t *testing.T) {
	srv := gitlabtest.New(t)
	srv.CreateProject("team/a")
	var b strings.Builder
	b.WriteString("version: 1\njobs:\n")
	for _, j := range []struct{ id, extra string }{
		{"queued", ", submitted_at: '2026-01-01T00:00:00Z'"}, {"queued-unstamped", ""},
		{"stale", ""}, {"handed-back", ""}, {"fresh", ""}, {"retries-used", ""},
		{"canceled", ", canceled: true"}, {"canceled-stale", ", canceled: true"}, {"canceled-fresh", ", canceled: true"},
		{"finished", ""}, {"late", ", timeout: '2020-01-01T00:00:00Z'"},
	} {
		b.WriteString(jobYAML(j.id, j.extra))
	}
	b.WriteString("  - {job_id: invalid, job_type: tts, mode: training, model: {type: StableTTS}, epochs: ten}\n")
	b.WriteString("  - {job_id: unhandled, job_type: asr, mode: training, model: {type: W2V2BERT}}\n")
	srv.UserCommit(t, "team/a", "queue", map[string][]byte{
		manifest.Path:                           []byte(b.String()),
		manifest.ResponsePath("stale"):          claimFile(manifest.StateRunning, 2*time.Hour, 1, false),
		manifest.ResponsePath("handed-back"):    claimFile(manifest.StateRunning, time.Minute, 0, true),
		manifest.ResponsePath("fresh"):          claimFile(manifest.StateRunning, time.Minute, 0, false),
		manifest.ResponsePath("retries-used"):   claimFile(manifest.StateRunning, 2*time.Hour, 3, false),
		manifest.ResponsePath("canceled-stale"): claimFile(manifest.StateRunning, 2*time.Hour, 0, false),
		manifest.ResponsePath("canceled-fresh"): claimFile(manifest.StateRunning, time.Minute, 0, false),
		manifest.ResponsePath("finished"):       claimFile(manifest.StateCompleted, time.Minute, 0, false),
	})
	var mu sync.Mutex
	var ran []string
	reg := registryOf(func(_ context.Context, env *JobEnv) (*Outcome, error) {
		mu.Lock()
		ran = append(ran, env.Job.ID)
		mu.Unlock()
		return &Outcome{}, nil
	})
	obs := testObserver(t, srv, reg)
	commits := len(srv.Commits("team/a"))
	srv.ResetCounts()
	var q Queue
	for range 3 {
		var err error
		if q, err = obs.Scan(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	requireNoWrites(t, srv, "team/a", commits)
	got := byState(q)
	want := map[string][]string{
		QueueRunnable: {"handed-back", "queued", "queued-unstamped", "stale"},
		QueueRunning:  {"canceled-fresh", "fresh"},
		QueueFailing:  {"invalid", "late", "retries-used"},
		QueueClosing:  {"canceled-stale"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("observer sees\n%v\nwant\n%v", got, want)
	}
	if q.Count(QueueRunnable) != 4 || q.Count(QueueRunning) != 2 {
		t.Errorf("counts: runnable %d, running %d", q.Count(QueueRunnable), q.Count(QueueRunning))
	}
	for _, j := range q.Jobs {
		switch j.Job.ID {
		case "queued":
			if !j.Since.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) || j.Reason != "queued" {
				t.Errorf("queued: since %v, reason %q", j.Since, j.Reason)
			}
		case "handed-back", "stale":
			if j.WorkerID != "other" || (j.Job.ID == "stale") != (j.Reason == "claim expired") {
				t.Errorf("%s: worker %q, reason %q", j.Job.ID, j.WorkerID, j.Reason)
			}
		case "retries-used":
			if !strings.Contains(j.Reason, "giving up after 3 retries") {
				t.Errorf("retries-used: reason %q", j.Reason)
			}
		}
	}

	// The worker does what the observer said it would.
	w := testWorker(t, "w1", gitlab.NewSource(newClient(t, srv), nil), reg, nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	sort.Strings(ran)
	if fmt.Sprint(ran) != fmt.Sprint(want[QueueRunnable]) {
		t.Errorf("the worker ran %v; the observer counted %v runnable", ran, want[QueueRunnable])
	}
	for _, id := range want[QueueFailing] {
		if r := emulatorResponse(t, srv, "team/a", id); r.State != manifest.StateFailed {
			t.Errorf("%s: %s, want failed at claim", id, r.State)
		}
	}
	if r := emulatorResponse(t, srv, "team/a", "canceled-stale"); r.State != manifest.StateCanceled {
		t.Errorf("canceled-stale: %s", r.State)
	}
	for _, id := range want[QueueRunning] {
		if r := emulatorResponse(t, srv, "team/a", id); r.WorkerID != "other" || r.State != manifest.StateRunning {
			t.Errorf("%s: the worker took a live claim: %+v", id, r)
		}
	}
	for _, id := range []string{"canceled", "unhandled"} {
		if _, ok := srv.ReadFile("team/a", manifest.ResponsePath(id)); ok {
			t.Errorf("%s was claimed", id)
		}
	}
	q, err := obs.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := byState(q); fmt.Sprint(got) != fmt.Sprint(map[string][]string{QueueRunning: want[QueueRunning]}) {
		t.Errorf("after the worker's pass the observer sees %v", got)
	}
}

// A job committed between two scans shows in the second, in a project
// idle for hours and in one active within the hour; a claim shows as
// running, and its end shows at the next scan.
func TestObserverSeesChangesWithinOneScan(t *testing.T) {
	srv := gitlabtest.New(t)
	idleFleet(t, srv)
	ageFleet(srv, 2*time.Hour)
	srv.UserCommit(t, "team/p099", "recent edit", map[string][]byte{"README.md": []byte("edited")})
	started, release := make(chan string, 1), make(chan struct{})
	reg := registryOf(func(_ context.Context, env *JobEnv) (*Outcome, error) {
		started <- env.Job.ID
		<-release
		return &Outcome{}, nil
	})
	obs := testObserver(t, srv, reg)
	scan := func() Queue {
		t.Helper()
		q, err := obs.Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	if q := scan(); q.Count(QueueRunnable) != 0 || q.Count(QueueRunning) != 0 {
		t.Fatalf("idle fleet: %v", byState(q))
	}
	srv.ResetCounts()
	if scan(); srv.TotalRequests() > 2 {
		t.Errorf("a scan of a fleet idle for hours cost %d requests", srv.TotalRequests())
	}
	srv.UserCommit(t, "team/p070", "queue", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" + jobYAML("idle-project", ""))})
	if got := byState(scan()); fmt.Sprint(got[QueueRunnable]) != "[idle-project]" {
		t.Fatalf("job in a project idle for hours: %v", got)
	}
	srv.UserCommit(t, "team/p099", "queue", map[string][]byte{manifest.Path: []byte("version: 1\njobs:\n" + jobYAML("active-project", ""))})
	if got := byState(scan()); fmt.Sprint(got[QueueRunnable]) != "[active-project idle-project]" {
		t.Fatalf("job in a project active within the hour: %v", got)
	}

	w := testWorker(t, "w1", gitlab.NewSource(newClient(t, srv), nil), reg, func(c *Config) { c.LoopInterval = 20 * time.Millisecond })
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	first := <-started
	q := scan()
	if got := byState(q); len(got[QueueRunnable]) != 1 || fmt.Sprint(got[QueueRunning]) != "["+first+"]" {
		t.Fatalf("while %s runs: %v", first, got)
	}
	release <- struct{}{}
	second := <-started
	if got := byState(scan()); len(got[QueueRunnable]) != 0 || fmt.Sprint(got[QueueRunning]) != "["+second+"]" {
		t.Fatalf("after %s ended, while %s runs: %v", first, second, got)
	}
	release <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	for emulatorResponse(t, srv, projectOf(second), second).State != manifest.StateCompleted {
		if time.Now().After(deadline) {
			t.Fatal("second job never completed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if q := scan(); len(q.Jobs) != 0 {
		t.Fatalf("after both jobs ended: %v", byState(q))
	}
	stop()
	<-done
}

func projectOf(jobID string) string {
	if jobID == "idle-project" {
		return "team/p070"
	}
	return "team/p099"
}
