package codex

import (
	"regexp"
	"strconv"
	"strings"
)

// Filter narrows a selection. Each item is one of:
//   - a verse reference "MAT 1:1", matched against a cell's references or
//     its legacy id (any item containing ':'); a range "MAT 1:1-5" also
//     matches each verse in it;
//   - a chapter "MAT 1" (a book code, a space, a number);
//   - a book "MAT" or "1JN" (2–3 letters/digits), which also matches every
//     cell of a notebook of that name;
//   - otherwise a cell id (UUID), matched against metadata.id.
//
// An empty Include selects everything; Exclude always wins.
type Filter struct {
	Include []string
	Exclude []string
}

var (
	bookItem    = regexp.MustCompile(`^[0-9A-Za-z]{2,3}$`)
	chapterItem = regexp.MustCompile(`^(\S+) ([0-9]+)$`)
)

type itemKind int

const (
	verseItem itemKind = iota
	chapterKind
	bookKind
	idItem
)

func classify(item string) itemKind {
	switch {
	case strings.Contains(item, ":"):
		return verseItem
	case chapterItem.MatchString(item):
		return chapterKind
	case bookItem.MatchString(item):
		return bookKind
	}
	return idItem
}

// matcher is a compiled item list; keys are upper-cased so "mat 1:1" and
// UUIDs in either case match.
type matcher struct {
	verses   map[string]bool
	chapters map[string]bool
	books    map[string]bool
	ids      map[string]bool
	ranges   []verseRange
}

// verseRange is a "BOOK C:V1-V2" item.
type verseRange struct {
	key      string // the item, for reporting
	chapter  string // "BOOK C"
	from, to int
}

// parseRange splits "BOOK C:V1-V2"; ok is false for anything else.
func parseRange(key string) (verseRange, bool) {
	chapter, verses, ok := strings.Cut(key, ":")
	if !ok || !chapterItem.MatchString(chapter) {
		return verseRange{}, false
	}
	a, b, ok := strings.Cut(verses, "-")
	from, err1 := strconv.Atoi(a)
	to, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || from > to {
		return verseRange{}, false
	}
	return verseRange{key: key, chapter: chapter, from: from, to: to}, true
}

// inRange reports the range items that contain ref ("BOOK C:V").
func (m *matcher) inRange(ref string, note func(key string)) {
	chapter, verse, ok := strings.Cut(ref, ":")
	if !ok {
		return
	}
	v, err := strconv.Atoi(verse)
	if err != nil {
		return
	}
	for _, r := range m.ranges {
		if r.chapter == chapter && r.from <= v && v <= r.to {
			note(r.key)
		}
	}
}

// normItem is the matching key of a filter item.
func normItem(raw string) string {
	return strings.ToUpper(strings.Join(strings.Fields(raw), " "))
}

func compile(items []string) *matcher {
	m := &matcher{
		verses: map[string]bool{}, chapters: map[string]bool{},
		books: map[string]bool{}, ids: map[string]bool{},
	}
	for _, raw := range items {
		key := normItem(raw)
		if key == "" {
			continue
		}
		switch classify(key) {
		case verseItem:
			m.verses[key] = true
			if r, ok := parseRange(key); ok {
				m.ranges = append(m.ranges, r)
			}
		case chapterKind:
			m.chapters[key] = true
		case bookKind:
			m.books[key] = true
		default:
			m.ids[key] = true
		}
	}
	return m
}

func (m *matcher) empty() bool {
	return len(m.verses)+len(m.chapters)+len(m.books)+len(m.ids) == 0
}

// cellKeys are what items are matched against, computed once per cell.
type cellKeys struct {
	book string   // notebook name, upper-cased
	id   string   // metadata.id as written
	refs []string // upper-cased references
}

func keysOf(book string, c *Cell) cellKeys {
	k := cellKeys{book: strings.ToUpper(book), id: c.ID()}
	for _, r := range c.References() {
		k.refs = append(k.refs, strings.ToUpper(r))
	}
	return k
}

// match reports whether any item matches, and which items (as normItem
// keys) matched, so the caller can report items that matched nothing. named is true
// when a verse or id item matched: the cell was asked for by name rather
// than by chapter or book.
func (m *matcher) match(k cellKeys, hit func(item string)) (matched, named bool) {
	note := func(set map[string]bool, key string) bool {
		if !set[key] {
			return false
		}
		matched = true
		if hit != nil {
			hit(key)
		}
		return true
	}
	// ToUpper allocates only for ids with lower-case letters (UUIDs), and
	// only UUID items are looked up with those.
	var id string
	if len(m.ids) > 0 || strings.Contains(k.id, ":") {
		id = strings.ToUpper(k.id)
	}
	if len(m.ids) > 0 && note(m.ids, id) {
		named = true
	}
	if id != "" && note(m.verses, id) {
		named = true
	}
	note(m.books, k.book)
	for _, r := range k.refs {
		if note(m.verses, r) {
			named = true
		}
	}
	if len(m.ranges) > 0 {
		for _, r := range k.refs {
			m.inRange(r, func(key string) {
				matched, named = true, true
				if hit != nil {
					hit(key)
				}
			})
		}
	}
	if len(m.chapters) > 0 || len(m.books) > 0 {
		for i := 0; i <= len(k.refs); i++ {
			s := id
			if i < len(k.refs) {
				s = k.refs[i]
			}
			book, cv, ok := strings.Cut(s, " ")
			if !ok {
				continue
			}
			note(m.books, book)
			if ch, _, ok := strings.Cut(cv, ":"); ok {
				note(m.chapters, book+" "+ch)
			}
		}
	}
	return matched, named
}

// Match reports whether the filter keeps a cell of the notebook named book.
// It compiles the lists on each call; selections compile them once.
func (f Filter) Match(book string, c *Cell) bool {
	return keeps(compile(f.Include), compile(f.Exclude), book, c)
}
