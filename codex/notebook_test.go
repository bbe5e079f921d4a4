package codex

import (
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"testing"
)

func loadNotebook(t testing.TB, file, repoPath string) *Notebook {
	t.Helper()
	nb, err := Parse(repoPath, readFile(t, file))
	if err != nil {
		t.Fatal(err)
	}
	return nb
}

// uuidOf derives a migrated cell id from its legacy id, as the editor does.
func uuidOf(legacy string) string {
	h := sha256.Sum256([]byte(legacy))
	s := hex.EncodeToString(h[:16])
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}

func TestUUIDDerivationMatchesEditor(t *testing.T) {
	// The editor's documented example.
	if got := uuidOf("GEN 1:1"); got != "98c7b6a3-55fa-1148-069c-f7c0c46ee3fa" {
		t.Fatalf("uuidOf(GEN 1:1) = %s", got)
	}
}

func countVerses(nb *Notebook) (verses, all int) {
	for _, c := range nb.Cells() {
		if c.IsVerse() {
			verses++
		}
	}
	return verses, len(nb.Cells())
}

func TestFixtureCellKinds(t *testing.T) {
	cases := []struct {
		file          string
		verses, cells int
	}{
		{"testdata/fixtures/GEN1to20_head.codex", 20, 20},
		{"testdata/fixtures/TheChosen_101_en.codex", 355, 374}, // 19 paratext cells skipped
		{"testdata/fixtures/TheChosen_101_en.source", 319, 319},
	}
	for _, c := range cases {
		nb := loadNotebook(t, c.file, "")
		v, n := countVerses(nb)
		if v != c.verses || n != c.cells {
			t.Errorf("%s: %d verses of %d cells, want %d of %d", c.file, v, n, c.verses, c.cells)
		}
	}
}

func TestLegacyIDs(t *testing.T) {
	nb := loadNotebook(t, "testdata/fixtures/GEN1to20_user2.codex", "files/target/GEN.codex")
	c := nb.Cell("GEN 1:4")
	if c == nil {
		t.Fatal("GEN 1:4 not found")
	}
	if got := c.References(); !reflect.DeepEqual(got, []string{"GEN 1:4"}) {
		t.Errorf("References = %v", got)
	}
	if c.Type() != "text" || !c.IsVerse() {
		t.Errorf("GEN 1:4 type %q verse %v", c.Type(), c.IsVerse())
	}
	if got := PlainText(nb.Cell("GEN 1:2").Value()); got != "this is a test" {
		t.Errorf("GEN 1:2 text %q", got)
	}
	// Subtitle cue ids are not verse references.
	sub := loadNotebook(t, "testdata/fixtures/TheChosen_101_en.codex", "")
	if refs := sub.Cells()[0].References(); refs != nil {
		t.Errorf("cue cell references = %v", refs)
	}
	for id, want := range map[string]string{
		"GEN 1:1": "GEN 1:1", "GEN 1:1:cue-1.5-2": "GEN 1:1", "1JN 3:16": "1JN 3:16",
		"PSA 119:1-3": "PSA 119:1-3", "TheChosen-101-en 1:cue-50.634-51.468": "", "GEN 1": "", "98c7b6a3-55fa-1148-069c-f7c0c46ee3fa": "",
	} {
		if got := LegacyReference(id); got != want {
			t.Errorf("LegacyReference(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestSyntheticCells(t *testing.T) {
	nb := loadNotebook(t, "testdata/MRK.codex", "files/target/MRK.codex")
	type want struct {
		verse bool
		refs  []string
		audio string // "" = none
	}
	cases := map[string]want{
		"0b6f3c1e-8d2a-4f7b-9a41-2c5e7d9f1a3b": {false, nil, ""},                                            // milestone
		uuidOf("MRK 1:0:paratext-intro"):       {false, nil, ""},                                            // paratext
		uuidOf("MRK 1:1"):                      {true, []string{"MRK 1:1"}, "audio-1760000100000-aaaa0001"}, // selected, older than another
		uuidOf("MRK 1:2"):                      {true, []string{"MRK 1:2"}, "audio-1760000320000-bbbb0003"}, // selected deleted; newest is missing
		uuidOf("MRK 1:3"):                      {true, []string{"MRK 1:3"}, ""},
		uuidOf("MRK 1:4"):                      {true, []string{"MRK 1:4"}, "audio-1760000400000-cccc0001"},
		uuidOf("MRK 1:5"):                      {false, []string{"MRK 1:5"}, "audio-1760000500000-dddd0001"}, // deleted
		uuidOf("MRK 1:6"):                      {false, []string{"MRK 1:6"}, ""},                             // merged
		uuidOf("MRK 1:7:cue-12.5-14.0"):        {true, []string{"MRK 1:7"}, "audio-1760000700000-eeee0001"},  // child
		"MRK 1:8:cue-3.0-4.5":                  {true, []string{"MRK 1:8"}, ""},                              // legacy child
		"MRK 2:1":                              {true, []string{"MRK 2:1"}, ""},                              // no type
		uuidOf("MRK 2:1:style"):                {false, nil, ""},                                             // style
		uuidOf("MRK 2:2"):                      {true, []string{"MRK 2:2", "MRK 2:3"}, "audio-1760000220000-ffff0001"},
	}
	if len(nb.Cells()) != len(cases) {
		t.Fatalf("%d cells, want %d", len(nb.Cells()), len(cases))
	}
	for id, w := range cases {
		c := nb.Cell(id)
		if c == nil {
			t.Errorf("%s: not found", id)
			continue
		}
		if c.IsVerse() != w.verse {
			t.Errorf("%s: IsVerse = %v", id, c.IsVerse())
		}
		if got := c.References(); !reflect.DeepEqual(got, w.refs) {
			t.Errorf("%s: References = %v, want %v", id, got, w.refs)
		}
		a, ok := c.Audio()
		if ok != (w.audio != "") || a.ID != w.audio {
			t.Errorf("%s: Audio = %q %v, want %q", id, a.ID, ok, w.audio)
		}
	}
}

func TestPlainText(t *testing.T) {
	cases := map[string]string{
		"<span>The beginning &amp; end</span>":                              "The beginning & end",
		"<p>As it is written,</p><p>Behold,&nbsp;I send</p>":                "As it is written, Behold, I send",
		"line one<br/>line two<br>three":                                    "line one line two three",
		"<b>Leg</b>acy":                                                     "Legacy",
		"  spaced \n\t out  ":                                               "spaced out",
		"crying<sup class=\"footnote-marker\" data-footnote=\"x\">1</sup>.": "crying.",
		"&lt;not a tag&gt; &#233;t&#xE9; &quot;q&quot;":                     "<not a tag> été \"q\"",
		"a < b":          "a < b",
		"ሰላም <i>ዓለም</i>": "ሰላም ዓለም",
		"":               "",
		"<span></span>":  "",
		"<sup class=\"footnote-marker\"><sup>2</sup> nested</sup>after": "after",
	}
	for in, want := range cases {
		if got := PlainText(in); got != want {
			t.Errorf("PlainText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAudioPaths(t *testing.T) {
	const files, pointers = ".project/attachments/files/MRK/a.webm", ".project/attachments/pointers/MRK/a.webm"
	for _, url := range []string{
		".project/attachments/files/MRK/a.webm",
		".project/attachments/pointers/MRK/a.webm",
		"./.project/attachments/files/MRK/a.webm",
		"/home/u/.codex-projects/p/.project/attachments/files/MRK/a.webm",
		`C:\Users\u\p\.project\attachments\files\MRK\a.webm`,
		"attachments/files/MRK/a.webm",
		"files/MRK/a.webm",
		"pointers/MRK/a.webm",
		"MRK/a.webm",
	} {
		f, p := AudioPaths(url)
		if f != files || p != pointers {
			t.Errorf("AudioPaths(%q) = %q, %q", url, f, p)
		}
	}
	if got := AttachmentURL("files/target/MRK.codex", "audio-1-ab", ".wav"); got != ".project/attachments/files/MRK/audio-1-ab.wav" {
		t.Errorf("AttachmentURL = %s", got)
	}
}

// Timestamps written as floats or strings by other tools still order
// attachments.
func TestAttachmentTimestampForms(t *testing.T) {
	nb, err := Parse("files/target/X.codex", []byte(`{"cells":[{"kind":2,"languageId":"html","value":"x","metadata":{"id":"X 1:1","type":"text",
		"attachments":{
			"a":{"url":"files/X/a.webm","type":"audio","createdAt":"1","updatedAt":1700000000000.5,"isDeleted":false},
			"b":{"url":"files/X/b.webm","type":"audio","createdAt":1,"updatedAt":"1700000000001","isDeleted":false},
			"c":{"url":"files/X/c.webm","type":"video","createdAt":1,"updatedAt":1800000000000,"isDeleted":false}}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	c := nb.Cell("X 1:1")
	a, ok := c.Audio()
	if !ok || a.ID != "b" || a.UpdatedAt != 1700000000001 {
		t.Errorf("audio %+v", a)
	}
	if got := c.Text(); got != "x" {
		t.Errorf("Text = %q", got)
	}
	if atts := c.Attachments(); len(atts) != 3 || atts[0].UpdatedAt != 1700000000000 || atts[0].CreatedAt != 1 {
		t.Errorf("attachments %+v", atts)
	}
}
