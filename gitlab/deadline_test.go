package gitlab

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/project"
)

// finishes runs f and fails the test if it has not returned after a minute:
// a hang detector, not a measure of speed.
func finishes(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s still running after a minute", what)
	}
}

// A server that never answers cannot hold a caller: every request gives up
// once nothing moved for StallTimeout, reads and commits alike.
func TestStalledRequestsGiveUp(t *testing.T) {
	s := gitlabtest.New(t)
	s.CreateProject(testProject)
	s.UserCommit(t, testProject, "seed", map[string][]byte{"a": []byte("x")})
	c, err := New(Config{BaseURL: s.URL(), Token: gitlabtest.DefaultToken, Logger: quietLogger(),
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxRetries: 2, StallTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Project(context.Background(), testProject)
	if err != nil {
		t.Fatal(err)
	}
	s.InjectFault(gitlabtest.Fault{Rate: 1, Latency: time.Hour})
	finishes(t, "a stat on a silent server", func() {
		_, err = p.StatFile(context.Background(), "a")
	})
	if err == nil || !errors.Is(err, errStalled) {
		t.Fatalf("stat: %v, want a stall", err)
	}
	finishes(t, "a commit on a silent server", func() {
		_, err = p.Commit(context.Background(), "beat", []project.Action{{Kind: project.Update, Path: "a", Content: []byte("y")}})
	})
	if err == nil || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("commit: %v, want a stall", err)
	}
}

// One missing project of --projects is skipped with a warning; the others
// are served. Only when none is found does the listing fail.
func TestOnlyWithMissingProject(t *testing.T) {
	s := gitlabtest.New(t)
	s.CreateProject("team/a")
	s.CreateProject("team/b")
	var logs bytes.Buffer
	c, err := New(Config{BaseURL: s.URL(), Token: gitlabtest.DefaultToken, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	src := NewSource(c, []string{"team/a", "team/gone", "team/b"})
	ps, err := src.Projects(context.Background())
	if err != nil || len(ps) != 2 || ps[0].Name() != "team/a" || ps[1].Name() != "team/b" {
		t.Fatalf("projects %v, %v", ps, err)
	}
	if !strings.Contains(logs.String(), "team/gone") {
		t.Errorf("no warning names the missing project: %s", logs.String())
	}
	// Resolved once: the next scan costs no project lookups.
	s.ResetCounts()
	if _, err := src.Projects(context.Background()); err != nil || s.TotalRequests() != 0 {
		t.Errorf("second listing: %d requests, %v", s.TotalRequests(), err)
	}
	if _, err := (Source{Client: c, Only: []string{"team/gone"}}).Projects(context.Background()); !errors.Is(err, project.ErrNotFound) {
		t.Errorf("all missing: %v", err)
	}
}
