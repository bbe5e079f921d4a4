package atomicfile

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteReplacesContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a", "b", "f.txt")
	if err := Write(p, []byte("first"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("second, longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "second, longer" {
		t.Fatalf("content %q", got)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if names := entries(t, filepath.Dir(p)); len(names) != 1 {
		t.Fatalf("directory holds %v, want only f.txt", names)
	}
}

func TestWriteFromCountsBytes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "big.bin")
	data := bytes.Repeat([]byte("0123456789"), 100_000)
	n, err := WriteFrom(p, bytes.NewReader(data), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(data)) {
		t.Fatalf("wrote %d bytes, want %d", n, len(data))
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

func TestWriteFromFailureKeepsOldContentAndNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.txt")
	if err := Write(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := WriteFrom(p, &failingReader{n: 4096}, 0o644)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("error %v, want the reader's", err)
	}
	got, _ := os.ReadFile(p)
	if string(got) != "old" {
		t.Fatalf("content %q, want old", got)
	}
	if names := entries(t, dir); len(names) != 1 || names[0] != "f.txt" {
		t.Fatalf("directory holds %v", names)
	}
}

func TestFailedRenameLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	// A non-empty directory at the destination makes the rename fail.
	p := filepath.Join(dir, "taken")
	if err := os.MkdirAll(filepath.Join(p, "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("x"), 0o644); err == nil {
		t.Fatal("write over a directory succeeded")
	}
	if names := entries(t, dir); len(names) != 1 || names[0] != "taken" {
		t.Fatalf("directory holds %v", names)
	}
}

func TestPendingInvisibleUntilCommit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.txt")
	f, err := Create(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(f, "pending")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("destination visible before commit: %v", err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if string(got) != "pending" {
		t.Fatalf("content %q", got)
	}

	g, _ := Create(p, 0o644)
	io.WriteString(g, "discarded")
	g.Abort()
	g.Abort()
	got, _ = os.ReadFile(p)
	if string(got) != "pending" {
		t.Fatalf("content after abort %q", got)
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Fatalf("directory holds %v", names)
	}
	if _, err := g.Write([]byte("late")); err == nil {
		t.Fatal("write after abort succeeded")
	}
}
