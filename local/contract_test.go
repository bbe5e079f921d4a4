package local

import (
	"os"
	"path/filepath"
	"testing"

	"gpu-worker/project"
	"gpu-worker/project/projecttest"
)

// newEnv is a fresh project folder; the "user" edits files directly, as an
// editor or git pull would.
func newEnv(t *testing.T) projecttest.Env {
	dir := t.TempDir()
	p, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return projecttest.Env{
		Project:   p,
		UserWrite: func(t testing.TB, files map[string][]byte) { userWrite(t, dir, files) },
		CorruptLFS: func(t testing.TB, oid string) {
			t.Helper()
			path := p.ObjectPath(oid)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0xff
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		},
		LFSUploads: func() int {
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.uploads
		},
	}
}

func userWrite(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	for rel, content := range files {
		abs := filepath.Join(dir, filepath.FromSlash(rel))
		if content == nil {
			if err := os.Remove(abs); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(abs, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestContract(t *testing.T) {
	projecttest.Run(t, newEnv)
}

var _ project.Project = (*Project)(nil)
