package codex

import (
	"reflect"
	"strconv"
	"testing"
)

// mixedProject is the GEN fixture (user2: human text in 1:1–1:5, an
// unvalidated llm-generation in 1:4) with recordings and machine output
// added the way translators and jobs add them. It returns the verses that
// are people's work.
func mixedProject(t *testing.T, migrate bool) (nbs map[string]*Notebook, id func(string) string) {
	t.Helper()
	const path = "files/target/GEN.codex"
	var nb *Notebook
	id = func(ref string) string { return ref }
	if migrate {
		nb = migrated(t, "testdata/fixtures/GEN1to20_user2.codex", path)
		id = uuidOf
	} else {
		nb = loadNotebook(t, "testdata/fixtures/GEN1to20_user2.codex", path)
	}
	cell := func(v int) *Cell { return nb.Cell(id("GEN 1:" + strconv.Itoa(v))) }
	ts := int64(1770000000000)
	next := func() int64 { ts += 1000; return ts }
	human := func(v int) { attach(cell(v), take{id: "audio-h" + strconv.Itoa(v), created: next(), selected: true}) }
	typed := func(v int) { userEdit(cell(v), "<span>typed "+strconv.Itoa(v)+"</span>", next()) }
	active := func() *Value { return validation("reviewer", next(), false) }
	withdrawn := func() *Value { return validation("reviewer", next(), true) }

	human(1) // human text, human take
	// Our TTS output, unvalidated.
	Apply(nb, nil, []Patch{audioPatch(id("GEN 1:2"), "audio-tts2")})
	attach(cell(3), take{id: "audio-g3", created: next(), generated: true, validated: true, selected: true})
	human(4) // the fixture's unvalidated llm-generation
	generatedEdit(cell(5), "llm-generation", "<span>generated 5</span>", next(), active())
	human(5)
	typed(6)
	generatedEdit(cell(6), "llm-edit", "<span>edited 6</span>", next(), withdrawn())
	human(6)
	human(7)
	Apply(nb, nil, []Patch{textPatch(id("GEN 1:7"), "our transcription 7")}) // our ASR
	human(8)
	Apply(nb, nil, []Patch{textPatch(id("GEN 1:8"), "our transcription 8")})
	typed(8) // the translator corrected it
	typed(9)
	attach(cell(9), take{id: "audio-g9", created: next(), generated: true, withdrawn: true, selected: true})
	typed(10) // no recording
	typed(11)
	attach(cell(11), take{id: "audio-m11", created: next(), missing: true, selected: true})
	human(12) // recorded, not written
	typed(13)
	human(13)
	cell(13).Data().Set("hidden", NewBool(true))
	typed(14)
	human(14)
	lock(cell(14))
	generatedEdit(cell(15), "merge", "<span>merged 15</span>", next())
	human(15)
	generatedEdit(cell(16), "llm-generation", "<span>generated 16</span>", next(), active())
	attach(cell(16), take{id: "audio-g16", created: next(), generated: true, selected: true})
	return map[string]*Notebook{path: mustParse(t, path, nb.Marshal())}, id
}

func countReasons(skips []Skip) map[string]int {
	out := map[string]int{}
	for _, s := range skips {
		out[s.Reason]++
	}
	return out
}

// Training takes exactly the verses whose text and audio are people's
// work (human, or generated and validated), and reports the rest by reason.
func TestTrainingHumanWorkOnly(t *testing.T) {
	for _, migrate := range []bool{false, true} {
		nbs, id := mixedProject(t, migrate)
		items, skips := SelectTrainingSet(nbs, Filter{}, TrainingOptions{})
		want := []string{"GEN 1:1", "GEN 1:3", "GEN 1:5", "GEN 1:8", "GEN 1:14", "GEN 1:15"}
		if got := refsOf(items); !reflect.DeepEqual(got, want) {
			t.Errorf("migrated %v: training %v, want %v", migrate, got, want)
		}
		wantReasons := map[string]string{
			"GEN 1:2": ReasonGeneratedAudio, "GEN 1:9": ReasonGeneratedAudio, "GEN 1:16": ReasonGeneratedAudio,
			"GEN 1:4": ReasonGeneratedText, "GEN 1:6": ReasonGeneratedText, "GEN 1:7": ReasonGeneratedText,
			"GEN 1:10": ReasonNoAudio, "GEN 1:17": ReasonNoAudio, "GEN 1:18": ReasonNoAudio, "GEN 1:19": ReasonNoAudio, "GEN 1:20": ReasonNoAudio,
			"GEN 1:11": ReasonAudioMissing, "GEN 1:12": ReasonNoText, "GEN 1:13": ReasonHidden,
		}
		got := map[string]string{}
		for _, s := range skips {
			if s.Reference == "" {
				t.Errorf("skip without reference %+v", s)
			}
			got[s.Reference] = s.Reason
		}
		if !reflect.DeepEqual(got, wantReasons) || len(skips) != len(wantReasons) {
			t.Errorf("migrated %v: skips %v\nwant %v", migrate, got, wantReasons)
		}
		if c := countReasons(skips); c[ReasonGeneratedAudio] != 3 || c[ReasonGeneratedText] != 3 || c[ReasonNoAudio] != 5 {
			t.Errorf("counts %v", c)
		}
		if items[1].AudioID != "audio-g3" || items[1].CellID != id("GEN 1:3") || items[3].Text != "typed 8" {
			t.Errorf("items %+v", items)
		}
		if got := refsOf(SelectTraining(nbs, Filter{})); !reflect.DeepEqual(got, want) {
			t.Errorf("SelectTraining %v", got)
		}

		// Opting in lets the unvalidated machine output in.
		items, skips = SelectTrainingSet(nbs, Filter{}, TrainingOptions{AllowGenerated: true})
		want = []string{"GEN 1:1", "GEN 1:2", "GEN 1:3", "GEN 1:4", "GEN 1:5", "GEN 1:6", "GEN 1:7", "GEN 1:8", "GEN 1:9", "GEN 1:14", "GEN 1:15", "GEN 1:16"}
		if got := refsOf(items); !reflect.DeepEqual(got, want) {
			t.Errorf("migrated %v: with generated %v, want %v", migrate, got, want)
		}
		if c := countReasons(skips); !reflect.DeepEqual(c, map[string]int{ReasonNoAudio: 5, ReasonAudioMissing: 1, ReasonNoText: 1, ReasonHidden: 1}) {
			t.Errorf("migrated %v: with generated, skips %v", migrate, c)
		}

		// The filter narrows what is reported too.
		_, skips = SelectTrainingSet(nbs, Filter{Include: []string{"GEN 1:4"}}, TrainingOptions{})
		if len(skips) != 1 || skips[0].Reason != ReasonGeneratedText {
			t.Errorf("filtered skips %+v", skips)
		}
	}
}

// Which edit stands behind the value decides, as in the editor: the newest
// value edit whose value equals the cell's.
func TestHumanTextFollowsCurrentValue(t *testing.T) {
	nb := loadNotebook(t, "testdata/fixtures/GEN1to20_user2.codex", "files/target/GEN.codex")
	if !nb.Cell("GEN 1:3").HumanText() || nb.Cell("GEN 1:4").HumanText() {
		t.Error("fixture: GEN 1:3 (user-edit) human, GEN 1:4 (llm-generation, unvalidated) not")
	}
	// A person validates the generated text.
	e := editsOf(nb.Cell("GEN 1:4"))[0]
	e.Set("validatedBy", NewArray(validation("reviewer", 2, false)))
	if !nb.Cell("GEN 1:4").HumanText() {
		t.Error("validated generation not counted as human")
	}
	// Their validation is withdrawn.
	e.Set("validatedBy", NewArray(validation("reviewer", 3, true)))
	if nb.Cell("GEN 1:4").HumanText() {
		t.Error("withdrawn validation still counted")
	}
	// The translator restores an older human value: the value matches the
	// user edit, not the newer generated one.
	c := nb.Cell("GEN 1:3")
	old := c.Value()
	generatedEdit(c, "llm-generation", "<span>guess</span>", 1800000000000)
	if c.HumanText() {
		t.Error("generated value counted as human")
	}
	c.Object().Set("value", NewString(old))
	if !c.HumanText() {
		t.Error("value back to the user's edit not counted as human")
	}
	// No history: an imported value.
	sub := loadNotebook(t, "testdata/fixtures/TheChosen_101_en.codex", "")
	if !sub.Cell("TheChosen-101-en 1:cue-50.634-51.468").HumanText() {
		t.Error("imported value without edits not counted as human")
	}
}
