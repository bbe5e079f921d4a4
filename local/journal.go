package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// journal lists, for every path a commit changes, where its old file is
// set aside while the commit is applied, and whether there was none (New),
// so an interrupted commit can be undone.
type journal struct {
	Commit  string         `json:"commit"`
	Entries []journalEntry `json:"entries"`
}

type journalEntry struct {
	Path   string `json:"path"`
	Backup string `json:"backup,omitempty"`
	New    bool   `json:"new,omitempty"`
}

var errBadJournal = errors.New("invalid journal entry")

func (p *Project) journalPath() string { return filepath.Join(p.meta, "journal.json") }

// rollback puts back every path of j as it was before the commit.
func (p *Project) rollback(j journal) error {
	var errs []error
	for i := len(j.Entries) - 1; i >= 0; i-- {
		e := j.Entries[i]
		if _, err := cleanPath(e.Path); err != nil || (e.Backup != "" && filepath.Base(e.Backup) != e.Backup) {
			errs = append(errs, fmt.Errorf("journal entry %q: %w", e.Path, errBadJournal))
			continue
		}
		abs := p.abs(e.Path)
		backup := ""
		if e.Backup != "" {
			backup = filepath.Join(p.tmpDir(), e.Backup)
			if _, err := os.Lstat(backup); err != nil {
				backup = "" // never set aside: the path was not reached
			}
		}
		if backup == "" {
			if e.New || e.Backup == "" {
				if err := os.Remove(abs); err != nil && !notExist(err) {
					errs = append(errs, err)
				}
				p.pruneEmptyDirs(filepath.Dir(abs))
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Rename(backup, abs); err != nil && !notExist(err) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Keep the journal so the next commit tries again.
		return fmt.Errorf("roll back commit %s: %w", j.Commit, err)
	}
	if err := os.Remove(p.journalPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("roll back commit %s: %w", j.Commit, err)
	}
	return nil
}

// recoverJournal finishes the story of a commit whose process died while
// applying it: recorded commits are kept, unrecorded ones rolled back.
// Callers hold the lock.
func (p *Project) recoverJournal() error {
	data, err := os.ReadFile(p.journalPath())
	if errors.Is(err, fs.ErrNotExist) {
		return os.RemoveAll(p.tmpDir())
	}
	if err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	var j journal
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	p.mu.Lock()
	err = p.hist.refresh(p.historyPath())
	landed := p.hist.lastID == j.Commit
	p.mu.Unlock()
	if err != nil {
		return err
	}
	if landed {
		slog.Warn("local commit finished after a crash", "project", p.root, "id", j.Commit)
		if err := os.Remove(p.journalPath()); err != nil {
			return fmt.Errorf("remove journal: %w", err)
		}
	} else {
		slog.Warn("rolling back an interrupted local commit", "project", p.root, "id", j.Commit)
		if err := p.rollback(j); err != nil {
			return err
		}
	}
	return os.RemoveAll(p.tmpDir())
}
