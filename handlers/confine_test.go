package handlers

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gpu-worker/local"
	"gpu-worker/manifest"
	"gpu-worker/worker"
)

// An engine names the files the worker uploads: only its own regular
// files inside the job's folder pass, never one reached through a link
// or outside the folder (a token file would land in a project).
func TestEngineFilesStayInTheJobFolder(t *testing.T) {
	work := t.TempDir()
	secret := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secret, []byte("glpat-secret"), 0o600)
	os.MkdirAll(filepath.Join(work, "train"), 0o755)
	good := filepath.Join(work, "train", "best_model.pt")
	os.WriteFile(good, []byte("weights"), 0o644)
	os.Symlink(secret, filepath.Join(work, "train", "final_model.pt"))
	os.Symlink(filepath.Dir(secret), filepath.Join(work, "outside"))
	os.Link(good, filepath.Join(work, "train", "checkpoint_3.pt"))
	os.Symlink("best_model.pt", filepath.Join(work, "train", "inside.pt"))
	for _, c := range []struct {
		path, want string
	}{
		{good, ""},
		{filepath.Join(work, "train", "checkpoint_3.pt"), ""}, // a hard link of its own file
		{filepath.Join(work, "train", "final_model.pt"), "symbolic link"},
		{filepath.Join(work, "outside", "token"), "symbolic link"},
		{filepath.Join(work, "train", "inside.pt"), "symbolic link"}, // even to its own file
		{filepath.Join(work, "train", "missing.pt"), "no such file"},
		{secret, "outside the job's folder"},
		{filepath.Join(work, "train", "..", "..", filepath.Base(filepath.Dir(secret)), "token"), "outside the job's folder"},
		{filepath.Join(work, "train"), "not a regular file"},
	} {
		b, err := readEngineFile(work, c.path)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: err %v, want %q", c.path, err, c.want)
		}
		if strings.Contains(string(b), "glpat") {
			t.Errorf("%s: read the secret", c.path)
		}
		dst := filepath.Join(t.TempDir(), "snap")
		serr := copyEngineFile(work, c.path, dst)
		if b, _ := os.ReadFile(dst); strings.Contains(string(b), "glpat") {
			t.Errorf("%s: the snapshot copied the secret", c.path)
		}
		if (c.want == "") != (serr == nil) {
			t.Errorf("%s: snapshot err %v", c.path, serr)
		}
	}
}

// The loss table and the interrupted run's checkpoint lie in the folder
// the engine's account owns: a link the engine leaves there in their
// place is not followed into the project.
func TestTrainingUploadsNoLinkTheEngineLeft(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secret, []byte("glpat-secret"), 0o600)
	p, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	outDir := filepath.Join(work, "train")
	os.MkdirAll(outDir, 0o755)
	env := &worker.JobEnv{Job: &manifest.Job{ID: "t1"}, Project: p, WorkDir: work, Log: slog.New(slog.DiscardHandler)}
	tr := newTraining(env, Config{}, outDir, nil)
	csv := filepath.Join(outDir, "training_metrics.csv")

	os.WriteFile(csv, []byte("step,loss\n1,2.5\n"), 0o644)
	if a, ok := tr.panelMetrics(context.Background()); !ok || !strings.Contains(string(a.Content), "2.5") {
		t.Fatalf("the engine's own table is not uploaded: %v %q", ok, a.Content)
	}
	os.Remove(csv)
	os.Symlink(secret, csv)
	if a, ok := tr.panelMetrics(context.Background()); ok {
		t.Errorf("a link to %s was uploaded as the loss table: %q", secret, a.Content)
	}

	ck := filepath.Join(outDir, "resume_1.pt")
	os.Symlink(secret, ck)
	tr.lastCkpt = ck
	for _, a := range tr.partial(context.Background()) {
		t.Errorf("the interrupted run saved %s from a link: %q", a.Path, a.Content)
	}
}
