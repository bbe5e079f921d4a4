package codex

import (
	"fmt"
	"testing"
)

// mergeCase is a project version a job reads and the cells it writes: the
// ASR job transcribes a recorded, empty cell; the TTS job voices a cell
// with text and no audio.
type mergeCase struct {
	name           string
	read           func(t *testing.T) *Notebook // the version the job reads
	asrCell, ttsID string
	other          string // a cell no job touches
}

func (mc mergeCase) patches() []Patch {
	return []Patch{
		{CellID: mc.asrCell, Text: &TextChange{Value: "transcribed by the job", Author: "gpu-worker"}},
		{CellID: mc.ttsID, Audio: &AudioChange{ID: "audio-1770001200000-00000001", Ext: "webm", CreatedBy: "gpu-worker"}},
	}
}

const (
	readAt     = int64(1770000000000) // when the job read the notebook
	beforeRead = readAt - 60_000      // a translator's offline work, synced after the read
	duringJob  = readAt + 5*60_000    // a translator's work while it ran
)

func mergeCases() []mergeCase {
	prepare := func(nb *Notebook, asr string) *Notebook {
		// A translator recorded the empty verse before the job started.
		attach(nb.Cell(asr), take{id: "audio-1769990000000-rec00001", created: readAt - 10_000_000, selected: true})
		return nb
	}
	const path = "files/target/GEN.codex"
	return []mergeCase{
		{"legacy", func(t *testing.T) *Notebook {
			return prepare(loadNotebook(t, "testdata/fixtures/GEN1to20_user2.codex", path), "GEN 1:10")
		}, "GEN 1:10", "GEN 1:3", "GEN 1:20"},
		{"migrated", func(t *testing.T) *Notebook {
			return prepare(migrated(t, "testdata/fixtures/GEN1to20_user2.codex", path), uuidOf("GEN 1:10"))
		}, uuidOf("GEN 1:10"), uuidOf("GEN 1:3"), uuidOf("GEN 1:20")},
	}
}

// jobResult applies what the jobs computed from read.
func jobResult(t *testing.T, read *Notebook, mc mergeCase) *Notebook {
	t.Helper()
	out := clone(t, read)
	if n, skipped := Apply(out, read, mc.patches()); n != 2 || len(skipped) != 0 {
		t.Fatalf("apply: %d applied, skipped %+v", n, skipped)
	}
	return out
}

// The translator types the verse the job transcribes and records the verse
// it voices, offline before the job read the notebook or while it ran, and
// syncs after the job's commit. The editor's merge, in either direction,
// keeps the translator's text and selects the translator's recording; the
// job's work stays in the history and among the attachments.
func TestMergeTranslatorWorkDuringJobWins(t *testing.T) {
	for _, mc := range mergeCases() {
		for _, at := range []int64{beforeRead, duringJob} {
			t.Run(fmt.Sprintf("%s at %+d ms", mc.name, at-readAt), func(t *testing.T) {
				read := mc.read(t)
				ours := jobResult(t, read, mc)
				translator := clone(t, read)
				userEdit(translator.Cell(mc.asrCell), "<span>typed by the translator</span>", at)
				userSelect(translator.Cell(mc.ttsID), "audio-1770000300000-user0001", at+1)

				for dir, m := range map[string]*Notebook{
					"job first":        editorMerge(t, ours, translator),
					"translator first": editorMerge(t, translator, ours),
				} {
					if v := m.Cell(mc.asrCell).Value(); v != "<span>typed by the translator</span>" {
						t.Errorf("%s: text %q, want the translator's", dir, v)
					}
					c := m.Cell(mc.ttsID)
					if c.SelectedAudioID() != "audio-1770000300000-user0001" {
						t.Errorf("%s: selected audio %s, want the translator's", dir, c.SelectedAudioID())
					}
					if a, _ := c.CurrentAudio(); a.ID != "audio-1770000300000-user0001" {
						t.Errorf("%s: the editor plays %s", dir, a.ID)
					}
					if len(c.Attachments()) != 2 || !hasEditValue(m.Cell(mc.asrCell), "transcribed by the job") {
						t.Errorf("%s: the job's work is not kept alongside", dir)
					}
					checkEditorShape(t, m)
				}
			})
		}
	}
}

// When the translator did nothing during the job, the job's text and audio
// win the merge with the translator's copy.
func TestMergeJobWinsWhenTranslatorIdle(t *testing.T) {
	for _, mc := range mergeCases() {
		t.Run(mc.name, func(t *testing.T) {
			read := mc.read(t)
			ours := jobResult(t, read, mc)
			// The translator's copy is the version the job read; an edit of
			// another cell during the job does not matter.
			translator := clone(t, read)
			userEdit(translator.Cell(mc.other), "<span>elsewhere</span>", duringJob)
			for dir, m := range map[string]*Notebook{
				"job first":        editorMerge(t, ours, translator),
				"translator first": editorMerge(t, translator, ours),
			} {
				if v := m.Cell(mc.asrCell).Value(); v != "transcribed by the job" {
					t.Errorf("%s: text %q, want the job's", dir, v)
				}
				if a, _ := m.Cell(mc.ttsID).CurrentAudio(); a.ID != "audio-1770001200000-00000001" {
					t.Errorf("%s: the editor plays %q, want the job's take", dir, a.ID)
				}
				if m.Cell(mc.other).Value() != "<span>elsewhere</span>" {
					t.Errorf("%s: the translator's other edit was lost", dir)
				}
			}
		})
	}
}

func hasEditValue(c *Cell, value string) bool {
	for _, e := range c.Object().Path("metadata", "edits").Elems() {
		if v, _ := e.Get("value").Str(); v == value {
			return true
		}
	}
	return false
}
