package codex

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

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
	Bases map[string]*Notebook
	// Guard, when set, puts the caller's lease into every commit: results
	// land only while the caller still holds it, also when they are split.
	Guard Guard
	// Backoff is the wait before retrying after the branch moved; default
	// doubling from 50 ms.
	Backoff func(attempt int) time.Duration
	Logger  *slog.Logger
}

// Guard is the caller's lease as Commit sees it: each commit carries the
// guard's actions (e.g. an update of the caller's status file guarded by the
// id of the caller's previous commit), and a conflict on one of their paths
// ends Commit.
type Guard interface {
	// Step returns the actions of a commit that is not the last.
	Step() []project.Action
	// Final returns the actions of the last commit. plan is what all the
	// commits write if this one lands; Final is called again for every
	// attempt, after the patches were re-applied to the current notebooks.
	Final(plan *CommitReport) []project.Action
	// Landed records the id of a commit that carried the guard's actions.
	Landed(res *project.CommitResult)
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
	// stepReserve is room left in each commit of a split for the guard's
	// actions (a status file of a few kilobytes).
	stepReserve = 64 << 10
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
	guard    string // Guard of the version nb was built on
	content  []byte // nil when nothing changed
	applied  int
	skipped  []Skip
}

// Commit writes patches (by notebook path) and the extra actions in one
// commit, each notebook update carrying the guard of the version Commit read.
// When a notebook changed meanwhile, Commit re-reads it, re-applies the
// patches to the new version (keeping newer user edits, see Apply) and
// tries again, at most MaxRetries times. A conflict on an extra or guard
// path means the caller's guard failed (a lost lease) and is returned as
// is. Results larger than MaxCommitBytes are split into several commits;
// the extra actions go in the last one, the guard's in every one. LFS
// objects the extra pointers name must be uploaded before calling. On
// error the report says what landed so far.
func Commit(ctx context.Context, p project.Project, message string, patches map[string][]Patch, extra []project.Action, opts CommitOptions) (*CommitReport, error) {
	if opts.MaxCommitBytes <= 0 {
		opts.MaxCommitBytes = defaultMaxCommitBytes
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = defaultMaxRetries
	}
	if opts.Backoff == nil {
		opts.Backoff = defaultBackoff
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

	last := extra
	if opts.Guard != nil {
		// Sized with the plan as first read; the final actions are rebuilt
		// for every attempt.
		last = append(opts.Guard.Final(plan(paths, states)), extra...)
	}
	var reserve int64
	if opts.Guard != nil {
		reserve = stepReserve
	}
	bs := batches(paths, states, last, opts.MaxCommitBytes, reserve)
	committed := map[string]bool{}
	for bi, batch := range bs {
		final := bi == len(bs)-1
		for attempt := 0; ; attempt++ {
			notebooks := batchActions(batch, states)
			if len(notebooks) == 0 && !final {
				break
			}
			// The guard goes first: a lost lease is the conflict reported.
			var own []project.Action
			switch {
			case final && opts.Guard != nil:
				own = append(opts.Guard.Final(plan(paths, states)), extra...)
			case final:
				own = extra
			case opts.Guard != nil:
				own = opts.Guard.Step()
			}
			actions := append(append([]project.Action{}, own...), notebooks...)
			if len(actions) == 0 {
				break
			}
			res, err := p.Commit(ctx, message, actions)
			if err == nil {
				rep.Commits = append(rep.Commits, res.ID)
				for _, path := range batch {
					committed[path] = true
				}
				if opts.Guard != nil {
					opts.Guard.Landed(res)
				}
				log.Info("codex commit", "commit", res.ID, "actions", len(actions))
				break
			}
			c := project.ConflictOf(err)
			switch {
			case c == nil:
				return finish(rep, paths, states, committed), fmt.Errorf("commit notebooks: %w", err)
			case c.Path != "" && touches(own, c.Path), c.Kind == project.AlreadyExists:
				return finish(rep, paths, states, committed), err
			case attempt >= opts.MaxRetries:
				return finish(rep, paths, states, committed), fmt.Errorf("commit notebooks: %w: %w", ErrTooManyConflicts, err)
			}
			rep.Conflicts++
			log.Info("codex commit conflict; re-applying", "conflict", err.Error())
			if c.Kind == project.BranchMoved {
				if err := sleep(ctx, opts.Backoff(attempt)); err != nil {
					return finish(rep, paths, states, committed), err
				}
			}
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

// touches reports whether one of actions writes path.
func touches(actions []project.Action, path string) bool {
	for _, a := range actions {
		if a.Path == path || a.PreviousPath == path {
			return true
		}
	}
	return false
}

func defaultBackoff(attempt int) time.Duration {
	return min(time.Duration(50<<attempt)*time.Millisecond, 5*time.Second)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// plan is the report of what the commits write if all of them land.
func plan(paths []string, states map[string]*nbState) *CommitReport {
	rep := &CommitReport{Applied: map[string]int{}}
	for _, path := range paths {
		rep.Applied[path] = states[path].applied
		rep.Skipped = append(rep.Skipped, states[path].skipped...)
	}
	return rep
}

// reloadChanged re-reads the notebooks of a batch whose version moved on.
func reloadChanged(ctx context.Context, p project.Project, batch []string, states map[string]*nbState) error {
	for _, path := range batch {
		st := states[path]
		info, err := p.StatFile(ctx, path)
		if err == nil && info.Guard == st.guard {
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
	st.guard = f.Guard
	st.applied, st.skipped = Apply(nb, st.base, st.patches)
	st.content = nil
	// Changes kept under a user's newer edit are written too, though not
	// counted as applied. Patches that all landed before (a retried commit)
	// change nothing: no update is sent for the notebook.
	if out := nb.Marshal(); !bytes.Equal(out, f.Content) {
		st.content = out
	}
	return nil
}

func (st *nbState) size() int64 {
	return int64(len(st.content))*4/3 + int64(len(st.path)) + actionOverhead
}

// batches groups notebook paths into commits under max bytes, leaving room
// for the extra actions in the last one and reserve bytes in each.
func batches(paths []string, states map[string]*nbState, extra []project.Action, max, reserve int64) [][]string {
	max -= reserve
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
			Kind: project.Update, Path: path, Content: st.content, Guard: st.guard,
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
