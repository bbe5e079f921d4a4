package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"gpu-worker/atomicfile"
	"gpu-worker/project"
)

// Where the Codex editor keeps audio: committed LFS pointers, and the real
// bytes beside them (git-ignored) for playback.
const (
	pointersPrefix = ".project/attachments/pointers/"
	filesPrefix    = ".project/attachments/files/"
)

// gitDir is the folder's git directory, following a ".git" file (worktrees,
// submodules) to the common directory where git-lfs keeps its objects.
func (p *Project) gitDir() string {
	dot := filepath.Join(p.root, ".git")
	fi, err := os.Stat(dot)
	if err != nil || fi.IsDir() {
		return dot
	}
	b, err := os.ReadFile(dot)
	if err != nil {
		return dot
	}
	gd, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir:")
	if !ok {
		return dot
	}
	gd = strings.TrimSpace(gd)
	if !filepath.IsAbs(gd) {
		gd = filepath.Join(p.root, gd)
	}
	if c, err := os.ReadFile(filepath.Join(gd, "commondir")); err == nil {
		common := strings.TrimSpace(string(c))
		if !filepath.IsAbs(common) {
			common = filepath.Join(gd, common)
		}
		return filepath.Clean(common)
	}
	return gd
}

// ObjectPath is where the LFS object oid lives (or would live) on disk,
// or "" for an invalid oid.
func (p *Project) ObjectPath(oid string) string {
	if validOID(oid) != nil {
		return ""
	}
	return filepath.Join(p.gitDir(), "lfs", "objects", oid[0:2], oid[2:4], oid)
}

func validOID(oid string) error {
	if len(oid) != 64 {
		return fmt.Errorf("invalid LFS oid %q", oid)
	}
	if _, err := hex.DecodeString(oid); err != nil || strings.ToLower(oid) != oid {
		return fmt.Errorf("invalid LFS oid %q", oid)
	}
	return nil
}

// GetLFS copies the object behind ptr from the local LFS store to dst,
// verifying size and sha256; dst is written atomically.
func (p *Project) GetLFS(ctx context.Context, ptr project.Pointer, dst string) error {
	if err := validOID(ptr.OID); err != nil {
		return err
	}
	f, err := os.Open(p.ObjectPath(ptr.OID))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("get LFS object %s: %w", ptr.OID[:12], project.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("get LFS object: %w", err)
	}
	defer f.Close()
	if err := project.WriteVerified(ctxReader{ctx, f}, ptr, dst); err != nil {
		return fmt.Errorf("get LFS object: %w", err)
	}
	return nil
}

// PutLFS stores the file at src in the local LFS store, hashing it while it
// is copied; an object already stored with the right size is kept as is.
func (p *Project) PutLFS(ctx context.Context, src string) (project.Pointer, error) {
	in, err := os.Open(src)
	if err != nil {
		return project.Pointer{}, fmt.Errorf("put LFS object: %w", err)
	}
	defer in.Close()
	tmpDir := filepath.Join(p.gitDir(), "lfs", "tmp")
	if err := os.MkdirAll(tmpDir, 0o755); err != nil {
		return project.Pointer{}, fmt.Errorf("put LFS object: %w", err)
	}
	tmp, err := os.CreateTemp(tmpDir, "put-*")
	if err != nil {
		return project.Pointer{}, fmt.Errorf("put LFS object: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name()) // a no-op once renamed
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, in})
	if err != nil {
		return project.Pointer{}, fmt.Errorf("put LFS object: %w", err)
	}
	ptr := project.Pointer{OID: hex.EncodeToString(h.Sum(nil)), Size: n}
	dst := p.ObjectPath(ptr.OID)
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() && fi.Size() == n {
		return ptr, nil
	}
	if err := tmp.Chmod(0o644); err != nil {
		return project.Pointer{}, fmt.Errorf("put LFS object: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return project.Pointer{}, fmt.Errorf("put LFS object: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return project.Pointer{}, fmt.Errorf("put LFS object: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return project.Pointer{}, fmt.Errorf("put LFS object: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(dst)); err != nil {
		return project.Pointer{}, fmt.Errorf("put LFS object: %w", err)
	}
	p.mu.Lock()
	p.uploads++
	p.mu.Unlock()
	return ptr, nil
}

// planMirrors adds, for every pointer a commit leaves under
// .project/attachments/pointers/, the object's bytes at the matching
// files/ path, and removes the files/ copy of a pointer the commit removes.
// Paths the commit writes itself are left to it.
func (p *Project) planMirrors(ctx context.Context, final map[string]*target) (map[string]*target, error) {
	out := map[string]*target{}
	i := 0
	for rel, t := range final {
		rest, ok := strings.CutPrefix(rel, pointersPrefix)
		if !ok {
			continue
		}
		mirror := filesPrefix + rest
		if _, own := final[mirror]; own {
			continue
		}
		if !t.exists {
			if fi, err := os.Stat(p.abs(mirror)); err == nil && fi.Mode().IsRegular() {
				out[mirror] = &target{}
			}
			continue
		}
		ptr, ok := p.pointerOf(t)
		if !ok {
			continue
		}
		obj, err := os.Open(p.ObjectPath(ptr.OID))
		if errors.Is(err, fs.ErrNotExist) {
			slog.Warn("LFS object not in the local store; no playable copy written",
				"project", p.root, "pointer", rel, "oid", ptr.OID)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("copy %s: %w", mirror, err)
		}
		i++
		staged := filepath.Join(p.tmpDir(), fmt.Sprintf("mirror-%d", i))
		err = project.WriteVerified(ctxReader{ctx, obj}, ptr, staged)
		obj.Close()
		if err == nil {
			err = os.Chmod(staged, 0o644)
		}
		if err == nil {
			err = syncFile(staged) // the commit must not land before its files
		}
		if err != nil {
			return nil, fmt.Errorf("copy %s: %w", mirror, err)
		}
		out[mirror] = &target{exists: true, staged: staged}
	}
	return out, nil
}

// pointerOf parses the content t leaves as an LFS pointer, if it is one.
func (p *Project) pointerOf(t *target) (project.Pointer, bool) {
	data := t.data
	if t.from != "" {
		f, err := os.Open(p.abs(t.from))
		if err != nil {
			return project.Pointer{}, false
		}
		defer f.Close()
		data, err = io.ReadAll(io.LimitReader(f, 1024))
		if err != nil {
			return project.Pointer{}, false
		}
	}
	ptr, err := project.ParsePointer(data)
	return ptr, err == nil && validOID(ptr.OID) == nil
}

// ctxReader stops a long copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
