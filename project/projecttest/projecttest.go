// Package projecttest is the contract every project.Project backend must
// honour. Backends call Run from their own tests with a constructor for a
// fresh (or shared) project; all paths the suite writes live under a random
// prefix, so one real project can host many runs.
package projecttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"gpu-worker/project"
)

// Env is one project under test plus ways to act on it behind the worker's back.
type Env struct {
	Project project.Project
	// UserWrite commits files as another client (nil content = delete).
	UserWrite func(t testing.TB, files map[string][]byte)
	// CorruptLFS damages the stored object oid so that its bytes no longer
	// hash to it. Every backend provides it.
	CorruptLFS func(t testing.TB, oid string)
	// LFSUploads, when set, counts object uploads so far; it lets the suite
	// see that a second PutLFS of the same bytes sends nothing.
	LFSUploads func() int
	// LargeLFSSize overrides the size of the big LFS round trip (default 50 MB).
	LargeLFSSize int64
}

// Run runs the contract against environments made by newEnv, one per sub-test.
func Run(t *testing.T, newEnv func(t *testing.T) Env) {
	prefix := "contract-" + randHex(4) + "/"
	cases := []struct {
		name string
		fn   func(t *testing.T, e Env, dir string)
	}{
		{"MissingFile", testMissing},
		{"CreateReadStat", testCreateReadStat},
		{"BlobIDFollowsContent", testBlobID},
		{"ListTreeAllPages", testListTree},
		{"CreateRace", testCreateRace},
		{"StaleUpdate", testStaleUpdate},
		{"FailedCommitLeavesNothing", testAtomic},
		{"Move", testMove},
		{"Delete", testDelete},
		{"Binary", testBinary},
		{"UserWriteThenGuardedUpdate", testUserWrite},
		{"LFSRoundTrip", testLFSRoundTrip},
		{"LFSPutTwice", testLFSPutTwice},
		{"LFSCorrupt", testLFSCorrupt},
		{"LFSMissing", testLFSMissing},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			if e.Project == nil || e.UserWrite == nil || e.CorruptLFS == nil {
				t.Fatal("Env needs Project, UserWrite and CorruptLFS")
			}
			c.fn(t, e, prefix+c.name+"/")
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// commit lands actions and returns the guard the commit reports for the
// first action's path (what a later guarded update must carry).
func commit(t *testing.T, p project.Project, msg string, actions ...project.Action) string {
	t.Helper()
	res, err := p.Commit(ctx(t), msg, actions)
	if err != nil {
		t.Fatalf("commit %q: %v", msg, err)
	}
	if res == nil || res.ID == "" {
		t.Fatalf("commit %q: no commit id", msg)
	}
	for _, a := range actions {
		if a.Kind != project.Delete && res.GuardOf(a.Path) == "" {
			t.Fatalf("commit %q: no guard for %s", msg, a.Path)
		}
	}
	if actions[0].Kind == project.Delete {
		return res.ID
	}
	return res.GuardOf(actions[0].Path)
}

func create(path string, content []byte) project.Action {
	return project.Action{Kind: project.Create, Path: path, Content: content}
}

func mustRead(t *testing.T, p project.Project, path string) *project.File {
	t.Helper()
	f, err := p.ReadFile(ctx(t), path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return f
}

func wantMissing(t *testing.T, p project.Project, path string) {
	t.Helper()
	if _, err := p.ReadFile(ctx(t), path); !errors.Is(err, project.ErrNotFound) {
		t.Fatalf("read %s: got %v, want ErrNotFound", path, err)
	}
}

func wantContent(t *testing.T, p project.Project, path string, want []byte) {
	t.Helper()
	if f := mustRead(t, p, path); !bytes.Equal(f.Content, want) {
		t.Fatalf("%s: content %q, want %q", path, trunc(f.Content), trunc(want))
	}
}

func wantConflict(t *testing.T, err error, kind project.ConflictKind) {
	t.Helper()
	if !project.IsConflict(err, kind) {
		t.Fatalf("got %v, want *ConflictError %s", err, kind)
	}
}

func trunc(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func testMissing(t *testing.T, e Env, dir string) {
	wantMissing(t, e.Project, dir+"nothing.txt")
	if _, err := e.Project.StatFile(ctx(t), dir+"nothing.txt"); !errors.Is(err, project.ErrNotFound) {
		t.Fatalf("stat: got %v, want ErrNotFound", err)
	}
}

func testCreateReadStat(t *testing.T, e Env, dir string) {
	content := []byte("hello\nworld — ü\n")
	guard := commit(t, e.Project, "create", create(dir+"a.txt", content))
	f := mustRead(t, e.Project, dir+"a.txt")
	if !bytes.Equal(f.Content, content) {
		t.Fatalf("content %q, want %q", f.Content, content)
	}
	if f.BlobID == "" || f.Guard != guard || f.Size != int64(len(content)) {
		t.Fatalf("read info %+v, want the guard the commit reported, %s, and size %d", f.FileInfo, guard, len(content))
	}
	st, err := e.Project.StatFile(ctx(t), dir+"a.txt")
	if err != nil {
		t.Fatal(err)
	}
	if st.BlobID != f.BlobID || st.Guard != guard || st.Size != f.Size {
		t.Fatalf("stat %+v, read %+v", *st, f.FileInfo)
	}
}

func testBlobID(t *testing.T, e Env, dir string) {
	p := e.Project
	commit(t, p, "v1", create(dir+"f.txt", []byte("one")))
	b1 := mustRead(t, p, dir+"f.txt").BlobID
	commit(t, p, "other", create(dir+"g.txt", []byte("unrelated")))
	st, err := p.StatFile(ctx(t), dir+"f.txt")
	if err != nil {
		t.Fatal(err)
	}
	if st.BlobID != b1 {
		t.Fatalf("blob id moved without a change: %s -> %s", b1, st.BlobID)
	}
	commit(t, p, "v2", project.Action{Kind: project.Update, Path: dir + "f.txt", Content: []byte("two")})
	st, err = p.StatFile(ctx(t), dir+"f.txt")
	if err != nil {
		t.Fatal(err)
	}
	if st.BlobID == b1 {
		t.Fatalf("blob id %s unchanged after new content", b1)
	}
}

func testListTree(t *testing.T, e Env, dir string) {
	var actions []project.Action
	want := map[string]bool{}
	for i := 0; i < 130; i++ {
		p := fmt.Sprintf("%sbulk/f%03d.txt", dir, i)
		if i%10 == 0 {
			p = fmt.Sprintf("%sbulk/sub/deeper/f%03d.txt", dir, i)
		}
		actions = append(actions, create(p, []byte(p)))
		want[p] = true
	}
	actions = append(actions, create(dir+"outside.txt", []byte("x")))
	commit(t, e.Project, "bulk", actions...)

	got, err := e.Project.ListTree(ctx(t), dir+"bulk")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, te := range got {
		if !want[te.Path] {
			t.Fatalf("unexpected entry %q", te.Path)
		}
		if seen[te.Path] {
			t.Fatalf("entry %q listed twice", te.Path)
		}
		if te.BlobID == "" {
			t.Fatalf("entry %q has no blob id", te.Path)
		}
		seen[te.Path] = true
	}
	if len(seen) != len(want) {
		t.Fatalf("listed %d files, want %d", len(seen), len(want))
	}
	sample := fmt.Sprintf("%sbulk/sub/deeper/f%03d.txt", dir, 50)
	st, err := e.Project.StatFile(ctx(t), sample)
	if err != nil {
		t.Fatal(err)
	}
	for _, te := range got {
		if te.Path == sample && te.BlobID != st.BlobID {
			t.Fatalf("tree blob id %s, stat %s", te.BlobID, st.BlobID)
		}
	}
	all, err := e.Project.ListTree(ctx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	paths := make([]string, 0, len(all))
	for _, te := range all {
		paths = append(paths, te.Path)
	}
	sort.Strings(paths)
	for _, p := range []string{dir + "outside.txt", sample} {
		if i := sort.SearchStrings(paths, p); i == len(paths) || paths[i] != p {
			t.Fatalf("root listing lacks %s", p)
		}
	}
}

func testCreateRace(t *testing.T, e Env, dir string) {
	const n = 20
	path := dir + "claim.yaml"
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = e.Project.Commit(ctx(t), fmt.Sprintf("claim %d", i),
				[]project.Action{create(path, []byte(fmt.Sprintf("worker %d\n", i)))})
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("workers %d and %d both created %s", winner, i, path)
			}
			winner = i
		case !project.IsConflict(err, project.AlreadyExists):
			t.Fatalf("worker %d: got %v, want AlreadyExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no worker won the create race")
	}
	wantContent(t, e.Project, path, []byte(fmt.Sprintf("worker %d\n", winner)))
}

func testStaleUpdate(t *testing.T, e Env, dir string) {
	p, path := e.Project, dir+"lease.yaml"
	c1 := commit(t, p, "claim", create(path, []byte("v1")))
	c2 := commit(t, p, "beat", project.Action{Kind: project.Update, Path: path, Content: []byte("v2"), Guard: c1})
	if c2 == c1 {
		t.Fatal("update left the path's guard unchanged")
	}
	_, err := p.Commit(ctx(t), "stale", []project.Action{{Kind: project.Update, Path: path, Content: []byte("v3"), Guard: c1}})
	wantConflict(t, err, project.ChangedSince)
	_, err = p.Commit(ctx(t), "stale delete", []project.Action{{Kind: project.Delete, Path: path, Guard: c1}})
	wantConflict(t, err, project.ChangedSince)
	wantContent(t, p, path, []byte("v2"))
	if f := mustRead(t, p, path); f.Guard != c2 {
		t.Fatalf("guard %s, want %s", f.Guard, c2)
	}
}

func testAtomic(t *testing.T, e Env, dir string) {
	p := e.Project
	c1 := commit(t, p, "base", create(dir+"b.txt", []byte("b1")), create(dir+"a.txt", []byte("a1")))
	commit(t, p, "bump b", project.Action{Kind: project.Update, Path: dir + "b.txt", Content: []byte("b2")})

	_, err := p.Commit(ctx(t), "exists", []project.Action{
		create(dir+"new1.txt", []byte("n")),
		{Kind: project.Update, Path: dir + "a.txt", Content: []byte("a2")},
		create(dir+"b.txt", []byte("dup")),
	})
	wantConflict(t, err, project.AlreadyExists)

	_, err = p.Commit(ctx(t), "guard", []project.Action{
		create(dir+"new2.txt", []byte("n")),
		{Kind: project.Delete, Path: dir + "a.txt"},
		{Kind: project.Update, Path: dir + "b.txt", Content: []byte("b3"), Guard: c1},
	})
	wantConflict(t, err, project.ChangedSince)

	wantMissing(t, p, dir+"new1.txt")
	wantMissing(t, p, dir+"new2.txt")
	wantContent(t, p, dir+"a.txt", []byte("a1"))
	wantContent(t, p, dir+"b.txt", []byte("b2"))
}

func testMove(t *testing.T, e Env, dir string) {
	p := e.Project
	commit(t, p, "base", create(dir+"old.txt", []byte("moving")), create(dir+"old2.txt", []byte("x")))
	commit(t, p, "move",
		project.Action{Kind: project.Move, PreviousPath: dir + "old.txt", Path: dir + "new/place.txt"},
		project.Action{Kind: project.Move, PreviousPath: dir + "old2.txt", Path: dir + "new/other.txt", Content: []byte("rewritten")},
	)
	wantMissing(t, p, dir+"old.txt")
	wantMissing(t, p, dir+"old2.txt")
	wantContent(t, p, dir+"new/place.txt", []byte("moving"))
	wantContent(t, p, dir+"new/other.txt", []byte("rewritten"))
	// A move onto an existing path is refused like a create.
	_, err := p.Commit(ctx(t), "clash", []project.Action{{Kind: project.Move, PreviousPath: dir + "new/place.txt", Path: dir + "new/other.txt"}})
	wantConflict(t, err, project.AlreadyExists)
	wantContent(t, p, dir+"new/place.txt", []byte("moving"))
}

func testDelete(t *testing.T, e Env, dir string) {
	p := e.Project
	c := commit(t, p, "base", create(dir+"gone.txt", []byte("bye")), create(dir+"kept.txt", []byte("stay")))
	commit(t, p, "delete", project.Action{Kind: project.Delete, Path: dir + "gone.txt", Guard: c})
	wantMissing(t, p, dir+"gone.txt")
	wantContent(t, p, dir+"kept.txt", []byte("stay"))
	if _, err := p.Commit(ctx(t), "again", []project.Action{{Kind: project.Delete, Path: dir + "gone.txt"}}); err == nil {
		t.Fatal("deleting a missing file succeeded")
	}
}

func testBinary(t *testing.T, e Env, dir string) {
	content := make([]byte, 0, 4096)
	for i := 0; i < 4096; i++ {
		content = append(content, byte(i*7+i/256))
	}
	content = append(content, 0xff, 0xfe, 0x00, '\r', '\n', 0xc3)
	commit(t, e.Project, "binary", create(dir+"blob.bin", content))
	f := mustRead(t, e.Project, dir+"blob.bin")
	if !bytes.Equal(f.Content, content) || f.Size != int64(len(content)) {
		t.Fatalf("binary content changed: %d bytes back, sent %d", len(f.Content), len(content))
	}
	crlf := []byte("line one\r\nline two\r\n")
	commit(t, e.Project, "crlf", project.Action{Kind: project.Update, Path: dir + "blob.bin", Content: crlf})
	wantContent(t, e.Project, dir+"blob.bin", crlf)
}

func testUserWrite(t *testing.T, e Env, dir string) {
	p, path := e.Project, dir+"shared.codex"
	c1 := commit(t, p, "ours", create(path, []byte(`{"cells":[]}`)))
	e.UserWrite(t, map[string][]byte{path: []byte(`{"cells":[1]}`), dir + "user.txt": []byte("u")})
	wantContent(t, p, dir+"user.txt", []byte("u"))
	f := mustRead(t, p, path)
	if f.Guard == c1 {
		t.Fatal("user write did not change the file's guard")
	}
	_, err := p.Commit(ctx(t), "guarded", []project.Action{{Kind: project.Update, Path: path, Content: []byte(`{"cells":[2]}`), Guard: c1}})
	wantConflict(t, err, project.ChangedSince)
	wantContent(t, p, path, []byte(`{"cells":[1]}`))
	commit(t, p, "retried", project.Action{Kind: project.Update, Path: path, Content: []byte(`{"cells":[1,2]}`), Guard: f.Guard})
	e.UserWrite(t, map[string][]byte{dir + "user.txt": nil})
	wantMissing(t, p, dir+"user.txt")
}
