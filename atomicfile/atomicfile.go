// Package atomicfile writes files so that readers see either the old content
// or the complete new content, never a torn write: bytes go to a temporary
// file in the destination's directory, are fsynced, renamed over the
// destination, and the directory is fsynced so the rename survives a crash.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// Write atomically replaces path with data. Missing parent directories are
// created. On error path is untouched and no temporary file remains.
func Write(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}

// WriteFrom atomically replaces path with everything read from r and
// returns the number of bytes written. On error path is untouched and no
// temporary file remains.
func WriteFrom(path string, r io.Reader, perm os.FileMode) (int64, error) {
	f, err := Create(path, perm)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err != nil {
		f.Abort()
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	return n, f.Commit()
}

// File is a pending replacement of a path. Write to it, then Commit to
// publish it or Abort to discard it.
type File struct {
	f      *os.File
	path   string
	perm   os.FileMode
	done   bool
	synced bool
}

// Create starts a pending replacement of path, creating missing parent
// directories. Nothing is visible at path until Commit.
func Create(path string, perm os.FileMode) (*File, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create temp file: %w", err)
	}
	return &File{f: tmp, path: path, perm: perm}, nil
}

// Write appends to the pending content.
func (f *File) Write(p []byte) (int, error) {
	if f.done {
		return 0, os.ErrClosed
	}
	return f.f.Write(p)
}

// Name is the destination path.
func (f *File) Name() string { return f.path }

// Sync sets the permissions, flushes the pending content to stable storage
// and closes it, without publishing it. Callers replacing several files call
// Sync on all of them first so that every slow or failing step happens before
// any rename.
func (f *File) Sync() error {
	if f.done {
		return os.ErrClosed
	}
	if f.synced {
		return nil
	}
	err := f.f.Chmod(f.perm)
	if err == nil {
		err = f.f.Sync()
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		f.done = true
		os.Remove(f.f.Name())
		return fmt.Errorf("sync %s: %w", f.path, err)
	}
	f.synced = true
	return nil
}

// Commit publishes the content at the destination path and makes the rename
// durable. On error the destination is untouched and the temp file removed.
func (f *File) Commit() error {
	if err := f.Sync(); err != nil {
		return err
	}
	f.done = true
	if err := os.Rename(f.f.Name(), f.path); err != nil {
		os.Remove(f.f.Name())
		return fmt.Errorf("rename into place: %w", err)
	}
	return SyncDir(filepath.Dir(f.path))
}

// Abort discards the pending content. It is safe to call after Commit or
// more than once.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	if !f.synced {
		f.f.Close()
	}
	os.Remove(f.f.Name())
}

// SyncDir fsyncs a directory so that renames and removals in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	// Some filesystems refuse fsync on directories; the rename itself has
	// happened, so that is not worth failing the write over.
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}
