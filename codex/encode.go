package codex

import "unicode/utf8"

// AppendJSON writes v the way JSON.stringify(v, null, 2) does: two-space
// indent, non-ASCII literal, no HTML escaping, empty containers as [] and {}.
func AppendJSON(b []byte, v *Value) []byte {
	return appendValue(b, v, 0)
}

const spaces = "                                                                "

func appendIndent(b []byte, n int) []byte {
	b = append(b, '\n')
	for n > len(spaces) {
		b = append(b, spaces...)
		n -= len(spaces)
	}
	return append(b, spaces[:n]...)
}

func appendValue(b []byte, v *Value, depth int) []byte {
	switch v.Kind() {
	case Null:
		return append(b, "null"...)
	case Bool, Number:
		return append(b, v.s...)
	case String:
		return appendString(b, v.s)
	case Array:
		if len(v.elems) == 0 {
			return append(b, "[]"...)
		}
		b = append(b, '[')
		for i, e := range v.elems {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendIndent(b, 2*(depth+1))
			b = appendValue(b, e, depth+1)
		}
		b = appendIndent(b, 2*depth)
		return append(b, ']')
	case Object:
		if len(v.mems) == 0 {
			return append(b, "{}"...)
		}
		b = append(b, '{')
		for i, m := range v.mems {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendIndent(b, 2*(depth+1))
			b = appendString(b, m.Key)
			b = append(b, ':', ' ')
			b = appendValue(b, m.Value, depth+1)
		}
		b = appendIndent(b, 2*depth)
		return append(b, '}')
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString quotes s as JSON.stringify does: only '"', '\\' and control
// characters are escaped, and lone surrogates (kept as 3-byte sequences by
// the parser) come back as \udxxx. A high/low pair stored separately is
// joined into one literal character, as JavaScript would print it.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != 0xED {
			i++
			continue
		}
		if c == 0xED {
			hi, ok := surrogateAt(s, i)
			if !ok {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			if lo, ok := surrogateAt(s, i+3); ok && hi < 0xDC00 && lo >= 0xDC00 {
				b = utf8.AppendRune(b, 0x10000+(hi-0xD800)<<10+(lo-0xDC00))
				i += 6
			} else {
				b = append(b, '\\', 'u', hexDigits[hi>>12], hexDigits[hi>>8&0xF], hexDigits[hi>>4&0xF], hexDigits[hi&0xF])
				i += 3
			}
			start = i
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// surrogateAt decodes a 3-byte surrogate sequence (ED A0..BF xx) at s[i].
func surrogateAt(s string, i int) (rune, bool) {
	if i+2 >= len(s) || s[i] != 0xED || s[i+1] < 0xA0 || s[i+1] > 0xBF || s[i+2]&0xC0 != 0x80 {
		return 0, false
	}
	return 0xD000 | rune(s[i+1]&0x3F)<<6 | rune(s[i+2]&0x3F), true
}
