package editormerge

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gpu-worker/codex"
)

// The judge of what the codex package writes is the Codex editor's own
// merge. Every fixture notebook is read by a job (at readAt) that writes a
// transcription into a recorded, empty verse and a take into a verse with
// text; meanwhile a translator, on a clock that may be off, changes those
// cells or another one, or nothing. Their copies meet in the editor's sync
// in both directions, after the job's commit (the translator syncs later)
// and before it (the commit re-applies the job's patches to the synced
// version). A change of the translator's shows wherever it would have shown
// against the version the job read; the job's result shows everywhere
// else; both are kept, once each.

const (
	readAt = int64(1780000000000) // when the job read the notebook
	minute = int64(60_000)

	ourText      = "<span>transcribed by the job</span>"
	ourTake      = "audio-1780000000000-00000001"
	humanText    = "<span>typed by a translator</span>"
	elsewhere    = "<span>edited elsewhere</span>"
	revisedText  = " (revised)"
	humanTakeFmt = "audio-%d-7a11e001"
)

// fixtures are the project's copies of the editor's own notebooks, at the
// paths the editor merges them under.
var fixtures = []struct{ file, path string }{
	{"GEN1to20_head.codex", "files/target/GEN.codex"},
	{"GEN1to20_user1.codex", "files/target/GEN.codex"},
	{"GEN1to20_user2.codex", "files/target/GEN.codex"},
	{"TheChosen_101_en.codex", "files/target/TheChosen_101_en.codex"},
	{"TheChosen_101_en.source", ".project/sourceTexts/TheChosen_101_en.source"},
}

// seenState is the history the job saw in the cells it writes: the fixture
// as it is (with a recording of the empty verse made two hours before the
// read), or, a minute before the read on a clock off by skew, the empty
// verse's text cleared and the verse recorded, and the voiced verse's text
// revised and its take deleted — stamps in the very fields the job writes.
type seenState struct {
	name string
	skew int64
	asIs bool
}

var seenStates = []seenState{{"as in the fixture", 0, true}, {"fast clock", 10 * minute, false}, {"slow clock", -10 * minute, false}}

// human is what a translator did to their copy, unseen by the job: typed
// the transcribed verse, recorded the voiced one, or edited another cell,
// at readAt+when on a clock off by skew.
type human struct {
	text, take bool
	when, skew int64
}

func (h human) stamp() int64 { return readAt + h.when + h.skew }

func (h human) String() string {
	what := "idle"
	switch {
	case h.text:
		what = "text"
	case h.take:
		what = "take"
	}
	return fmt.Sprintf("%s %+dm skew %+dm", what, h.when/minute, h.skew/minute)
}

func humans() []human {
	out := []human{{when: 5 * minute}}
	for _, kind := range []human{{text: true}, {take: true}} {
		for _, when := range []int64{-5 * minute, 0, 5 * minute} {
			for _, skew := range []int64{0, 10 * minute, -10 * minute} {
				h := kind
				h.when, h.skew = when, skew
				out = append(out, h)
			}
		}
	}
	return out
}

// cells are the ids a scenario uses.
type cells struct{ asr, tts, other string }

// readVersion is the fixture as the job reads it, with the seen history.
func readVersion(t *testing.T, file, path string, seen seenState) (*codex.Notebook, cells) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "fixtures", file))
	if err != nil {
		t.Fatal(err)
	}
	nb := parse(t, path, b)
	var verses []*codex.Cell
	for _, c := range nb.Cells() {
		if c.IsVerse() {
			verses = append(verses, c)
		}
	}
	var ids cells
	var asr *codex.Cell
	for _, c := range verses {
		if _, has := c.CurrentAudio(); c.Value() == "" && !has {
			asr = c
			break
		}
	}
	if asr == nil { // every verse has text: the last one was never typed
		asr = verses[len(verses)-1]
		blank(asr)
	}
	ids.asr = asr.ID()
	for _, c := range verses {
		if _, has := c.CurrentAudio(); c.Value() != "" && !has && c.ID() != ids.asr {
			if ids.tts == "" {
				ids.tts = c.ID()
			} else {
				ids.other = c.ID()
			}
		}
	}
	if ids.tts == "" || ids.other == "" {
		t.Fatalf("%s: no verse with text to voice", file)
	}
	recorded := readAt - 120*minute
	if !seen.asIs {
		recorded = readAt - minute + seen.skew
		userEdit(asr, "", recorded)
		tts := nb.Cell(ids.tts)
		userEdit(tts, tts.Value()+revisedText, recorded)
		addTake(tts, take{id: "audio-1779990000000-del00001", created: recorded - minute, updated: recorded, deleted: true, selected: true})
	}
	addTake(asr, take{id: "audio-1779990000000-rec00001", created: recorded, updated: recorded, selected: true})
	nb = parse(t, path, nb.Marshal())
	return nb, ids
}

// jobPatches are what the jobs computed from the version they read, as the
// handlers build them.
func jobPatches(ids cells) []codex.Patch {
	return []codex.Patch{
		{CellID: ids.asr, Text: &codex.TextChange{Value: ourText, Author: "w2v2bert"}},
		{CellID: ids.tts, Audio: &codex.AudioChange{ID: ourTake, Ext: "webm", CreatedBy: "gpu-worker"}},
	}
}

// translatorCopy is the read version with the translator's unseen work.
func translatorCopy(t *testing.T, read *codex.Notebook, ids cells, h human) *codex.Notebook {
	t.Helper()
	nb := parse(t, read.Path, read.Marshal())
	switch {
	case h.text:
		userEdit(nb.Cell(ids.asr), humanText, h.stamp())
	case h.take:
		addTake(nb.Cell(ids.tts), take{id: fmt.Sprintf(humanTakeFmt, h.stamp()), created: h.stamp(), updated: h.stamp(), selected: true})
	default:
		userEdit(nb.Cell(ids.other), elsewhere, h.stamp())
	}
	return parse(t, read.Path, nb.Marshal())
}

// scenario is one fixture, seen history and translator.
type scenario struct {
	name string
	read *codex.Notebook
	// the read version, the job's file and the translator's, as bytes
	readFile, jobFile, translatorFile []byte
	ids                               cells
	h                                 human
	// humanShows: against the version the job read, the editor shows the
	// translator's text (or selects their take).
	humanShows bool
}

// expectation is what an output must display and keep.
type expectation struct {
	text, take    string // displayed in the transcribed and the voiced verse
	other         string // the untouched verse's value
	ours, theirs  bool   // the job's and the translator's work kept
	shownIsHumans bool
}

func (s *scenario) expect(withTranslator bool) expectation {
	e := expectation{text: ourText, take: ourTake, other: s.read.Cell(s.ids.other).Value(), ours: true, theirs: withTranslator}
	if withTranslator && !s.h.text && !s.h.take {
		e.other = elsewhere
	}
	if withTranslator && s.humanShows {
		if s.h.text {
			e.text = humanText
		} else {
			e.take = fmt.Sprintf(humanTakeFmt, s.h.stamp())
		}
	}
	return e
}

// check judges one output; it returns what is wrong, or nothing.
func (s *scenario) check(out []byte, e expectation) []string {
	var bad []string
	nb, err := codex.Parse(s.read.Path, out)
	if err != nil {
		return []string{"does not parse: " + err.Error()}
	}
	if string(nb.Marshal()) != string(out) {
		bad = append(bad, "does not round-trip byte for byte")
	}
	asr, tts, other := nb.Cell(s.ids.asr), nb.Cell(s.ids.tts), nb.Cell(s.ids.other)
	if asr == nil || tts == nil || other == nil {
		return append(bad, "a cell is missing")
	}
	if v := asr.Value(); v != e.text {
		bad = append(bad, fmt.Sprintf("transcribed verse shows %q, want %q", v, e.text))
	}
	if a, _ := tts.CurrentAudio(); a.ID != e.take {
		bad = append(bad, fmt.Sprintf("voiced verse plays %q, want %q", a.ID, e.take))
	}
	if v := other.Value(); v != e.other {
		bad = append(bad, fmt.Sprintf("other verse shows %q, want %q", v, e.other))
	}
	want := func(what string, n, expected int) {
		if n != expected {
			bad = append(bad, fmt.Sprintf("%s kept %d times, want %d", what, n, expected))
		}
	}
	if e.ours {
		want("the job's text", countEdits(asr, ourText, "llm-generation"), 1)
		want("the job's take", countTakes(tts, ourTake), 1)
	}
	if e.theirs && s.h.text {
		want("the translator's text", countEdits(asr, humanText, "user-edit"), 1)
	}
	if e.theirs && s.h.take {
		want("the translator's take", countTakes(tts, fmt.Sprintf(humanTakeFmt, s.h.stamp())), 1)
	}
	return bad
}

func TestEditorMergeKeepsUnseenHumanWork(t *testing.T) {
	m, err := Find(context.Background(), ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			t.Parallel()
			passed, total := runFixture(t, m, fx.file, fx.path)
			sum, all := 0, 0
			var by []string
			for i, name := range outputNames {
				sum, all = sum+passed[i], all+total[i]
				by = append(by, fmt.Sprintf("%s %d/%d", name, passed[i], total[i]))
			}
			t.Logf("%s: %d/%d outputs as the editor should show them (%s)", fx.file, sum, all, strings.Join(by, ", "))
		})
	}
}

// outputNames are the outputs judged in each scenario.
var outputNames = []string{
	"the job's file",
	"synced after, job's file local",
	"synced after, translator's file local",
	"job's file merged with itself",
	"re-applied on the synced version",
	"re-applied, synced again, job's file local",
	"re-applied, synced again, translator's file local",
}

// runFixture runs every scenario of one notebook and reports, by output,
// how many passed their checks.
func runFixture(t *testing.T, m *Merger, file, path string) (passed, total []int) {
	passed, total = make([]int, len(outputNames)), make([]int, len(outputNames))
	var scs []*scenario
	for _, seen := range seenStates {
		read, ids := readVersion(t, file, path, seen)
		job := parse(t, path, read.Marshal())
		if n, skipped := codex.Apply(job, read, jobPatches(ids)); n != 2 || len(skipped) != 0 {
			t.Fatalf("%s: job applied %d, skipped %+v", seen.name, n, skipped)
		}
		readFile, jobFile := read.Marshal(), job.Marshal()
		for _, h := range humans() {
			scs = append(scs, &scenario{name: seen.name + ", " + h.String(), read: read, readFile: readFile, jobFile: jobFile,
				translatorFile: translatorCopy(t, read, ids, h).Marshal(), ids: ids, h: h})
		}
	}

	// First round: what the editor shows without the job (the judge of
	// whose change should show), the syncs after the job's commit, and the
	// job's file merged with itself.
	var first []Merge
	for _, s := range scs {
		first = append(first,
			Merge{Path: path, Local: s.translatorFile, Server: s.readFile, Base: s.readFile},
			Merge{Path: path, Local: s.jobFile, Server: s.translatorFile, Base: s.readFile},
			Merge{Path: path, Local: s.translatorFile, Server: s.jobFile, Base: s.readFile},
			Merge{Path: path, Local: s.jobFile, Server: s.jobFile, Base: s.readFile},
		)
	}
	out1, err := m.Run(context.Background(), first)
	if err != nil {
		t.Fatal(err)
	}
	// Second round: the translator synced first; the job's commit re-applies
	// its patches to that version, which the translator syncs again.
	var second []Merge
	reapplied := make([][]byte, len(scs))
	for i, s := range scs {
		oracle := parse(t, path, out1[4*i])
		if s.h.text {
			s.humanShows = oracle.Cell(s.ids.asr).Value() == humanText
		}
		if s.h.take { // the translator's choice: their take selected
			s.humanShows = oracle.Cell(s.ids.tts).SelectedAudioID() == fmt.Sprintf(humanTakeFmt, s.h.stamp())
		}
		synced := parse(t, path, out1[4*i])
		codex.Apply(synced, s.read, jobPatches(s.ids))
		reapplied[i] = synced.Marshal()
		second = append(second,
			Merge{Path: path, Local: reapplied[i], Server: s.translatorFile, Base: out1[4*i]},
			Merge{Path: path, Local: s.translatorFile, Server: reapplied[i], Base: out1[4*i]},
		)
	}
	out2, err := m.Run(context.Background(), second)
	if err != nil {
		t.Fatal(err)
	}

	shown := 0
	for i, s := range scs {
		outputs := []struct {
			out []byte
			e   expectation
		}{
			{s.jobFile, s.expect(false)},
			{out1[4*i+1], s.expect(true)},
			{out1[4*i+2], s.expect(true)},
			{out1[4*i+3], s.expect(false)},
			{reapplied[i], s.expect(true)},
			{out2[2*i], s.expect(true)},
			{out2[2*i+1], s.expect(true)},
		}
		for k, o := range outputs {
			total[k]++
			bad := s.check(o.out, o.e)
			if len(bad) == 0 {
				passed[k]++
				continue
			}
			if shown < 12 {
				t.Errorf("%s: %s: %s", s.name, outputNames[k], strings.Join(bad, "; "))
			}
			shown++
		}
	}
	return passed, total
}

func parse(t *testing.T, path string, b []byte) *codex.Notebook {
	t.Helper()
	nb, err := codex.Parse(path, b)
	if err != nil {
		t.Fatal(err)
	}
	return nb
}

// metadata returns the cell's metadata object, creating member key as an
// empty value of the kind of empty when it is missing.
func metadata(c *codex.Cell, key string, empty *codex.Value) *codex.Value {
	meta := c.Object().Get("metadata")
	if meta.Get(key) == nil {
		meta.Set(key, empty)
	}
	return meta.Get(key)
}

// userEdit changes a cell's text as the editor does.
func userEdit(c *codex.Cell, value string, ts int64) {
	c.Object().Set("value", codex.NewString(value))
	metadata(c, "edits", codex.NewArray()).Append(codex.NewObject(
		codex.Member{Key: "editMap", Value: codex.NewArray(codex.NewString("value"))},
		codex.Member{Key: "value", Value: codex.NewString(value)},
		codex.Member{Key: "timestamp", Value: codex.NewInt(ts)},
		codex.Member{Key: "type", Value: codex.NewString("user-edit")},
		codex.Member{Key: "author", Value: codex.NewString("translator")},
		codex.Member{Key: "validatedBy", Value: codex.NewArray()},
	))
}

// take is a recording in a cell.
type take struct {
	id               string
	created, updated int64
	deleted          bool
	selected         bool // selected when it was created
}

// addTake records a take as the editor does.
func addTake(c *codex.Cell, k take) {
	metadata(c, "attachments", codex.NewObject()).Set(k.id, codex.NewObject(
		codex.Member{Key: "url", Value: codex.NewString(".project/attachments/files/X/" + k.id + ".webm")},
		codex.Member{Key: "type", Value: codex.NewString("audio")},
		codex.Member{Key: "createdAt", Value: codex.NewInt(k.created)},
		codex.Member{Key: "updatedAt", Value: codex.NewInt(k.updated)},
		codex.Member{Key: "isDeleted", Value: codex.NewBool(k.deleted)},
		codex.Member{Key: "createdBy", Value: codex.NewString("translator")},
	))
	if k.selected {
		c.Object().Get("metadata").Set("selectedAudioId", codex.NewString(k.id))
		c.Object().Get("metadata").Set("selectionTimestamp", codex.NewInt(k.created))
	}
}

// blank empties a verse and its value history: a verse never typed.
func blank(c *codex.Cell) {
	c.Object().Set("value", codex.NewString(""))
	edits := c.Object().Get("metadata").Get("edits")
	if edits == nil {
		return
	}
	var keep []*codex.Value
	for _, e := range edits.Elems() {
		if m := e.Get("editMap").Elems(); len(m) == 1 {
			if k, _ := m[0].Str(); k == "value" {
				continue
			}
		}
		keep = append(keep, e)
	}
	c.Object().Get("metadata").Set("edits", codex.NewArray(keep...))
}

func countEdits(c *codex.Cell, value, typ string) int {
	n := 0
	for _, e := range c.Object().Path("metadata", "edits").Elems() {
		v, _ := e.Get("value").Str()
		ty, _ := e.Get("type").Str()
		if v == value && ty == typ {
			n++
		}
	}
	return n
}

func countTakes(c *codex.Cell, id string) int {
	n := 0
	for _, m := range c.Object().Path("metadata", "attachments").Members() {
		if m.Key == id && !m.Value.Get("isDeleted").Truthy() {
			n++
		}
	}
	return n
}
