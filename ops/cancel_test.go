package ops

import (
	"context"
	"errors"
	"strings"
	"testing"

	"gpu-worker/manifest"
)

func TestCancel(t *testing.T) {
	ctx := context.Background()
	done := "worker_id: w1\nstate: completed\ntimestamp: 2026-11-29T10:00:00Z\nretry_count: 0\n"
	s, _, p := emulated(t, map[string][]byte{
		manifest.Path:                  []byte(userAddsJob),
		manifest.ResponsePath("user1"): []byte(done),
	})
	if err := Cancel(ctx, p, "old1"); err != nil {
		t.Fatal(err)
	}
	b, _ := s.ReadFile("team/mark", manifest.Path)
	m, err := manifest.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Find("old1").Canceled || m.Find("user1").Canceled {
		t.Errorf("wrong job canceled:\n%s", b)
	}
	if !strings.Contains(string(b), `- job_id: "old1" # the first voice`) {
		t.Errorf("comments lost:\n%s", b)
	}
	commits := len(s.Commits("team/mark"))
	if err := Cancel(ctx, p, "old1"); err != nil {
		t.Errorf("second cancel: %v", err)
	}
	if n := len(s.Commits("team/mark")); n != commits {
		t.Errorf("second cancel committed again (%d → %d)", commits, n)
	}
	if err := Cancel(ctx, p, "nope"); !errors.Is(err, ErrJobNotFound) {
		t.Errorf("unknown job: %v", err)
	}
	if err := Cancel(ctx, p, "user1"); !errors.Is(err, ErrJobEnded) {
		t.Errorf("completed job: %v", err)
	}
}

func TestCancelRacingUserEdit(t *testing.T) {
	p, dir := localProject(t, baseManifest)
	r := &racing{Project: p, before: func() { writeUser(t, dir, manifest.Path, userAddsJob) }}
	if err := Cancel(context.Background(), r, "old1"); err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse([]byte(readLocal(t, dir, manifest.Path)))
	if err != nil {
		t.Fatal(err)
	}
	if m.Find("user1") == nil || !m.Find("old1").Canceled || r.commits.Load() != 2 {
		t.Errorf("after the race: %d commits, jobs %+v", r.commits.Load(), m.Jobs)
	}
}
