package codex

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/golden")

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := readFile(t, path)
	if !bytes.Equal(got, want) {
		i := firstDiff(got, want)
		t.Errorf("%s differs at byte %d:\ngot  %q\nwant %q", name, i, around(got, i), around(want, i))
	}
}

var editTypes = map[string]bool{
	"user-edit": true, "llm-edit": true, "llm-generation": true, "initial-import": true, "merge": true, "migration": true,
}

// checkEditorShape checks what the editor's types require of a notebook:
// typed cell fields, well-formed edits and attachments, and a value equal
// to its newest value edit where one exists. Patched cells must also select
// an audio that is attached.
func checkEditorShape(t *testing.T, nb *Notebook, patched ...string) {
	isPatched := map[string]bool{}
	for _, id := range patched {
		isPatched[id] = true
	}
	t.Helper()
	if nb.Root().Get("cells").Kind() != Array || nb.Root().Get("metadata").Kind() != Object {
		t.Fatal("notebook lacks cells or metadata")
	}
	for i, c := range nb.Cells() {
		v := c.Object()
		if k := v.Get("kind").Literal(); k != "1" && k != "2" {
			t.Errorf("cell %d: kind %q", i, k)
		}
		if _, ok := v.Get("value").Str(); !ok {
			t.Errorf("cell %d: value not a string", i)
		}
		if _, ok := v.Get("languageId").Str(); !ok {
			t.Errorf("cell %d: languageId not a string", i)
		}
		meta := v.Get("metadata")
		if _, ok := meta.Get("id").Str(); !ok {
			t.Errorf("cell %d: no id", i)
		}
		if e := meta.Get("edits"); e != nil && e.Kind() != Array {
			t.Errorf("cell %d: edits not an array", i)
		}
		for _, e := range meta.Get("edits").Elems() {
			typ, _ := e.Get("type").Str()
			if e.Get("editMap").Kind() != Array || e.Get("timestamp").Kind() != Number || !editTypes[typ] {
				t.Errorf("cell %d: malformed edit", i)
			}
			if vb := e.Get("validatedBy"); vb != nil && vb.Kind() != Array {
				t.Errorf("cell %d: validatedBy not an array", i)
			}
		}
		if last, _, ok := c.lastValueEdit(); ok && last != c.Value() {
			t.Errorf("cell %d (%s): value %q is not its newest edit %q", i, c.ID(), c.Value(), last)
		}
		atts := meta.Get("attachments")
		for _, m := range atts.Members() {
			a := m.Value
			_, urlOK := a.Get("url").Str()
			_, typOK := a.Get("type").Str()
			if !urlOK || !typOK || a.Get("createdAt").Kind() != Number || a.Get("updatedAt").Kind() != Number || a.Get("isDeleted").Kind() != Bool {
				t.Errorf("cell %d: malformed attachment %s", i, m.Key)
			}
		}
		if sel := c.SelectedAudioID(); isPatched[c.ID()] && sel != "" && atts.Get(sel) == nil {
			t.Errorf("cell %d: selected audio %s is not attached", i, sel)
		}
		if ts := meta.Get("selectionTimestamp"); ts != nil && ts.Kind() != Number {
			t.Errorf("cell %d: selectionTimestamp not a number", i)
		}
	}
}

// strOf reads a string member.
func strOf(v *Value, key string) string {
	s, _ := v.Get(key).Str()
	return s
}

func audioPatch(cellID, id string) Patch {
	return Patch{CellID: cellID, Audio: &AudioChange{
		ID: id, Ext: "webm", CreatedBy: "gpu-worker",
		Meta: AudioMeta{MimeType: "audio/webm", SizeBytes: 31873, SampleRate: 48000, Channels: 1, DurationSec: 3.264, BitrateKbps: 64},
	}}
}

func textPatch(cellID, value string) Patch {
	return Patch{CellID: cellID, Text: &TextChange{Value: value, Author: "w2v2bert"}}
}

func TestGoldenLegacyNotebook(t *testing.T) {
	const path = "files/target/GEN.codex"
	nb := loadNotebook(t, "testdata/fixtures/GEN1to20_head.codex", path)
	applied, skipped := Apply(nb, nil, []Patch{
		textPatch("GEN 1:3", EscapeText("Dieu dit: Que la lumière soit! Et la lumière fut <ok> & fin.")),
		textPatch("GEN 1:2", "<span>la terre était informe</span>"),
		audioPatch("GEN 1:1", "audio-1764000000002-0a1b2c3d"),
		{CellID: "GEN 1:5", Text: &TextChange{Value: "Dieu appela la lumière jour", Author: "w2v2bert"},
			Audio: &AudioChange{ID: "audio-1764000000003-deadbeef", Ext: "wav", Meta: AudioMeta{MimeType: "audio/wav"}}},
		textPatch("GEN 9:9", "nowhere"),
	})
	if applied != 4 || len(skipped) != 1 || skipped[0].Reason != ReasonCellNotFound {
		t.Fatalf("applied %d skipped %+v", applied, skipped)
	}
	out := nb.Marshal()
	checkGolden(t, "GEN_patched.codex", out)
	re, err := Parse(path, out)
	if err != nil {
		t.Fatal(err)
	}
	checkEditorShape(t, re, "GEN 1:1", "GEN 1:2", "GEN 1:3", "GEN 1:5")
	if got := PlainText(re.Cell("GEN 1:3").Value()); got != "Dieu dit: Que la lumière soit! Et la lumière fut <ok> & fin." {
		t.Errorf("GEN 1:3 text %q", got)
	}
	a, ok := re.Cell("GEN 1:1").Audio()
	if !ok || a.ID != "audio-1764000000002-0a1b2c3d" || a.URL != ".project/attachments/files/GEN/audio-1764000000002-0a1b2c3d.webm" {
		t.Errorf("GEN 1:1 audio %+v", a)
	}
	// Cells without patches are untouched: the untouched tail of the file
	// is identical to the original's.
	orig := readFile(t, "testdata/fixtures/GEN1to20_head.codex")
	tail := orig[bytes.Index(orig, []byte(`"id": "GEN 1:6"`)):]
	if !bytes.HasSuffix(out, tail) {
		t.Error("cells after the last patch changed")
	}
}

func TestGoldenMigratedNotebook(t *testing.T) {
	const path = "files/target/MRK.codex"
	nb := loadNotebook(t, "testdata/MRK.codex", path)
	applied, skipped := Apply(nb, nil, []Patch{
		audioPatch(uuidOf("MRK 1:3"), "audio-1764000000010-00000001"),
		audioPatch(uuidOf("MRK 1:1"), "audio-1764000000011-00000002"), // replaces the selection
		textPatch(uuidOf("MRK 1:4"), "Jean parut, baptisant dans le désert"),
		{CellID: uuidOf("MRK 2:1:style")},
	})
	if applied != 3 || len(skipped) != 1 || skipped[0].Reason != ReasonEmptyPatch {
		t.Fatalf("applied %d skipped %+v", applied, skipped)
	}
	out := nb.Marshal()
	checkGolden(t, "MRK_patched.codex", out)
	re, err := Parse(path, out)
	if err != nil {
		t.Fatal(err)
	}
	checkEditorShape(t, re, uuidOf("MRK 1:1"), uuidOf("MRK 1:3"), uuidOf("MRK 1:4"))
	c := re.Cell(uuidOf("MRK 1:1"))
	if a, _ := c.Audio(); a.ID != "audio-1764000000011-00000002" || len(c.Attachments()) != 3 {
		t.Errorf("MRK 1:1 audio %s, %d attachments", a.ID, len(c.Attachments()))
	}
	// 1:3 got audio, 1:4 (which had audio) got text: both now have what
	// training needs, but it is unvalidated machine output, which only a job
	// that opts in trains on.
	nbs := map[string]*Notebook{path: re}
	f := Filter{Include: []string{"MRK 1:3", "MRK 1:4"}}
	items, skips := SelectTrainingSet(nbs, f, TrainingOptions{})
	if len(items) != 0 || len(skips) != 2 || skips[0].Reason != ReasonGeneratedAudio || skips[1].Reason != ReasonGeneratedText {
		t.Errorf("human-only training after patch: %v, skipped %+v", refsOf(items), skips)
	}
	items, skips = SelectTrainingSet(nbs, f, TrainingOptions{AllowGenerated: true})
	if got := refsOf(items); len(got) != 2 || got[0] != "MRK 1:3" || got[1] != "MRK 1:4" || len(skips) != 0 {
		t.Errorf("training with generated data after patch %v, skipped %+v", got, skips)
	}
}

// TheChosen is large: the golden file holds only the patched cells, and the
// rest of the output must equal the original around them.
func TestGoldenSubtitleNotebook(t *testing.T) {
	const path = "files/target/TheChosen_101_en.codex"
	orig := readFile(t, "testdata/fixtures/TheChosen_101_en.codex")
	nb := loadNotebook(t, "testdata/fixtures/TheChosen_101_en.codex", path)
	para := nb.Cells()[0].ID() // paratext: no edits key
	cue := "TheChosen-101-en 1:cue-50.634-51.468"
	applied, _ := Apply(nb, nil, []Patch{
		textPatch(para, "ሰላም"),
		audioPatch(cue, "audio-1764000000021-00000003"),
	})
	if applied != 2 {
		t.Fatalf("applied %d", applied)
	}
	out := nb.Marshal()
	re, err := Parse(path, out)
	if err != nil {
		t.Fatal(err)
	}
	checkEditorShape(t, re, para, cue)
	// The paratext cell had a value and no edits: its old text is kept as
	// an initial-import edit before ours.
	oldValue := loadNotebook(t, "testdata/fixtures/TheChosen_101_en.codex", path).Cell(para).Value()
	edits := re.Cell(para).Object().Path("metadata", "edits").Elems()
	if len(edits) != 2 || strOf(edits[0], "type") != "initial-import" || strOf(edits[0], "value") != oldValue || oldValue == "" {
		t.Errorf("paratext history %s", AppendJSON(nil, NewArray(edits...)))
	}
	cells := NewArray(re.Cell(para).Object(), re.Cell(cue).Object())
	checkGolden(t, "TheChosen_patched_cells.json", append(AppendJSON(nil, cells), '\n'))
	// Everything else is unchanged: restoring the two cells gives the
	// original bytes.
	src := loadNotebook(t, "testdata/fixtures/TheChosen_101_en.codex", path)
	for i, c := range re.Cells() {
		if id := c.ID(); id == para || id == cue {
			re.Root().Get("cells").Elems()[i] = src.Cell(id).Object()
		}
	}
	if !bytes.Equal(re.Marshal(), orig) {
		t.Error("cells other than the patched ones changed")
	}
}
