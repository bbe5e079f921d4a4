package local

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

var errNotDir = syscall.ENOTDIR

// CommitRecord is one commit as recorded in .gpu-worker/commits.jsonl.
type CommitRecord struct {
	ID      string         `json:"id"`
	Message string         `json:"message"`
	Time    time.Time      `json:"time"`
	Actions []RecordAction `json:"actions"`
}

// RecordAction is one action of a recorded commit; BlobID is the content it
// left at Path (empty for delete).
type RecordAction struct {
	Action       string `json:"action"`
	Path         string `json:"path"`
	PreviousPath string `json:"previous_path,omitempty"`
	BlobID       string `json:"blob_id,omitempty"`
}

// history follows commits.jsonl, read incrementally (other processes
// append to it, we read what is new), to know the last commit that landed.
type history struct {
	off    int64
	fi     os.FileInfo
	lastID string
}

func newHistory() history { return history{} }

func (p *Project) historyPath() string { return filepath.Join(p.meta, "commits.jsonl") }

func (h *history) apply(r CommitRecord) { h.lastID = r.ID }

// refresh reads records appended since the last call. A replaced or
// truncated file is read again from the start.
func (h *history) refresh(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		*h = newHistory()
		return nil
	}
	if err != nil {
		return fmt.Errorf("read commit history: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("read commit history: %w", err)
	}
	if h.fi == nil || !os.SameFile(h.fi, fi) || fi.Size() < h.off {
		*h = newHistory()
	}
	h.fi = fi
	if fi.Size() == h.off {
		return nil
	}
	if _, err := f.Seek(h.off, io.SeekStart); err != nil {
		return fmt.Errorf("read commit history: %w", err)
	}
	r := bufio.NewReader(io.LimitReader(f, fi.Size()-h.off))
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return nil // an unterminated tail is a record still being written
		}
		if err != nil {
			return fmt.Errorf("read commit history: %w", err)
		}
		h.off += int64(len(line))
		var rec CommitRecord
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		// A damaged record is skipped: guards are content hashes, so
		// nothing but the record of that commit is lost.
		if json.Unmarshal(line, &rec) == nil {
			h.apply(rec)
		}
	}
}

// appendRecord adds rec to the history durably. Callers hold the lock.
func (p *Project) appendRecord(rec CommitRecord) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode commit record: %w", err)
	}
	line = append(line, '\n')
	f, err := os.OpenFile(p.historyPath(), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open commit history: %w", err)
	}
	defer f.Close()
	// Drop a torn tail from a writer that died mid-append, so our record
	// starts on a line of its own.
	end, err := validEnd(f)
	if err != nil {
		return fmt.Errorf("open commit history: %w", err)
	}
	if _, err := f.WriteAt(line, end); err != nil {
		f.Truncate(end)
		return fmt.Errorf("write commit history: %w", err)
	}
	if err := f.Truncate(end + int64(len(line))); err != nil {
		return fmt.Errorf("write commit history: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Truncate(end)
		return fmt.Errorf("sync commit history: %w", err)
	}
	return nil
}

// validEnd is the offset just past the last newline.
func validEnd(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	buf := make([]byte, 4096)
	for end := size; end > 0; {
		start := max(0, end-int64(len(buf)))
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && err != io.EOF {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}

// Commits returns the recorded commits, oldest first.
func (p *Project) Commits(ctx context.Context) ([]CommitRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(p.historyPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read commit history: %w", err)
	}
	var out []CommitRecord
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rec CommitRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			continue // torn tail
		}
		out = append(out, rec)
	}
	return out, nil
}

func newCommitID() string {
	b := make([]byte, 20)
	rand.Read(b)
	return hex.EncodeToString(b)
}
