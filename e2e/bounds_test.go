package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gpu-worker/demoproject"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/manifest"
)

// addProject generates a project on srv after mutate had its way with it.
func addProject(t *testing.T, srv *gitlabtest.Server, path string, vs []demoproject.Verse, mutate func(*demoproject.Project)) {
	t.Helper()
	p, err := demoproject.Generate(context.Background(), demoproject.Options{Book: "MRK", Verses: vs})
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(p)
	}
	srv.CreateProject(path)
	for _, obj := range p.Objects {
		srv.PutLFSObject(obj)
	}
	srv.UserCommit(t, path, "Import project", p.Files)
}

// editNotebook rewrites the project's notebook through a generic decode.
func editNotebook(t *testing.T, p *demoproject.Project, edit func(nb map[string]any)) {
	t.Helper()
	const path = "files/target/MRK.codex"
	var nb map[string]any
	if err := json.Unmarshal(p.Files[path], &nb); err != nil {
		t.Fatal(err)
	}
	edit(nb)
	b, err := json.MarshalIndent(nb, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p.Files[path] = append(b, '\n')
}

// replaceRecordings points every recording of p at content instead.
func replaceRecordings(t *testing.T, srv *gitlabtest.Server, p *demoproject.Project, content []byte) {
	t.Helper()
	ptr := srv.PutLFSObject(content)
	n := 0
	for path := range p.Files {
		if strings.HasPrefix(path, ".project/attachments/pointers/") {
			p.Files[path] = []byte(ptr.String())
			n++
		}
	}
	if n == 0 {
		t.Fatal("the project has no recording to replace")
	}
}

func tone(t *testing.T, seconds float64, rate int) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "tone.wav")
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
		"-i", fmt.Sprintf("sine=frequency=220:sample_rate=%d:duration=%g", rate, seconds), "-ac", "1", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Each input over a bound fails its own job with a message naming the file
// and the setting (a manifest over one skips its project with a log line);
// the other projects' jobs, a clean one among them, are served as usual.
func TestOversizedInputsFailOnlyTheirJob(t *testing.T) {
	srv := gitlabtest.New(t)
	vs := verses(3, 0, 0)
	addProject(t, srv, "team/big-notebook", vs, func(p *demoproject.Project) {
		editNotebook(t, p, func(nb map[string]any) {
			nb["metadata"].(map[string]any)["padding"] = strings.Repeat("x", 300<<10)
		})
	})
	addProject(t, srv, "team/deep-notebook", vs, func(p *demoproject.Project) {
		editNotebook(t, p, func(nb map[string]any) {
			var deep any = "bottom"
			for range 100 {
				deep = []any{deep}
			}
			nb["metadata"].(map[string]any)["deep"] = deep
		})
	})
	addProject(t, srv, "team/long-recordings", vs, func(p *demoproject.Project) {
		replaceRecordings(t, srv, p, tone(t, 40, 8000))
	})
	addProject(t, srv, "team/big-objects", vs, func(p *demoproject.Project) {
		replaceRecordings(t, srv, p, tone(t, 15, 48000))
	})
	addProject(t, srv, "team/alias-bomb", vs, nil)
	addProject(t, srv, "team/clean", vs, nil)
	projects := []string{"team/big-notebook", "team/deep-notebook", "team/long-recordings", "team/big-objects", "team/alias-bomb", "team/clean"}
	for _, p := range projects {
		doc := "version: 1\njobs:\n" + job(strings.TrimPrefix(p, "team/"), "tts", "training", "StableTTS", "    epochs: 2\n")
		if p == "team/alias-bomb" {
			doc = billionLaughs() + "jobs:\n" + job("bomb", "tts", "training", "StableTTS", "")
		}
		srv.UserCommit(t, p, "Queue a job", map[string][]byte{manifest.Path: []byte(doc)})
	}

	cmd := exec.Command(binary, "run", "--gitlab-url", srv.URL(), "--token", gitlabtest.DefaultToken,
		"--projects", strings.Join(projects, ","), "--work-dir", t.TempDir(), "--loop-interval", "-1",
		"--allow-cpu", "--python", python, "--engines-dir", enginesDir,
		"--max-notebook-bytes", "200000", "--max-recording-seconds", "30", "--max-lfs-object-bytes", "1000000")
	out, err := cmd.CombinedOutput()
	log := string(out)
	if err != nil {
		t.Fatalf("worker: %v\n%s", err, tail(log))
	}

	read := func(project, path string) string {
		b, _ := srv.ReadFile(project, path)
		return string(b)
	}
	failed := func(project, id string, want ...string) {
		t.Helper()
		r, err := manifest.ParseResponse([]byte(read(project, manifest.ResponsePath(id))))
		if err != nil || r.State != manifest.StateFailed || r.ErrorMessage == nil {
			t.Errorf("%s job %s: %+v %v\n%s", project, id, r, err, tail(log))
			return
		}
		logs := read(project, manifest.JobDir(id)+"/logs.txt")
		for _, w := range want {
			if !strings.Contains(*r.ErrorMessage+"\n"+logs, w) {
				t.Errorf("%s job %s: error_message and logs.txt do not say %q:\n%s\n%s", project, id, w, *r.ErrorMessage, tail(logs))
			}
		}
		if strings.Contains(*r.ErrorMessage, "/tmp/") {
			t.Errorf("%s job %s: error_message names a host path: %s", project, id, *r.ErrorMessage)
		}
	}
	failed("team/big-notebook", "big-notebook", "files/target/MRK.codex is", "max-notebook-bytes")
	failed("team/deep-notebook", "deep-notebook", "files/target/MRK.codex", "nesting deeper than 64 levels")
	failed("team/long-recordings", "long-recordings", "too long: .project/attachments/pointers/MRK/", "max-recording-seconds")
	failed("team/big-objects", "big-objects", "too large: .project/attachments/pointers/MRK/", "max-lfs-object-bytes")
	if read("team/alias-bomb", manifest.ResponsePath("bomb")) != "" {
		t.Errorf("a job of a manifest over the bounds was claimed")
	}
	if !strings.Contains(log, "project=team/alias-bomb") || !strings.Contains(log, "max-yaml-aliases") {
		t.Errorf("the worker's log does not say why team/alias-bomb was skipped:\n%s", tail(log))
	}
	r, err := manifest.ParseResponse([]byte(read("team/clean", manifest.ResponsePath("clean"))))
	if err != nil || r.State != manifest.StateCompleted {
		t.Errorf("the clean job: %+v %v\n%s", r, err, tail(log))
	}
}

// billionLaughs is the head of a manifest whose aliases expand to 10^9
// values.
func billionLaughs() string {
	var b strings.Builder
	b.WriteString("version: 1\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i <= 9; i++ {
		refs := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 10), ", ")
		fmt.Fprintf(&b, "l%d: &l%d [%s]\n", i, i, refs)
	}
	return b.String()
}
