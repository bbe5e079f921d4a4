package codex

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"gpu-worker/project"
)

// memProject is an in-memory project with GitLab's compare-and-swap rules:
// a stale Guard or a create of an existing path fails the whole
// commit with a *ConflictError.
type memProject struct {
	mu      sync.Mutex
	files   map[string]memFile
	seq     int
	commits [][]project.Action
	// before runs ahead of each Commit with its 0-based call number; it may
	// change files (a user commit) or return an error to fail the call.
	before func(call int) error
	calls  int
}

type memFile struct {
	content []byte
	commit  string
}

func newMemProject() *memProject { return &memProject{files: map[string]memFile{}} }

func (m *memProject) Name() string { return "mem" }

// put commits files directly, as a user's sync would.
func (m *memProject) put(files map[string][]byte) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	id := fmt.Sprintf("c%03d", m.seq)
	for p, c := range files {
		m.files[p] = memFile{content: append([]byte(nil), c...), commit: id}
	}
	return id
}

func (m *memProject) ReadFile(ctx context.Context, path string) (*project.File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.files[path]
	if !ok {
		return nil, fmt.Errorf("read %s: %w", path, project.ErrNotFound)
	}
	return &project.File{
		FileInfo: project.FileInfo{Path: path, BlobID: fmt.Sprint(len(f.content)), Guard: f.commit, Size: int64(len(f.content))},
		Content:  append([]byte(nil), f.content...),
	}, nil
}

func (m *memProject) StatFile(ctx context.Context, path string) (*project.FileInfo, error) {
	f, err := m.ReadFile(ctx, path)
	if err != nil {
		return nil, err
	}
	return &f.FileInfo, nil
}

func (m *memProject) ListTree(ctx context.Context, dir string) ([]project.TreeEntry, error) {
	return nil, errors.New("not used")
}

func (m *memProject) GetLFS(ctx context.Context, p project.Pointer, dst string) error {
	return errors.New("not used")
}

func (m *memProject) PutLFS(ctx context.Context, src string) (project.Pointer, error) {
	return project.Pointer{}, errors.New("not used")
}

func (m *memProject) Commit(ctx context.Context, message string, actions []project.Action) (*project.CommitResult, error) {
	call := m.calls
	m.calls++
	if m.before != nil {
		if err := m.before(call); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range actions {
		f, exists := m.files[a.Path]
		switch a.Kind {
		case project.Create:
			if exists {
				return nil, &project.ConflictError{Kind: project.AlreadyExists, Path: a.Path}
			}
		case project.Update:
			if !exists {
				return nil, fmt.Errorf("update %s: %w", a.Path, project.ErrNotFound)
			}
			if a.Guard != "" && a.Guard != f.commit {
				return nil, &project.ConflictError{Kind: project.ChangedSince, Path: a.Path}
			}
		}
	}
	m.seq++
	id := fmt.Sprintf("c%03d", m.seq)
	for _, a := range actions {
		m.files[a.Path] = memFile{content: append([]byte(nil), a.Content...), commit: id}
	}
	m.commits = append(m.commits, actions)
	return &project.CommitResult{ID: id}, nil
}
