package codex

import (
	"sort"
	"strings"
	"testing"
)

// Test helpers that do to notebooks what the Codex editor does: migrate a
// legacy notebook, record or validate audio, and merge two copies.

// migrated loads a legacy fixture as the editor's migrations leave it: each
// id replaced by the UUID derived from it, content cells given
// data.globalReferences with the old id, child cells a parentId.
func migrated(t testing.TB, file, path string) *Notebook {
	t.Helper()
	nb := loadNotebook(t, file, path)
	for _, c := range nb.Cells() {
		old := c.ID()
		meta := c.Object().Get("metadata")
		meta.Set("id", NewString(uuidOf(old)))
		if parts := strings.Split(old, ":"); len(parts) > 2 {
			meta.Set("parentId", NewString(uuidOf(strings.Join(parts[:2], ":"))))
		}
		if typ := c.Type(); typ != "style" && typ != "paratext" {
			meta.ensureObject("data").Set("globalReferences", NewArray(NewString(old)))
		}
	}
	return mustParse(t, path, nb.Marshal())
}

// clone is an independent copy of a notebook (another person's checkout).
func clone(t testing.TB, nb *Notebook) *Notebook {
	t.Helper()
	c := mustParse(t, nb.Path, nb.Marshal())
	return c
}

// take describes a recording attached to a cell.
type take struct {
	id                   string
	created, updated     int64
	generated, missing   bool
	deleted              bool
	validated, withdrawn bool // an active, or a withdrawn, validation
	noType               bool
	selected             bool
}

// attach adds a recording the way the editor (or a TTS job) stores one.
func attach(c *Cell, k take) {
	meta := c.Object().Get("metadata")
	if k.updated == 0 {
		k.updated = k.created
	}
	mems := []Member{{"url", NewString(".project/attachments/files/X/" + k.id + ".webm")}}
	if !k.noType {
		mems = append(mems, Member{"type", NewString("audio")})
	}
	mems = append(mems,
		Member{"createdAt", NewInt(k.created)},
		Member{"updatedAt", NewInt(k.updated)},
		Member{"isDeleted", NewBool(k.deleted)},
	)
	if k.missing {
		mems = append(mems, Member{"isMissing", NewBool(true)})
	}
	if k.generated {
		mems = append(mems, Member{"isGenerated", NewBool(true)})
	}
	if k.validated || k.withdrawn {
		mems = append(mems, Member{"validatedBy", NewArray(validation("reviewer", k.updated+1, k.withdrawn))})
	}
	meta.ensureObject("attachments").Set(k.id, NewObject(mems...))
	if k.selected {
		meta.Set("selectedAudioId", NewString(k.id))
		meta.Set("selectionTimestamp", NewInt(k.created))
	}
}

// validation is a validatedBy entry in the shape of the fixtures.
func validation(user string, ts int64, deleted bool) *Value {
	return NewObject(
		Member{"username", NewString(user)},
		Member{"creationTimestamp", NewInt(ts)},
		Member{"updatedTimestamp", NewInt(ts)},
		Member{"isDeleted", NewBool(deleted)},
	)
}

// generatedEdit sets a cell's text as machine output, optionally with a
// validation entry (active or withdrawn).
func generatedEdit(c *Cell, typ, value string, ts int64, validations ...*Value) {
	c.Object().Set("value", NewString(value))
	c.Object().Get("metadata").ensureArray("edits").Append(NewObject(
		Member{"editMap", NewArray(NewString("value"))},
		Member{"value", NewString(value)},
		Member{"timestamp", NewInt(ts)},
		Member{"type", NewString(typ)},
		Member{"author", NewString("model")},
		Member{"validatedBy", NewArray(validations...)},
	))
}

// editorMerge merges two copies of a notebook by the editor's rules: cells
// matched by id; edits of both sides kept once each, sorted by timestamp;
// per edit path the newest edit gives the value; attachments unioned by
// id, the one with the newer updatedAt winning; selectedAudioId (with its
// selectionTimestamp) from the side whose selectionTimestamp is newer.
// Cells only one side has are kept. Everything else comes from ours.
func editorMerge(t testing.TB, ours, theirs *Notebook) *Notebook {
	t.Helper()
	out := clone(t, ours)
	theirsCopy := clone(t, theirs)
	for _, tc := range theirsCopy.Cells() {
		oc := out.Cell(tc.ID())
		if oc == nil {
			out.Root().Get("cells").Append(tc.Object())
			continue
		}
		mergeEdits(oc, tc)
		mergeAttachments(oc, tc)
		if tc.SelectionTimestamp() > oc.SelectionTimestamp() {
			meta := oc.Object().ensureObject("metadata")
			meta.Set("selectedAudioId", NewString(tc.SelectedAudioID()))
			meta.Set("selectionTimestamp", NewInt(tc.SelectionTimestamp()))
		}
	}
	return mustParse(t, out.Path, out.Marshal())
}

func mergeEdits(oc, tc *Cell) {
	seen := map[string]bool{}
	var all []*Value
	for _, c := range []*Cell{oc, tc} {
		for _, e := range c.Object().Path("metadata", "edits").Elems() {
			key := string(AppendJSON(nil, NewArray(e.Get("editMap"), e.Get("value"), e.Get("timestamp"))))
			if !seen[key] {
				seen[key] = true
				all = append(all, e)
			}
		}
	}
	if len(all) == 0 {
		return
	}
	ts := func(e *Value) int64 { n, _ := e.Get("timestamp").Int64(); return n }
	sort.SliceStable(all, func(i, j int) bool { return ts(all[i]) < ts(all[j]) })
	oc.Object().ensureObject("metadata").Set("edits", NewArray(all...))
	newest := map[string]*Value{} // edit path → newest edit (later in order wins a tie)
	var paths []string
	for _, e := range all {
		var keys []string
		for _, k := range e.Get("editMap").Elems() {
			s, _ := k.Str()
			keys = append(keys, s)
		}
		p := strings.Join(keys, ".")
		if newest[p] == nil {
			paths = append(paths, p)
		}
		newest[p] = e
	}
	for _, p := range paths {
		keys := strings.Split(p, ".")
		obj := oc.Object()
		for _, k := range keys[:len(keys)-1] {
			obj = obj.ensureObject(k)
		}
		obj.Set(keys[len(keys)-1], newest[p].Get("value"))
	}
}

func mergeAttachments(oc, tc *Cell) {
	theirs := tc.Object().Path("metadata", "attachments")
	if theirs == nil {
		return
	}
	atts := oc.Object().ensureObject("metadata").ensureObject("attachments")
	updated := func(a *Value) int64 { n, _ := a.Get("updatedAt").Int64(); return n }
	for _, m := range theirs.Members() {
		if mine := atts.Get(m.Key); mine == nil || updated(m.Value) > updated(mine) {
			atts.Set(m.Key, m.Value)
		}
	}
}

// TestEditorMergeReplaysFixtureMerge checks the replay against the editor's
// own expectations for merging its user1 and user2 fixtures.
func TestEditorMergeReplaysFixtureMerge(t *testing.T) {
	const path = "files/target/GEN.codex"
	u1 := loadNotebook(t, "testdata/fixtures/GEN1to20_user1.codex", path)
	u2 := loadNotebook(t, "testdata/fixtures/GEN1to20_user2.codex", path)
	m := editorMerge(t, u1, u2)
	c := m.Cell("GEN 1:2")
	if label, _ := c.Object().Path("metadata", "cellLabel").Str(); label != "second change" || c.Value() != "<span>hi there</span>" {
		t.Errorf("GEN 1:2: label %q value %q", label, c.Value())
	}
	if m.Cell("GEN 1:1").Value() != u1.Cell("GEN 1:1").Value() {
		t.Error("GEN 1:1 changed")
	}
	for _, id := range []string{"GEN 1:3", "GEN 1:4"} {
		if m.Cell(id).Value() != u2.Cell(id).Value() {
			t.Errorf("%s not taken from user2", id)
		}
	}
	if m.Cell("GEN 1:10").Value() != "<span>test from user 1</span>" {
		t.Errorf("GEN 1:10 = %q", m.Cell("GEN 1:10").Value())
	}
	edits := m.Cell("GEN 1:2").Object().Path("metadata", "edits").Elems()
	n1 := len(u1.Cell("GEN 1:2").Object().Path("metadata", "edits").Elems())
	if len(edits) <= n1 {
		t.Errorf("GEN 1:2 has %d edits after the merge, user1 alone %d", len(edits), n1)
	}
	checkEditorShape(t, m)
}
