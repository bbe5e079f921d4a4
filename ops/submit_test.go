package ops

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	"gpu-worker/manifest"
)

func asrJob() JobOptions {
	return JobOptions{Name: "Mark ASR", JobType: "asr", Mode: "training", Model: "W2V2BERT", Epochs: 5, Priority: 2,
		TrainExclude: []string{"MRK 16:9"}, AllowCPU: true}
}

func TestSubmitCreatesManifest(t *testing.T) {
	p, dir := localProject(t, "")
	id, err := Submit(context.Background(), p, nil, JobNode(asrJob()), now)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-z]+_[0-9a-f]{10}$`).MatchString(id) {
		t.Errorf("job id %q is not base36 time + _ + hex", id)
	}
	m, err := manifest.Parse([]byte(readLocal(t, dir, manifest.Path)))
	if err != nil {
		t.Fatal(err)
	}
	j := m.Find(id)
	if j == nil || j.Invalid != nil || j.Kind() != "asr/w2v2bert/training" || j.Knobs.Epochs == nil || *j.Knobs.Epochs != 5 || j.Priority != 2 ||
		!j.AllowCPU || j.Canceled || !j.SubmittedAt.Equal(now) || len(j.Training.Exclude) != 1 {
		t.Fatalf("job as the worker reads it: %+v", j)
	}
}

func TestSubmitKeepsTheRestOfTheFile(t *testing.T) {
	p, dir := localProject(t, baseManifest)
	id, err := Submit(context.Background(), p, nil, JobNode(asrJob()), now)
	if err != nil {
		t.Fatal(err)
	}
	got := readLocal(t, dir, manifest.Path)
	if !strings.HasPrefix(got, baseManifest) {
		t.Errorf("the existing text changed:\n%s", got)
	}
	if !strings.Contains(got, "\n  - job_id: \""+id+"\"\n") {
		t.Errorf("new entry not written as clients write it:\n%s", got)
	}
}

func TestSubmitRacingUserEditLosesNothing(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, text string, id string) {
		m, err := manifest.Parse([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Jobs) != 3 || m.Find("old1") == nil || m.Find("user1") == nil || m.Find(id) == nil {
			t.Errorf("jobs lost:\n%s", text)
		}
		if !strings.Contains(text, "# added by hand while the operator submitted") || !strings.Contains(text, "# Jobs for the Mark team") {
			t.Errorf("comments lost:\n%s", text)
		}
	}
	t.Run("local", func(t *testing.T) {
		p, dir := localProject(t, baseManifest)
		r := &racing{Project: p, before: func() { writeUser(t, dir, manifest.Path, userAddsJob) }}
		id, err := Submit(ctx, r, nil, JobNode(asrJob()), now)
		if err != nil {
			t.Fatal(err)
		}
		if r.commits.Load() != 2 {
			t.Errorf("commits %d: the first should have met the conflict", r.commits.Load())
		}
		check(t, readLocal(t, dir, manifest.Path), id)
	})
	t.Run("gitlab", func(t *testing.T) {
		s, _, p := emulated(t, map[string][]byte{manifest.Path: []byte(baseManifest)})
		r := &racing{Project: p, before: func() {
			s.UserCommit(t, "team/mark", "edit by hand", map[string][]byte{manifest.Path: []byte(userAddsJob)})
		}}
		id, err := Submit(ctx, r, nil, JobNode(asrJob()), now)
		if err != nil {
			t.Fatal(err)
		}
		if r.commits.Load() != 2 {
			t.Errorf("commits %d", r.commits.Load())
		}
		b, _ := s.ReadFile("team/mark", manifest.Path)
		check(t, string(b), id)
	})
}

func TestSubmitRefuses(t *testing.T) {
	ctx := context.Background()
	p, dir := localProject(t, baseManifest)
	bad := asrJob()
	bad.JobType = "video"
	if _, err := Submit(ctx, p, nil, JobNode(bad), now); err == nil || !strings.Contains(err.Error(), "job_type") {
		t.Errorf("invalid job accepted: %v", err)
	}
	dup, err := ParseJobFile([]byte("job_id: old1\njob_type: asr\nmode: training\nmodel: {type: W2V2BERT}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Submit(ctx, p, nil, dup, now); !errors.Is(err, ErrDuplicateJob) {
		t.Errorf("duplicate id: %v", err)
	}
	if got := readLocal(t, dir, manifest.Path); got != baseManifest {
		t.Errorf("refused submits changed the manifest:\n%s", got)
	}
	newer, _ := localProject(t, "version: 2\njobs: []\n")
	if _, err := Submit(ctx, newer, nil, JobNode(asrJob()), now); !errors.Is(err, manifest.ErrVersion) {
		t.Errorf("newer manifest version rewritten: %v", err)
	}
}

func TestSubmitFromFileKeepsItsID(t *testing.T) {
	p, _ := localProject(t, "version: 1\njobs:\n")
	job, err := ParseJobFile([]byte("job_id: mine_1\njob_type: tts\nmode: inference\nmodel:\n  type: StableTTS\n  base_checkpoint: gpu_jobs/job_old1/models/best_model.pt\ninference: {include_verses: [\"MRK 1:1\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := Submit(context.Background(), p, nil, job, now)
	if err != nil || id != "mine_1" {
		t.Fatalf("id %q err %v", id, err)
	}
}
