package codex

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// maxDepth bounds nesting so hostile input cannot exhaust the stack.
const maxDepth = 1000

// ErrSyntax reports malformed JSON.
var ErrSyntax = errors.New("json syntax")

// parser reads from b; src is b as one string so that unescaped strings and
// number literals are substrings of it rather than separate allocations.
// Nodes come from slabs and member/element lists are gathered on shared
// stacks, then copied out at their exact size.
type parser struct {
	b     []byte
	src   string
	i     int
	depth int
	limit int // deepest nesting accepted
	slab  []Value
	mems  []Member // stack of members being read
	elems []*Value // stack of elements being read
	// Finished member and element lists are cut from these chunks; the
	// three-index slices keep a later append from spilling into a neighbour.
	memChunk  []Member
	elemChunk []*Value
}

func (p *parser) finishMembers(mark int) []Member {
	n := len(p.mems) - mark
	if n > cap(p.memChunk)-len(p.memChunk) {
		p.memChunk = make([]Member, 0, max(n, 1024))
	}
	start := len(p.memChunk)
	p.memChunk = append(p.memChunk, p.mems[mark:]...)
	clear(p.mems[mark:])
	p.mems = p.mems[:mark]
	return p.memChunk[start:len(p.memChunk):len(p.memChunk)]
}

func (p *parser) finishElems(mark int) []*Value {
	n := len(p.elems) - mark
	if n > cap(p.elemChunk)-len(p.elemChunk) {
		p.elemChunk = make([]*Value, 0, max(n, 1024))
	}
	start := len(p.elemChunk)
	p.elemChunk = append(p.elemChunk, p.elems[mark:]...)
	clear(p.elems[mark:])
	p.elems = p.elems[:mark]
	return p.elemChunk[start:len(p.elemChunk):len(p.elemChunk)]
}

func (p *parser) node(k Kind, s string) *Value {
	if len(p.slab) == cap(p.slab) {
		p.slab = make([]Value, 0, 512)
	}
	p.slab = append(p.slab, Value{kind: k, s: s})
	return &p.slab[len(p.slab)-1]
}

func (p *parser) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrSyntax, what, p.i)
}

func (p *parser) skipSpace() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value() (*Value, error) {
	p.skipSpace()
	if p.i >= len(p.b) {
		return nil, p.fail("unexpected end")
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		return p.node(String, s), nil
	case c == 't':
		return p.word("true", Bool)
	case c == 'f':
		return p.word("false", Bool)
	case c == 'n':
		return p.word("null", Null)
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	return nil, p.fail("unexpected character")
}

func (p *parser) word(w string, k Kind) (*Value, error) {
	if len(p.b)-p.i < len(w) || string(p.b[p.i:p.i+len(w)]) != w {
		return nil, p.fail("bad literal")
	}
	p.i += len(w)
	if k == Null {
		return p.node(Null, ""), nil
	}
	return p.node(k, w), nil
}

func (p *parser) digits() int {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	return p.i - start
}

func (p *parser) number() (*Value, error) {
	start := p.i
	if p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if p.digits() == 0 {
		return nil, p.fail("bad number")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return nil, p.fail("bad fraction")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return nil, p.fail("bad exponent")
		}
	}
	return p.node(Number, p.src[start:p.i]), nil
}

func (p *parser) str() (string, error) {
	p.i++ // opening quote
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '"' {
			s := p.src[start:p.i]
			p.i++
			return s, nil
		}
		if c == '\\' {
			return p.escapedStr(start)
		}
		if c < 0x20 {
			return "", p.fail("control character in string")
		}
		p.i++
	}
	return "", p.fail("unterminated string")
}

// escapedStr finishes a string that has escapes. Lone surrogates are kept
// as their 3-byte (WTF-8) form so that writing restores the same escape.
func (p *parser) escapedStr(start int) (string, error) {
	buf := make([]byte, 0, p.i-start+16)
	buf = append(buf, p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return string(buf), nil
		case c < 0x20:
			return "", p.fail("control character in string")
		case c != '\\':
			buf = append(buf, c)
			p.i++
			continue
		}
		p.i++
		if p.i >= len(p.b) {
			break
		}
		e := p.b[p.i]
		p.i++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", p.fail("bad unicode escape")
			}
			if r >= 0xD800 && r < 0xDC00 && p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
				save := p.i
				p.i += 2
				if lo, ok := p.hex4(); ok && lo >= 0xDC00 && lo < 0xE000 {
					buf = utf8.AppendRune(buf, 0x10000+(r-0xD800)<<10+(lo-0xDC00))
					continue
				}
				p.i = save
			}
			buf = appendWTF8(buf, r)
		default:
			return "", p.fail("bad escape")
		}
	}
	return "", p.fail("unterminated string")
}

func (p *parser) hex4() (rune, bool) {
	if len(p.b)-p.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}

// appendWTF8 encodes r as UTF-8, surrogates included (utf8.AppendRune would
// turn them into U+FFFD).
func appendWTF8(b []byte, r rune) []byte {
	if r >= 0xD800 && r < 0xE000 {
		return append(b, 0xED, byte(0x80|(r>>6)&0x3F), byte(0x80|r&0x3F))
	}
	return utf8.AppendRune(b, r)
}

func (p *parser) enter() error {
	p.depth++
	if p.depth > p.limit {
		return p.fail(fmt.Sprintf("nesting deeper than %d levels", p.limit))
	}
	return nil
}

func (p *parser) array() (*Value, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	p.i++
	v := p.node(Array, "")
	p.skipSpace()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return v, nil
	}
	mark := len(p.elems)
	for {
		e, err := p.value()
		if err != nil {
			return nil, err
		}
		p.elems = append(p.elems, e)
		p.skipSpace()
		if p.i >= len(p.b) {
			return nil, p.fail("unterminated array")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			v.elems = p.finishElems(mark)
			return v, nil
		default:
			return nil, p.fail("expected , or ]")
		}
	}
}

func (p *parser) object() (*Value, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	p.i++
	v := p.node(Object, "")
	p.skipSpace()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return v, nil
	}
	mark := len(p.mems)
	for {
		p.skipSpace()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, p.fail("expected key")
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, p.fail("expected :")
		}
		p.i++
		e, err := p.value()
		if err != nil {
			return nil, err
		}
		p.mems = append(p.mems, Member{Key: k, Value: e})
		p.skipSpace()
		if p.i >= len(p.b) {
			return nil, p.fail("unterminated object")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			v.mems = p.finishMembers(mark)
			return v, nil
		default:
			return nil, p.fail("expected , or }")
		}
	}
}

// ParseValue parses one JSON document. It returns the bytes around the value
// (a leading byte-order mark, trailing whitespace) so they can be written
// back as found.
func ParseValue(b []byte) (v *Value, prefix, suffix string, err error) {
	return parseValue(b, maxDepth)
}

func parseValue(b []byte, depth int) (v *Value, prefix, suffix string, err error) {
	p := &parser{b: b, src: string(b), limit: min(depth, maxDepth)}
	if len(b) >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF {
		prefix = string(b[:3])
		p.i = 3
	}
	v, err = p.value()
	if err != nil {
		return nil, "", "", err
	}
	end := p.i
	p.skipSpace()
	if p.i != len(b) {
		return nil, "", "", p.fail("trailing data")
	}
	return v, prefix, string(b[end:]), nil
}

// jsNumber formats f as JavaScript does for finite values.
func jsNumber(f float64) string {
	a := f
	if a < 0 {
		a = -a
	}
	if a == 0 || (a >= 1e-6 && a < 1e21) {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // e.g. 1e+21, 1.5e-07
	mant, exp, _ := cut(s, 'e')
	sign := exp[0]
	exp = exp[1:]
	for len(exp) > 1 && exp[0] == '0' {
		exp = exp[1:]
	}
	return mant + "e" + string(sign) + exp
}

func cut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
