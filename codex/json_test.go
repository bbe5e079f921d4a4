package codex

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// notebookFiles lists every notebook under testdata (real editor files and
// the synthetic one).
func notebookFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"testdata/fixtures/*.codex", "testdata/fixtures/*.source", "testdata/*.codex"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 6 {
		t.Fatalf("expected at least 6 notebook files, found %d", len(files))
	}
	return files
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTripEveryFixture(t *testing.T) {
	for _, f := range notebookFiles(t) {
		data := readFile(t, f)
		// Real files have no trailing newline, the current editor writes
		// one: both forms must survive.
		variants := map[string][]byte{"as found": data}
		if bytes.HasSuffix(data, []byte("\n")) {
			variants["without newline"] = bytes.TrimSuffix(data, []byte("\n"))
		} else {
			variants["with newline"] = append(append([]byte{}, data...), '\n')
		}
		for name, in := range variants {
			nb, err := Parse(f, in)
			if err != nil {
				t.Fatalf("%s (%s): %v", f, name, err)
			}
			out := nb.Marshal()
			if !bytes.Equal(out, in) {
				i := firstDiff(out, in)
				t.Errorf("%s (%s): round trip differs at byte %d: got %q want %q", f, name, i, around(out, i), around(in, i))
			}
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func around(b []byte, i int) string {
	lo, hi := max(0, i-30), min(len(b), i+30)
	return string(b[lo:hi])
}

func TestStringsWrittenAsJSONStringify(t *testing.T) {
	cases := []struct{ in, want string }{
		{`"<b>a & b</b>"`, `"<b>a & b</b>"`}, // no HTML escaping
		{`"\u00e9t\u00e9 ሰላም"`, `"été ሰላም"`}, // non-ASCII literal
		{`"a\/b"`, `"a/b"`},                  // solidus unescaped
		{`"\u0001\b\f\n\r\t\u001f"`, `"\u0001\b\f\n\r\t\u001f"`},
		{`"q\"b\\"`, `"q\"b\\"`},
		{`"\u007f\u2028"`, "\"\u007f\u2028\""}, // not escaped by JS
		{`"\ud83d\ude00"`, `"😀"`},              // surrogate pair joined
		{`"\ud800x"`, `"\ud800x"`},             // lone high surrogate kept
		{`"x\udc00"`, `"x\udc00"`},             // lone low surrogate kept
		{`"\uDBFF"`, `"\udbff"`},               // JS writes lowercase hex
		{`1.50e+3`, `1.50e+3`},                 // number literal verbatim
		{`-0`, `-0`},
		{`[]`, `[]`},
		{`{}`, `{}`},
		{`{"b":1,"a":[true,null,{}]}`, "{\n  \"b\": 1,\n  \"a\": [\n    true,\n    null,\n    {}\n  ]\n}"},
	}
	for _, c := range cases {
		v, _, _, err := ParseValue([]byte(c.in))
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if got := string(AppendJSON(nil, v)); got != c.want {
			t.Errorf("%s: got %s want %s", c.in, got, c.want)
		}
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	bad := []string{
		``, `{`, `{"a"}`, `{"a":1,}`, `[1,]`, `[1 2]`, `"abc`, "\"a\nb\"", `"\x"`, `"\u12"`,
		`01`, `1.`, `1e`, `-`, `tru`, `nul`, `{"a":1} x`, `{'a':1}`,
		strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1),
	}
	for _, b := range bad {
		if _, _, _, err := ParseValue([]byte(b)); err == nil {
			t.Errorf("%q: parsed without error", b)
		}
	}
	if _, err := Parse("x.codex", []byte(`[1]`)); err == nil {
		t.Error("an array parsed as a notebook")
	}
	if _, err := Parse("x.codex", []byte(`{"cells": 3}`)); err == nil {
		t.Error("non-array cells parsed as a notebook")
	}
}

func TestDuplicateKeysLastWinsAndBothKept(t *testing.T) {
	in := "{\n  \"a\": 1,\n  \"a\": 2\n}"
	v, _, _, err := ParseValue([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Get("a").Literal(); got != "2" {
		t.Errorf("Get(a) = %s, want 2", got)
	}
	if got := string(AppendJSON(nil, v)); got != in {
		t.Errorf("duplicate keys not kept: %s", got)
	}
}

func TestNewFloatNonFinite(t *testing.T) {
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if got := string(AppendJSON(nil, NewFloat(f))); got != "null" {
			t.Errorf("NewFloat(%v) writes %s", f, got)
		}
	}
}

func TestJSNumber(t *testing.T) {
	cases := map[float64]string{
		4.21: "4.21", 14: "14", 0: "0", 0.000001: "0.000001", 1e-7: "1e-7",
		1e21: "1e+21", 123456789012: "123456789012", -2.5: "-2.5", 1.5e-10: "1.5e-10",
	}
	for f, want := range cases {
		if got := jsNumber(f); got != want {
			t.Errorf("jsNumber(%v) = %s, want %s", f, got, want)
		}
	}
}

// FuzzParse: whatever parses must write out, parse again and write out the
// same bytes, without panicking.
func FuzzParse(f *testing.F) {
	// Small seeds keep the fuzzer fast: one real cell of each shape.
	mrk := loadNotebook(f, "testdata/MRK.codex", "")
	for _, id := range []string{uuidOf("MRK 1:1"), uuidOf("MRK 1:0:paratext-intro"), "MRK 2:1", uuidOf("MRK 2:2")} {
		one := NewObject(Member{"cells", NewArray(mrk.Cell(id).Object())}, Member{"metadata", NewObject()})
		f.Add(AppendJSON(nil, one))
	}
	for _, s := range []string{`{"cells":[]}`, `"\ud800\udc00"`, `{"a":"\ud83d"}`, "\"\xed\xa0\xbd\xed\xb8\x80\"", "\"\xff\"", `[1e5,-0.0]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The whitespace fast path agrees with the general one.
		s := string(data)
		if got, want := collapseSpace(s), strings.Join(strings.Fields(strings.ReplaceAll(s, "\u00a0", " ")), " "); got != want {
			t.Fatalf("collapseSpace(%q) = %q, want %q", s, got, want)
		}
		v, prefix, suffix, err := ParseValue(data)
		if err != nil {
			return
		}
		out := append([]byte(prefix), AppendJSON(nil, v)...)
		out = append(out, suffix...)
		v2, p2, s2, err := ParseValue(out)
		if err != nil {
			t.Fatalf("output does not parse: %v\n%q", err, out)
		}
		out2 := append([]byte(p2), AppendJSON(nil, v2)...)
		out2 = append(out2, s2...)
		if !bytes.Equal(out, out2) {
			t.Fatalf("unstable:\n%q\n%q", out, out2)
		}
		if nb, err := Parse("f.codex", data); err == nil {
			// Accessors must not panic on any shape.
			for _, c := range nb.Cells() {
				_ = c.IsVerse()
				_, _ = c.Audio()
				_ = PlainText(c.Value())
			}
		}
	})
}
