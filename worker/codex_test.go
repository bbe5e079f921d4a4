package worker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gpu-worker/codex"
	"gpu-worker/demoproject"
)

// A translator who edits a cell after the job read the notebook, but before
// the job's results land, keeps the edit; the job's other cells land.
func TestFinishKeepsEditsMadeDuringTheJob(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n  - {job_id: asr, job_type: asr, mode: inference, model: {type: W2V2BERT, base_checkpoint: gpu_jobs/x/m.tar}}\n")
	gen, err := demoproject.Generate(context.Background(), demoproject.Options{Book: "MRK", Verses: []demoproject.Verse{
		{Ref: "MRK 1:1", Blank: true}, {Ref: "MRK 1:2", Blank: true}, {Ref: "MRK 1:3", Text: "untouched"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	const nbPath = "files/target/MRK.codex"
	tp.userWrite(nbPath, string(gen.Files[nbPath]))
	reg := Registry{"asr/w2v2bert/inference": HandlerFunc(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		f, err := env.Project.ReadFile(ctx, nbPath)
		if err != nil {
			return nil, err
		}
		nb, err := codex.Parse(nbPath, f.Content)
		if err != nil {
			return nil, err
		}
		// The translator types into verse 2 while the job transcribes.
		user, _ := codex.Parse(nbPath, f.Content)
		codex.Apply(user, nil, []codex.Patch{{CellID: demoproject.CellUUID("MRK 1:2"), Text: &codex.TextChange{Value: "typed by the translator", Author: "translator"}}})
		tp.userWrite(nbPath, string(user.Marshal()))
		return &Outcome{
			Patches: map[string][]codex.Patch{nbPath: {
				{CellID: demoproject.CellUUID("MRK 1:1"), Text: &codex.TextChange{Value: "transcribed one", Author: "asr"}},
				{CellID: demoproject.CellUUID("MRK 1:2"), Text: &codex.TextChange{Value: "transcribed two", Author: "asr"}},
			}},
			Bases: map[string]*codex.Notebook{nbPath: nb},
		}, nil
	})}
	w := testWorker(t, "w1", single{tp.p}, reg, nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(tp.dir, nbPath))
	if err != nil {
		t.Fatal(err)
	}
	nb, err := codex.Parse(nbPath, data)
	if err != nil {
		t.Fatal(err)
	}
	got := func(ref string) string { return nb.Cell(demoproject.CellUUID(ref)).Value() }
	if got("MRK 1:1") != "transcribed one" || got("MRK 1:2") != "typed by the translator" || !strings.Contains(got("MRK 1:3"), "untouched") {
		t.Fatalf("cells: %q %q %q", got("MRK 1:1"), got("MRK 1:2"), got("MRK 1:3"))
	}
	if r := tp.response("asr"); r.State != "completed" {
		t.Fatalf("%+v", r)
	}
}
