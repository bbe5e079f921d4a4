package dataset

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"gpu-worker/project"
)

// fakeProject is an in-memory project: files by path, LFS objects by oid,
// a per-call latency standing for network round trips, and call counts.
type fakeProject struct {
	mu         sync.Mutex
	files      map[string][]byte
	objects    map[string][]byte
	latency    time.Duration // per ReadFile
	lfsLatency time.Duration // per GetLFS
	reads      int
	gets       map[string]int // oid → GetLFS calls
}

func newFake() *fakeProject {
	return &fakeProject{files: map[string][]byte{}, objects: map[string][]byte{}, gets: map[string]int{}}
}

func (p *fakeProject) wait(ctx context.Context, d time.Duration) error {
	if d == 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *fakeProject) ReadFile(ctx context.Context, path string) (*project.File, error) {
	if err := p.wait(ctx, p.latency); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reads++
	b, ok := p.files[path]
	if !ok {
		return nil, fmt.Errorf("read %s: %w", path, project.ErrNotFound)
	}
	return &project.File{FileInfo: project.FileInfo{Path: path, Size: int64(len(b))}, Content: b}, nil
}

func (p *fakeProject) GetLFS(ctx context.Context, ptr project.Pointer, dst string) error {
	if err := p.wait(ctx, p.lfsLatency); err != nil {
		return err
	}
	p.mu.Lock()
	p.gets[ptr.OID]++
	b, ok := p.objects[ptr.OID]
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("object %s: %w", ptr.OID[:12], project.ErrNotFound)
	}
	return project.WriteVerified(bytes.NewReader(b), ptr, dst)
}

// addLFS commits b at path as an LFS pointer with its object in the store.
func (p *fakeProject) addLFS(path string, b []byte) project.Pointer {
	sum := sha256.Sum256(b)
	ptr := project.Pointer{OID: hex.EncodeToString(sum[:]), Size: int64(len(b))}
	p.files[path] = []byte(ptr.String())
	p.objects[ptr.OID] = b
	return ptr
}

func (p *fakeProject) totalGets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.gets {
		n += c
	}
	return n
}

// recordings are real encoded files made once for all tests.
var recordings struct {
	once                 sync.Once
	tone, tone2, silence []byte
	err                  error
}

// toneSeconds is how long the tone of the test recordings lasts.
const toneSeconds = 0.6

func loadRecordings(t testing.TB) {
	t.Helper()
	recordings.once.Do(func() {
		dir, err := os.MkdirTemp("", "dataset-audio-")
		if err != nil {
			recordings.err = err
			return
		}
		defer os.RemoveAll(dir)
		gen := func(name, input, filter string) []byte {
			if recordings.err != nil {
				return nil
			}
			path := filepath.Join(dir, name)
			args := []string{"-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", input}
			if filter != "" {
				args = append(args, "-af", filter)
			}
			if out, err := exec.Command("ffmpeg", append(args, "-ac", "1", path)...).CombinedOutput(); err != nil {
				recordings.err = fmt.Errorf("ffmpeg %s: %v: %s", name, err, out)
				return nil
			}
			b, err := os.ReadFile(path)
			recordings.err = err
			return b
		}
		tone := fmt.Sprintf("sine=frequency=440:sample_rate=48000:duration=%g", toneSeconds)
		recordings.tone = gen("tone.webm", tone, "adelay=300:all=1,apad=pad_dur=0.4")
		recordings.tone2 = gen("tone.ogg", tone, "adelay=500:all=1,apad=pad_dur=0.2")
		recordings.silence = gen("silence.ogg", "anullsrc=r=48000:cl=mono", "atrim=duration=1")
	})
	if recordings.err != nil {
		t.Fatal(recordings.err)
	}
}
