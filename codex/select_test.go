package codex

import (
	"reflect"
	"sort"
	"strings"
	"testing"
)

func fixtureSet(t testing.TB) map[string]*Notebook {
	t.Helper()
	return map[string]*Notebook{
		"files/target/MRK.codex":              loadNotebook(t, "testdata/MRK.codex", "files/target/MRK.codex"),
		"files/target/GEN.codex":              loadNotebook(t, "testdata/fixtures/GEN1to20_user2.codex", "files/target/GEN.codex"),
		"files/target/TheChosen_101_en.codex": loadNotebook(t, "testdata/fixtures/TheChosen_101_en.codex", "files/target/TheChosen_101_en.codex"),
	}
}

func refsOf(items []Item) []string {
	var out []string
	for _, it := range items {
		r := it.Reference
		if r == "" {
			r = it.CellID
		}
		out = append(out, r)
	}
	return out
}

func TestSelectTrainingNeedsTextAndAudio(t *testing.T) {
	items := SelectTraining(fixtureSet(t), Filter{})
	// Fixture cells with text and usable audio: MRK 1:1, 1:2, the 1:7 child
	// and 2:2. 1:4 has audio but no text, 1:5 is deleted; GEN and the
	// subtitles have no audio at all.
	want := []string{"MRK 1:1", "MRK 1:2", "MRK 1:7", "MRK 2:2"}
	if got := refsOf(items); !reflect.DeepEqual(got, want) {
		t.Fatalf("training refs = %v, want %v", got, want)
	}
	it := items[1]
	wantItem := Item{
		Notebook: "files/target/MRK.codex", Book: "MRK", CellID: uuidOf("MRK 1:2"), Reference: "MRK 1:2",
		Text:         "As it is written in the prophets, Behold, I send my messenger",
		AudioID:      "audio-1760000320000-bbbb0003",
		AudioURL:     ".project/attachments/files/MRK/audio-1760000320000-bbbb0003.webm",
		FilesPath:    ".project/attachments/files/MRK/audio-1760000320000-bbbb0003.webm",
		PointersPath: ".project/attachments/pointers/MRK/audio-1760000320000-bbbb0003.webm",
	}
	if it != wantItem {
		t.Errorf("item = %+v\nwant %+v", it, wantItem)
	}
	// The child cell's relative url resolves too.
	if items[2].PointersPath != ".project/attachments/pointers/MRK/audio-1760000700000-eeee0001.wav" {
		t.Errorf("child pointers path %q", items[2].PointersPath)
	}
}

func TestFilters(t *testing.T) {
	nbs := fixtureSet(t)
	cases := []struct {
		name string
		f    Filter
		want []string
	}{
		{"verse ref via globalReferences", Filter{Include: []string{"MRK 1:2"}}, []string{"MRK 1:2"}},
		{"lower-case ref", Filter{Include: []string{"mrk 1:2"}}, []string{"MRK 1:2"}},
		{"ref of a child cell", Filter{Include: []string{"MRK 1:7"}}, []string{"MRK 1:7"}},
		{"second ref of a range cell", Filter{Include: []string{"MRK 2:3"}}, []string{"MRK 2:2"}},
		{"uuid", Filter{Include: []string{uuidOf("MRK 1:1")}}, []string{"MRK 1:1"}},
		{"upper-case uuid", Filter{Include: []string{strings.ToUpper(uuidOf("MRK 1:1"))}}, []string{"MRK 1:1"}},
		{"chapter", Filter{Include: []string{"MRK 1"}}, []string{"MRK 1:1", "MRK 1:2", "MRK 1:7"}},
		{"book", Filter{Include: []string{"MRK"}}, []string{"MRK 1:1", "MRK 1:2", "MRK 1:7", "MRK 2:2"}},
		{"book minus chapter", Filter{Include: []string{"MRK"}, Exclude: []string{"MRK 1"}}, []string{"MRK 2:2"}},
		{"exclude ref and uuid", Filter{Exclude: []string{"MRK 1:1", uuidOf("MRK 2:2")}}, []string{"MRK 1:2", "MRK 1:7"}},
		{"unknown", Filter{Include: []string{"JHN 3:16", "deadbeef"}}, nil},
		{"verse range", Filter{Include: []string{"MRK 1:2-7"}}, []string{"MRK 1:2", "MRK 1:7"}},
		{"range covering a range cell", Filter{Include: []string{"MRK 2:3-9"}}, []string{"MRK 2:2"}},
		{"exclude a range", Filter{Include: []string{"MRK"}, Exclude: []string{"MRK 1:1-2"}}, []string{"MRK 1:7", "MRK 2:2"}},
	}
	for _, c := range cases {
		got := refsOf(SelectTraining(nbs, c.f))
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestFilterMatchLegacyAndCueIDs(t *testing.T) {
	gen := loadNotebook(t, "testdata/fixtures/GEN1to20_head.codex", "files/target/GEN.codex")
	sub := loadNotebook(t, "testdata/fixtures/TheChosen_101_en.codex", "files/target/TheChosen_101_en.codex")
	count := func(nb *Notebook, f Filter) int {
		n := 0
		for _, c := range nb.Cells() {
			if c.IsVerse() && f.Match(nb.Book(), c) {
				n++
			}
		}
		return n
	}
	cases := []struct {
		nb   *Notebook
		f    Filter
		want int
	}{
		{gen, Filter{Include: []string{"GEN 1:3"}}, 1},
		{gen, Filter{Include: []string{"GEN 1"}}, 20},
		{gen, Filter{Include: []string{"GEN 2"}}, 0},
		{gen, Filter{Include: []string{"GEN"}}, 20},
		{gen, Filter{Include: []string{"EXO"}}, 0},
		{gen, Filter{Exclude: []string{"GEN 1:1", "GEN 1:20"}}, 18},
		{gen, Filter{Include: []string{uuidOf("GEN 1:1")}}, 0}, // legacy project: ids are refs, not UUIDs
		{sub, Filter{Include: []string{"TheChosen-101-en 1:cue-50.634-51.468"}}, 1},
		{sub, Filter{Include: []string{"TheChosen-101-en 1"}}, 355},
		{sub, Filter{Include: []string{"TheChosen_101_en"}}, 0}, // not a book code
	}
	for i, c := range cases {
		if got := count(c.nb, c.f); got != c.want {
			t.Errorf("case %d %+v: %d cells, want %d", i, c.f, got, c.want)
		}
	}
}

func TestSelectInferenceTTS(t *testing.T) {
	nbs := fixtureSet(t)
	only := map[string]*Notebook{"files/target/MRK.codex": nbs["files/target/MRK.codex"]}

	// Default: verses without usable audio; 1:4 lacks text too.
	items, skips := SelectInference(only, NeedAudio, Filter{})
	if got, want := refsOf(items), []string{"MRK 1:3", "MRK 1:8", "MRK 2:1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("items %v, want %v", got, want)
	}
	// The paratext cell has text and no audio, but the editor never
	// records paratext.
	if len(skips) != 1 || skips[0].CellID != uuidOf("MRK 1:0:paratext-intro") || skips[0].Reason != ReasonParatext {
		t.Errorf("skips %+v", skips)
	}

	// Named cells are regenerated even when they have audio; a chapter only
	// adds the ones lacking it; 1:4 (audio, no text) is not lacking audio.
	items, skips = SelectInference(only, NeedAudio, Filter{
		Include: []string{"MRK 1:1", "MRK 1", "MRK 1:4", uuidOf("MRK 1:6"), "JHN 1:1"},
		Exclude: []string{"MRK 1:8"},
	})
	if got, want := refsOf(items), []string{"MRK 1:1", "MRK 1:3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("items %v, want %v", got, want)
	}
	gotSkips := map[string]string{}
	for _, s := range skips {
		gotSkips[s.CellID] = s.Reason
	}
	wantSkips := map[string]string{
		uuidOf("MRK 1:4"): ReasonNoText,   // named, but nothing to speak
		uuidOf("MRK 1:6"): ReasonNotVerse, // merged cell
		"JHN 1:1":         ReasonNoMatch,
	}
	if !reflect.DeepEqual(gotSkips, wantSkips) {
		t.Errorf("skips %v, want %v", gotSkips, wantSkips)
	}
}

func TestSelectInferenceASR(t *testing.T) {
	nbs := fixtureSet(t)
	items, skips := SelectInference(nbs, NeedText, Filter{Include: []string{"MRK", "GEN 1:1"}})
	// MRK verses lacking text: only 1:4 (it has audio). GEN 1:1 is named but
	// has no audio.
	if got, want := refsOf(items), []string{"MRK 1:4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("items %v, want %v", got, want)
	}
	if len(skips) != 1 || skips[0].CellID != "GEN 1:1" || skips[0].Reason != ReasonNoAudio || skips[0].Notebook != "files/target/GEN.codex" {
		t.Errorf("skips %+v", skips)
	}
	// Without include, GEN cells lacking text are candidates but have no
	// audio: each is skipped with the reason.
	_, skips = SelectInference(nbs, NeedText, Filter{})
	var gen []string
	for _, s := range skips {
		if s.Notebook == "files/target/GEN.codex" {
			gen = append(gen, s.CellID)
		}
	}
	sort.Strings(gen)
	empty := 0
	for _, c := range nbs["files/target/GEN.codex"].Cells() {
		if PlainText(c.Value()) == "" {
			empty++
		}
	}
	if len(gen) != empty || empty == 0 {
		t.Errorf("GEN skips %v, want %d empty cells", gen, empty)
	}
}
