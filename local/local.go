// Package local implements project.Project over a Codex project folder on
// disk, with the same guarantees as the GitLab backend: commits are atomic
// across all their actions, creates are exclusive and updates are
// compare-and-swap on a per-path version token — across goroutines and
// across processes sharing the folder.
//
// The folder may or may not be a git working copy. Commits change the
// working tree only; the project's own git (or the Codex editor's sync)
// records them in history. Bookkeeping lives in <dir>/.gpu-worker/, which
// carries its own .gitignore ("*") so the project's git never sees it and
// the project's git configuration is left alone:
//
//	.gpu-worker/lock           flock(2) target serialising commits
//	.gpu-worker/commits.jsonl  one JSON record per commit: id, message, time, actions
//	.gpu-worker/journal.json   present only while a commit is being applied
//	.gpu-worker/tmp/           staged content and backups of a commit in flight
//
// A file's Guard is the hash of its content (its git blob id): a guarded
// update fails when anything — a commit, a user's editor, git pull —
// changed the file since the guard was read.
//
// LFS objects live where git-lfs keeps them, .git/lfs/objects/ab/cd/<oid>.
// A commit that writes an LFS pointer under .project/attachments/pointers/
// also writes the object's bytes to the matching .project/attachments/files/
// path, which is where the Codex editor plays audio from.
package local

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"gpu-worker/project"
)

const metaName = ".gpu-worker"

// Project is a Codex project folder. It is safe for concurrent use, and
// several processes may open the same folder.
type Project struct {
	root string
	meta string

	sem chan struct{} // serialises this process's commits before the file lock

	mu      sync.Mutex
	hist    history
	blobs   map[string]blobCache
	uploads int // objects written to the LFS store (not skipped)

	// Test hooks: between staging and the swap, and after each path is
	// set aside.
	beforeApply    func()
	afterMoveAside func(rel string)
}

type blobCache struct {
	size  int64
	mtime time.Time
	blob  string
}

// Open opens the project folder dir, which must exist.
func Open(dir string) (*Project, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open project folder: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("open project folder: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open project folder: %s is not a directory", abs)
	}
	return &Project{
		root:  abs,
		meta:  filepath.Join(abs, metaName),
		sem:   make(chan struct{}, 1),
		hist:  newHistory(),
		blobs: map[string]blobCache{},
	}, nil
}

// Name is the folder's absolute path.
func (p *Project) Name() string { return p.root }

// LocalPath returns the absolute path of a repository path, or "" when the
// path is not a valid repository path (absolute, escaping the folder, or
// inside .git/ or .gpu-worker/).
func (p *Project) LocalPath(rel string) string {
	clean, err := cleanPath(rel)
	if err != nil {
		return ""
	}
	return p.abs(clean)
}

func (p *Project) abs(rel string) string {
	return filepath.Join(p.root, filepath.FromSlash(rel))
}

// cleanPath validates a repository path and returns it in canonical form.
func cleanPath(rel string) (string, error) {
	if rel == "" || strings.Contains(rel, "\\") || strings.ContainsRune(rel, 0) {
		return "", fmt.Errorf("invalid path %q", rel)
	}
	c := path.Clean(rel)
	if path.IsAbs(c) || c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("invalid path %q", rel)
	}
	first, _, _ := strings.Cut(c, "/")
	if first == ".git" || first == metaName {
		return "", fmt.Errorf("reserved path %q", rel)
	}
	return c, nil
}

// ReadFile returns a file's bytes and version ids.
func (p *Project) ReadFile(ctx context.Context, rel string) (*project.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	clean, err := cleanPath(rel)
	if err != nil {
		return nil, err
	}
	data, err := readRegular(p.abs(clean))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", clean, err)
	}
	blob := blobID(data)
	return &project.File{
		FileInfo: project.FileInfo{Path: clean, BlobID: blob, Guard: blob, Size: int64(len(data))},
		Content:  data,
	}, nil
}

// StatFile returns a file's version ids without keeping its content.
func (p *Project) StatFile(ctx context.Context, rel string) (*project.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	clean, err := cleanPath(rel)
	if err != nil {
		return nil, err
	}
	blob, size, err := p.cachedBlob(clean)
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", clean, err)
	}
	return &project.FileInfo{Path: clean, BlobID: blob, Guard: blob, Size: size}, nil
}

// ListTree lists every regular file below dir ("" = the whole folder),
// skipping .git/ and .gpu-worker/. A missing dir lists as empty.
func (p *Project) ListTree(ctx context.Context, dir string) ([]project.TreeEntry, error) {
	base := p.root
	if dir != "" && dir != "." && dir != "/" {
		clean, err := cleanPath(strings.TrimSuffix(dir, "/"))
		if err != nil {
			return nil, err
		}
		base = p.abs(clean)
	}
	var out []project.TreeEntry
	err := filepath.WalkDir(base, func(abs string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && abs == base {
				return fs.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(p.root, abs)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if d.Name() == ".git" || rel == metaName {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || d.Name() == ".git" {
			return nil
		}
		blob, _, err := p.cachedBlob(rel)
		if errors.Is(err, project.ErrNotFound) {
			return nil // removed while we walked
		}
		if err != nil {
			return err
		}
		out = append(out, project.TreeEntry{Path: rel, BlobID: blob})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tree: %w", err)
	}
	return out, nil
}

// blobID is git's object id for content: sha1("blob <n>\0" + content).
func blobID(data []byte) string {
	h := sha1.New()
	h.Write([]byte("blob " + strconv.Itoa(len(data)) + "\x00"))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// readRegular reads a regular file; anything else is ErrNotFound.
func readRegular(abs string) ([]byte, error) {
	fi, err := os.Stat(abs)
	if err != nil {
		if notExist(err) {
			return nil, project.ErrNotFound
		}
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, project.ErrNotFound
	}
	data, err := os.ReadFile(abs)
	if notExist(err) {
		return nil, project.ErrNotFound
	}
	return data, err
}

// notExist also counts "a parent is a file" as absence.
func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotDir)
}

// hashFile streams a file's blob id from one open descriptor, so the size
// in the header and the bytes hashed belong to the same file.
func hashFile(abs string) (string, int64, os.FileInfo, error) {
	for attempt := 0; ; attempt++ {
		f, err := os.Open(abs)
		if err != nil {
			if notExist(err) {
				return "", 0, nil, project.ErrNotFound
			}
			return "", 0, nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return "", 0, nil, err
		}
		if !fi.Mode().IsRegular() {
			f.Close()
			return "", 0, nil, project.ErrNotFound
		}
		h := sha1.New()
		h.Write([]byte("blob " + strconv.FormatInt(fi.Size(), 10) + "\x00"))
		n, err := io.Copy(h, io.LimitReader(f, fi.Size()+1))
		f.Close()
		if err != nil {
			return "", 0, nil, err
		}
		if n == fi.Size() {
			return hex.EncodeToString(h.Sum(nil)), n, fi, nil
		}
		// Written in place while we read: try again.
		if attempt == 3 {
			return "", 0, nil, fmt.Errorf("file keeps changing while read")
		}
	}
}

// cachedBlob returns a file's blob id, reusing an earlier hash when size
// and modification time are unchanged. Files modified in the last seconds
// are never cached, since a same-size rewrite could keep the same mtime.
// Commit guards never use this cache.
func (p *Project) cachedBlob(rel string) (string, int64, error) {
	abs := p.abs(rel)
	fi, err := os.Stat(abs)
	if err != nil {
		if notExist(err) {
			return "", 0, project.ErrNotFound
		}
		return "", 0, err
	}
	if !fi.Mode().IsRegular() {
		return "", 0, project.ErrNotFound
	}
	p.mu.Lock()
	c, ok := p.blobs[rel]
	p.mu.Unlock()
	if ok && c.size == fi.Size() && c.mtime.Equal(fi.ModTime()) {
		return c.blob, c.size, nil
	}
	blob, size, hfi, err := hashFile(abs)
	if err != nil {
		return "", 0, err
	}
	if time.Since(hfi.ModTime()) > 2*time.Second {
		p.mu.Lock()
		p.blobs[rel] = blobCache{size: size, mtime: hfi.ModTime(), blob: blob}
		p.mu.Unlock()
	}
	return blob, size, nil
}
