package codex

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

// userEdit changes a cell's text the way the editor does.
func userEdit(c *Cell, value string, ts int64) {
	c.Object().Set("value", NewString(value))
	c.Object().Get("metadata").ensureArray("edits").Append(NewObject(
		Member{"editMap", NewArray(NewString("value"))},
		Member{"value", NewString(value)},
		Member{"timestamp", NewInt(ts)},
		Member{"type", NewString("user-edit")},
		Member{"author", NewString("translator")},
		Member{"validatedBy", NewArray()},
	))
}

// userSelect records a new audio selection in a cell.
func userSelect(c *Cell, id string, ts int64) {
	m := c.Object().Get("metadata")
	m.ensureObject("attachments").Set(id, NewObject(
		Member{"url", NewString(".project/attachments/files/MRK/" + id + ".webm")},
		Member{"type", NewString("audio")},
		Member{"createdAt", NewInt(ts)},
		Member{"updatedAt", NewInt(ts)},
		Member{"isDeleted", NewBool(false)},
	))
	m.Set("selectedAudioId", NewString(id))
	m.Set("selectionTimestamp", NewInt(ts))
}

func TestApplyKeepsNewerUserEdits(t *testing.T) {
	const path = "files/target/MRK.codex"
	base := loadNotebook(t, "testdata/MRK.codex", path)
	cur := loadNotebook(t, "testdata/MRK.codex", path)
	userEdit(cur.Cell(uuidOf("MRK 1:3")), "<span>user text</span>", 1770000000000)
	userSelect(cur.Cell(uuidOf("MRK 2:2")), "audio-1770000000001-user0001", 1770000000001)
	// Same value, newer edit: the user touched it after we read.
	userEdit(cur.Cell("MRK 2:1"), cur.Cell("MRK 2:1").Value(), 1770000000002)
	// Changes stamped before what the job read (a slow clock): ours would
	// show over them, so ours is left out.
	userEdit(cur.Cell(uuidOf("MRK 1:1")), "<span>user, slow clock</span>", 1750000000000)
	userSelect(cur.Cell(uuidOf("MRK 1:2")), "audio-1750000000000-user0002", 1750000000000)

	patches := []Patch{
		textPatch(uuidOf("MRK 1:3"), "ours 1:3"),
		textPatch("MRK 2:1", "ours 2:1"),
		textPatch(uuidOf("MRK 1:4"), "ours 1:4"),
		audioPatch(uuidOf("MRK 2:2"), "audio-1-ours0001"),
		audioPatch(uuidOf("MRK 1:3"), "audio-1-ours0002"),
		textPatch(uuidOf("MRK 1:1"), "ours 1:1"),
		audioPatch(uuidOf("MRK 1:2"), "audio-1-ours0003"),
	}
	applied, skipped := Apply(cur, base, patches)
	if applied != 2 {
		t.Errorf("applied %d, want 2 (1:4 text, 1:3 audio)", applied)
	}
	reasons := map[string]string{}
	for _, s := range skipped {
		reasons[s.Reference] = s.Reason
	}
	want := map[string]string{
		"MRK 1:3": ReasonTextUnder, "MRK 2:1": ReasonTextUnder, "MRK 2:2": ReasonAudioUnder,
		"MRK 1:1": ReasonTextChanged, "MRK 1:2": ReasonAudioChanged,
	}
	if len(reasons) != len(want) || len(skipped) != 5 {
		t.Fatalf("skipped %+v", skipped)
	}
	for ref, r := range want {
		if reasons[ref] != r {
			t.Errorf("%s: reason %q, want %q", ref, reasons[ref], r)
		}
	}
	if v := cur.Cell(uuidOf("MRK 1:3")).Value(); v != "<span>user text</span>" {
		t.Errorf("user text overwritten: %q", v)
	}
	if id := cur.Cell(uuidOf("MRK 2:2")).SelectedAudioID(); id != "audio-1770000000001-user0001" {
		t.Errorf("user selection overwritten: %s", id)
	}
	if a, _ := cur.Cell(uuidOf("MRK 1:3")).Audio(); a.ID != "audio-1-ours0002" {
		t.Errorf("our audio on 1:3 missing: %s", a.ID)
	}
	if v := cur.Cell(uuidOf("MRK 1:4")).Value(); v != "ours 1:4" {
		t.Errorf("1:4 = %q", v)
	}
	// Under a newer user change ours is kept, not shown; under an older one
	// it is left out.
	if !hasEditValue(cur.Cell(uuidOf("MRK 1:3")), "ours 1:3") || !hasEditValue(cur.Cell("MRK 2:1"), "ours 2:1") ||
		!hasAttachment(cur.Cell(uuidOf("MRK 2:2")), "audio-1-ours0001") {
		t.Error("ours not kept under the newer user changes")
	}
	if v := cur.Cell(uuidOf("MRK 1:1")).Value(); v != "<span>user, slow clock</span>" || hasEditValue(cur.Cell(uuidOf("MRK 1:1")), "ours 1:1") {
		t.Errorf("1:1 = %q, or ours written", v)
	}
	if c := cur.Cell(uuidOf("MRK 1:2")); c.SelectedAudioID() != "audio-1750000000000-user0002" || hasAttachment(c, "audio-1-ours0003") {
		t.Errorf("1:2 selects %s, or ours attached", c.SelectedAudioID())
	}

	// Without a base nothing is checked.
	n, s := Apply(cur, nil, []Patch{textPatch(uuidOf("MRK 1:3"), "forced")})
	if n != 1 || len(s) != 0 || cur.Cell(uuidOf("MRK 1:3")).Value() != "forced" {
		t.Errorf("apply without base: %d %v %q", n, s, cur.Cell(uuidOf("MRK 1:3")).Value())
	}
}

func TestApplyTwiceWritesOnce(t *testing.T) {
	const path = "files/target/MRK.codex"
	base := loadNotebook(t, "testdata/MRK.codex", path)
	nb := loadNotebook(t, "testdata/MRK.codex", path)
	patches := []Patch{textPatch(uuidOf("MRK 1:4"), "ours"), audioPatch(uuidOf("MRK 1:3"), "audio-5-ours")}
	if n, s := Apply(nb, base, patches); n != 2 || len(s) != 0 {
		t.Fatalf("first apply %d %v", n, s)
	}
	once := nb.Marshal()
	// Re-applying to a version that already holds our changes (an earlier
	// commit landed after all) is not a conflict and adds nothing.
	if n, s := Apply(nb, base, patches); n != 2 || len(s) != 0 {
		t.Fatalf("second apply %d %v", n, s)
	}
	if !bytes.Equal(once, nb.Marshal()) {
		t.Error("second apply changed the notebook")
	}
}

func TestNewAudioID(t *testing.T) {
	now := time.UnixMilli(1764000000123)
	a, b := NewAudioID(now), NewAudioID(now)
	re := regexp.MustCompile(`^audio-1764000000123-[0-9a-f]{8}$`)
	if !re.MatchString(a) || !re.MatchString(b) || a == b {
		t.Errorf("ids %q %q", a, b)
	}
}

func TestAudioChangePaths(t *testing.T) {
	url, files, pointers := AudioChange{ID: "audio-1-ab", Ext: "webm"}.Paths("files/target/1JN.codex")
	if url != ".project/attachments/files/1JN/audio-1-ab.webm" || files != url ||
		pointers != ".project/attachments/pointers/1JN/audio-1-ab.webm" {
		t.Errorf("paths %s %s %s", url, files, pointers)
	}
}

func TestEscapeText(t *testing.T) {
	in := `a<b & c>d "q"`
	got := EscapeText(in)
	if got != `a&lt;b &amp; c&gt;d "q"` || PlainText(got) != in {
		t.Errorf("EscapeText = %q, plain %q", got, PlainText(got))
	}
	if strings.Contains(EscapeText("ሰላም"), "&") {
		t.Error("non-ASCII escaped")
	}
}
