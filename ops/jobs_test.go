package ops

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"gpu-worker/gitlab"
	"gpu-worker/manifest"
	"gpu-worker/project"
)

func TestListJobsAcrossProjects(t *testing.T) {
	ctx := context.Background()
	running := "worker_id: gpu-a\nstate: running\ntimestamp: 2026-11-29T11:55:00Z\nretry_count: 0\nepochs_completed: 4\nstatus_message: epoch 4/10\n"
	failed := "worker_id: gpu-b\nstate: failed\ntimestamp: 2026-11-29T11:00:00Z\nretry_count: 1\nerror_message: dataset has no items\n"
	mark := strings.Replace(userAddsJob, `  - job_id: "old1" # the first voice`,
		"  - job_id: \"old1\" # the first voice\n    submitted_at: \"2026-11-27T09:00:00Z\"", 1)
	s, c, _ := emulated(t, map[string][]byte{
		manifest.Path:                  []byte(mark),
		manifest.ResponsePath("old1"):  []byte(running),
		manifest.ResponsePath("user1"): []byte(failed),
	})
	s.CreateProject("team/luke")
	s.UserCommit(t, "team/luke", "jobs", map[string][]byte{manifest.Path: []byte(`version: 1
jobs:
  - job_id: l1
    job_type: tts
    mode: inference
    model: {type: StableTTS}
  - job_id: l2
    job_type: asr
    mode: training
    model: {type: W2V2BERT}
    submitted_at: "2026-11-29T11:30:00Z"
    canceled: true
`)})
	s.CreateProject("team/empty")
	ps, err := c.Projects(ctx, gitlab.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var projects []project.Project
	for _, p := range ps {
		projects = append(projects, p)
	}
	rows, err := ListJobs(ctx, nil, projects)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]JobRow{}
	for _, r := range rows {
		byID[r.ID] = r
	}
	if len(rows) != 4 {
		t.Fatalf("rows: %+v", rows)
	}
	want := map[string]struct{ project, state, worker string }{
		"old1":  {"team/mark", "running", "gpu-a"},
		"user1": {"team/mark", "failed", "gpu-b"},
		"l1":    {"team/luke", "invalid", ""}, // inference without a checkpoint
		"l2":    {"team/luke", "canceled", ""},
	}
	for id, w := range want {
		r := byID[id]
		if r.Project != w.project || r.State != w.state || r.Worker != w.worker {
			t.Errorf("%s: %+v, want %+v", id, r, w)
		}
	}
	if byID["old1"].Epoch != 4 || byID["old1"].Epochs != 10 || byID["user1"].Message != "dataset has no items" {
		t.Errorf("details: %+v %+v", byID["old1"], byID["user1"])
	}

	var out bytes.Buffer
	if err := WriteTable(&out, rows, now); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, frag := range []string{"PROJECT", "PROGRESS", "4/10", "2d3h", "30m", "tts/training", "dataset has no items"} {
		if !strings.Contains(table, frag) {
			t.Errorf("table lacks %q:\n%s", frag, table)
		}
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 5 || strings.Index(lines[0], "STATE") != strings.Index(lines[1], byID[fieldAt(lines[1], 1)].State) {
		t.Errorf("table not aligned:\n%s", table)
	}
}

func fieldAt(line string, i int) string { return strings.Fields(line)[i] }

func TestAge(t *testing.T) {
	cases := map[time.Duration]string{
		45 * time.Second: "45s", 12 * time.Minute: "12m", 5*time.Hour + 3*time.Minute: "5h3m",
		52 * time.Hour: "2d4h", -time.Second: "0s",
	}
	for d, want := range cases {
		if got := Age(d); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
}
