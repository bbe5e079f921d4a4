package ops

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/local"
	"gpu-worker/manifest"
	"gpu-worker/project"
)

var now = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// localProject is a project folder with an optional manifest.
func localProject(t *testing.T, manifestText string) (*local.Project, string) {
	t.Helper()
	dir := t.TempDir()
	if manifestText != "" {
		writeUser(t, dir, manifest.Path, manifestText)
	}
	p, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return p, dir
}

// writeUser changes a file the way a user's editor does.
func writeUser(t *testing.T, dir, rel, content string) {
	t.Helper()
	full := filepath.Join(dir, rel)
	os.MkdirAll(filepath.Dir(full), 0o755)
	if err := os.WriteFile(full+".tmp", []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(full+".tmp", full); err != nil {
		t.Fatal(err)
	}
}

func readLocal(t *testing.T, dir, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// emulated is a GitLab emulator holding one project, and a client of it.
func emulated(t *testing.T, files map[string][]byte) (*gitlabtest.Server, *gitlab.Client, *gitlab.Project) {
	t.Helper()
	s := gitlabtest.New(t)
	s.CreateProject("team/mark")
	if len(files) > 0 {
		s.UserCommit(t, "team/mark", "setup", files)
	}
	c, err := gitlab.New(gitlab.Config{BaseURL: s.URL(), Token: gitlabtest.DefaultToken, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Project(context.Background(), "team/mark")
	if err != nil {
		t.Fatal(err)
	}
	return s, c, p
}

// racing runs before() just ahead of its first commit: a user's edit that
// lands between our read and our write.
type racing struct {
	project.Project
	before  func()
	once    sync.Once
	commits atomic.Int32
}

func (r *racing) Commit(ctx context.Context, msg string, acts []project.Action) (*project.CommitResult, error) {
	r.commits.Add(1)
	r.once.Do(r.before)
	return r.Project.Commit(ctx, msg, acts)
}

const baseManifest = `# Jobs for the Mark team
version: 1
jobs:
  - job_id: "old1" # the first voice
    name: "Mark voice"
    job_type: tts
    mode: training
    model:
      type: StableTTS
    epochs: 10
    training: {include_verses: ["MRK 1"]}
    canceled: false
`

const userAddsJob = baseManifest + `  # added by hand while the operator submitted
  - job_id: "user1"
    job_type: asr
    mode: training
    model:
      type: W2V2BERT
`
