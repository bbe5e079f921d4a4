package codex

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"time"
)

// Patch is a change to one cell: new text, new audio, or both.
type Patch struct {
	CellID string
	Text   *TextChange
	Audio  *AudioChange
}

// TextChange sets the cell's value, recorded as an llm-generation edit so the
// editor's merge keeps it, stamped by the stamp rule (stamp.go). A cell that
// has a value but no edits first gets an initial-import edit holding the old
// value, as the editor records one before its first edit, so the old text
// stays in the cell's history.
type TextChange struct {
	Value  string
	Author string // the model, e.g. "w2v2bert"
}

// AudioChange attaches a new recording and selects it, stamped by the stamp
// rule (stamp.go). The recording lives at AttachmentURL(notebook path, ID,
// Ext); its LFS pointer at the matching pointers/ path is the caller's to
// commit.
type AudioChange struct {
	ID        string // NewAudioID
	Ext       string // webm, wav, ogg, mp3
	Meta      AudioMeta
	CreatedBy string // optional
}

// Paths returns where the recording of a change to a cell of the notebook
// at notebookPath goes: the attachment url, the editor's local copy and the
// LFS pointer path to commit.
func (a AudioChange) Paths(notebookPath string) (url, filesPath, pointersPath string) {
	url = AttachmentURL(notebookPath, a.ID, a.Ext)
	filesPath, pointersPath = AudioPaths(url)
	return url, filesPath, pointersPath
}

// AudioMeta is the attachment metadata the editor records; zero numbers are
// left out.
type AudioMeta struct {
	MimeType    string
	SizeBytes   int64
	SampleRate  int
	Channels    int
	DurationSec float64
	BitrateKbps int
}

// Skip reasons of Apply. A change kept under a newer user edit is written
// but not shown, as the editor's merge would leave it had the user synced
// after the job.
const (
	ReasonTextChanged  = "text changed since read; user edit kept"
	ReasonAudioChanged = "audio selection changed since read; user choice kept"
	ReasonTextUnder    = "newer user edit shown; ours kept in the history"
	ReasonAudioUnder   = "newer user choice selected; ours attached unselected"
	ReasonEmptyPatch   = "empty patch"
)

// initialImportLead is how much earlier than the first edit the editor
// stamps the initial-import edit it records before it.
const initialImportLead = 1000

// NewAudioID returns an id in the editor's form, audio-<ms>-<8 hex>.
func NewAudioID(now time.Time) string {
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	return "audio-" + strconv.FormatInt(now.UnixMilli(), 10) + "-" + hex.EncodeToString(r[:])
}

// Apply applies patches to nb. base is the version the patches were computed
// from; changes are stamped by the stamp rule (stamp.go) from the cell as it
// is in base, or in nb when base is nil or lacks it, never by a clock, so a
// re-apply writes the same stamps. When base is given, a cell a user changed
// since keeps the user's text or take: when the user's change is newer than
// ours, ours goes under it (a text edit in the history, a take attached
// unselected: ReasonTextUnder, ReasonAudioUnder), as the editor's merge
// leaves it when the user syncs after the job; otherwise ours is left out
// (ReasonTextChanged, ReasonAudioChanged). Changes to a locked cell are
// skipped (ReasonLocked), as the editor refuses them. A change already
// present in nb (an earlier attempt landed) is not written twice. applied
// counts patches of which at least one part is written and shown.
func Apply(nb, base *Notebook, patches []Patch) (applied int, skipped []Skip) {
	for _, p := range patches {
		c := nb.Cell(p.CellID)
		if c == nil {
			skipped = append(skipped, Skip{Notebook: nb.Path, CellID: p.CellID, Reason: ReasonCellNotFound})
			continue
		}
		read := c
		var bc *Cell
		if base != nil {
			if bc = base.Cell(p.CellID); bc != nil {
				read = bc
			}
		}
		var reasons []string
		if t := p.Text; t != nil {
			reasons = append(reasons, applyText(c, bc, *t, textStamp(read), base == nil))
		}
		if a := p.Audio; a != nil {
			reasons = append(reasons, applyAudio(c, bc, nb.Path, *a, audioStamp(read)))
		}
		if p.Text == nil && p.Audio == nil {
			reasons = append(reasons, ReasonEmptyPatch)
		}
		shown := false
		for _, r := range reasons {
			if r == "" {
				shown = true
			} else {
				skipped = append(skipped, skipOf(nb.Path, c, r))
			}
		}
		if shown {
			applied++
		}
	}
	return applied, skipped
}

// applyText writes t stamped ts into c (bc: the cell as read, if known) and
// says why it is not shown, or "" when it is.
func applyText(c, bc *Cell, t TextChange, ts int64, unchecked bool) string {
	switch {
	case hasEdit(c, t, ts, unchecked):
		if v, newest, _ := c.lastValueEdit(); unchecked || v == t.Value && newest == ts && c.Value() == t.Value {
			return ""
		}
		return ReasonTextUnder // a user edited the cell after ours landed
	case c.IsLocked():
		return ReasonLocked
	case textChanged(c, bc):
		if _, newest, ok := c.lastValueEdit(); ok && newest > ts {
			addValueEdit(c, valueEditOf(t.Value, ts, "llm-generation", t.Author))
			return ReasonTextUnder
		}
		return ReasonTextChanged
	}
	setText(c, t, ts)
	return ""
}

// applyAudio attaches a stamped ts to c (bc: the cell as read, if known) and
// says why it is not shown, or "" when it is.
func applyAudio(c, bc *Cell, nbPath string, a AudioChange, ts int64) string {
	switch {
	case hasAttachment(c, a.ID):
		if c.SelectedAudioID() == a.ID {
			return ""
		}
		return ReasonAudioUnder // a user chose another take after ours landed
	case c.IsLocked():
		return ReasonLocked
	case audioChanged(c, bc):
		if c.SelectionTimestamp() > ts {
			attachAudio(c, nbPath, a, ts, false)
			return ReasonAudioUnder
		}
		return ReasonAudioChanged
	}
	attachAudio(c, nbPath, a, ts, true)
	return ""
}

func textChanged(c, base *Cell) bool {
	if base == nil {
		return false
	}
	if c.Value() != base.Value() {
		return true
	}
	_, ts, _ := c.lastValueEdit()
	_, bts, _ := base.lastValueEdit()
	return ts > bts
}

func audioChanged(c, base *Cell) bool {
	if base == nil {
		return false
	}
	return c.SelectedAudioID() != base.SelectedAudioID() || c.SelectionTimestamp() > base.SelectionTimestamp()
}

// hasEdit reports that our edit of t, stamped ts, is in the cell's history
// (an earlier attempt landed). Unchecked (no base), the stamp comes from the
// cell as it is now, so an earlier apply is recognised as the newest value
// edit being ours.
func hasEdit(c *Cell, t TextChange, ts int64, unchecked bool) bool {
	if unchecked {
		v, newest, ok := c.lastValueEdit()
		e := c.valueEdit()
		typ, _ := e.Get("type").Str()
		ets, _ := e.Get("timestamp").Int64()
		return ok && v == t.Value && c.Value() == t.Value && typ == "llm-generation" && ets == newest
	}
	for _, e := range c.meta().Get("edits").Elems() {
		v, _ := e.Get("value").Str()
		typ, _ := e.Get("type").Str()
		if n, _ := e.Get("timestamp").Int64(); isValueEdit(e) && n == ts && v == t.Value && typ == "llm-generation" {
			return true
		}
	}
	return false
}

func hasAttachment(c *Cell, id string) bool {
	return c.meta().Get("attachments").Get(id) != nil
}

func setText(c *Cell, t TextChange, ts int64) {
	old := c.Value()
	c.v.Set("value", NewString(t.Value))
	edits := c.v.ensureObject("metadata").ensureArray("edits")
	if old != "" && len(edits.Elems()) == 0 {
		edits.Append(valueEditOf(old, ts-initialImportLead, "initial-import", t.Author))
	}
	addValueEdit(c, valueEditOf(t.Value, ts, "llm-generation", t.Author))
}

// addValueEdit puts an edit into the cell's history in time order, where
// the editor's merge puts it.
func addValueEdit(c *Cell, e *Value) {
	edits := c.v.ensureObject("metadata").ensureArray("edits")
	ts, _ := e.Get("timestamp").Int64()
	elems := edits.Elems()
	i := len(elems)
	for i > 0 {
		if prev, _ := elems[i-1].Get("timestamp").Int64(); prev <= ts {
			break
		}
		i--
	}
	edits.elems = append(elems[:i], append([]*Value{e}, elems[i:]...)...)
}

// valueEditOf builds a value edit in the editor's shape.
func valueEditOf(value string, ts int64, typ, author string) *Value {
	return NewObject(
		Member{"editMap", NewArray(NewString("value"))},
		Member{"value", NewString(value)},
		Member{"timestamp", NewInt(ts)},
		Member{"type", NewString(typ)},
		Member{"author", NewString(author)},
		Member{"validatedBy", NewArray()},
	)
}

// attachAudio adds the take stamped ts and, when selectIt, selects it.
func attachAudio(c *Cell, nbPath string, a AudioChange, ts int64, selectIt bool) {
	meta := c.v.ensureObject("metadata")
	atts := meta.ensureObject("attachments")
	mems := make([]Member, 0, 8)
	mems = append(mems,
		Member{"url", NewString(AttachmentURL(nbPath, a.ID, a.Ext))},
		Member{"type", NewString("audio")},
		Member{"createdAt", NewInt(ts)},
		Member{"updatedAt", NewInt(ts)},
		Member{"isDeleted", NewBool(false)},
		Member{"isGenerated", NewBool(true)},
	)
	if a.CreatedBy != "" {
		mems = append(mems, Member{"createdBy", NewString(a.CreatedBy)})
	}
	if m := a.Meta.value(); m != nil {
		mems = append(mems, Member{"metadata", m})
	}
	atts.Set(a.ID, NewObject(mems...))
	if !selectIt {
		return
	}
	meta.setAll(
		Member{"selectedAudioId", NewString(a.ID)},
		Member{"selectionTimestamp", NewInt(ts)},
	)
}

func (m AudioMeta) value() *Value {
	if m == (AudioMeta{}) {
		return nil
	}
	mems := make([]Member, 0, 6)
	if m.MimeType != "" {
		mems = append(mems, Member{"mimeType", NewString(m.MimeType)})
	}
	if m.SizeBytes != 0 {
		mems = append(mems, Member{"sizeBytes", NewInt(m.SizeBytes)})
	}
	if m.SampleRate != 0 {
		mems = append(mems, Member{"sampleRate", NewInt(int64(m.SampleRate))})
	}
	if m.Channels != 0 {
		mems = append(mems, Member{"channels", NewInt(int64(m.Channels))})
	}
	if m.DurationSec != 0 {
		mems = append(mems, Member{"durationSec", NewFloat(m.DurationSec)})
	}
	if m.BitrateKbps != 0 {
		mems = append(mems, Member{"bitrateKbps", NewInt(int64(m.BitrateKbps))})
	}
	return NewObject(mems...)
}
