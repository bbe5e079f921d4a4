package codex

import (
	"bytes"
	"reflect"
	"testing"
)

func editsOf(c *Cell) []*Value { return c.Object().Path("metadata", "edits").Elems() }

func memberKeys(v *Value) []string {
	var keys []string
	for _, m := range v.Members() {
		keys = append(keys, m.Key)
	}
	return keys
}

// Before its first edit of a cell that has a value but no edits, the editor
// records the old value as an initial-import edit; so does Apply, just
// before ours, once.
func TestInitialImportBeforeFirstEdit(t *testing.T) {
	const subPath, mrkPath, genPath = "files/target/TheChosen_101_en.codex", "files/target/MRK.codex", "files/target/GEN.codex"
	gen := loadNotebook(t, "testdata/fixtures/GEN1to20_user2.codex", genPath)
	// The shape of an edit entry in the editor's own files.
	fixtureKeys := memberKeys(editsOf(gen.Cell("GEN 1:3"))[0])

	cue := "TheChosen-101-en 1:cue-50.634-51.468" // imported subtitle: value, edits []
	cases := []struct {
		name, file, path, cell string
		migrate                bool
		wantImport             bool
	}{
		{"imported cue", "testdata/fixtures/TheChosen_101_en.codex", subPath, cue, false, true},
		{"typeless legacy cell", "testdata/MRK.codex", mrkPath, "MRK 2:1", false, true},
		{"empty cell", "testdata/MRK.codex", mrkPath, uuidOf("MRK 1:4"), false, false},
		{"user edits", "testdata/fixtures/GEN1to20_user2.codex", genPath, "GEN 1:2", false, false},
		{"generated edit", "testdata/fixtures/GEN1to20_user2.codex", genPath, uuidOf("GEN 1:4"), true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var read *Notebook
			if tc.migrate {
				read = migrated(t, tc.file, tc.path)
			} else {
				read = loadNotebook(t, tc.file, tc.path)
			}
			old := read.Cell(tc.cell).Value()
			before := len(editsOf(read.Cell(tc.cell)))
			nb := clone(t, read)
			p := []Patch{{CellID: tc.cell, Text: &TextChange{Value: "regenerated", Author: "gpu-worker"}}}
			if n, s := Apply(nb, read, p); n != 1 || len(s) != 0 {
				t.Fatalf("apply: %d, %+v", n, s)
			}
			edits := editsOf(nb.Cell(tc.cell))
			added := 1
			if tc.wantImport {
				added = 2
			}
			if len(edits) != before+added {
				t.Fatalf("%d edits after apply, had %d; want %d more", len(edits), before, added)
			}
			// Ours goes in time order, where the editor's merge puts it: a
			// newer edit of another field stays after it.
			oi := -1
			for i, e := range edits {
				if strOf(e, "type") == "llm-generation" && strOf(e, "value") == "regenerated" {
					oi = i
				}
			}
			if oi < 0 || nb.Cell(tc.cell).Value() != "regenerated" {
				t.Fatalf("our edit missing; value %q", nb.Cell(tc.cell).Value())
			}
			ours := edits[oi]
			ourTS, _ := ours.Get("timestamp").Int64()
			for i, e := range edits {
				if ts, _ := e.Get("timestamp").Int64(); (i < oi && ts > ourTS) || (i > oi && ts < ourTS) {
					t.Errorf("edit %d at %d is out of time order around ours at %d", i, ts, ourTS)
				}
			}
			if tc.wantImport {
				imp := edits[oi-1]
				ts, _ := imp.Get("timestamp").Int64()
				if strOf(imp, "type") != "initial-import" || strOf(imp, "value") != old || old == "" ||
					ts != ourTS-1000 || ts <= 0 || strOf(imp, "author") != "gpu-worker" || len(imp.Get("validatedBy").Elems()) != 0 ||
					imp.Get("validatedBy").Kind() != Array || !isValueEdit(imp) {
					t.Errorf("initial-import edit %s", AppendJSON(nil, imp))
				}
				if !reflect.DeepEqual(memberKeys(imp), fixtureKeys) || !reflect.DeepEqual(memberKeys(ours), fixtureKeys) {
					t.Errorf("edit keys %v / %v, the editor writes %v", memberKeys(imp), memberKeys(ours), fixtureKeys)
				}
			}
			for _, e := range edits[:before] {
				if strOf(e, "type") == "initial-import" && tc.wantImport {
					t.Error("initial-import already there before the apply")
				}
			}

			// Once: a re-apply (the commit retried on this version) adds
			// nothing.
			once := nb.Marshal()
			if n, s := Apply(nb, read, p); n != 1 || len(s) != 0 || !bytes.Equal(once, nb.Marshal()) {
				t.Errorf("re-apply: %d, %+v, changed %v", n, s, !bytes.Equal(once, nb.Marshal()))
			}
			checkEditorShape(t, nb, tc.cell)

			// The old text survives the merge with the translator's copy
			// (untouched): our value wins, the old one stays in history.
			m := editorMerge(t, clone(t, read), nb)
			if m.Cell(tc.cell).Value() != "regenerated" || (old != "" && !hasEditValue(m.Cell(tc.cell), old)) {
				t.Errorf("after merge: value %q, old value kept %v", m.Cell(tc.cell).Value(), hasEditValue(m.Cell(tc.cell), old))
			}
		})
	}
}

// An edit of any path counts as history: a cell whose only edit is a label
// change gets no initial-import, as in the editor.
func TestInitialImportOnlyWithoutEdits(t *testing.T) {
	nb := loadNotebook(t, "testdata/fixtures/GEN1to20_head.codex", "files/target/GEN.codex")
	c := nb.Cell("GEN 1:7")
	c.Object().Set("value", NewString("<span>imported</span>"))
	c.Object().Get("metadata").ensureArray("edits").Append(NewObject(
		Member{"editMap", NewArray(NewString("metadata"), NewString("cellLabel"))},
		Member{"value", NewString("7a")},
		Member{"timestamp", NewInt(1)},
		Member{"type", NewString("user-edit")},
		Member{"author", NewString("translator")},
		Member{"validatedBy", NewArray()},
	))
	Apply(nb, nil, []Patch{textPatch("GEN 1:7", "ours")})
	if edits := editsOf(nb.Cell("GEN 1:7")); len(edits) != 2 || strOf(edits[1], "type") != "llm-generation" {
		t.Errorf("edits %s", AppendJSON(nil, NewArray(edits...)))
	}
}
