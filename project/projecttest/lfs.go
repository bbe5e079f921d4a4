package projecttest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gpu-worker/project"
)

// writeRandom writes n pseudo-random bytes (seeded by seed) to a new file.
func writeRandom(t *testing.T, n int64, seed string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "src.bin")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 1<<20)
	fill := []byte(seed + randHex(8))
	for i := range block {
		block[i] = fill[i%len(fill)] ^ byte(i>>8) ^ byte(i*31)
	}
	for written := int64(0); written < n; {
		chunk := block
		if rest := n - written; rest < int64(len(chunk)) {
			chunk = chunk[:rest]
		}
		// Vary each block so no two MiB are alike.
		binaryCounter(chunk, written)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		written += int64(len(chunk))
	}
	return path
}

func binaryCounter(b []byte, v int64) {
	for i := 0; i < 8 && i < len(b); i++ {
		b[i] = byte(v >> (8 * i))
	}
}

func testLFSRoundTrip(t *testing.T, e Env, dir string) {
	size := e.LargeLFSSize
	if size == 0 {
		size = 50 << 20
	}
	src := writeRandom(t, size, "big")
	want, err := project.HashFile(src)
	if err != nil {
		t.Fatal(err)
	}
	ptr, err := e.Project.PutLFS(ctx(t), src)
	if err != nil {
		t.Fatal(err)
	}
	if ptr != want {
		t.Fatalf("pointer %+v, want %+v", ptr, want)
	}
	dst := filepath.Join(t.TempDir(), "out", "got.bin")
	if err := e.Project.GetLFS(ctx(t), ptr, dst); err != nil {
		t.Fatal(err)
	}
	got, err := project.HashFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("downloaded %+v, want %+v", got, want)
	}
	// The pointer text commits like any file and reads back intact.
	commit(t, e.Project, "pointer", create(dir+"model.pt", []byte(ptr.String())))
	back, err := project.ParsePointer(mustRead(t, e.Project, dir+"model.pt").Content)
	if err != nil || back != ptr {
		t.Fatalf("pointer read back %+v, %v", back, err)
	}
}

func testLFSPutTwice(t *testing.T, e Env, dir string) {
	src := writeRandom(t, 300<<10, "twice")
	p1, err := e.Project.PutLFS(ctx(t), src)
	if err != nil {
		t.Fatal(err)
	}
	before := 0
	if e.LFSUploads != nil {
		before = e.LFSUploads()
	}
	p2, err := e.Project.PutLFS(ctx(t), src)
	if err != nil {
		t.Fatal(err)
	}
	if p1 != p2 {
		t.Fatalf("second put gave %+v, first %+v", p2, p1)
	}
	if e.LFSUploads != nil {
		if n := e.LFSUploads() - before; n != 0 {
			t.Fatalf("second put uploaded %d objects, want 0", n)
		}
	}
}

func testLFSCorrupt(t *testing.T, e Env, dir string) {
	src := writeRandom(t, 200<<10, "corrupt")
	ptr, err := e.Project.PutLFS(ctx(t), src)
	if err != nil {
		t.Fatal(err)
	}
	outDir := t.TempDir()
	dst := filepath.Join(outDir, "audio.wav")
	// A pointer that lies about the size must fail like a damaged object.
	if err := e.Project.GetLFS(ctx(t), project.Pointer{OID: ptr.OID, Size: ptr.Size + 1}, dst); err == nil {
		t.Fatal("object downloaded under a pointer with the wrong size")
	}
	e.CorruptLFS(t, ptr.OID)
	if err := e.Project.GetLFS(ctx(t), ptr, dst); err == nil {
		t.Fatal("corrupted object downloaded without error")
	}
	left, _ := os.ReadDir(outDir)
	if len(left) != 0 {
		names := []string{}
		for _, d := range left {
			names = append(names, d.Name())
		}
		t.Fatalf("files left behind: %s", strings.Join(names, ", "))
	}
}

func testLFSMissing(t *testing.T, e Env, dir string) {
	ptr := project.Pointer{OID: strings.Repeat("ab", 32), Size: 1234}
	dst := filepath.Join(t.TempDir(), "x.bin")
	err := e.Project.GetLFS(ctx(t), ptr, dst)
	if !errors.Is(err, project.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("dst exists after failed download: %v", err)
	}
}
