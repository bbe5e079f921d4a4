package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gpu-worker/project"
)

func open(t *testing.T) (*Project, string) {
	t.Helper()
	dir := t.TempDir()
	p, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return p, dir
}

func mustCommit(t *testing.T, p *Project, actions ...project.Action) string {
	t.Helper()
	res, err := p.Commit(context.Background(), "test", actions)
	if err != nil {
		t.Fatal(err)
	}
	return res.ID
}

func create(path, content string) project.Action {
	return project.Action{Kind: project.Create, Path: path, Content: []byte(content)}
}

func readString(t *testing.T, dir, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func missing(t *testing.T, dir, rel string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(rel))); !notExist(err) {
		t.Fatalf("%s exists (%v)", rel, err)
	}
}

func TestOpenNeedsDirectory(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("opened a missing folder")
	}
	os.WriteFile(filepath.Join(dir, "f"), nil, 0o644)
	if _, err := Open(filepath.Join(dir, "f")); err == nil {
		t.Fatal("opened a file")
	}
}

func TestBlobIDIsGitBlobSHA1(t *testing.T) {
	p, _ := open(t)
	mustCommit(t, p, create("hello.txt", "hello\n"))
	f, err := p.ReadFile(context.Background(), "hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	// git hash-object of "hello\n".
	if f.BlobID != "ce013625030ba8dba906f756967f9e9ca394464a" {
		t.Fatalf("blob id %s", f.BlobID)
	}
	st, err := p.StatFile(context.Background(), "hello.txt")
	if err != nil || st.BlobID != f.BlobID {
		t.Fatalf("stat %+v, %v", st, err)
	}
}

func TestReservedAndEscapingPaths(t *testing.T) {
	p, dir := open(t)
	for _, bad := range []string{"", "/etc/passwd", "../x", "a/../../x", ".git/config", ".gpu-worker/commits.jsonl", "."} {
		if _, err := p.Commit(context.Background(), "bad", []project.Action{create(bad, "x")}); err == nil {
			t.Fatalf("commit to %q succeeded", bad)
		}
		if _, err := p.ReadFile(context.Background(), bad); err == nil {
			t.Fatalf("read of %q succeeded", bad)
		}
		if p.LocalPath(bad) != "" {
			t.Fatalf("LocalPath(%q) = %q", bad, p.LocalPath(bad))
		}
	}
	if got := p.LocalPath("files/target/GEN.codex"); got != filepath.Join(dir, "files", "target", "GEN.codex") {
		t.Fatalf("LocalPath = %q", got)
	}
}

func TestListTreeSkipsMetadataAndGit(t *testing.T) {
	p, dir := open(t)
	os.MkdirAll(filepath.Join(dir, ".git", "objects"), 0o755)
	os.WriteFile(filepath.Join(dir, ".git", "HEAD"), []byte("ref: refs/heads/main\n"), 0o644)
	mustCommit(t, p, create("a/b.txt", "b"), create("c.txt", "c"))
	tree, err := p.ListTree(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range tree {
		paths = append(paths, e.Path)
	}
	if strings.Join(paths, ",") != "a/b.txt,c.txt" {
		t.Fatalf("tree %v", paths)
	}
	// The metadata folder exists and hides itself from the project's git.
	if got := readString(t, dir, ".gpu-worker/.gitignore"); got != "*\n" {
		t.Fatalf(".gitignore %q", got)
	}
	none, err := p.ListTree(context.Background(), "no/such/dir")
	if err != nil || len(none) != 0 {
		t.Fatalf("missing dir lists %v, %v", none, err)
	}
}

// A folder's guard is its content's hash: it changes with every edit, by
// us or by a user's editor, a stale one is refused, and the guard a commit
// reports is the one a later read gives — in this process and another.
func TestGuardFollowsContent(t *testing.T) {
	p, dir := open(t)
	ctx := context.Background()
	res, err := p.Commit(ctx, "one", []project.Action{create("f.txt", "one")})
	if err != nil {
		t.Fatal(err)
	}
	g1 := res.GuardOf("f.txt")
	if f, _ := p.ReadFile(ctx, "f.txt"); f.Guard != g1 || g1 == "" {
		t.Fatalf("read guard %s, commit reported %s", f.Guard, g1)
	}
	userWrite(t, dir, map[string][]byte{"f.txt": []byte("two")})
	f2, _ := p.ReadFile(ctx, "f.txt")
	if f2.Guard == g1 || f2.Guard == "" {
		t.Fatalf("edited file kept guard %s", f2.Guard)
	}
	userWrite(t, dir, map[string][]byte{"f.txt": []byte("three")})
	f3, _ := p.ReadFile(ctx, "f.txt")
	if f3.Guard == f2.Guard {
		t.Fatal("second edit kept the guard")
	}
	_, err = p.Commit(ctx, "stale", []project.Action{{Kind: project.Update, Path: "f.txt", Content: []byte("x"), Guard: f2.Guard}})
	if !project.IsConflict(err, project.ChangedSince) {
		t.Fatalf("got %v, want ChangedSince", err)
	}
	res, err = p.Commit(ctx, "four", []project.Action{{Kind: project.Update, Path: "f.txt", Content: []byte("four"), Guard: f3.Guard}})
	if err != nil {
		t.Fatal(err)
	}
	q, _ := Open(dir)
	if f, _ := q.ReadFile(ctx, "f.txt"); f.Guard != res.GuardOf("f.txt") {
		t.Fatalf("second instance sees %s, the commit reported %s", f.Guard, res.GuardOf("f.txt"))
	}
}

// A failure in the middle of the renames rolls back the ones already done.
func TestFailureWhileApplyingRollsBack(t *testing.T) {
	p, dir := open(t)
	mustCommit(t, p, create("a.txt", "a1"), create("blocker", "i am a file"), create("z.txt", "z1"))
	// "blocker/child" needs blocker to be a directory: the rename step fails
	// after a.txt has been replaced (paths apply in sorted order).
	_, err := p.Commit(context.Background(), "doomed", []project.Action{
		{Kind: project.Update, Path: "a.txt", Content: []byte("a2")},
		create("blocker2/new.txt", "n"),
		create("blocker/child", "c"),
		{Kind: project.Delete, Path: "z.txt"},
	})
	if err == nil {
		t.Fatal("commit succeeded")
	}
	if got := readString(t, dir, "a.txt"); got != "a1" {
		t.Fatalf("a.txt = %q after rollback", got)
	}
	if got := readString(t, dir, "z.txt"); got != "z1" {
		t.Fatalf("z.txt = %q after rollback", got)
	}
	missing(t, dir, "blocker2")
	missing(t, dir, ".gpu-worker/journal.json")
	if recs, _ := p.Commits(context.Background()); len(recs) != 1 {
		t.Fatalf("%d commits recorded, want 1", len(recs))
	}
	if es, _ := os.ReadDir(filepath.Join(dir, ".gpu-worker", "tmp")); len(es) != 0 {
		t.Fatalf("staging left %d files", len(es))
	}
}

// A commit whose process died mid-apply is rolled back by the next commit;
// one that died after recording is kept.
func TestJournalRecovery(t *testing.T) {
	p, dir := open(t)
	ctx := context.Background()
	mustCommit(t, p, create("a.txt", "old"))
	before, _ := p.ReadFile(ctx, "a.txt")

	// Simulate a crash after the renames and before the record.
	tmp := filepath.Join(dir, ".gpu-worker", "tmp")
	os.MkdirAll(tmp, 0o755)
	os.Link(filepath.Join(dir, "a.txt"), filepath.Join(tmp, "backup-0"))
	writeJournal(t, dir, journal{Commit: "deadbeef", Entries: []journalEntry{{Path: "a.txt", Backup: "backup-0"}, {Path: "new/b.txt"}}})
	userWrite(t, dir, map[string][]byte{"a.txt.tmp": []byte("new")})
	os.Rename(filepath.Join(dir, "a.txt.tmp"), filepath.Join(dir, "a.txt"))
	userWrite(t, dir, map[string][]byte{"new/b.txt": []byte("b")})

	mustCommit(t, p, create("other.txt", "o"))
	if got := readString(t, dir, "a.txt"); got != "old" {
		t.Fatalf("a.txt = %q, want rolled back", got)
	}
	missing(t, dir, "new")
	missing(t, dir, ".gpu-worker/journal.json")
	if f, _ := p.ReadFile(ctx, "a.txt"); f.Guard != before.Guard {
		t.Fatalf("a.txt guard %s, want the one before the crash, %s", f.Guard, before.Guard)
	}

	// Simulate a crash after the record: the commit stands.
	c3 := mustCommit(t, p, project.Action{Kind: project.Update, Path: "a.txt", Content: []byte("newer")})
	writeJournal(t, dir, journal{Commit: c3, Entries: []journalEntry{{Path: "a.txt", Backup: "backup-9"}}})
	mustCommit(t, p, create("more.txt", "m"))
	if got := readString(t, dir, "a.txt"); got != "newer" {
		t.Fatalf("a.txt = %q, want the recorded commit kept", got)
	}
	missing(t, dir, ".gpu-worker/journal.json")
}

func writeJournal(t *testing.T, dir string, j journal) {
	t.Helper()
	b, _ := json.Marshal(j)
	if err := os.WriteFile(filepath.Join(dir, ".gpu-worker", "journal.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A torn record from a writer that died mid-append does not break reading
// or the next append.
func TestTornHistoryTail(t *testing.T) {
	p, dir := open(t)
	ctx := context.Background()
	mustCommit(t, p, create("a.txt", "a"))
	before, _ := p.ReadFile(ctx, "a.txt")
	hist := filepath.Join(dir, ".gpu-worker", "commits.jsonl")
	f, _ := os.OpenFile(hist, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"id":"torn","actions":[{"action":"update","path":"a.t`)
	f.Close()
	q, _ := Open(dir)
	if got, err := q.ReadFile(ctx, "a.txt"); err != nil || got.Guard != before.Guard {
		t.Fatalf("read with torn tail: %+v, %v", got, err)
	}
	c2 := mustCommit(t, q, create("b.txt", "b"))
	recs, err := q.Commits(context.Background())
	if err != nil || len(recs) != 2 || recs[1].ID != c2 {
		t.Fatalf("history %+v, %v", recs, err)
	}
	if f, _ := p.ReadFile(ctx, "b.txt"); f.Guard != recs[1].Actions[0].BlobID {
		t.Fatalf("first instance sees b.txt guard %s, the history says %s", f.Guard, recs[1].Actions[0].BlobID)
	}
}

func TestCreateThenMoveInOneCommit(t *testing.T) {
	p, dir := open(t)
	res, err := p.Commit(context.Background(), "move", []project.Action{
		create("gpu_jobs/job_1/audio.tmp", "pointer text"),
		{Kind: project.Move, PreviousPath: "gpu_jobs/job_1/audio.tmp", Path: "gpu_jobs/job_1/audio.webm"},
	})
	if err != nil {
		t.Fatal(err)
	}
	missing(t, dir, "gpu_jobs/job_1/audio.tmp")
	if got := readString(t, dir, "gpu_jobs/job_1/audio.webm"); got != "pointer text" {
		t.Fatalf("moved content %q", got)
	}
	f, _ := p.ReadFile(context.Background(), "gpu_jobs/job_1/audio.webm")
	if f.Guard != res.GuardOf("gpu_jobs/job_1/audio.webm") {
		t.Fatalf("guard %s, the commit reported %s", f.Guard, res.GuardOf("gpu_jobs/job_1/audio.webm"))
	}
}

func TestDeleteRemovesEmptyDirectories(t *testing.T) {
	p, dir := open(t)
	mustCommit(t, p, create("gpu_jobs/job_1/x/response.yaml", "r"), create("gpu_jobs/keep.txt", "k"))
	mustCommit(t, p, project.Action{Kind: project.Delete, Path: "gpu_jobs/job_1/x/response.yaml"})
	missing(t, dir, "gpu_jobs/job_1")
	if readString(t, dir, "gpu_jobs/keep.txt") != "k" {
		t.Fatal("sibling lost")
	}
}

func TestUpdateKeepsFileMode(t *testing.T) {
	p, dir := open(t)
	mustCommit(t, p, create("run.sh", "#!/bin/sh\n"))
	os.Chmod(filepath.Join(dir, "run.sh"), 0o755)
	mustCommit(t, p, project.Action{Kind: project.Update, Path: "run.sh", Content: []byte("#!/bin/sh\necho\n")})
	fi, _ := os.Stat(filepath.Join(dir, "run.sh"))
	if fi.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
}

func TestCanceledContextCommitsNothing(t *testing.T) {
	p, dir := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Commit(ctx, "late", []project.Action{create("x.txt", "x")}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want canceled", err)
	}
	missing(t, dir, "x.txt")
}

func TestGitFileFollowsToCommonDir(t *testing.T) {
	main := t.TempDir()
	wt := t.TempDir()
	gd := filepath.Join(main, ".git", "worktrees", "wt")
	os.MkdirAll(gd, 0o755)
	os.WriteFile(filepath.Join(gd, "commondir"), []byte("../..\n"), 0o644)
	os.WriteFile(filepath.Join(wt, ".git"), []byte("gitdir: "+gd+"\n"), 0o644)
	p, err := Open(wt)
	if err != nil {
		t.Fatal(err)
	}
	oid := strings.Repeat("ab", 32)
	want := filepath.Join(main, ".git", "lfs", "objects", "ab", "ab", oid)
	if got := p.ObjectPath(oid); got != want {
		t.Fatalf("object path %s, want %s", got, want)
	}
	if p.ObjectPath("../../etc") != "" {
		t.Fatal("invalid oid got a path")
	}
	src := filepath.Join(t.TempDir(), "x")
	os.WriteFile(src, []byte("data"), 0o644)
	ptr, err := p.PutLFS(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p.ObjectPath(ptr.OID)); err != nil || !bytes.Equal(b, []byte("data")) {
		t.Fatalf("object in common dir: %q, %v", b, err)
	}
	missing(t, wt, ".git/lfs")
}
