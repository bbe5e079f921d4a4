package local

import (
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"

	"gpu-worker/project"
)

// BenchmarkHeartbeat is a guarded read-modify-write of a small file, the
// lease heartbeat's commit.
func BenchmarkHeartbeat(b *testing.B) {
	dir := b.TempDir()
	p, _ := Open(dir)
	ctx := context.Background()
	const path = "gpu_jobs/job_1/response.yaml"
	if _, err := p.Commit(ctx, "claim", []project.Action{{Kind: project.Create, Path: path, Content: []byte("state: running\n")}}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		st, err := p.StatFile(ctx, path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Commit(ctx, "beat", []project.Action{{Kind: project.Update, Path: path,
			Content: []byte("state: running\n"), Guard: st.Guard}}); err != nil {
			b.Fatal(err)
		}
	}
}

const benchObject = 32 << 20

func benchSource(b *testing.B) string {
	src := filepath.Join(b.TempDir(), "src.bin")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, benchObject); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return src
}

// BenchmarkPutLFS stores a new 32 MiB object each time (the store is
// emptied between rounds so nothing is skipped).
func BenchmarkPutLFS(b *testing.B) {
	p, _ := Open(b.TempDir())
	src := benchSource(b)
	b.SetBytes(benchObject)
	b.ReportAllocs()
	for b.Loop() {
		ptr, err := p.PutLFS(context.Background(), src)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(p.ObjectPath(ptr.OID))
		b.StartTimer()
	}
}

func BenchmarkGetLFS(b *testing.B) {
	p, _ := Open(b.TempDir())
	src := benchSource(b)
	ptr, err := p.PutLFS(context.Background(), src)
	if err != nil {
		b.Fatal(err)
	}
	dst := filepath.Join(b.TempDir(), "out.bin")
	b.SetBytes(benchObject)
	b.ReportAllocs()
	for b.Loop() {
		if err := p.GetLFS(context.Background(), ptr, dst); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlainCopy is the baseline: io.Copy of the same bytes to a new
// file with one fsync, no hashing.
func BenchmarkPlainCopy(b *testing.B) {
	src := benchSource(b)
	dst := filepath.Join(b.TempDir(), "out.bin")
	b.SetBytes(benchObject)
	b.ReportAllocs()
	for b.Loop() {
		in, _ := os.Open(src)
		out, _ := os.Create(dst)
		if _, err := io.Copy(out, in); err != nil {
			b.Fatal(err)
		}
		out.Sync()
		out.Close()
		in.Close()
	}
}
