package local

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"gpu-worker/project"
)

// editorSave writes a file the way the Codex editor may: a new file renamed
// over the old one, or the old one rewritten in place.
func editorSave(t *testing.T, dir, rel, content string, inPlace bool) {
	t.Helper()
	abs := filepath.Join(dir, filepath.FromSlash(rel))
	if inPlace {
		if err := os.WriteFile(abs, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	tmp := abs + ".saving"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, abs); err != nil {
		t.Fatal(err)
	}
}

// afterFailedCommit checks that nothing of a refused commit is left.
func afterFailedCommit(t *testing.T, p *Project, dir string, commits int) {
	t.Helper()
	missing(t, dir, ".gpu-worker/journal.json")
	if recs, _ := p.Commits(context.Background()); len(recs) != commits {
		t.Fatalf("%d commits recorded, want %d", len(recs), commits)
	}
	if es, _ := os.ReadDir(filepath.Join(dir, ".gpu-worker", "tmp")); len(es) != 0 {
		t.Fatalf("staging left %d files", len(es))
	}
}

// An editor save that lands after the guards were checked (while the
// commit stages its files) fails the commit instead of being overwritten;
// the commit's other paths are left as they were.
func TestEditorSaveAfterPlanIsKept(t *testing.T) {
	for _, inPlace := range []bool{false, true} {
		name := "renamed over"
		if inPlace {
			name = "in place"
		}
		t.Run(name, func(t *testing.T) {
			p, dir := open(t)
			mustCommit(t, p, create("a.codex", "a1"), create("m.codex", "m1"))
			f, err := p.ReadFile(context.Background(), "m.codex")
			if err != nil {
				t.Fatal(err)
			}
			p.beforeApply = func() { editorSave(t, dir, "m.codex", "saved by the translator", inPlace) }
			_, err = p.Commit(context.Background(), "results", []project.Action{
				{Kind: project.Update, Path: "a.codex", Content: []byte("a2")},
				{Kind: project.Update, Path: "m.codex", Content: []byte("m2"), Guard: f.Guard},
				create("new.txt", "n"),
			})
			if !project.IsConflict(err, project.ChangedSince) {
				t.Fatalf("got %v, want a ChangedSince conflict", err)
			}
			if got := readString(t, dir, "m.codex"); got != "saved by the translator" {
				t.Fatalf("m.codex = %q: the editor's save was lost", got)
			}
			if got := readString(t, dir, "a.codex"); got != "a1" {
				t.Fatalf("a.codex = %q after the refused commit", got)
			}
			missing(t, dir, "new.txt")
			afterFailedCommit(t, p, dir, 1)
		})
	}
}

// A save that lands in the instant the old file is set aside is not
// replaced either.
func TestEditorSaveDuringSwapIsKept(t *testing.T) {
	p, dir := open(t)
	mustCommit(t, p, create("m.codex", "m1"), create("z.codex", "z1"))
	f, _ := p.ReadFile(context.Background(), "m.codex")
	p.afterMoveAside = func(rel string) {
		if rel == "m.codex" {
			editorSave(t, dir, "m.codex", "saved by the translator", false)
		}
	}
	_, err := p.Commit(context.Background(), "results", []project.Action{
		{Kind: project.Update, Path: "m.codex", Content: []byte("m2"), Guard: f.Guard},
		{Kind: project.Delete, Path: "z.codex"},
	})
	if !project.IsConflict(err, project.ChangedSince) {
		t.Fatalf("got %v, want a ChangedSince conflict", err)
	}
	if got := readString(t, dir, "m.codex"); got != "saved by the translator" {
		t.Fatalf("m.codex = %q: the editor's save was lost", got)
	}
	if got := readString(t, dir, "z.codex"); got != "z1" {
		t.Fatalf("z.codex = %q after the refused commit", got)
	}
	afterFailedCommit(t, p, dir, 1)
}

// A file the editor creates after the plan makes a create fail.
func TestEditorCreateAfterPlanFailsCreate(t *testing.T) {
	p, dir := open(t)
	p.beforeApply = func() { editorSave(t, dir, "n.codex", "the translator's", false) }
	_, err := p.Commit(context.Background(), "results", []project.Action{create("n.codex", "ours")})
	if !project.IsConflict(err, project.AlreadyExists) {
		t.Fatalf("got %v, want AlreadyExists", err)
	}
	if got := readString(t, dir, "n.codex"); got != "the translator's" {
		t.Fatalf("n.codex = %q", got)
	}
	afterFailedCommit(t, p, dir, 0)
}

// An unguarded update still wins over a save, as on GitLab.
func TestUnguardedUpdateStillOverwrites(t *testing.T) {
	p, dir := open(t)
	mustCommit(t, p, create("log.txt", "1"))
	p.beforeApply = func() { editorSave(t, dir, "log.txt", "edited", false) }
	mustCommit(t, p, project.Action{Kind: project.Update, Path: "log.txt", Content: []byte("2")})
	if got := readString(t, dir, "log.txt"); got != "2" {
		t.Fatalf("log.txt = %q", got)
	}
}
