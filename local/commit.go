package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gpu-worker/atomicfile"
	"gpu-worker/project"
)

// target is the state a commit leaves at one path.
type target struct {
	exists bool
	data   []byte // new content, when from == ""
	from   string // or: the path whose current file moves here
	blob   string
	staged string // absolute path of the staged content
}

func (t *target) blobID(p *Project) (string, error) {
	if t.blob != "" {
		return t.blob, nil
	}
	if t.from == "" {
		t.blob = blobID(t.data)
		return t.blob, nil
	}
	b, _, _, err := hashFile(p.abs(t.from))
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", t.from, err)
	}
	t.blob = b
	return b, nil
}

type plannedAction struct {
	kind project.ActionKind
	path string
	prev string
	t    *target
}

// Commit applies all actions or none. Guards are checked and every new file
// is staged and fsynced before the first rename; a journal lets a crashed
// commit be rolled back by the next one. The editor takes no lock, so each
// guarded path is checked again as it is replaced (see swapAll).
func (p *Project) Commit(ctx context.Context, message string, actions []project.Action) (*project.CommitResult, error) {
	if len(actions) == 0 {
		return nil, errors.New("commit: no actions")
	}
	if err := p.ensureMeta(); err != nil {
		return nil, err
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("commit: %w", ctx.Err())
	}
	defer func() { <-p.sem }()
	unlock, err := fileLock(ctx, filepath.Join(p.meta, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	if err := p.recoverJournal(); err != nil {
		return nil, err
	}
	// Staged leftovers go when we are done, unless a failed rollback left a
	// journal whose backups the next commit needs.
	defer func() {
		if _, err := os.Stat(p.journalPath()); errors.Is(err, fs.ErrNotExist) {
			os.RemoveAll(p.tmpDir())
		}
	}()
	final, planned, checks, err := p.plan(actions)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(p.tmpDir(), 0o755); err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	mirrors, err := p.planMirrors(ctx, final)
	if err != nil {
		return nil, err
	}
	for k, v := range mirrors {
		final[k] = v
	}
	if err := p.stage(final); err != nil {
		return nil, err
	}
	rec := CommitRecord{ID: newCommitID(), Message: message, Time: time.Now().UTC()}
	for _, a := range planned {
		ra := RecordAction{Action: string(a.kind), Path: a.path, PreviousPath: a.prev}
		if a.kind != project.Delete {
			if ra.BlobID, err = a.t.blobID(p); err != nil {
				return nil, err
			}
		}
		rec.Actions = append(rec.Actions, ra)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	if p.beforeApply != nil {
		p.beforeApply()
	}
	if err := p.apply(rec, final, checks); err != nil {
		return nil, err
	}
	slog.Debug("local commit", "project", p.root, "id", rec.ID, "actions", len(rec.Actions))
	res := &project.CommitResult{ID: rec.ID, Guards: map[string]string{}}
	for _, a := range rec.Actions {
		if a.BlobID != "" {
			res.Guards[a.Path] = a.BlobID // a folder's guard is the content's hash
		}
	}
	return res, nil
}

// check is what a path must hold when the commit replaces it: the content
// its guard was checked against, or nothing at all (a create).
type check struct {
	blob   string
	absent bool
}

// plan replays the actions over the current folder in order, checking
// existence and guards, and returns the final state of every touched path
// and what the guarded ones must still hold when they are replaced.
func (p *Project) plan(actions []project.Action) (map[string]*target, []plannedAction, map[string]check, error) {
	final := map[string]*target{}
	checks := map[string]check{}
	state := func(rel string) *target {
		if t, ok := final[rel]; ok {
			return t
		}
		fi, err := os.Stat(p.abs(rel))
		if err == nil && fi.Mode().IsRegular() {
			return &target{exists: true, from: rel}
		}
		return &target{}
	}
	// Guards compare against the folder as the commit found it, like GitLab
	// compares against the commit the branch pointed at.
	guard := func(rel, want string) error {
		if want == "" {
			return nil
		}
		blob, _, _, err := hashFile(p.abs(rel))
		if errors.Is(err, project.ErrNotFound) {
			return &project.ConflictError{Kind: project.ChangedSince, Path: rel}
		}
		if err != nil {
			return fmt.Errorf("check %s: %w", rel, err)
		}
		if blob != want {
			return &project.ConflictError{Kind: project.ChangedSince, Path: rel}
		}
		if _, seen := checks[rel]; !seen {
			checks[rel] = check{blob: blob}
		}
		return nil
	}
	var planned []plannedAction
	for _, a := range actions {
		rel, err := cleanPath(a.Path)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("commit: %w", err)
		}
		pa := plannedAction{kind: a.Kind, path: rel}
		switch a.Kind {
		case project.Create:
			if state(rel).exists {
				return nil, nil, nil, &project.ConflictError{Kind: project.AlreadyExists, Path: rel}
			}
			if _, touched := final[rel]; !touched {
				checks[rel] = check{absent: true}
			}
			pa.t = &target{exists: true, data: nonNil(a.Content)}
			final[rel] = pa.t
		case project.Update, project.Delete:
			if !state(rel).exists {
				return nil, nil, nil, fmt.Errorf("%s %s: %w", a.Kind, rel, project.ErrNotFound)
			}
			if err := guard(rel, a.Guard); err != nil {
				return nil, nil, nil, err
			}
			pa.t = &target{exists: a.Kind == project.Update, data: nonNil(a.Content)}
			final[rel] = pa.t
		case project.Move:
			prev, err := cleanPath(a.PreviousPath)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("commit: move: %w", err)
			}
			if prev == rel {
				return nil, nil, nil, fmt.Errorf("commit: move %s onto itself", rel)
			}
			pa.prev = prev
			src := state(prev)
			if !src.exists {
				return nil, nil, nil, fmt.Errorf("move %s: %w", prev, project.ErrNotFound)
			}
			if err := guard(prev, a.Guard); err != nil {
				return nil, nil, nil, err
			}
			if state(rel).exists {
				return nil, nil, nil, &project.ConflictError{Kind: project.AlreadyExists, Path: rel}
			}
			if _, touched := final[rel]; !touched {
				checks[rel] = check{absent: true}
			}
			moved := *src
			if a.Content != nil {
				moved = target{exists: true, data: a.Content}
			}
			pa.t = &moved
			final[rel] = pa.t
			final[prev] = &target{}
		default:
			return nil, nil, nil, fmt.Errorf("commit: unknown action %q", a.Kind)
		}
		planned = append(planned, pa)
	}
	return final, planned, checks, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func (p *Project) tmpDir() string { return filepath.Join(p.meta, "tmp") }

// stage writes every new content into the metadata folder and fsyncs it.
// Content moved from another path is hard-linked (copied where links fail).
func (p *Project) stage(final map[string]*target) error {
	tmp := p.tmpDir()
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	i := 0
	for rel, t := range final {
		if !t.exists || t.staged != "" {
			continue
		}
		i++
		dst := filepath.Join(tmp, fmt.Sprintf("stage-%d", i))
		perm := os.FileMode(0o644)
		if fi, err := os.Stat(p.abs(rel)); err == nil && fi.Mode().IsRegular() {
			perm = fi.Mode().Perm()
		}
		var err error
		if t.from != "" {
			if _, err = t.blobID(p); err == nil {
				err = linkOrCopy(p.abs(t.from), dst)
			}
		} else {
			err = writeSynced(dst, t.data, perm)
		}
		if err != nil {
			return fmt.Errorf("stage %s: %w", rel, err)
		}
		t.staged = dst
	}
	return atomicfile.SyncDir(tmp)
}

func writeSynced(dst string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// apply journals, swaps every path and records. Any failure rolls back.
func (p *Project) apply(rec CommitRecord, final map[string]*target, checks map[string]check) error {
	paths := make([]string, 0, len(final))
	for rel := range final {
		paths = append(paths, rel)
	}
	sort.Strings(paths)
	j := journal{Commit: rec.ID}
	for i, rel := range paths {
		e := journalEntry{Path: rel, Backup: fmt.Sprintf("backup-%d", i)}
		if fi, err := os.Lstat(p.abs(rel)); err != nil || !fi.Mode().IsRegular() {
			e.New = true
		}
		j.Entries = append(j.Entries, e)
	}
	jb, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode journal: %w", err)
	}
	if err := atomicfile.Write(p.journalPath(), jb, 0o644); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	undo, err := p.swapAll(j, final, checks)
	if err == nil {
		err = p.appendRecord(rec)
	}
	if err != nil {
		if uerr := p.undo(undo); uerr != nil {
			// Keep the journal: the next commit rolls back from it.
			return errors.Join(err, fmt.Errorf("roll back commit %s: %w", rec.ID, uerr))
		}
		if rerr := os.Remove(p.journalPath()); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return errors.Join(err, rerr)
		}
		return err
	}
	// The commit has landed: from here on a failure must not be reported as
	// one. A journal left behind is cleared by the next commit, which finds
	// its record in the history.
	if err := os.Remove(p.journalPath()); err != nil {
		slog.Warn("remove local commit journal", "project", p.root, "err", err)
	} else if err := atomicfile.SyncDir(p.meta); err != nil {
		slog.Warn("sync local metadata folder", "project", p.root, "err", err)
	}
	return nil
}

// pruneEmptyDirs removes directories a deletion left empty, as git does.
func (p *Project) pruneEmptyDirs(dir string) {
	for dir != p.root && strings.HasPrefix(dir, p.root+string(filepath.Separator)) {
		if os.Remove(dir) != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}

// ensureMeta creates the metadata folder, hidden from the project's git by
// its own .gitignore.
func (p *Project) ensureMeta() error {
	if err := os.MkdirAll(p.meta, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", metaName, err)
	}
	gi := filepath.Join(p.meta, ".gitignore")
	if _, err := os.Stat(gi); errors.Is(err, fs.ErrNotExist) {
		if err := atomicfile.Write(gi, []byte("*\n"), 0o644); err != nil {
			return fmt.Errorf("create %s: %w", metaName, err)
		}
	}
	return nil
}
