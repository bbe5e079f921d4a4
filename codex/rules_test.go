package codex

import (
	"bytes"
	"reflect"
	"testing"
)

func reasonsByCell(skips []Skip) map[string]string {
	out := map[string]string{}
	for _, s := range skips {
		out[s.CellID] = s.Reason
	}
	return out
}

func cellIDs(items []Item) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.CellID)
	}
	return out
}

func lock(c *Cell) { c.Object().Get("metadata").Set("isLocked", NewBool(true)) }

// The editor refuses text and audio changes to locked cells: inference
// leaves them out with a reason, and Apply does not write a cell locked
// after the job read it. Training still reads them.
func TestLockedCells(t *testing.T) {
	const path = "files/target/MRK.codex"
	nb := loadNotebook(t, "testdata/MRK.codex", path)
	for _, ref := range []string{"MRK 1:1", "MRK 1:3", "MRK 1:4"} {
		lock(nb.Cell(uuidOf(ref)))
	}
	nbs := map[string]*Notebook{path: nb}
	tts, skips := SelectInference(nbs, NeedAudio, Filter{Include: []string{"MRK 1:1", "MRK 1:3", "MRK 1:8"}})
	if got := refsOf(tts); !reflect.DeepEqual(got, []string{"MRK 1:8"}) {
		t.Errorf("TTS items %v", got)
	}
	if r := reasonsByCell(skips); len(r) != 2 || r[uuidOf("MRK 1:1")] != ReasonLocked || r[uuidOf("MRK 1:3")] != ReasonLocked {
		t.Errorf("TTS skips %+v", skips)
	}
	asr, skips := SelectInference(nbs, NeedText, Filter{})
	if len(asr) != 0 || len(skips) != 1 || skips[0].CellID != uuidOf("MRK 1:4") || skips[0].Reason != ReasonLocked {
		t.Errorf("ASR items %v, skips %+v", refsOf(asr), skips)
	}
	if got := refsOf(SelectTraining(nbs, Filter{Include: []string{"MRK 1:1"}})); !reflect.DeepEqual(got, []string{"MRK 1:1"}) {
		t.Errorf("locked 1:1 not trained on: %v", got)
	}

	// Locked after the job read the notebook.
	base := loadNotebook(t, "testdata/MRK.codex", path)
	cur := loadNotebook(t, "testdata/MRK.codex", path)
	lock(cur.Cell(uuidOf("MRK 1:3")))
	lock(cur.Cell(uuidOf("MRK 1:4")))
	before := cur.Marshal()
	patches := []Patch{
		textPatch(uuidOf("MRK 1:4"), "ours"),
		audioPatch(uuidOf("MRK 1:3"), "audio-1-ours0001"),
		{CellID: uuidOf("MRK 1:3"), Text: &TextChange{Value: "ours", Author: "m"}},
	}
	applied, skipped := Apply(cur, base, patches)
	if applied != 0 || len(skipped) != 3 {
		t.Fatalf("applied %d, skipped %+v", applied, skipped)
	}
	for _, s := range skipped {
		if s.Reason != ReasonLocked {
			t.Errorf("skip %+v", s)
		}
	}
	if !bytes.Equal(before, cur.Marshal()) {
		t.Error("a locked cell was written")
	}

	// A change that landed before the cell was locked is not written
	// again, and counts as applied.
	landed := loadNotebook(t, "testdata/MRK.codex", path)
	p := []Patch{textPatch(uuidOf("MRK 1:4"), "ours")}
	Apply(landed, base, p)
	lock(landed.Cell(uuidOf("MRK 1:4")))
	once := landed.Marshal()
	if n, s := Apply(landed, base, p); n != 1 || len(s) != 0 || !bytes.Equal(once, landed.Marshal()) {
		t.Errorf("re-apply after lock: %d applied, skipped %+v", n, s)
	}
}

// Hidden cells and legacy paratext (typed paratext, an id with
// "paratext-", data.type paratext) are never chosen, for training or
// inference, each with its reason.
func TestHiddenAndParatextCells(t *testing.T) {
	const subPath = "files/target/TheChosen_101_en.codex"
	sub := loadNotebook(t, "testdata/fixtures/TheChosen_101_en.codex", subPath)
	var paratext []*Cell
	for _, c := range sub.Cells() {
		if c.Type() == "paratext" {
			paratext = append(paratext, c)
		}
	}
	if len(paratext) != 19 {
		t.Fatalf("%d paratext cells in the fixture", len(paratext))
	}
	// Older importers typed such cells "text": only the id tells.
	legacyID := paratext[0]
	legacyID.Object().Get("metadata").Set("type", NewString("text"))
	cues := []*Cell{}
	for _, c := range sub.Cells() {
		if c.Type() == "text" && c != legacyID {
			cues = append(cues, c)
		}
	}
	dataType, hidden, plain := cues[0], cues[1], cues[2]
	dataType.Data().Set("type", NewString("paratext"))
	hidden.Data().Set("hidden", NewBool(true))
	gen := migrated(t, "testdata/fixtures/GEN1to20_head.codex", "files/target/GEN.codex")
	genHidden := gen.Cell(uuidOf("GEN 1:2"))
	genHidden.Data().Set("hidden", NewBool(true))
	nbs := map[string]*Notebook{subPath: sub, "files/target/GEN.codex": gen}
	marked := []*Cell{legacyID, dataType, hidden, genHidden}

	want := map[string]string{
		legacyID.ID(): ReasonParatext, dataType.ID(): ReasonParatext,
		hidden.ID(): ReasonHidden, genHidden.ID(): ReasonHidden,
	}
	check := func(name string, items []Item, skips []Skip, chosen string) {
		t.Helper()
		got := reasonsByCell(skips)
		for id, r := range want {
			if got[id] != r {
				t.Errorf("%s: %s reason %q, want %q", name, id, got[id], r)
			}
		}
		for _, it := range items {
			if want[it.CellID] != "" || sub.Cell(it.CellID) != nil && sub.Cell(it.CellID).IsParatext() {
				t.Errorf("%s chose %s", name, it.CellID)
			}
		}
		if !contains(cellIDs(items), chosen) {
			t.Errorf("%s did not choose %s", name, chosen)
		}
	}
	// TTS: they have text and no audio. Named explicitly, they are still
	// refused.
	items, skips := SelectInference(nbs, NeedAudio, Filter{})
	check("TTS", items, skips, uuidOf("GEN 1:1"))
	named := Filter{Include: []string{legacyID.ID(), dataType.ID(), hidden.ID(), "GEN 1:2", "GEN 1:1", plain.ID()}}
	items, skips = SelectInference(nbs, NeedAudio, named)
	check("TTS named", items, skips, uuidOf("GEN 1:1"))
	if len(items) != 2 {
		t.Errorf("TTS named chose %v", cellIDs(items))
	}

	// Training: with human recordings, only the cell's kind keeps them out.
	for i, c := range append(marked, plain) {
		attach(c, take{id: "audio-1-rec" + string(rune('a'+i)), created: 1, selected: true})
	}
	items, skips = SelectTrainingSet(nbs, Filter{}, TrainingOptions{})
	check("training", items, skips, plain.ID())
	for _, c := range paratext[1:] {
		if reasonsByCell(skips)[c.ID()] != ReasonParatext {
			t.Errorf("training: paratext %s reason %q", c.ID(), reasonsByCell(skips)[c.ID()])
		}
	}

	// ASR: recorded and empty.
	for _, c := range append(marked, plain) {
		c.Object().Set("value", NewString(""))
	}
	items, skips = SelectInference(nbs, NeedText, Filter{})
	check("ASR", items, skips, plain.ID())
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The editor plays a take marked isMissing and falls back to the newest
// take by createdAt: such a cell has audio (TTS leaves it alone), but it
// cannot be fetched, so training and ASR skip it.
func TestMissingAudioAndFallback(t *testing.T) {
	const path = "files/target/GEN.codex"
	nb := migrated(t, "testdata/fixtures/GEN1to20_user2.codex", path)
	onlyMissing := nb.Cell(uuidOf("GEN 1:1"))
	attach(onlyMissing, take{id: "audio-m", created: 100, missing: true, selected: true})
	// Two takes, none selected: b was created later, a updated later.
	fallback := nb.Cell(uuidOf("GEN 1:2"))
	attach(fallback, take{id: "audio-a", created: 100, updated: 900})
	attach(fallback, take{id: "audio-b", created: 200, updated: 300})
	// A selected missing take with a fetchable older one: played is the
	// missing one, trained on the older one.
	mixed := nb.Cell(uuidOf("GEN 1:3"))
	attach(mixed, take{id: "audio-old", created: 100})
	attach(mixed, take{id: "audio-new", created: 200, missing: true, selected: true})
	// No type: not audio to the editor.
	untyped := nb.Cell(uuidOf("GEN 1:5"))
	attach(untyped, take{id: "audio-x", created: 100, noType: true, selected: true})
	// Empty verses with a missing take (ASR) and with a deleted one.
	emptyMissing := nb.Cell(uuidOf("GEN 1:6"))
	attach(emptyMissing, take{id: "audio-e", created: 100, missing: true, selected: true})
	emptyDeleted := nb.Cell(uuidOf("GEN 1:7"))
	attach(emptyDeleted, take{id: "audio-d", created: 100, deleted: true, selected: true})

	for c, want := range map[*Cell][2]string{ // current (played), fetched
		onlyMissing: {"audio-m", ""}, fallback: {"audio-b", "audio-b"}, mixed: {"audio-new", "audio-old"},
		untyped: {"", ""}, emptyDeleted: {"", ""},
	} {
		cur, _ := c.CurrentAudio()
		got, _ := c.Audio()
		if cur.ID != want[0] || got.ID != want[1] {
			t.Errorf("%s: plays %q, fetches %q, want %v", c.ID(), cur.ID, got.ID, want)
		}
	}

	nbs := map[string]*Notebook{path: nb}
	tts, _ := SelectInference(nbs, NeedAudio, Filter{Include: []string{"GEN 1"}})
	// 1:4 has no audio; 1:5's attachment is not audio; 1:1–1:3 have takes.
	if got := refsOf(tts); !reflect.DeepEqual(got, []string{"GEN 1:4", "GEN 1:5"}) {
		t.Errorf("TTS chose %v", got)
	}
	items, skips := SelectTrainingSet(nbs, Filter{Include: []string{"GEN 1:1-5"}}, TrainingOptions{})
	if got := refsOf(items); !reflect.DeepEqual(got, []string{"GEN 1:2", "GEN 1:3"}) || items[1].AudioID != "audio-old" {
		t.Errorf("training chose %v (%+v)", got, items)
	}
	wantSkips := map[string]string{
		uuidOf("GEN 1:1"): ReasonAudioMissing,
		uuidOf("GEN 1:4"): ReasonGeneratedText, // the fixture's llm-generation; its audio is absent too
		uuidOf("GEN 1:5"): ReasonNoAudio,
	}
	attach(nb.Cell(uuidOf("GEN 1:4")), take{id: "audio-h", created: 100, selected: true})
	items, skips = SelectTrainingSet(nbs, Filter{Include: []string{"GEN 1:1-5"}}, TrainingOptions{})
	if got := reasonsByCell(skips); !reflect.DeepEqual(got, wantSkips) {
		t.Errorf("training skips %v, want %v", got, wantSkips)
	}
	asr, skips := SelectInference(nbs, NeedText, Filter{Include: []string{"GEN 1:6", "GEN 1:7"}})
	if len(asr) != 0 || !reflect.DeepEqual(reasonsByCell(skips), map[string]string{
		uuidOf("GEN 1:6"): ReasonAudioMissing, uuidOf("GEN 1:7"): ReasonNoAudio,
	}) {
		t.Errorf("ASR %v, skips %+v", refsOf(asr), skips)
	}
}
