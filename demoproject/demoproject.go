// Package demoproject builds a small Codex project with recorded verses:
// public-domain Bible text, speech from espeak-ng, recordings stored as the
// Codex editor stores them (LFS pointers plus the real files). The demo and
// the end-to-end tests use it.
package demoproject

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gpu-worker/project"
)

// Verse is one cell of the generated notebook.
type Verse struct {
	Ref    string // "MRK 1:1"
	Text   string
	Record bool // has a recording
	Blank  bool // the cell's text is empty (awaiting transcription)
	// GeneratedText and GeneratedAudio make the text and the recording
	// machine output as a job writes it: an llm-generation edit, an
	// attachment marked isGenerated.
	GeneratedText  bool
	GeneratedAudio bool
	// Validated adds a reviewer's validation to the generated text and
	// recording.
	Validated bool
	Locked    bool // metadata.isLocked
	Hidden    bool // data.hidden
}

// Options shape the project.
type Options struct {
	Book   string // notebook name, e.g. "MRK"
	Verses []Verse
	Voice  string // espeak-ng voice; default "en-us"
	Speed  int    // words per minute; default 150
	Format string // recording format; default "webm"
	// Corrupt lists refs whose recording is replaced by garbage bytes.
	Corrupt []string
}

// Project is the generated content: repository files (LFS pointers
// included) and the LFS objects behind them.
type Project struct {
	Files   map[string][]byte
	Objects map[string][]byte // oid → bytes
	// RealFiles are the editor's git-ignored copies (.project/attachments/files/...).
	RealFiles map[string][]byte
}

// Generate records the verses and writes the notebook.
func Generate(ctx context.Context, o Options) (*Project, error) {
	if o.Book == "" {
		o.Book = "MRK"
	}
	o.Voice = or(o.Voice, "en-us")
	o.Format = or(o.Format, "webm")
	if o.Speed == 0 {
		o.Speed = 150
	}
	p := &Project{Files: map[string][]byte{}, Objects: map[string][]byte{}, RealFiles: map[string][]byte{}}
	tmp, err := os.MkdirTemp("", "demoproject-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	base := time.Date(2026, 1, 20, 9, 0, 0, 0, time.UTC).UnixMilli()
	corrupt := map[string]bool{}
	for _, r := range o.Corrupt {
		corrupt[r] = true
	}
	var cells []any
	for i, v := range o.Verses {
		ts := base + int64(i)*60_000
		id := CellUUID(v.Ref)
		book, chapter, verse := splitRef(v.Ref)
		value := ""
		if !v.Blank {
			value = "<span>" + escape(v.Text) + "</span>"
		}
		data := orderedMap{{"globalReferences", []string{v.Ref}}, {"book", book}, {"chapter", chapter}, {"verse", verse}}
		if v.Hidden {
			data = append(data, kv{"hidden", true})
		}
		meta := orderedMap{
			{"type", "text"},
			{"id", id},
			{"data", data},
			{"edits", editsFor(value, ts, v)},
			{"cellLabel", strconv.Itoa(verse)},
		}
		if v.Locked {
			meta = append(meta, kv{"isLocked", true})
		}
		if v.Record {
			audioID := fmt.Sprintf("audio-%d-%08x", ts, uint32(i*2654435761))
			data, err := record(ctx, tmp, v.Text, o)
			if err != nil {
				return nil, fmt.Errorf("record %s: %w", v.Ref, err)
			}
			if corrupt[v.Ref] {
				data = bytes.Repeat([]byte("not audio "), 200)
			}
			sum := sha256.Sum256(data)
			ptr := project.Pointer{OID: hex.EncodeToString(sum[:]), Size: int64(len(data))}
			rel := o.Book + "/" + audioID + "." + o.Format
			p.Objects[ptr.OID] = data
			p.Files[".project/attachments/pointers/"+rel] = []byte(ptr.String())
			p.RealFiles[".project/attachments/files/"+rel] = data
			att := orderedMap{
				{"url", ".project/attachments/files/" + rel}, {"type", "audio"},
				{"createdAt", ts}, {"updatedAt", ts}, {"isDeleted", false}, {"createdBy", "demo-speaker"},
			}
			if v.GeneratedAudio {
				att = append(att, kv{"isGenerated", true}, kv{"validatedBy", validations(v, ts)})
			}
			meta = append(meta,
				kv{"attachments", orderedMap{{audioID, att}}},
				kv{"selectedAudioId", audioID}, kv{"selectionTimestamp", ts})
		}
		cells = append(cells, orderedMap{{"kind", 2}, {"languageId", "html"}, {"value", value}, {"metadata", meta}})
	}
	nb := orderedMap{{"cells", cells}, {"metadata", orderedMap{{"id", o.Book}, {"originalName", o.Book}, {"corpusMarker", "NT"}, {"textDirection", "ltr"}}}}
	b, err := marshal(nb)
	if err != nil {
		return nil, err
	}
	p.Files["files/target/"+o.Book+".codex"] = b
	p.Files[".gitattributes"] = []byte("*.wav filter=lfs diff=lfs merge=lfs -text\n*.mp3 filter=lfs diff=lfs merge=lfs -text\n*.m4a filter=lfs diff=lfs merge=lfs -text\n*.ogg filter=lfs diff=lfs merge=lfs -text\n*.webm filter=lfs diff=lfs merge=lfs -text\n")
	p.Files[".gitignore"] = []byte(".project/attachments/files/\n")
	p.Files["metadata.json"] = []byte(fmt.Sprintf("{\n  \"format\": \"scripture burrito\",\n  \"projectName\": \"Demo %s\",\n  \"languages\": [\"en\"]\n}\n", o.Book))
	return p, nil
}

// WriteDir lays the project out as a Codex folder: files, the editor's real
// audio copies, and the LFS objects in .git/lfs/objects.
func (p *Project) WriteDir(dir string) error {
	write := func(rel string, data []byte) error {
		full := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		return os.WriteFile(full, data, 0o644)
	}
	for rel, data := range p.Files {
		if err := write(rel, data); err != nil {
			return err
		}
	}
	for rel, data := range p.RealFiles {
		if err := write(rel, data); err != nil {
			return err
		}
	}
	for oid, data := range p.Objects {
		if err := write(".git/lfs/objects/"+oid[:2]+"/"+oid[2:4]+"/"+oid, data); err != nil {
			return err
		}
	}
	return nil
}

// CellUUID derives a cell id from its reference the way the editor does:
// the first 32 hex digits of SHA-256, formatted 8-4-4-4-12.
func CellUUID(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	h := hex.EncodeToString(sum[:])[:32]
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// record speaks text with espeak-ng and encodes it like an editor recording.
func record(ctx context.Context, dir, text string, o Options) ([]byte, error) {
	wav := filepath.Join(dir, "speech.wav")
	out := filepath.Join(dir, "speech."+o.Format)
	if b, err := exec.CommandContext(ctx, "espeak-ng", "-v", o.Voice, "-s", strconv.Itoa(o.Speed), "-w", wav, text).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("espeak-ng: %v: %s", err, b)
	}
	args := []string{"-y", "-loglevel", "error", "-i", wav, "-ac", "1"}
	switch o.Format {
	case "webm":
		args = append(args, "-c:a", "libopus", "-b:a", "48k")
	case "ogg":
		args = append(args, "-c:a", "libvorbis")
	}
	if b, err := exec.CommandContext(ctx, "ffmpeg", append(args, out)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ffmpeg: %v: %s", err, b)
	}
	return os.ReadFile(out)
}

var verseLine = regexp.MustCompile(`^Mark (\d+):(\d+): (.*)$`)

// MarkVerses reads the Gospel of Mark from the World English Bible (public
// domain) through diatheke (Debian packages diatheke and sword-text-web).
func MarkVerses(ctx context.Context, chapter, count int) ([]Verse, error) {
	out, err := exec.CommandContext(ctx, "diatheke", "-b", "engWEB2015eb", "-f", "plain", "-k", fmt.Sprintf("Mark %d", chapter)).Output()
	if err != nil {
		return nil, fmt.Errorf("diatheke (apt-get install diatheke sword-text-web): %w", err)
	}
	var verses []Verse
	var cur *Verse
	for _, line := range strings.Split(string(out), "\n") {
		if m := verseLine.FindStringSubmatch(line); m != nil {
			verses = append(verses, Verse{Ref: "MRK " + m[1] + ":" + m[2], Text: strings.TrimSpace(m[3])})
			cur = &verses[len(verses)-1]
			continue
		}
		if cur != nil && strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "(") {
			cur.Text += " " + strings.TrimSpace(line)
		}
	}
	for i := range verses {
		verses[i].Text = strings.Join(strings.Fields(verses[i].Text), " ")
	}
	if len(verses) < count {
		return nil, fmt.Errorf("Mark %d has %d verses, %d asked", chapter, len(verses), count)
	}
	return verses[:count], nil
}

func splitRef(ref string) (book string, chapter, verse int) {
	book, cv, _ := strings.Cut(ref, " ")
	c, v, _ := strings.Cut(cv, ":")
	chapter, _ = strconv.Atoi(c)
	verse, _ = strconv.Atoi(v)
	return
}

func editsFor(value string, ts int64, v Verse) []any {
	if value == "" {
		return []any{}
	}
	typ, author, validatedBy := "initial-import", "demo", []any{}
	if v.GeneratedText {
		typ, author, validatedBy = "llm-generation", "gpu-worker", validations(v, ts)
	}
	return []any{orderedMap{{"editMap", []string{"value"}}, {"value", value}, {"timestamp", ts},
		{"type", typ}, {"author", author}, {"validatedBy", validatedBy}}}
}

// validations is the validatedBy list of a generated text or recording.
func validations(v Verse, ts int64) []any {
	if !v.Validated {
		return []any{}
	}
	return []any{orderedMap{{"username", "reviewer"}, {"creationTimestamp", ts + 1000},
		{"updatedTimestamp", ts + 1000}, {"isDeleted", false}}}
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// orderedMap marshals as a JSON object in the order given.
type orderedMap []kv

type kv struct {
	k string
	v any
}

func (m orderedMap) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range m {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(e.k)
		b.Write(k)
		b.WriteByte(':')
		v, err := marshalCompact(e.v)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func marshalCompact(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// marshal writes JSON as the editor does: 2-space indent, no HTML escaping,
// one trailing newline.
func marshal(v any) ([]byte, error) {
	compact, err := marshalCompact(v)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := json.Indent(&b, compact, "", "  "); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}
