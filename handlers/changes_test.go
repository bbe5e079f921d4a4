package handlers

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gpu-worker/codex"
	"gpu-worker/demoproject"
	"gpu-worker/engine"
	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/limits"
	"gpu-worker/local"
	"gpu-worker/manifest"
	"gpu-worker/project"
	"gpu-worker/worker"
)

const asrJob = "version: 1\njobs:\n  - {job_id: asr, job_type: asr, mode: inference, model: {type: W2V2BERT, base_checkpoint: gpu_jobs/x/m.tar}}\n"

// projectFiles are a project holding the manifest and one notebook per
// book, each with blank verses.
func projectFiles(t *testing.T, books []string, verses int) map[string][]byte {
	t.Helper()
	files := map[string][]byte{manifest.Path: []byte(asrJob)}
	for _, book := range books {
		var vs []demoproject.Verse
		for i := 1; i <= verses; i++ {
			vs = append(vs, demoproject.Verse{Ref: fmt.Sprintf("%s 1:%d", book, i), Blank: true})
		}
		gen, err := demoproject.Generate(context.Background(), demoproject.Options{Book: book, Verses: vs})
		if err != nil {
			t.Fatal(err)
		}
		for p, b := range gen.Files {
			files[p] = b
		}
	}
	return files
}

// emulatorProject is a GitLab project holding projectFiles.
func emulatorProject(t *testing.T, books []string, verses int) (*gitlabtest.Server, *gitlab.Client) {
	t.Helper()
	srv := gitlabtest.New(t)
	srv.CreateProject("team/bible")
	srv.UserCommit(t, "team/bible", "import", projectFiles(t, books, verses))
	c, err := gitlab.New(gitlab.Config{BaseURL: srv.URL(), Token: gitlabtest.DefaultToken,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}

// transcribeAll plans a transcription of every verse of the notebooks read,
// as the ASR handler does; its result counts the plan.
func transcribeAll(ctx context.Context, env *worker.JobEnv) (*worker.Outcome, map[string]*codex.Notebook, error) {
	nbs, err := loadNotebooks(ctx, env.Project, limits.Default())
	if err != nil {
		return nil, nil, err
	}
	patches := map[string][]codex.Patch{}
	n := 0
	for path, nb := range nbs {
		for _, c := range nb.Cells() {
			patches[path] = append(patches[path], codex.Patch{CellID: c.ID(), Text: &codex.TextChange{Value: "heard " + c.ID(), Author: "asr"}})
			n++
		}
	}
	return &worker.Outcome{Result: map[string]any{"cells_transcribed": n}, Changes: transcriptions(patches, nbs, env.Log)}, nbs, nil
}

func runWorker(t *testing.T, src worker.Source, h worker.HandlerFunc) {
	t.Helper()
	w := worker.New(worker.Config{WorkerID: "w1", WorkDir: filepath.Join(t.TempDir(), "work"), LoopInterval: -1,
		HeartbeatInterval: time.Hour, CancelCheckInterval: time.Hour, ClaimTimeout: time.Hour},
		src, worker.Registry{"asr/w2v2bert/inference": h}, slog.New(slog.DiscardHandler))
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func response(t *testing.T, srv *gitlabtest.Server) *manifest.Response {
	t.Helper()
	b, ok := srv.ReadFile("team/bible", manifest.ResponsePath("asr"))
	if !ok {
		t.Fatal("no response.yaml")
	}
	return parseResponse(t, b)
}

func parseResponse(t *testing.T, b []byte) *manifest.Response {
	t.Helper()
	r, err := manifest.ParseResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// backendUnderTest is a project as the worker serves it and as a
// translator's sync changes it.
type backendUnderTest struct {
	source worker.Source
	read   func(path string) []byte
	// userSave stores a file as the translator's sync (GitLab) or editor
	// (a local folder) does.
	userSave func(path string, content []byte)
}

func gitlabBackend(t *testing.T, books []string, verses int) backendUnderTest {
	srv, client := emulatorProject(t, books, verses)
	return backendUnderTest{
		source: gitlab.Source{Client: client},
		read:   func(path string) []byte { b, _ := srv.ReadFile("team/bible", path); return b },
		userSave: func(path string, content []byte) {
			srv.UserCommit(t, "team/bible", "translator sync", map[string][]byte{path: content})
		},
	}
}

func folderBackend(t *testing.T, books []string, verses int) backendUnderTest {
	dir := t.TempDir()
	save := func(path string, content []byte) {
		full := filepath.Join(dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, b := range projectFiles(t, books, verses) {
		save(p, b)
	}
	p, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return backendUnderTest{
		source: folderSource{p},
		read: func(path string) []byte {
			b, _ := os.ReadFile(filepath.Join(dir, filepath.FromSlash(path)))
			return b
		},
		userSave: save,
	}
}

// folderSource serves one local project folder.
type folderSource struct{ p project.Project }

func (s folderSource) Projects(context.Context) ([]project.Project, error) {
	return []project.Project{s.p}, nil
}

// translatorEdit is a translator's edit of a cell's text, stamped now.
func translatorEdit(c *codex.Cell, value string) {
	meta := c.Object().Get("metadata")
	if meta.Get("edits") == nil {
		meta.Set("edits", codex.NewArray())
	}
	c.Object().Set("value", codex.NewString(value))
	meta.Get("edits").Append(codex.NewObject(
		codex.Member{Key: "editMap", Value: codex.NewArray(codex.NewString("value"))},
		codex.Member{Key: "value", Value: codex.NewString(value)},
		codex.Member{Key: "timestamp", Value: codex.NewInt(time.Now().UnixMilli())},
		codex.Member{Key: "type", Value: codex.NewString("user-edit")},
		codex.Member{Key: "author", Value: codex.NewString("translator")},
		codex.Member{Key: "validatedBy", Value: codex.NewArray()},
	))
}

// A translator's edit made while the job ran wins its cell, on GitLab and in
// a local folder: the result and status count one cell less than the job
// planned and name the kept edit; the job's text stays in the cell's
// history under the translator's.
func TestKeptUserEditCounted(t *testing.T) {
	const nbPath = "files/target/MRK.codex"
	for name, open := range map[string]func(*testing.T, []string, int) backendUnderTest{
		"gitlab": gitlabBackend, "folder": folderBackend,
	} {
		t.Run(name, func(t *testing.T) {
			b := open(t, []string{"MRK"}, 3)
			runWorker(t, b.source, func(ctx context.Context, env *worker.JobEnv) (*worker.Outcome, error) {
				out, _, err := transcribeAll(ctx, env)
				if err != nil {
					return nil, err
				}
				user, err := codex.Parse(nbPath, b.read(nbPath))
				if err != nil {
					return nil, err
				}
				translatorEdit(user.Cell(demoproject.CellUUID("MRK 1:2")), "typed by the translator")
				b.userSave(nbPath, user.Marshal())
				return out, nil
			})
			r := parseResponse(t, b.read(manifest.ResponsePath("asr")))
			kept, _ := r.Result["kept_user_edits"].(map[string]any)
			if r.State != manifest.StateCompleted || r.Result["cells_transcribed"] != 2 || kept == nil || kept["count"] != 1 ||
				fmt.Sprint(kept["cells"]) != "[MRK 1:2]" {
				t.Fatalf("result %v (state %s)", r.Result, r.State)
			}
			if r.StatusMessage != "completed: text transcribed for 2 verses; 1 kept a translator's newer edit" {
				t.Errorf("status %q", r.StatusMessage)
			}
			nb, err := codex.Parse(nbPath, b.read(nbPath))
			if err != nil {
				t.Fatal(err)
			}
			c := nb.Cell(demoproject.CellUUID("MRK 1:2"))
			if got := c.Value(); got != "typed by the translator" || !strings.Contains(string(codex.AppendJSON(nil, c.Object())), "heard "+c.ID()) {
				t.Errorf("MRK 1:2 = %q; the job's text not kept in its history", got)
			}
			if got := nb.Cell(demoproject.CellUUID("MRK 1:1")).Value(); !strings.HasPrefix(got, "heard") {
				t.Errorf("MRK 1:1 = %q", got)
			}
		})
	}
}

// takeoverSource hands out projects on which another worker takes the job
// over right after our first results commit lands.
type takeoverSource struct {
	worker.Source
	takeOver func()
}

func (s takeoverSource) Projects(ctx context.Context) ([]project.Project, error) {
	ps, err := s.Source.Projects(ctx)
	for i, p := range ps {
		ps[i] = &afterResults{Project: p, then: s.takeOver}
	}
	return ps, err
}

type afterResults struct {
	project.Project
	then func()
	once sync.Once
}

func (a *afterResults) Commit(ctx context.Context, message string, actions []project.Action) (*project.CommitResult, error) {
	res, err := a.Project.Commit(ctx, message, actions)
	if err == nil && strings.HasPrefix(message, "Job ") {
		a.once.Do(a.then)
	}
	return res, err
}

// Results split into several commits: each carries the lease, so once
// another worker owns the job after the first one, nothing more lands.
func TestSplitResultsStopWhenLeaseLost(t *testing.T) {
	books := []string{"MAT", "MRK", "LUK", "JHN"}
	srv, client := emulatorProject(t, books, 5)
	before := len(srv.Commits("team/bible"))
	src := takeoverSource{Source: gitlab.Source{Client: client}, takeOver: func() {
		other := manifest.Response{WorkerID: "w2", State: manifest.StateRunning, Timestamp: time.Now(), RetryCount: 1}
		srv.UserCommit(t, "team/bible", "w2 takes over", map[string][]byte{manifest.ResponsePath("asr"): other.Marshal()})
	}}
	runWorker(t, src, func(ctx context.Context, env *worker.JobEnv) (*worker.Outcome, error) {
		out, _, err := transcribeAll(ctx, env)
		if err != nil {
			return nil, err
		}
		out.Changes.(*cellChanges).maxCommitBytes = 1 // one notebook per commit
		return out, nil
	})
	var ours []string
	for _, c := range srv.Commits("team/bible")[before:] {
		if strings.HasPrefix(c.Message, "Job ") {
			ours = append(ours, c.Message)
		}
	}
	if len(ours) != 1 {
		t.Fatalf("results commits: %q; want only the one before the takeover", ours)
	}
	if r := response(t, srv); r.WorkerID != "w2" || r.State != manifest.StateRunning {
		t.Fatalf("response after the takeover: %+v", r)
	}
	written := 0
	for _, book := range books {
		b, _ := srv.ReadFile("team/bible", "files/target/"+book+".codex")
		if strings.Contains(string(b), "heard ") {
			written++
		}
	}
	if written != 1 {
		t.Errorf("%d notebooks written; only the first commit's may land", written)
	}
}

// A training progress event reaches the worker with phase, steps and loss.
func TestTrainingProgressCarriesPhaseAndSteps(t *testing.T) {
	srv, client := emulatorProject(t, []string{"MRK"}, 1)
	_ = srv
	var got []worker.Progress
	var mu sync.Mutex
	w := worker.New(worker.Config{WorkerID: "w1", WorkDir: filepath.Join(t.TempDir(), "work"), LoopInterval: -1,
		HeartbeatInterval: time.Hour, CancelCheckInterval: time.Hour, ClaimTimeout: time.Hour,
		Hooks: worker.Hooks{Progress: func(_ *manifest.Job, p worker.Progress) { mu.Lock(); got = append(got, p); mu.Unlock() }}},
		gitlab.Source{Client: client}, worker.Registry{"asr/w2v2bert/inference": worker.HandlerFunc(func(ctx context.Context, env *worker.JobEnv) (*worker.Outcome, error) {
			tr := &training{env: env, epochsRun: map[int]bool{}}
			loss, eta := 0.25, 42.0
			tr.onEvent(engine.Event{Kind: "progress", Epoch: 2, Epochs: 5, Step: 30, Steps: 75, Loss: &loss, ETA: &eta,
				Val: map[string]float64{"wer": 0.5, "cer": 0.2}}, time.Hour)
			return &worker.Outcome{}, nil
		})}, slog.New(slog.DiscardHandler))
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("progress reports %v", got)
	}
	if line := got[0].Line(); line != "training: epoch 2/5, step 30/75, loss 0.2500, val cer 0.2000, val wer 0.5000, ETA 42s" {
		t.Errorf("line %q", line)
	}
}
