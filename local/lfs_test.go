package local

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"gpu-worker/project"
)

func putObject(t *testing.T, p *Project, content string) project.Pointer {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src.webm")
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	ptr, err := p.PutLFS(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	return ptr
}

const (
	ptrPath   = ".project/attachments/pointers/GEN/audio-1-x.webm"
	filesPath = ".project/attachments/files/GEN/audio-1-x.webm"
)

func TestPointerCommitWritesPlayableCopy(t *testing.T) {
	p, dir := open(t)
	ptr := putObject(t, p, "webm bytes")
	if got := readString(t, dir, ".git/lfs/objects/"+ptr.OID[:2]+"/"+ptr.OID[2:4]+"/"+ptr.OID); got != "webm bytes" {
		t.Fatalf("object store holds %q", got)
	}
	mustCommit(t, p, create(ptrPath, ptr.String()))
	if got := readString(t, dir, ptrPath); got != ptr.String() {
		t.Fatalf("pointer file %q", got)
	}
	if got := readString(t, dir, filesPath); got != "webm bytes" {
		t.Fatalf("files copy %q", got)
	}
	// The playable copy is not part of the recorded commit.
	recs, _ := p.Commits(context.Background())
	if n := len(recs[0].Actions); n != 1 {
		t.Fatalf("recorded %d actions, want 1", n)
	}
	// Removing the pointer removes its playable copy.
	mustCommit(t, p, project.Action{Kind: project.Delete, Path: ptrPath})
	missing(t, dir, filesPath)
	missing(t, dir, ".project")
}

func TestPointerMovedIntoPlaceWritesPlayableCopy(t *testing.T) {
	p, dir := open(t)
	ptr := putObject(t, p, "moved audio")
	// The GitLab-safe way to add a pointer: create elsewhere, move in.
	mustCommit(t, p, create("gpu_jobs/job_1/tmp-pointer", ptr.String()))
	mustCommit(t, p, project.Action{Kind: project.Move, PreviousPath: "gpu_jobs/job_1/tmp-pointer", Path: ptrPath})
	if got := readString(t, dir, filesPath); got != "moved audio" {
		t.Fatalf("files copy %q", got)
	}
}

func TestExplicitFilesCopyWins(t *testing.T) {
	p, dir := open(t)
	ptr := putObject(t, p, "from store")
	mustCommit(t, p, create(ptrPath, ptr.String()), create(filesPath, "explicit"))
	if got := readString(t, dir, filesPath); got != "explicit" {
		t.Fatalf("files copy %q", got)
	}
}

func TestPointerWithoutObjectStillCommits(t *testing.T) {
	p, dir := open(t)
	ptr := project.Pointer{OID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Size: 3}
	mustCommit(t, p, create(ptrPath, ptr.String()))
	if readString(t, dir, ptrPath) != ptr.String() {
		t.Fatal("pointer not written")
	}
	missing(t, dir, filesPath)
}

func TestCorruptObjectFailsPointerCommit(t *testing.T) {
	p, dir := open(t)
	ptr := putObject(t, p, "good audio bytes")
	os.WriteFile(p.ObjectPath(ptr.OID), []byte("evil audio bytes"), 0o644)
	_, err := p.Commit(context.Background(), "result", []project.Action{create("gpu_jobs/r.yaml", "done"), create(ptrPath, ptr.String())})
	if err == nil {
		t.Fatal("commit with a corrupt object succeeded")
	}
	missing(t, dir, ptrPath)
	missing(t, dir, filesPath)
	missing(t, dir, "gpu_jobs")
}

func TestPutLFSRepairsTruncatedObject(t *testing.T) {
	p, _ := open(t)
	ptr := putObject(t, p, "full object")
	os.WriteFile(p.ObjectPath(ptr.OID), []byte("full"), 0o644)
	before := p.uploads
	if again := putObject(t, p, "full object"); again != ptr {
		t.Fatalf("pointer %+v, want %+v", again, ptr)
	}
	if p.uploads != before+1 {
		t.Fatal("truncated object was not replaced")
	}
	dst := filepath.Join(t.TempDir(), "out")
	if err := p.GetLFS(context.Background(), ptr, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "full object" {
		t.Fatalf("got %q", b)
	}
}

func TestGetLFSRejectsBadOID(t *testing.T) {
	p, _ := open(t)
	err := p.GetLFS(context.Background(), project.Pointer{OID: "../../../etc/passwd", Size: 1}, filepath.Join(t.TempDir(), "x"))
	if err == nil {
		t.Fatal("bad oid accepted")
	}
}
