// Package codex reads and writes Codex notebooks (.codex and .source files):
// cells and their verse references, filters over them, the audio each cell
// uses, and cell-level patches that attach audio or set text and can be
// re-applied to a newer version of a notebook without losing edits.
package codex

import (
	"errors"
	"fmt"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Notebook is a parsed notebook. Everything not touched by a patch writes
// back exactly as it was read. A Notebook is not safe for concurrent
// mutation.
type Notebook struct {
	// Path is the notebook's path in the project (files/target/MRK.codex);
	// it names the attachment folder of new audio.
	Path   string
	root   *Value
	cells  []*Cell
	byID   map[string]*Cell
	prefix string
	suffix string
	size   int // bytes read, to size the output buffer
}

// Cell is one cell of a notebook, a view onto its JSON object.
type Cell struct {
	v *Value
}

// ErrNotNotebook reports JSON that is not a notebook object.
var ErrNotNotebook = errors.New("not a notebook")

// Parse reads notebook bytes. path is the notebook's path in the project
// (may be empty).
func Parse(path string, data []byte) (*Notebook, error) {
	return ParseLimited(path, data, maxDepth)
}

// ParseLimited is Parse refusing JSON nested deeper than maxNesting.
func ParseLimited(path string, data []byte, maxNesting int) (*Notebook, error) {
	root, prefix, suffix, err := parseValue(data, maxNesting)
	if err != nil {
		return nil, fmt.Errorf("parse notebook %s: %w", path, err)
	}
	if root.Kind() != Object {
		return nil, fmt.Errorf("parse notebook %s: %w", path, ErrNotNotebook)
	}
	cells := root.Get("cells")
	if cells != nil && cells.Kind() != Array {
		return nil, fmt.Errorf("parse notebook %s: %w: cells is not an array", path, ErrNotNotebook)
	}
	nb := &Notebook{Path: path, root: root, prefix: prefix, suffix: suffix, size: len(data)}
	nb.index()
	return nb, nil
}

func (nb *Notebook) index() {
	elems := nb.root.Get("cells").Elems()
	backing := make([]Cell, len(elems))
	nb.cells = make([]*Cell, len(elems))
	nb.byID = make(map[string]*Cell, len(elems))
	for i, e := range elems {
		c := &backing[i]
		c.v = e
		nb.cells[i] = c
		if id := c.ID(); id != "" {
			if _, dup := nb.byID[id]; !dup {
				nb.byID[id] = c
			}
		}
	}
}

// Marshal writes the notebook in the editor's format, keeping the trailing
// newline (or its absence) of the parsed file.
func (nb *Notebook) Marshal() []byte {
	// Patches add a few hundred bytes per changed cell.
	b := make([]byte, 0, nb.size+nb.size/2+4096)
	b = append(b, nb.prefix...)
	b = AppendJSON(b, nb.root)
	return append(b, nb.suffix...)
}

// Root is the notebook's top-level object.
func (nb *Notebook) Root() *Value { return nb.root }

// Cells lists the cells in order, as parsed.
func (nb *Notebook) Cells() []*Cell { return nb.cells }

// Cell finds a cell by metadata.id (the first one when ids repeat).
func (nb *Notebook) Cell(id string) *Cell { return nb.byID[id] }

// Book is the notebook's file name without extension, which names its
// attachment folder.
func (nb *Notebook) Book() string { return BookOf(nb.Path) }

// BookOf returns a notebook path's file name without extension.
func BookOf(notebookPath string) string {
	base := path.Base(strings.ReplaceAll(notebookPath, "\\", "/"))
	if base == "." || base == "/" {
		return ""
	}
	return strings.TrimSuffix(base, path.Ext(base))
}

// Object is the cell's JSON object.
func (c *Cell) Object() *Value { return c.v }

func (c *Cell) meta() *Value { return c.v.Get("metadata") }

func (c *Cell) metaString(key string) string {
	s, _ := c.meta().Get(key).Str()
	return s
}

// ID is metadata.id: a UUID, or a legacy reference like "GEN 1:1".
func (c *Cell) ID() string { return c.metaString("id") }

// Type is metadata.type (text, paratext, style, milestone), "" when absent.
func (c *Cell) Type() string { return c.metaString("type") }

// Value is the cell's raw HTML.
func (c *Cell) Value() string {
	s, _ := c.v.Get("value").Str()
	return s
}

// Text is the plain text of the cell's value.
func (c *Cell) Text() string { return PlainText(c.Value()) }

// Data is metadata.data.
func (c *Cell) Data() *Value { return c.meta().Get("data") }

// References are the verse references the cell carries:
// data.globalReferences when present, else the reference in a legacy id.
// A child cell ("GEN 1:1:cue-…") belongs to its parent's reference.
func (c *Cell) References() []string {
	var refs []string
	for _, r := range c.Data().Get("globalReferences").Elems() {
		s, ok := r.Str()
		if !ok || s == "" {
			continue
		}
		if parent := LegacyReference(s); parent != "" {
			s = parent
		}
		refs = append(refs, s)
	}
	if len(refs) > 0 {
		return refs
	}
	if r := LegacyReference(c.ID()); r != "" {
		return []string{r}
	}
	return nil
}

// LegacyReference returns the "BOOK C:V" a legacy cell id names, or "": a
// 2–3 character book code (upper-case letters, digits), a space, a chapter
// and a verse or verse range; a child id ("GEN 1:1:cue-…") names its
// parent's reference.
func LegacyReference(id string) string {
	if len(id) < 6 {
		return ""
	}
	book, rest, ok := strings.Cut(id, " ")
	if !ok || len(book) < 2 || len(book) > 3 || !isBookCode(book) {
		return ""
	}
	ch, rest, ok := strings.Cut(rest, ":")
	if !ok || !isDigits(ch) {
		return ""
	}
	verse, _, _ := strings.Cut(rest, ":")
	first, last, isRange := strings.Cut(verse, "-")
	if !isDigits(first) || (isRange && !isDigits(last)) {
		return ""
	}
	return id[:len(book)+1+len(ch)+1+len(verse)]
}

func isBookCode(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// IsVerse reports a text cell that is neither deleted nor merged. Old
// notebooks leave type out on text cells; such a cell counts as a verse
// when it carries a reference.
func (c *Cell) IsVerse() bool {
	switch c.Type() {
	case "text":
	case "":
		if c.meta().Kind() != Object || len(c.References()) == 0 {
			return false
		}
	default:
		return false
	}
	d := c.Data()
	return !d.Get("deleted").Truthy() && !d.Get("merged").Truthy()
}

// IsLocked reports metadata.isLocked: the editor refuses text and audio
// changes to the cell.
func (c *Cell) IsLocked() bool { return c.meta().Get("isLocked").Truthy() }

// IsHidden reports data.hidden: the editor does not show the cell.
func (c *Cell) IsHidden() bool { return c.Data().Get("hidden").Truthy() }

// IsParatext reports a paratext cell: typed so, or a legacy one that says
// so in its id ("… 1:paratext-…") or in data.type. The editor never records
// audio for them.
func (c *Cell) IsParatext() bool {
	if c.Type() == "paratext" || strings.Contains(c.ID(), "paratext-") {
		return true
	}
	t, _ := c.Data().Get("type").Str()
	return t == "paratext"
}

// lastValueEdit returns the newest edit of the cell's value.
func (c *Cell) lastValueEdit() (value string, ts int64, ok bool) {
	for _, e := range c.meta().Get("edits").Elems() {
		if !isValueEdit(e) {
			continue
		}
		t, _ := e.Get("timestamp").Int64()
		if !ok || t >= ts {
			value, _ = e.Get("value").Str()
			ts, ok = t, true
		}
	}
	return value, ts, ok
}

// ParseAll parses notebooks (by path) on all CPUs.
func ParseAll(files map[string][]byte) (map[string]*Notebook, error) {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	// Largest first, so one big book does not finish last on its own.
	sort.Slice(paths, func(i, j int) bool { return len(files[paths[i]]) > len(files[paths[j]]) })
	out := make([]*Notebook, len(paths))
	errs := make([]error, len(paths))
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < min(runtime.GOMAXPROCS(0), len(paths)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(paths) {
					return
				}
				out[i], errs[i] = Parse(paths[i], files[paths[i]])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	nbs := make(map[string]*Notebook, len(paths))
	for i, p := range paths {
		nbs[p] = out[i]
	}
	return nbs, nil
}
