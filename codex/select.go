package codex

import (
	"sort"
)

// Item is one selected cell with what a job needs to fetch and use it.
type Item struct {
	Notebook     string // notebook path in the project
	Book         string // notebook file name without extension
	CellID       string
	Reference    string // first reference, "" when the cell has none
	Text         string // plain text of the cell's value
	AudioID      string
	AudioURL     string
	FilesPath    string // .project/attachments/files/…
	PointersPath string // .project/attachments/pointers/… (the committed LFS pointer)
}

// Skip is a cell (or a filter item) left out, with the reason.
type Skip struct {
	Notebook  string
	CellID    string
	Reference string
	Reason    string
}

// Output is what an inference job produces for a cell.
type Output int

const (
	// NeedAudio: text-to-speech fills cells that have no usable audio.
	NeedAudio Output = iota + 1
	// NeedText: speech recognition fills cells that have no text.
	NeedText
)

// Skip reasons.
const (
	ReasonNoText       = "no text"
	ReasonNoAudio      = "no usable audio"
	ReasonAudioMissing = "audio file missing"
	ReasonNoMatch      = "filter item matched no cell"
	ReasonNotVerse     = "not a verse cell"
	ReasonCellNotFound = "cell not found"
	ReasonLocked       = "cell locked"
	ReasonHidden       = "cell hidden"
	ReasonParatext     = "paratext cell"
	// Training only: the cell's text or its audio is machine output nobody
	// validated.
	ReasonGeneratedText  = "generated text not validated"
	ReasonGeneratedAudio = "generated audio not validated"
)

func newItem(nbPath string, c *Cell, text string, a Attachment, hasAudio bool) Item {
	it := Item{Notebook: nbPath, Book: BookOf(nbPath), CellID: c.ID(), Text: text}
	if refs := c.References(); len(refs) > 0 {
		it.Reference = refs[0]
	}
	if hasAudio {
		it.AudioID, it.AudioURL = a.ID, a.URL
		it.FilesPath, it.PointersPath = AudioPaths(a.URL)
	}
	return it
}

func sortedPaths(nbs map[string]*Notebook) []string {
	paths := make([]string, 0, len(nbs))
	for p := range nbs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths
}

// exclusion says why no job chooses the cell, "" for a verse it may choose.
// ReasonNotVerse covers cells that are not content (style, milestone,
// deleted, merged); paratext and hidden cells are content the editor
// never records.
func exclusion(c *Cell) string {
	if c.Type() == "paratext" {
		if d := c.Data(); d.Get("deleted").Truthy() || d.Get("merged").Truthy() {
			return ReasonNotVerse
		}
		return ReasonParatext
	}
	switch {
	case !c.IsVerse():
		return ReasonNotVerse
	case c.IsParatext():
		return ReasonParatext
	case c.IsHidden():
		return ReasonHidden
	}
	return ""
}

// missingAudio is the reason a cell has no audio a job can fetch.
func missingAudio(c *Cell) string {
	if _, ok := c.CurrentAudio(); ok {
		return ReasonAudioMissing
	}
	return ReasonNoAudio
}

// TrainingOptions tunes SelectTrainingSet.
type TrainingOptions struct {
	// AllowGenerated lets in text and audio that are machine output nobody
	// validated; off, training sees only people's work.
	AllowGenerated bool
}

// SelectTrainingSet returns the verse cells the filter keeps that have text
// and fetchable audio, both people's work: text whose current value comes
// from a human edit or a validated generated one, audio that is not
// generated or was validated (see Cell.HumanText, Attachment.Human).
// Cells left out are reported with the reason (one per cell), except cells
// that are not content at all (ReasonNotVerse). Locked cells are kept: a
// lock stops edits, not reading. Order: notebook path, then cell order.
func SelectTrainingSet(nbs map[string]*Notebook, f Filter, opts TrainingOptions) ([]Item, []Skip) {
	inc, exc := compile(f.Include), compile(f.Exclude)
	var items []Item
	var skips []Skip
	for _, p := range sortedPaths(nbs) {
		book := BookOf(p)
		for _, c := range nbs[p].Cells() {
			reason := exclusion(c)
			if reason == ReasonNotVerse || !keeps(inc, exc, book, c) {
				continue
			}
			a, hasAudio := c.Audio()
			text := ""
			if reason == "" && hasAudio {
				text = PlainText(c.Value())
			}
			switch {
			case reason != "":
			case !hasAudio:
				reason = missingAudio(c)
			case text == "":
				reason = ReasonNoText
			case opts.AllowGenerated:
			case !c.HumanText():
				reason = ReasonGeneratedText
			case !a.Human():
				reason = ReasonGeneratedAudio
			}
			if reason != "" {
				skips = append(skips, skipOf(p, c, reason))
				continue
			}
			items = append(items, newItem(p, c, text, a, true))
		}
	}
	return items, skips
}

// SelectTraining is SelectTrainingSet with the default options (people's
// work only), without the report of what was left out.
func SelectTraining(nbs map[string]*Notebook, f Filter) []Item {
	items, _ := SelectTrainingSet(nbs, f, TrainingOptions{})
	return items
}

// SelectInference returns the cells an inference job should fill. Without
// Include these are the verse cells lacking the output; with Include, the
// cells in its scope that lack the output plus every cell named by verse
// reference or id, even if it has the output already (a request to
// regenerate). Exclude always wins. A cell has audio when the editor has a
// take to play (CurrentAudio, a take marked missing included), and text
// when its value has any. Text-to-speech needs the cell's text and speech
// recognition audio it can fetch; candidates without it are skipped with a
// reason, as are paratext, hidden and locked candidates and Include items
// that matched no cell.
func SelectInference(nbs map[string]*Notebook, want Output, f Filter) ([]Item, []Skip) {
	inc, exc := compile(f.Include), compile(f.Exclude)
	filtersEmpty := inc.empty() && exc.empty()
	used := map[string]bool{}
	hit := func(item string) { used[item] = true }
	var items []Item
	var skips []Skip
	for _, p := range sortedPaths(nbs) {
		book := BookOf(p)
		for _, c := range nbs[p].Cells() {
			var k cellKeys
			if !filtersEmpty {
				k = keysOf(book, c)
			}
			matched, named := inc.match(k, hit)
			reason := exclusion(c)
			if reason == ReasonNotVerse {
				if named {
					skips = append(skips, skipOf(p, c, ReasonNotVerse))
				}
				continue
			}
			if !matched && !inc.empty() {
				continue
			}
			if ex, _ := exc.match(k, nil); ex {
				continue
			}
			if want == NeedAudio && !named {
				if _, has := c.CurrentAudio(); has {
					continue // the common case: skip before extracting text
				}
			}
			text := PlainText(c.Value())
			if want == NeedText && text != "" && !named {
				continue
			}
			a, fetchable := c.Audio()
			switch {
			case reason != "":
			case c.IsLocked():
				reason = ReasonLocked
			case want == NeedAudio && text == "":
				reason = ReasonNoText
			case want == NeedText && !fetchable:
				reason = missingAudio(c)
			}
			if reason != "" {
				skips = append(skips, skipOf(p, c, reason))
				continue
			}
			items = append(items, newItem(p, c, text, a, fetchable))
		}
	}
	for _, it := range f.Include {
		if key := normItem(it); key != "" && !used[key] {
			skips = append(skips, Skip{CellID: it, Reason: ReasonNoMatch})
		}
	}
	return items, skips
}

// keeps applies compiled include/exclude lists to a cell, computing its
// match keys only when a list is non-empty.
func keeps(inc, exc *matcher, book string, c *Cell) bool {
	if inc.empty() && exc.empty() {
		return true
	}
	k := keysOf(book, c)
	if ok, _ := inc.match(k, nil); !ok && !inc.empty() {
		return false
	}
	ex, _ := exc.match(k, nil)
	return !ex
}

func skipOf(nbPath string, c *Cell, reason string) Skip {
	s := Skip{Notebook: nbPath, CellID: c.ID(), Reason: reason}
	if refs := c.References(); len(refs) > 0 {
		s.Reference = refs[0]
	}
	return s
}
