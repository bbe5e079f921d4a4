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
	ReasonNoMatch      = "filter item matched no cell"
	ReasonNotVerse     = "not a verse cell"
	ReasonCellNotFound = "cell not found"
)

func newItem(nbPath string, c *Cell, text string) Item {
	it := Item{Notebook: nbPath, Book: BookOf(nbPath), CellID: c.ID(), Text: text}
	if refs := c.References(); len(refs) > 0 {
		it.Reference = refs[0]
	}
	if a, ok := c.Audio(); ok {
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

// SelectTraining returns the verse cells the filter keeps that have both
// text and usable audio, in notebook-path then cell order.
func SelectTraining(nbs map[string]*Notebook, f Filter) []Item {
	inc, exc := compile(f.Include), compile(f.Exclude)
	var out []Item
	for _, p := range sortedPaths(nbs) {
		book := BookOf(p)
		for _, c := range nbs[p].Cells() {
			if !c.IsVerse() {
				continue
			}
			if !keeps(inc, exc, book, c) {
				continue
			}
			if _, ok := c.Audio(); !ok {
				continue
			}
			text := PlainText(c.Value())
			if text == "" {
				continue
			}
			out = append(out, newItem(p, c, text))
		}
	}
	return out
}

// SelectInference returns the cells an inference job should fill. Without
// Include these are the verse cells lacking the output; with Include, the
// cells in its scope that lack the output plus every cell named by verse
// reference or id, even if it has the output already (a request to
// regenerate). Exclude always wins. Text-to-speech needs the cell's text and
// speech recognition its audio; cells without it are skipped with a reason,
// as are Include items that matched no cell.
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
			if !c.IsVerse() {
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
			_, hasAudio := c.Audio()
			if want == NeedAudio && hasAudio && !named {
				continue // the common case: skip before extracting text
			}
			text := PlainText(c.Value())
			if want == NeedText && text != "" && !named {
				continue
			}
			switch {
			case want == NeedAudio && text == "":
				skips = append(skips, skipOf(p, c, ReasonNoText))
			case want == NeedText && !hasAudio:
				skips = append(skips, skipOf(p, c, ReasonNoAudio))
			default:
				items = append(items, newItem(p, c, text))
			}
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
