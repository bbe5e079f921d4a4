// Package project defines what a job needs from a translation project:
// reading files, listing the tree, committing atomically with
// compare-and-swap guards, and moving Git LFS objects. The gitlab and local
// packages implement it; the worker and handlers consume it.
package project

import (
	"context"
	"errors"
	"fmt"
)

// Project is one translation repository at the head of its default branch.
type Project interface {
	// Name identifies the project in logs (a GitLab path or a folder).
	Name() string
	// ReadFile returns a file's bytes and version ids; ErrNotFound when absent.
	ReadFile(ctx context.Context, path string) (*File, error)
	// StatFile returns a file's version ids without its content.
	StatFile(ctx context.Context, path string) (*FileInfo, error)
	// ListTree lists every file below dir ("" = root), recursively.
	ListTree(ctx context.Context, dir string) ([]TreeEntry, error)
	// Commit applies all actions atomically or none of them. A failed guard
	// comes back as a *ConflictError.
	Commit(ctx context.Context, message string, actions []Action) (*CommitResult, error)
	// GetLFS streams the object behind p into dst, verifying size and sha256.
	// dst is written atomically: on error nothing is left at dst.
	GetLFS(ctx context.Context, p Pointer, dst string) error
	// PutLFS stores the file at src as an LFS object (skipped when the store
	// already has it) and returns its pointer.
	PutLFS(ctx context.Context, src string) (Pointer, error)
}

// FileInfo is a file's version: BlobID changes with content; Guard is the
// backend's compare-and-swap token for the path, opaque to callers: the
// commit that last touched it on GitLab, a hash of its content in a local
// folder.
type FileInfo struct {
	Path   string
	BlobID string
	Guard  string
	Size   int64
}

// File is a FileInfo with the bytes.
type File struct {
	FileInfo
	Content []byte
}

// TreeEntry is one file in a listing.
type TreeEntry struct {
	Path   string
	BlobID string
}

// ActionKind is what a commit action does to its path.
type ActionKind string

const (
	Create ActionKind = "create"
	Update ActionKind = "update"
	Delete ActionKind = "delete"
	Move   ActionKind = "move"
)

// Action is one change of a commit. Guard, when set, guards
// update/delete/move: the commit fails if the path changed since.
type Action struct {
	Kind         ActionKind
	Path         string
	PreviousPath string // for Move
	Content      []byte // for Create/Update; Move keeps the old content when nil
	Guard        string
}

// CommitResult names the commit that landed and the new guard of every
// path it wrote.
type CommitResult struct {
	ID     string
	Guards map[string]string
}

// GuardOf is the guard a later update of path must carry; "" when the
// commit did not write it.
func (r *CommitResult) GuardOf(path string) string {
	if r == nil {
		return ""
	}
	return r.Guards[path]
}

// ErrNotFound reports a missing file, object or project.
var ErrNotFound = errors.New("not found")

// ErrOutcomeUnknown reports a commit whose answer was lost: it may still
// land. Nothing that contradicts it should be written meanwhile.
var ErrOutcomeUnknown = errors.New("commit outcome unknown")

// ConflictKind says which compare-and-swap failed.
type ConflictKind int

const (
	// AlreadyExists: a create action named an existing path.
	AlreadyExists ConflictKind = iota + 1
	// ChangedSince: an action's Guard is no longer the path's.
	ChangedSince
	// BranchMoved: another commit landed while ours was being applied.
	BranchMoved
)

func (k ConflictKind) String() string {
	switch k {
	case AlreadyExists:
		return "already exists"
	case ChangedSince:
		return "changed since"
	case BranchMoved:
		return "branch moved"
	}
	return "unknown conflict"
}

// ConflictError is a commit refused because the project changed under us.
// Nothing of the commit was applied.
type ConflictError struct {
	Kind ConflictKind
	Path string
}

func (e *ConflictError) Error() string {
	if e.Path == "" {
		return "commit conflict: " + e.Kind.String()
	}
	return fmt.Sprintf("commit conflict: %s: %s", e.Path, e.Kind)
}

// ConflictOf returns the conflict behind err, or nil.
func ConflictOf(err error) *ConflictError {
	var c *ConflictError
	if errors.As(err, &c) {
		return c
	}
	return nil
}

// IsConflict reports whether err is a conflict of the given kind.
func IsConflict(err error, kind ConflictKind) bool {
	c := ConflictOf(err)
	return c != nil && c.Kind == kind
}
