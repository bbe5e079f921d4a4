package codex

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"gpu-worker/project"
)

// bookNotebook builds a migrated notebook of n verses with UUID ids.
func bookNotebook(t testing.TB, book string, n int) []byte {
	t.Helper()
	cells := NewArray()
	for i := 1; i <= n; i++ {
		ref := fmt.Sprintf("%s 1:%d", book, i)
		cells.Append(NewObject(
			Member{"kind", NewInt(2)},
			Member{"languageId", NewString("html")},
			Member{"value", NewString(fmt.Sprintf("<span>verse %d</span>", i))},
			Member{"metadata", NewObject(
				Member{"id", NewString(uuidOf(ref))},
				Member{"type", NewString("text")},
				Member{"edits", NewArray()},
				Member{"data", NewObject(Member{"globalReferences", NewArray(NewString(ref))})},
			)},
		))
	}
	root := NewObject(Member{"cells", cells}, Member{"metadata", NewObject(Member{"id", NewString(book)})})
	return append(AppendJSON(nil, root), '\n')
}

func mustParse(t testing.TB, path string, b []byte) *Notebook {
	t.Helper()
	nb, err := Parse(path, b)
	if err != nil {
		t.Fatal(err)
	}
	return nb
}

// userCommitFunc edits cells of a stored notebook as the editor would.
func userChange(t testing.TB, p *memProject, path string, edit func(nb *Notebook)) {
	t.Helper()
	f, err := p.ReadFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	nb := mustParse(t, path, f.Content)
	edit(nb)
	p.put(map[string][]byte{path: nb.Marshal()})
}

// raceProject holds a 60-verse notebook; the job patches verses 1–50 and,
// just before the job's first commit, a user edits verses 51–55 and verse 1.
func raceProject(t testing.TB, patch func(i int, cellID string) Patch, user func(c *Cell, i int)) (*memProject, map[string][]Patch) {
	const path = "files/target/JHN.codex"
	p := newMemProject()
	p.put(map[string][]byte{path: bookNotebook(t, "JHN", 60), "gpu_jobs/job_1/response.yaml": []byte("state: running\n")})
	var patches []Patch
	for i := 1; i <= 50; i++ {
		patches = append(patches, patch(i, uuidOf(fmt.Sprintf("JHN 1:%d", i))))
	}
	p.before = func(call int) error {
		if call == 0 {
			userChange(t, p, path, func(nb *Notebook) {
				for _, i := range []int{51, 52, 53, 54, 55, 1} {
					user(nb.Cell(uuidOf(fmt.Sprintf("JHN 1:%d", i))), i)
				}
			})
		}
		return nil
	}
	return p, map[string][]Patch{path: patches}
}

func responseUpdate(t testing.TB, p *memProject) project.Action {
	f, err := p.ReadFile(context.Background(), "gpu_jobs/job_1/response.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return project.Action{Kind: project.Update, Path: f.Path, Content: []byte("state: completed\n"), Guard: f.Guard}
}

func TestCommitRaceKeepsUserTextEdits(t *testing.T) {
	p, patches := raceProject(t,
		func(i int, id string) Patch { return textPatch(id, fmt.Sprintf("ours %d", i)) },
		func(c *Cell, i int) { userEdit(c, fmt.Sprintf("user %d", i), 1770000000000+int64(i)) },
	)
	extra := []project.Action{responseUpdate(t, p)}
	rep, err := Commit(context.Background(), p, "results [skip ci]", patches, extra, CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nb := readBack(t, p, "files/target/JHN.codex")
	checkRaceOutcome(t, nb)
	checkRaceReport(t, p, rep)
}

func TestCommitRaceKeepsUserAudioChoice(t *testing.T) {
	p, patches := raceProject(t,
		func(i int, id string) Patch {
			return audioPatch(id, fmt.Sprintf("audio-1764000000000-%08d", i))
		},
		func(c *Cell, i int) { userSelect(c, fmt.Sprintf("audio-1770000000000-user%04d", i), 1770000000000) },
	)
	rep, err := Commit(context.Background(), p, "results [skip ci]", patches, []project.Action{responseUpdate(t, p)}, CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nb := readBack(t, p, "files/target/JHN.codex")
	for i := 1; i <= 60; i++ {
		a, _ := nb.Cell(uuidOf(fmt.Sprintf("JHN 1:%d", i))).Audio()
		want := fmt.Sprintf("audio-1764000000000-%08d", i)
		switch {
		case i == 1 || (i >= 51 && i <= 55):
			want = fmt.Sprintf("audio-1770000000000-user%04d", i)
		case i > 55:
			want = ""
		}
		if a.ID != want {
			t.Errorf("JHN 1:%d audio %q, want %q", i, a.ID, want)
		}
	}
	// The user's choice of 1:1 is newer than ours: ours is attached, unselected.
	if c := nb.Cell(uuidOf("JHN 1:1")); !hasAttachment(c, "audio-1764000000000-00000001") || c.SelectedAudioID() == "audio-1764000000000-00000001" {
		t.Error("JHN 1:1: our take is not attached unselected")
	}
	if rep.Skipped[0].Reason != ReasonAudioUnder {
		t.Errorf("JHN 1:1 reason %q", rep.Skipped[0].Reason)
	}
	checkRaceReport(t, p, rep)
}

func readBack(t testing.TB, p *memProject, path string) *Notebook {
	t.Helper()
	f, err := p.ReadFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return mustParse(t, path, f.Content)
}

func checkRaceReport(t *testing.T, p *memProject, rep *CommitReport) {
	t.Helper()
	if rep.Applied["files/target/JHN.codex"] != 49 || rep.Conflicts != 1 || len(rep.Commits) != 1 {
		t.Errorf("report applied %v conflicts %d commits %v", rep.Applied, rep.Conflicts, rep.Commits)
	}
	if len(rep.Skipped) != 1 || rep.Skipped[0].CellID != uuidOf("JHN 1:1") {
		t.Errorf("skipped %+v", rep.Skipped)
	}
	// One landed commit carries the notebook and the response together.
	if len(p.commits) != 1 || len(p.commits[0]) != 2 {
		t.Fatalf("commits %d", len(p.commits))
	}
	if f, _ := p.ReadFile(context.Background(), "gpu_jobs/job_1/response.yaml"); string(f.Content) != "state: completed\n" {
		t.Errorf("response.yaml %q", f.Content)
	}
}

func TestCommitLostLeaseReturnsConflict(t *testing.T) {
	p, patches := raceProject(t,
		func(i int, id string) Patch { return textPatch(id, "ours") },
		func(c *Cell, i int) {},
	)
	extra := []project.Action{responseUpdate(t, p)}
	p.before = func(call int) error {
		if call == 0 { // another worker took the job over
			p.put(map[string][]byte{"gpu_jobs/job_1/response.yaml": []byte("worker_id: other\n")})
		}
		return nil
	}
	rep, err := Commit(context.Background(), p, "results", patches, extra, CommitOptions{})
	c := project.ConflictOf(err)
	if c == nil || c.Kind != project.ChangedSince || c.Path != "gpu_jobs/job_1/response.yaml" {
		t.Fatalf("err = %v, want the response.yaml conflict", err)
	}
	if len(p.commits) != 0 || len(rep.Commits) != 0 || rep.Applied["files/target/JHN.codex"] != 0 {
		t.Errorf("something landed: %d commits, report %+v", len(p.commits), rep)
	}
}

func TestCommitSplitsLargeResults(t *testing.T) {
	p := newMemProject()
	patches := map[string][]Patch{}
	var size int
	for _, book := range []string{"MAT", "MRK", "LUK", "JHN"} {
		path := "files/target/" + book + ".codex"
		b := bookNotebook(t, book, 40)
		size = len(b)
		p.put(map[string][]byte{path: b})
		for i := 1; i <= 40; i++ {
			patches[path] = append(patches[path], textPatch(uuidOf(fmt.Sprintf("%s 1:%d", book, i)), "ours"))
		}
	}
	p.put(map[string][]byte{"gpu_jobs/job_1/response.yaml": []byte("x")})
	extra := []project.Action{
		responseUpdate(t, p),
		{Kind: project.Create, Path: ".project/attachments/pointers/MAT/a.webm", Content: []byte("pointer")},
	}
	// Room for two patched notebooks per commit.
	rep, err := Commit(context.Background(), p, "results", patches, extra, CommitOptions{MaxCommitBytes: int64(size) * 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.commits) < 2 || len(rep.Commits) != len(p.commits) {
		t.Fatalf("%d commits, report %v", len(p.commits), rep.Commits)
	}
	seen := map[string]int{}
	for i, actions := range p.commits {
		var paths []string
		var bytes int
		for _, a := range actions {
			paths = append(paths, a.Path)
			bytes += len(a.Content) * 4 / 3
			seen[a.Path]++
		}
		if bytes > size*4 {
			t.Errorf("commit %d carries %d bytes", i, bytes)
		}
		last := i == len(p.commits)-1
		hasExtra := strings.Contains(strings.Join(paths, " "), "response.yaml")
		if hasExtra != last {
			t.Errorf("commit %d (%v): extra actions must be in the last commit only", i, paths)
		}
	}
	for path := range patches {
		if seen[path] != 1 || rep.Applied[path] != 40 {
			t.Errorf("%s written %d times, applied %d", path, seen[path], rep.Applied[path])
		}
		if got := PlainText(readBack(t, p, path).Cells()[39].Value()); got != "ours" {
			t.Errorf("%s last cell %q", path, got)
		}
	}
}

func TestCommitRetriesAreBounded(t *testing.T) {
	p, patches := raceProject(t, func(i int, id string) Patch { return textPatch(id, "ours") }, func(c *Cell, i int) {})
	p.before = func(call int) error {
		userChange(t, p, "files/target/JHN.codex", func(nb *Notebook) {
			userEdit(nb.Cell(uuidOf("JHN 1:60")), fmt.Sprint("again ", call), 1770000000000+int64(call))
		})
		return nil
	}
	_, err := Commit(context.Background(), p, "results", patches, nil, CommitOptions{MaxRetries: 3})
	if !errors.Is(err, ErrTooManyConflicts) || p.calls != 4 {
		t.Fatalf("err %v after %d calls", err, p.calls)
	}
}

func TestCommitRetriesAfterBranchMoved(t *testing.T) {
	p, patches := raceProject(t, func(i int, id string) Patch { return textPatch(id, "ours") }, func(c *Cell, i int) {})
	p.before = func(call int) error {
		if call == 0 {
			return &project.ConflictError{Kind: project.BranchMoved}
		}
		return nil
	}
	rep, err := Commit(context.Background(), p, "results", patches, nil, CommitOptions{})
	if err != nil || len(rep.Commits) != 1 || rep.Conflicts != 1 || rep.Applied["files/target/JHN.codex"] != 50 {
		t.Fatalf("err %v report %+v", err, rep)
	}
}

func TestCommitOtherErrorsAreNotRetried(t *testing.T) {
	p, patches := raceProject(t, func(i int, id string) Patch { return textPatch(id, "ours") }, func(c *Cell, i int) {})
	boom := errors.New("connection reset")
	p.before = func(call int) error { return boom }
	_, err := Commit(context.Background(), p, "results", patches, nil, CommitOptions{})
	if !errors.Is(err, boom) || p.calls != 1 {
		t.Fatalf("err %v after %d calls", err, p.calls)
	}
}

func TestCommitMissingNotebookIsReported(t *testing.T) {
	p := newMemProject()
	p.put(map[string][]byte{"files/target/MRK.codex": readFile(t, "testdata/MRK.codex")})
	rep, err := Commit(context.Background(), p, "results", map[string][]Patch{
		"files/target/MRK.codex":  {textPatch(uuidOf("MRK 1:4"), "ours")},
		"files/target/GONE.codex": {textPatch("x", "ours")},
	}, nil, CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, s := range rep.Skipped {
		reasons = append(reasons, s.Notebook+": "+s.Reason)
	}
	sort.Strings(reasons)
	if len(reasons) != 1 || reasons[0] != "files/target/GONE.codex: notebook not found" || rep.Applied["files/target/MRK.codex"] != 1 {
		t.Errorf("report %+v", rep)
	}
}

// A user edit made while the job ran (before Commit first reads the
// notebook) is caught through the base the patches were computed from.
func TestCommitUsesCallerBase(t *testing.T) {
	const path = "files/target/JHN.codex"
	p := newMemProject()
	p.put(map[string][]byte{path: bookNotebook(t, "JHN", 10)})
	selected := readBack(t, p, path)
	userChange(t, p, path, func(nb *Notebook) { userEdit(nb.Cell(uuidOf("JHN 1:2")), "user 2", 1770000000000) })
	patches := map[string][]Patch{path: {textPatch(uuidOf("JHN 1:2"), "ours 2"), textPatch(uuidOf("JHN 1:3"), "ours 3")}}
	rep, err := Commit(context.Background(), p, "results", patches, nil, CommitOptions{Bases: map[string]*Notebook{path: selected}})
	if err != nil {
		t.Fatal(err)
	}
	nb := readBack(t, p, path)
	if got := PlainText(nb.Cell(uuidOf("JHN 1:2")).Value()); got != "user 2" || !hasEditValue(nb.Cell(uuidOf("JHN 1:2")), "ours 2") {
		t.Errorf("JHN 1:2 = %q; ours not kept under the user's newer edit", got)
	}
	if got := PlainText(nb.Cell(uuidOf("JHN 1:3")).Value()); got != "ours 3" {
		t.Errorf("JHN 1:3 = %q", got)
	}
	if rep.Applied[path] != 1 || len(rep.Skipped) != 1 || rep.Skipped[0].Reason != ReasonTextUnder || rep.Conflicts != 0 {
		t.Errorf("report %+v", rep)
	}
}

// A notebook whose every patch goes under a newer user edit is still
// written: the job's text is kept in the history, as the editor's merge
// would keep it.
func TestCommitWritesChangesKeptUnder(t *testing.T) {
	const path = "files/target/JHN.codex"
	p := newMemProject()
	p.put(map[string][]byte{path: bookNotebook(t, "JHN", 3)})
	read := readBack(t, p, path)
	userChange(t, p, path, func(nb *Notebook) { userEdit(nb.Cell(uuidOf("JHN 1:2")), "user 2", 1770000000000) })
	patches := map[string][]Patch{path: {textPatch(uuidOf("JHN 1:2"), "ours 2")}}
	rep, err := Commit(context.Background(), p, "results", patches, nil, CommitOptions{Bases: map[string]*Notebook{path: read}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Applied[path] != 0 || len(rep.Skipped) != 1 || rep.Skipped[0].Reason != ReasonTextUnder || len(rep.Commits) != 1 {
		t.Errorf("report %+v", rep)
	}
	c := readBack(t, p, path).Cell(uuidOf("JHN 1:2"))
	if PlainText(c.Value()) != "user 2" || !hasEditValue(c, "ours 2") {
		t.Errorf("JHN 1:2 = %q; ours in the history: %v", c.Value(), hasEditValue(c, "ours 2"))
	}
}

// A branch that moved because of a change to one of our notebooks: the
// changed notebook is re-read and the user's edit kept.
func TestCommitBranchMovedByUserEdit(t *testing.T) {
	p, patches := raceProject(t,
		func(i int, id string) Patch { return textPatch(id, fmt.Sprintf("ours %d", i)) },
		func(c *Cell, i int) {})
	p.before = func(call int) error {
		if call == 0 {
			userChange(t, p, "files/target/JHN.codex", func(nb *Notebook) {
				userEdit(nb.Cell(uuidOf("JHN 1:7")), "user 7", 1770000000000)
			})
			return &project.ConflictError{Kind: project.BranchMoved}
		}
		return nil
	}
	rep, err := Commit(context.Background(), p, "results", patches, nil, CommitOptions{})
	if err != nil || rep.Applied["files/target/JHN.codex"] != 49 || len(rep.Skipped) != 1 {
		t.Fatalf("err %v report %+v", err, rep)
	}
	nb := readBack(t, p, "files/target/JHN.codex")
	if got := PlainText(nb.Cell(uuidOf("JHN 1:7")).Value()); got != "user 7" {
		t.Errorf("JHN 1:7 = %q", got)
	}
	if got := PlainText(nb.Cell(uuidOf("JHN 1:8")).Value()); got != "ours 8" {
		t.Errorf("JHN 1:8 = %q", got)
	}
}

// Committing the same patches again (a caller retrying after its own
// conflict) sends no notebook update: every patch is already there.
func TestCommitAgainIsANoOp(t *testing.T) {
	p, patches := raceProject(t, func(i int, id string) Patch { return textPatch(id, fmt.Sprintf("ours %d", i)) }, func(c *Cell, i int) {})
	p.before = nil
	if _, err := Commit(context.Background(), p, "results", patches, nil, CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	f, _ := p.ReadFile(context.Background(), "files/target/JHN.codex")
	before := f.Content
	extra := []project.Action{responseUpdate(t, p)}
	rep, err := Commit(context.Background(), p, "results again", patches, extra, CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(p.commits[len(p.commits)-1]); n != 1 {
		t.Errorf("second commit has %d actions, want only the response", n)
	}
	if rep.Applied["files/target/JHN.codex"] != 50 || len(rep.Skipped) != 0 {
		t.Errorf("report %+v", rep)
	}
	if g, _ := p.ReadFile(context.Background(), "files/target/JHN.codex"); !bytes.Equal(g.Content, before) {
		t.Error("notebook changed on the second commit")
	}
}

// checkRaceOutcome checks the 50-cell race: cells 1 and 51-55 keep the
// user's text, 2-50 get ours, 56-60 stay as they were.
func checkRaceOutcome(t *testing.T, nb *Notebook) {
	t.Helper()
	for i := 1; i <= 60; i++ {
		got := PlainText(nb.Cell(uuidOf(fmt.Sprintf("JHN 1:%d", i))).Value())
		want := fmt.Sprintf("ours %d", i)
		switch {
		case i == 1 || (i >= 51 && i <= 55):
			want = fmt.Sprintf("user %d", i)
		case i > 55:
			want = fmt.Sprintf("verse %d", i)
		}
		if got != want {
			t.Errorf("JHN 1:%d = %q, want %q", i, got, want)
		}
	}
	// The user's edit of 1:1 is newer than ours: ours went under it.
	if !hasEditValue(nb.Cell(uuidOf("JHN 1:1")), "ours 1") {
		t.Error("JHN 1:1: our text is not in the history")
	}
}
