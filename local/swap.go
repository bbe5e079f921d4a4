package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"gpu-worker/atomicfile"
	"gpu-worker/project"
)

// swapped is one path a commit changed, for undoing it.
type swapped struct {
	rel    string
	backup string      // where the old file went, when there was one
	placed os.FileInfo // our new file, once in place
}

// swapAll replaces every path (deletions first, so a file can give way to
// a directory of its name). Each old file is first moved aside, which no
// save can slip past, and only then compared with what its guard saw; the
// new file goes in without replacing anything. An editor's save between
// the plan and the swap therefore fails the commit with a conflict (the
// caller re-reads and re-applies) instead of being overwritten.
func (p *Project) swapAll(j journal, final map[string]*target, checks map[string]check) ([]swapped, error) {
	order := make([]int, 0, len(j.Entries))
	for pass := 0; pass < 2; pass++ {
		for i, e := range j.Entries {
			if final[e.Path].exists == (pass == 1) {
				order = append(order, i)
			}
		}
	}
	var done []swapped
	dirs := map[string]bool{}
	for _, i := range order {
		rel, t := j.Entries[i].Path, final[j.Entries[i].Path]
		abs := p.abs(rel)
		backup := filepath.Join(p.tmpDir(), j.Entries[i].Backup)
		moved, err := moveAside(abs, backup)
		if err != nil {
			return done, fmt.Errorf("write %s: %w", rel, err)
		}
		s := swapped{rel: rel}
		if moved {
			s.backup = backup
		}
		done = append(done, s)
		c, checked := checks[rel]
		if checked {
			if err := c.verify(rel, s.backup); err != nil {
				return done, err
			}
		}
		if p.afterMoveAside != nil {
			p.afterMoveAside(rel)
		}
		dirs[filepath.Dir(abs)] = true
		if !t.exists {
			p.pruneEmptyDirs(filepath.Dir(abs))
			continue
		}
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			return done, fmt.Errorf("write %s: %w", rel, err)
		}
		fi, err := os.Stat(t.staged)
		if err != nil {
			return done, fmt.Errorf("write %s: %w", rel, err)
		}
		if err := putFile(t.staged, abs, checked); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return done, &project.ConflictError{Kind: project.ChangedSince, Path: rel}
			}
			return done, fmt.Errorf("write %s: %w", rel, err)
		}
		done[len(done)-1].placed = fi
	}
	for d := range dirs {
		if err := atomicfile.SyncDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return done, err
		}
	}
	return done, nil
}

// verify compares the file moved aside (none: backup "") with the check.
func (c check) verify(rel, backup string) error {
	if c.absent {
		if backup != "" {
			return &project.ConflictError{Kind: project.AlreadyExists, Path: rel}
		}
		return nil
	}
	if backup == "" {
		return &project.ConflictError{Kind: project.ChangedSince, Path: rel}
	}
	blob, _, _, err := hashFile(backup)
	if err != nil {
		return fmt.Errorf("check %s: %w", rel, err)
	}
	if blob != c.blob {
		return &project.ConflictError{Kind: project.ChangedSince, Path: rel}
	}
	return nil
}

// moveAside renames a regular file out of the way; false when there was none.
func moveAside(abs, backup string) (bool, error) {
	fi, err := os.Lstat(abs)
	if err != nil || !fi.Mode().IsRegular() {
		return false, nil
	}
	if err := os.Rename(abs, backup); err != nil {
		if notExist(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// putFile puts src at dst; exclusive refuses to replace a file that
// appeared meanwhile (fs.ErrExist).
func putFile(src, dst string, exclusive bool) error {
	if !exclusive {
		return os.Rename(src, dst)
	}
	err := os.Link(src, dst)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return err
	}
	// No hard links here: check, then rename (a narrower window).
	if _, serr := os.Lstat(dst); serr == nil {
		return fs.ErrExist
	}
	return os.Rename(src, dst)
}

// undo reverts swapped paths, newest first: our file goes (only if it is
// still ours), the old one comes back (unless someone wrote a newer one).
func (p *Project) undo(done []swapped) error {
	var errs []error
	for i := len(done) - 1; i >= 0; i-- {
		s := done[i]
		abs := p.abs(s.rel)
		if s.placed != nil {
			if fi, err := os.Lstat(abs); err == nil && os.SameFile(fi, s.placed) {
				if err := os.Remove(abs); err != nil {
					errs = append(errs, err)
					continue
				}
			}
		}
		if s.backup == "" {
			p.pruneEmptyDirs(filepath.Dir(abs))
			continue
		}
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		switch err := putFile(s.backup, abs, true); {
		case err == nil:
			os.Remove(s.backup)
		case errors.Is(err, fs.ErrExist):
			// A save landed meanwhile: it is newer than what we set aside.
		default:
			errs = append(errs, fmt.Errorf("restore %s: %w", s.rel, err))
		}
	}
	return errors.Join(errs...)
}
