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
// editor's merge keeps it. A cell that has a value but no edits first gets
// an initial-import edit holding the old value, as the editor records one
// before its first edit, so the old text stays in the cell's history.
type TextChange struct {
	Value  string
	Author string // the model, e.g. "w2v2bert"
	// Timestamp (ms) stamps the edit: the ReadAt of the notebook the text
	// was computed from, the same on every retry, so that a translator's
	// edit made while the job ran is newer and wins the editor's merge.
	// 0 = the base's ReadAt, else the notebook's.
	Timestamp int64
}

// AudioChange attaches a new recording and selects it. The recording lives
// at AttachmentURL(notebook path, ID, Ext); its LFS pointer at the matching
// pointers/ path is the caller's to commit.
type AudioChange struct {
	ID   string // NewAudioID
	Ext  string // webm, wav, ogg, mp3
	Meta AudioMeta
	// Timestamp (ms) is the attachment's createdAt and updatedAt and the
	// cell's selectionTimestamp: the ReadAt of the notebook the audio was
	// computed from, as for TextChange. 0 = the base's ReadAt, else the
	// notebook's.
	Timestamp int64
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

// Skip reasons of Apply.
const (
	ReasonTextChanged  = "text changed since read; user edit kept"
	ReasonAudioChanged = "audio selection changed since read; user choice kept"
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
// from; when given, a text change is skipped if the cell's text changed
// since base (a newer edit or another value) and an audio change is skipped
// if another audio was selected since base. With base nil nothing is
// checked. Changes to a locked cell are skipped (ReasonLocked), as the
// editor refuses them. A patch already present in nb (same edit, same
// attachment id) counts as applied without being written twice. applied
// counts patches of which at least one part was applied. Changes are
// stamped with their Timestamp, never with the time of Apply.
func Apply(nb, base *Notebook, patches []Patch) (applied int, skipped []Skip) {
	for _, p := range patches {
		c := nb.Cell(p.CellID)
		if c == nil {
			skipped = append(skipped, Skip{Notebook: nb.Path, CellID: p.CellID, Reason: ReasonCellNotFound})
			continue
		}
		var bc *Cell
		if base != nil {
			bc = base.Cell(p.CellID)
		}
		ok := false
		if t := p.Text; t != nil {
			switch {
			case hasEdit(c, t):
				ok = true // an earlier attempt landed
			case c.IsLocked():
				skipped = append(skipped, skipOf(nb.Path, c, ReasonLocked))
			case textChanged(c, bc):
				skipped = append(skipped, skipOf(nb.Path, c, ReasonTextChanged))
			default:
				setText(c, *t, stampOf(t.Timestamp, nb, base))
				ok = true
			}
		}
		if a := p.Audio; a != nil {
			switch {
			case hasAttachment(c, a.ID):
				ok = true
			case c.IsLocked():
				skipped = append(skipped, skipOf(nb.Path, c, ReasonLocked))
			case audioChanged(c, bc):
				skipped = append(skipped, skipOf(nb.Path, c, ReasonAudioChanged))
			default:
				attachAudio(c, nb.Path, *a, stampOf(a.Timestamp, nb, base))
				ok = true
			}
		}
		if p.Text == nil && p.Audio == nil {
			skipped = append(skipped, skipOf(nb.Path, c, ReasonEmptyPatch))
		}
		if ok {
			applied++
		}
	}
	return applied, skipped
}

// stampOf is a change's timestamp: its own, else when the version it was
// computed from was read.
func stampOf(ts int64, nb, base *Notebook) int64 {
	switch {
	case ts != 0:
		return ts
	case base != nil && base.ReadAt != 0:
		return base.ReadAt
	case nb.ReadAt != 0:
		return nb.ReadAt
	}
	return time.Now().UnixMilli()
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

// hasEdit reports that t is already the cell's current text and newest
// value edit (an earlier attempt of ours landed).
func hasEdit(c *Cell, t *TextChange) bool {
	v, ts, ok := c.lastValueEdit()
	return ok && v == t.Value && c.Value() == t.Value && (t.Timestamp == 0 || ts == t.Timestamp)
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
	edits.Append(valueEditOf(t.Value, ts, "llm-generation", t.Author))
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

func attachAudio(c *Cell, nbPath string, a AudioChange, ts int64) {
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
