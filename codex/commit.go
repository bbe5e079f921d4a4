package codex

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"

	"gpu-worker/project"
)

// CommitOptions tunes Commit. Zero values take the defaults.
type CommitOptions struct {
	// MaxCommitBytes bounds one commit's request (content counted as base64);
	// default 100 MB.
	MaxCommitBytes int64
	// MaxRetries bounds re-read/re-apply rounds after conflicts; default 5.
	MaxRetries int
	// Bases are the versions the patches were computed from, by notebook
	// path. A notebook without one uses the version Commit first reads.
	Bases  map[string]*Notebook
	Logger *slog.Logger
}

// CommitReport says what landed.
type CommitReport struct {
	Applied   map[string]int // patches applied, by notebook path
	Skipped   []Skip
	Commits   []string // ids, in order
	Conflicts int      // conflicts resolved by re-reading
}

const (
	defaultMaxCommitBytes = 100 << 20
	defaultMaxRetries     = 5
	actionOverhead        = 512 // JSON framing of one action
)

// ReasonNotebookNotFound: the notebook was deleted before the commit.
const ReasonNotebookNotFound = "notebook not found"

// ErrTooManyConflicts reports a commit still conflicting after the retries.
var ErrTooManyConflicts = errors.New("too many commit conflicts")

// nbState is one notebook being written.
type nbState struct {
	path     string
	patches  []Patch
	base     *Notebook
	baseData []byte // first version read, the base when the caller gave none
	commitID string // LastCommitID of the version nb was built on
	content  []byte // nil when nothing changed
	applied  int
	skipped  []Skip
}

// Commit writes patches (by notebook path) and the extra actions in one
// commit, each notebook update guarded by the last commit id Commit read.
// When a notebook changed meanwhile, Commit re-reads it, re-applies the
// patches to the new version (keeping newer user edits, see Apply) and
// tries again, at most MaxRetries times. A conflict on an extra path means
// the caller's guard failed (a lost lease) and is returned as is. Results
// larger than MaxCommitBytes are split into several commits; the extra
// actions go in the last one. LFS objects the extra pointers name must be
// uploaded before calling. On error the report says what landed so far.
func Commit(ctx context.Context, p project.Project, message string, patches map[string][]Patch, extra []project.Action, opts CommitOptions) (*CommitReport, error) {
	if opts.MaxCommitBytes <= 0 {
		opts.MaxCommitBytes = defaultMaxCommitBytes
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = defaultMaxRetries
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	rep := &CommitReport{Applied: map[string]int{}}

	paths := make([]string, 0, len(patches))
	for path := range patches {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	states := make(map[string]*nbState, len(paths))
	for _, path := range paths {
		st := &nbState{path: path, patches: patches[path], base: opts.Bases[path]}
		if err := st.load(ctx, p); err != nil {
			return rep, err
		}
		states[path] = st
	}
	extraPaths := map[string]bool{}
	for _, a := range extra {
		extraPaths[a.Path] = true
		extraPaths[a.PreviousPath] = true
	}

	bs := batches(paths, states, extra, opts.MaxCommitBytes)
	committed := map[string]bool{}
	for bi, batch := range bs {
		last := bi == len(bs)-1
		for attempt := 0; ; attempt++ {
			actions := batchActions(batch, states)
			if last {
				actions = append(actions, extra...)
			}
			if len(actions) == 0 {
				break
			}
			res, err := p.Commit(ctx, message, actions)
			if err == nil {
				rep.Commits = append(rep.Commits, res.ID)
				for _, path := range batch {
					committed[path] = true
				}
				log.Info("codex commit", "commit", res.ID, "actions", len(actions))
				break
			}
			c := project.ConflictOf(err)
			switch {
			case c == nil:
				return finish(rep, paths, states, committed), fmt.Errorf("commit notebooks: %w", err)
			case c.Path != "" && extraPaths[c.Path], c.Kind == project.AlreadyExists:
				return finish(rep, paths, states, committed), err
			case attempt >= opts.MaxRetries:
				return finish(rep, paths, states, committed), fmt.Errorf("commit notebooks: %w: %w", ErrTooManyConflicts, err)
			}
			rep.Conflicts++
			log.Info("codex commit conflict; re-applying", "conflict", err.Error())
			if st := states[c.Path]; st != nil && c.Kind == project.ChangedSince {
				err = st.load(ctx, p)
			} else {
				err = reloadChanged(ctx, p, batch, states)
			}
			if err != nil {
				return finish(rep, paths, states, committed), err
			}
		}
	}
	return finish(rep, paths, states, committed), nil
}

// reloadChanged re-reads the notebooks of a batch whose version moved on.
func reloadChanged(ctx context.Context, p project.Project, batch []string, states map[string]*nbState) error {
	for _, path := range batch {
		st := states[path]
		info, err := p.StatFile(ctx, path)
		if err == nil && info.LastCommitID == st.commitID {
			continue
		}
		if err != nil && !errors.Is(err, project.ErrNotFound) {
			return fmt.Errorf("stat notebook %s: %w", path, err)
		}
		if err := st.load(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// load reads the notebook's current version and applies the patches to it.
// Without a caller's base, the first version read becomes the base of later
// re-applies (parsed only if a conflict needs it).
func (st *nbState) load(ctx context.Context, p project.Project) error {
	f, err := p.ReadFile(ctx, st.path)
	if errors.Is(err, project.ErrNotFound) {
		st.content, st.applied, st.skipped = nil, 0, nil
		for _, pt := range st.patches {
			st.skipped = append(st.skipped, Skip{Notebook: st.path, CellID: pt.CellID, Reason: ReasonNotebookNotFound})
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read notebook %s: %w", st.path, err)
	}
	nb, err := Parse(st.path, f.Content)
	if err != nil {
		return err
	}
	if st.base == nil && st.baseData != nil {
		if st.base, err = Parse(st.path, st.baseData); err != nil {
			return err
		}
	}
	if st.baseData == nil {
		st.baseData = f.Content
	}
	st.commitID = f.LastCommitID
	st.applied, st.skipped = Apply(nb, st.base, st.patches)
	st.content = nil
	if st.applied > 0 {
		// Patches that all landed before (a retried commit) change nothing:
		// no update is sent for the notebook.
		if out := nb.Marshal(); !bytes.Equal(out, f.Content) {
			st.content = out
		}
	}
	return nil
}

func (st *nbState) size() int64 {
	return int64(len(st.content))*4/3 + int64(len(st.path)) + actionOverhead
}

// batches groups notebook paths into commits under max bytes, leaving room
// for the extra actions in the last one.
func batches(paths []string, states map[string]*nbState, extra []project.Action, max int64) [][]string {
	var extraSize int64
	for _, a := range extra {
		extraSize += int64(len(a.Content))*4/3 + int64(len(a.Path)+len(a.PreviousPath)) + actionOverhead
	}
	var out [][]string
	var cur []string
	var curSize int64
	for _, path := range paths {
		s := states[path].size()
		if len(cur) > 0 && curSize+s > max {
			out = append(out, cur)
			cur, curSize = nil, 0
		}
		cur = append(cur, path)
		curSize += s
	}
	if len(cur) > 0 && curSize+extraSize > max && len(extra) > 0 {
		out = append(out, cur)
		cur = nil
	}
	return append(out, cur)
}

func batchActions(batch []string, states map[string]*nbState) []project.Action {
	var actions []project.Action
	for _, path := range batch {
		st := states[path]
		if st.content == nil {
			continue
		}
		actions = append(actions, project.Action{
			Kind: project.Update, Path: path, Content: st.content, LastCommitID: st.commitID,
		})
	}
	return actions
}

// finish fills the report: patches count as applied only once their
// commit landed.
func finish(rep *CommitReport, paths []string, states map[string]*nbState, committed map[string]bool) *CommitReport {
	rep.Skipped = rep.Skipped[:0]
	for _, path := range paths {
		st := states[path]
		if committed[path] {
			rep.Applied[path] = st.applied
		}
		rep.Skipped = append(rep.Skipped, st.skipped...)
	}
	return rep
}
