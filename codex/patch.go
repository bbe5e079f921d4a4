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
// editor's merge keeps it.
type TextChange struct {
	Value     string
	Author    string // the model, e.g. "w2v2bert"
	Timestamp int64  // ms; 0 = now
}

// AudioChange attaches a new recording and selects it. The recording lives
// at AttachmentURL(notebook path, ID, Ext); its LFS pointer at the matching
// pointers/ path is the caller's to commit.
type AudioChange struct {
	ID        string // NewAudioID
	Ext       string // webm, wav, ogg, mp3
	Meta      AudioMeta
	Timestamp int64  // ms; 0 = now
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
// checked. A patch already present in nb (same edit, same attachment id)
// counts as applied without being written twice. applied counts patches of
// which at least one part was applied.
func Apply(nb, base *Notebook, patches []Patch) (applied int, skipped []Skip) {
	now := time.Now().UnixMilli()
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
		if p.Text != nil {
			if textChanged(c, bc) && !hasEdit(c, p.Text) {
				skipped = append(skipped, skipOf(nb.Path, c, ReasonTextChanged))
			} else {
				setText(c, *p.Text, now)
				ok = true
			}
		}
		if p.Audio != nil {
			if audioChanged(c, bc) && !hasAttachment(c, p.Audio.ID) {
				skipped = append(skipped, skipOf(nb.Path, c, ReasonAudioChanged))
			} else {
				attachAudio(c, nb.Path, *p.Audio, now)
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

func setText(c *Cell, t TextChange, now int64) {
	if hasEdit(c, &t) {
		return
	}
	ts := t.Timestamp
	if ts == 0 {
		ts = now
	}
	c.v.Set("value", NewString(t.Value))
	meta := c.v.ensureObject("metadata")
	meta.ensureArray("edits").Append(NewObject(
		Member{"editMap", NewArray(NewString("value"))},
		Member{"value", NewString(t.Value)},
		Member{"timestamp", NewInt(ts)},
		Member{"type", NewString("llm-generation")},
		Member{"author", NewString(t.Author)},
		Member{"validatedBy", NewArray()},
	))
}

func attachAudio(c *Cell, nbPath string, a AudioChange, now int64) {
	meta := c.v.ensureObject("metadata")
	atts := meta.ensureObject("attachments")
	if atts.Get(a.ID) != nil {
		return
	}
	ts := a.Timestamp
	if ts == 0 {
		ts = now
	}
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
