package dataset

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"gpu-worker/limits"
	"gpu-worker/project"
)

// Fetcher is what Build needs from a project.
type Fetcher interface {
	ReadFile(ctx context.Context, path string) (*project.File, error)
	GetLFS(ctx context.Context, p project.Pointer, dst string) error
}

// Reasons a cell's audio could not be fetched, as counted in Result.Rejected.
// Reasons from decoding are audio.Reason values ("corrupt", "silent", …).
const (
	NoAudio        = "no audio"           // the cell names no recording
	AudioMissing   = "audio missing"      // neither the file nor its pointer is in the project
	ObjectMissing  = "LFS object missing" // the pointer's object is not in the LFS store
	ObjectCorrupt  = "LFS object corrupt" // the store's bytes do not match the pointer
	DownloadFailed = "download failed"    // any other read or download error
	DuplicateID    = "duplicate id"       // an earlier item had the same id
	TooLarge       = "too large"          // its LFS object is over the worker's bound
)

// rejection is a cell that cannot be used: a counted reason and the detail
// for the log line.
type rejection struct {
	reason string
	err    error
}

func (r *rejection) Error() string { return r.reason + ": " + r.err.Error() }

// fetcher resolves cells' audio to files in the download cache.
type fetcher struct {
	f     Fetcher
	cache string
	locks sync.Map // oid → *sync.Mutex: one download per object at a time
	// files/ copies are git-ignored, so a GitLab project never has them:
	// after a few misses and no hit, stop paying a round trip to ask.
	filesHits, filesMisses atomic.Int32
}

const filesMissesBeforeGivingUp = 4

func (x *fetcher) tryFiles() bool {
	return x.filesHits.Load() > 0 || x.filesMisses.Load() < filesMissesBeforeGivingUp
}

// fetch returns a local copy of s's audio: the real bytes at FilesPath when
// the project has them, else the LFS object behind PointersPath (or the bytes
// there, in a repository without LFS).
func (x *fetcher) fetch(ctx context.Context, s Source) (local, from string, err error) {
	if s.FilesPath == "" && s.PointersPath == "" {
		return "", "", &rejection{NoAudio, errors.New("the cell names no recording")}
	}
	var tried []string
	for _, p := range []string{s.FilesPath, s.PointersPath} {
		isFiles := p == s.FilesPath
		if p == "" || (isFiles && s.PointersPath != "" && !x.tryFiles()) {
			continue
		}
		file, err := x.f.ReadFile(ctx, p)
		if errors.Is(err, project.ErrNotFound) {
			if isFiles {
				x.filesMisses.Add(1)
			}
			tried = append(tried, p)
			continue
		}
		if err == nil && isFiles {
			x.filesHits.Add(1)
		}
		if err != nil {
			if ctx.Err() != nil {
				return "", p, ctx.Err()
			}
			return "", p, &rejection{DownloadFailed, fmt.Errorf("read %s: %w", p, err)}
		}
		if ptr, perr := project.ParsePointer(file.Content); perr == nil {
			local, err = x.object(ctx, ptr, path.Ext(p))
		} else {
			local, err = x.store(file.Content, path.Ext(p))
		}
		return local, p, err
	}
	return "", "", &rejection{AudioMissing, fmt.Errorf("not in the project: %s", strings.Join(tried, ", "))}
}

// object makes sure the cache holds the object behind ptr, downloading it
// unless a verified copy is already there.
func (x *fetcher) object(ctx context.Context, ptr project.Pointer, ext string) (string, error) {
	dst := x.cachePath(ptr.OID, ext)
	mu, _ := x.locks.LoadOrStore(ptr.OID, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	if cached(dst, ptr) {
		return dst, nil
	}
	err := x.f.GetLFS(ctx, ptr, dst)
	switch {
	case err == nil:
		return dst, nil
	case ctx.Err() != nil:
		return "", ctx.Err()
	case errors.Is(err, project.ErrNotFound):
		return "", &rejection{ObjectMissing, fmt.Errorf("object %s: %w", ptr.OID, err)}
	case errors.Is(err, project.ErrObjectMismatch):
		return "", &rejection{ObjectCorrupt, err}
	case errors.As(err, new(*limits.Exceeded)):
		return "", &rejection{TooLarge, err}
	}
	return "", &rejection{DownloadFailed, fmt.Errorf("object %s: %w", ptr.OID, err)}
}

// store puts real bytes read from the project into the cache, named by
// their sha256 like LFS objects.
func (x *fetcher) store(b []byte, ext string) (string, error) {
	sum := sha256.Sum256(b)
	ptr := project.Pointer{OID: hex.EncodeToString(sum[:]), Size: int64(len(b))}
	dst := x.cachePath(ptr.OID, ext)
	mu, _ := x.locks.LoadOrStore(ptr.OID, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	if cached(dst, ptr) {
		return dst, nil
	}
	if err := project.WriteVerified(bytes.NewReader(b), ptr, dst); err != nil {
		return "", fmt.Errorf("cache audio: %w", err)
	}
	return dst, nil
}

func (x *fetcher) cachePath(oid, ext string) string {
	if len(ext) > 8 || strings.ContainsAny(ext, `/\`) {
		ext = ""
	}
	return filepath.Join(x.cache, oid[:2], oid+strings.ToLower(ext))
}

// cached reports whether dst holds exactly the object ptr names.
func cached(dst string, ptr project.Pointer) bool {
	st, err := os.Stat(dst)
	if err != nil || st.Size() != ptr.Size {
		return false
	}
	got, err := project.HashFile(dst)
	return err == nil && got == ptr
}
