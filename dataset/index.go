package dataset

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// IndexName is the index file inside a dataset folder.
const IndexName = "index.jsonl"

// WriteTextOnly writes a dataset of texts without audio (inputs for
// synthesis): <dir>/index.jsonl with "audio": null on every line.
func WriteTextOnly(dir string, items []Source) error {
	if len(items) == 0 {
		return errors.New("write text dataset: no items")
	}
	entries := make([]Entry, 0, len(items))
	seen := map[string]bool{}
	for _, s := range items {
		e := entryOf(s)
		if e.ID == "" {
			e.ID = s.CellID
		}
		if e.ID == "" {
			return fmt.Errorf("write text dataset: item %q has no id", s.Reference)
		}
		if seen[e.ID] {
			return fmt.Errorf("write text dataset: id %q appears twice", e.ID)
		}
		seen[e.ID] = true
		entries = append(entries, *e)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write text dataset: %w", err)
	}
	if err := writeIndex(filepath.Join(dir, IndexName), entries); err != nil {
		return fmt.Errorf("write text dataset: %w", err)
	}
	return nil
}

// WriteIndex writes a dataset folder's index for entries whose audio files
// are already in dir.
func WriteIndex(dir string, entries []Entry) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write dataset index: %w", err)
	}
	if err := writeIndex(filepath.Join(dir, IndexName), entries); err != nil {
		return fmt.Errorf("write dataset index: %w", err)
	}
	return nil
}

// ReadIndex reads a dataset's index back.
func ReadIndex(dir string) ([]Entry, error) {
	f, err := os.Open(filepath.Join(dir, IndexName))
	if err != nil {
		return nil, fmt.Errorf("read dataset index: %w", err)
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("read dataset index: line %d: %w", n, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read dataset index: %w", err)
	}
	return out, nil
}

// line is an Entry as written: no audio is null, which the engines read as None.
type line struct {
	ID        string  `json:"id"`
	CellID    string  `json:"cell_id"`
	Reference string  `json:"reference"`
	Text      string  `json:"text"`
	Audio     *string `json:"audio"`
	Duration  float64 `json:"duration"`
}

func indexLine(e Entry) line {
	l := line{ID: e.ID, CellID: e.CellID, Reference: e.Reference, Text: e.Text, Duration: e.Duration}
	if e.Audio != "" {
		l.Audio = &e.Audio
	}
	return l
}

// writeIndex writes one JSON object per line, atomically. Text keeps <, >
// and & as they are.
func writeIndex(path string, entries []Entry) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".index-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	w := bufio.NewWriter(tmp)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, e := range entries {
		if err := enc.Encode(indexLine(e)); err != nil {
			tmp.Close()
			return fmt.Errorf("write index: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("write index: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write index: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	return nil
}
