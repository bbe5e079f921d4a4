package e2e

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/manifest"
)

// Eight worker processes race for forty jobs: each response.yaml is created
// exactly once and each job finished exactly once.
func TestEightWorkersFortyJobs(t *testing.T) {
	srv := gitlabtest.New(t)
	srv.CreateProject(projectPath)
	var b strings.Builder
	b.WriteString("version: 1\njobs:\n")
	for i := 0; i < 40; i++ {
		// No notebooks in the project: each job fails fast in its handler,
		// which is all this test needs of it.
		b.WriteString(job(fmt.Sprintf("race%02d", i), "tts", "training", "StableTTS", "    epochs: 1\n"))
	}
	srv.UserCommit(t, projectPath, "queue", map[string][]byte{manifest.Path: []byte(b.String())})
	e := &env{t: t, srv: srv, path: projectPath, work: t.TempDir()}
	var wg sync.WaitGroup
	outs := make([]bytes.Buffer, 8)
	errs := make([]error, 8)
	for i := 0; i < 8; i++ {
		cmd := e.command(fmt.Sprintf("w%d", i))
		cmd.Stdout, cmd.Stderr = &outs[i], &outs[i]
		wg.Add(1)
		go func(i int) { defer wg.Done(); errs[i] = cmd.Run() }(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v\n%s", i, err, tail(outs[i].String()))
		}
	}
	creates, finishes := map[string]int{}, map[string]int{}
	for _, c := range srv.Commits(projectPath) {
		for _, a := range c.Actions {
			if !strings.HasSuffix(a.Path, "/response.yaml") {
				continue
			}
			if a.Kind == "create" {
				creates[a.Path]++
			}
			if strings.Contains(c.Message, " failed") || strings.Contains(c.Message, " completed") {
				finishes[a.Path]++
			}
		}
	}
	workers := map[string]bool{}
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("race%02d", i)
		p := manifest.ResponsePath(id)
		r := e.response(id)
		workers[r.WorkerID] = true
		if creates[p] != 1 || finishes[p] != 1 || r.State != manifest.StateFailed {
			t.Errorf("%s: created %d, finished %d, state %s", id, creates[p], finishes[p], r.State)
		}
		if r.ErrorMessage == nil || !strings.Contains(*r.ErrorMessage, "no .codex notebooks") {
			t.Errorf("%s: error %v", id, r.ErrorMessage)
		}
	}
	t.Logf("%d workers shared the 40 jobs", len(workers))
}
