package codex

import (
	"html"
	"strings"
	"unicode"
	"unicode/utf8"
)

// blockTags separate words; other tags (span, b, i…) may split a word and
// are removed without a gap.
var blockTags = map[string]bool{
	"br": true, "p": true, "div": true, "li": true, "ul": true, "ol": true,
	"h1": true, "h2": true, "h3": true, "h4": true, "h5": true, "h6": true,
	"tr": true, "td": true, "th": true, "table": true, "hr": true,
	"section": true, "blockquote": true,
}

// PlainText turns cell HTML into the text a model reads: tags removed
// (footnote markers with their content), entities decoded, whitespace
// collapsed to single spaces.
func PlainText(s string) string {
	if !strings.ContainsAny(s, "<&") {
		return collapseSpace(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	skipDepth := 0 // inside a footnote marker, script or style
	skipTag := ""
	for i := 0; i < len(s); {
		c := s[i]
		if c != '<' {
			j := strings.IndexByte(s[i:], '<')
			if j < 0 {
				j = len(s) - i
			}
			if skipDepth == 0 {
				b.WriteString(s[i : i+j])
			}
			i += j
			continue
		}
		end := strings.IndexByte(s[i:], '>')
		if end < 0 { // a lone '<' is text
			if skipDepth == 0 {
				b.WriteString(s[i:])
			}
			break
		}
		tag := s[i+1 : i+end]
		i += end + 1
		name, closing := tagName(tag)
		if skipDepth > 0 {
			if name == skipTag {
				if closing {
					skipDepth--
				} else if !strings.HasSuffix(tag, "/") {
					skipDepth++
				}
			}
			continue
		}
		if !closing && isSkipped(name, tag) {
			skipDepth, skipTag = 1, name
			continue
		}
		if blockTags[name] {
			b.WriteByte(' ')
		}
	}
	return collapseSpace(html.UnescapeString(b.String()))
}

func tagName(tag string) (name string, closing bool) {
	tag = strings.TrimSpace(tag)
	if strings.HasPrefix(tag, "/") {
		closing = true
		tag = tag[1:]
	}
	end := strings.IndexAny(tag, " \t\n\r/")
	if end >= 0 {
		tag = tag[:end]
	}
	return strings.ToLower(tag), closing
}

func isSkipped(name, tag string) bool {
	switch name {
	case "script", "style":
		return true
	case "sup":
		return strings.Contains(tag, "footnote")
	}
	return false
}

func collapseSpace(s string) string {
	if isCollapsed(s) {
		return s
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\u00a0", " ")), " ")
}

// isCollapsed reports text whose only whitespace is single ASCII spaces
// between words: the usual cell, returned without copying.
func isCollapsed(s string) bool {
	if s == "" {
		return true
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	prevSpace := false
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if unicode.IsSpace(r) {
				return false
			}
			i += n
			prevSpace = false
			continue
		}
		i++
		switch c {
		case ' ':
			if prevSpace {
				return false
			}
			prevSpace = true
			continue
		case '\t', '\n', '\r', '\v', '\f':
			return false
		}
		prevSpace = false
	}
	return true
}

const (
	attachmentsDir = ".project/attachments/"
	filesDir       = attachmentsDir + "files/"
	pointersDir    = attachmentsDir + "pointers/"
)

// AudioPaths maps an attachment url to the editor's local copy
// (.project/attachments/files/<BOOK>/<id>.<ext>, git-ignored) and its
// committed LFS pointer (.project/attachments/pointers/<BOOK>/<id>.<ext>).
// Urls that already name pointers/, absolute paths into a project folder
// and relative urls ("files/<BOOK>/…", "<BOOK>/…") are accepted.
func AudioPaths(url string) (filesPath, pointersPath string) {
	u := strings.ReplaceAll(url, "\\", "/")
	if i := strings.LastIndex(u, "attachments/"); i >= 0 {
		u = u[i+len("attachments/"):]
	}
	for strings.HasPrefix(u, "./") || strings.HasPrefix(u, "/") {
		u = strings.TrimPrefix(strings.TrimPrefix(u, "./"), "/")
	}
	if rest, ok := strings.CutPrefix(u, "files/"); ok {
		u = rest
	} else if rest, ok := strings.CutPrefix(u, "pointers/"); ok {
		u = rest
	}
	return filesDir + u, pointersDir + u
}

// AttachmentURL is the url the editor records for a new recording of a cell
// in the notebook at notebookPath.
func AttachmentURL(notebookPath, audioID, ext string) string {
	return filesDir + BookOf(notebookPath) + "/" + audioID + "." + strings.TrimPrefix(ext, ".")
}

// EscapeText makes plain text (a transcription) safe as a cell's HTML value:
// only &, < and > need escaping in element content.
func EscapeText(plain string) string {
	return textEscaper.Replace(plain)
}

var textEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")
