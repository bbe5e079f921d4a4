package gitlab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/project"
)

// benchSize is the object size for throughput runs (GPU_WORKER_LFS_BENCH_MB, default 64).
func benchSize() int64 {
	if v, err := strconv.Atoi(os.Getenv("GPU_WORKER_LFS_BENCH_MB")); err == nil && v > 0 {
		return int64(v) << 20
	}
	return 64 << 20
}

// benchFile writes size bytes that do not repeat within a MiB.
func benchFile(b *testing.B, size int64) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "object.bin")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 1<<20)
	x := uint64(88172645463325252)
	for i := range block {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		block[i] = byte(x)
	}
	for off := int64(0); off < size; off += int64(len(block)) {
		block[0], block[1], block[2] = byte(off>>20), byte(off>>28), byte(off>>36)
		n := min(int64(len(block)), size-off)
		if _, err := f.Write(block[:n]); err != nil {
			b.Fatal(err)
		}
	}
	return path
}

func benchProject(b *testing.B) (*gitlabtest.Server, *Project) {
	s, _, p := emulated(b, gitlabtest.DefaultToken)
	return s, p
}

func BenchmarkLFSUpload(b *testing.B) {
	size := benchSize()
	s, p := benchProject(b)
	src := benchFile(b, size)
	ptr, _ := project.HashFile(src)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		s.DeleteLFSObject(ptr.OID)
		b.StartTimer()
		if _, err := p.PutLFS(context.Background(), src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLFSDownload(b *testing.B) {
	size := benchSize()
	_, p := benchProject(b)
	src := benchFile(b, size)
	ptr, err := p.PutLFS(context.Background(), src)
	if err != nil {
		b.Fatal(err)
	}
	dst := filepath.Join(b.TempDir(), "got.bin")
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		if err := p.GetLFS(context.Background(), ptr, dst); err != nil {
			b.Fatal(err)
		}
	}
}

// plainServer stores PUT bodies in a file and serves it back: the same
// disk work as the emulator, without hashing or the LFS protocol.
func plainServer(b *testing.B) (*httptest.Server, string) {
	stored := filepath.Join(b.TempDir(), "stored.bin")
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			f, _ := os.Create(stored)
			io.Copy(f, r.Body)
			f.Close()
			return
		}
		f, _ := os.Open(stored)
		defer f.Close()
		st, _ := f.Stat()
		w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
		io.Copy(w, f)
	}))
	b.Cleanup(ts.Close)
	return ts, stored
}

func plainPut(b *testing.B, url, src string, size int64) {
	f, _ := os.Open(src)
	req, _ := http.NewRequest(http.MethodPut, url, f)
	req.ContentLength = size
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
}

func BenchmarkPlainCopyUpload(b *testing.B) {
	size := benchSize()
	ts, _ := plainServer(b)
	src := benchFile(b, size)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		plainPut(b, ts.URL, src, size)
	}
}

func BenchmarkPlainCopyDownload(b *testing.B) {
	size := benchSize()
	ts, _ := plainServer(b)
	src := benchFile(b, size)
	plainPut(b, ts.URL, src, size)
	dst := filepath.Join(b.TempDir(), "got.bin")
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		resp, err := http.Get(ts.URL)
		if err != nil {
			b.Fatal(err)
		}
		f, _ := os.Create(dst)
		io.Copy(f, resp.Body)
		f.Close()
		resp.Body.Close()
	}
}

// BenchmarkPlainCopyUploadHashed adds the client's one sha256 pass (which
// LFS needs to name the object) to the plain upload.
func BenchmarkPlainCopyUploadHashed(b *testing.B) {
	size := benchSize()
	ts, _ := plainServer(b)
	src := benchFile(b, size)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		if _, err := project.HashFile(src); err != nil {
			b.Fatal(err)
		}
		plainPut(b, ts.URL, src, size)
	}
}

// BenchmarkPlainCopyDownloadVerified adds what every LFS download does on
// top of the copy: sha256 + size check, fsync and rename (WriteVerified).
func BenchmarkPlainCopyDownloadVerified(b *testing.B) {
	size := benchSize()
	ts, _ := plainServer(b)
	src := benchFile(b, size)
	plainPut(b, ts.URL, src, size)
	ptr, _ := project.HashFile(src)
	dst := filepath.Join(b.TempDir(), "got.bin")
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		resp, err := http.Get(ts.URL)
		if err != nil {
			b.Fatal(err)
		}
		err = project.WriteVerified(resp.Body, ptr, dst)
		resp.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
}

// peakHeap samples HeapInuse until stop is called and returns the maximum.
func peakHeap() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak.Load()
	}
}

// BenchmarkLFSPeakMemory uploads and downloads one object of each size and
// reports the process's peak heap (client and emulator together).
func BenchmarkLFSPeakMemory(b *testing.B) {
	sizes := []int64{64 << 20, 1 << 30}
	if v := os.Getenv("GPU_WORKER_LFS_PEAK_MB"); v != "" {
		n, _ := strconv.Atoi(v)
		sizes = []int64{64 << 20, int64(n) << 20}
	}
	for _, size := range sizes {
		b.Run(fmt.Sprintf("size=%dMiB", size>>20), func(b *testing.B) {
			s, p := benchProject(b)
			src := benchFile(b, size)
			dst := filepath.Join(b.TempDir(), "got.bin")
			ptr, _ := project.HashFile(src)
			runtime.GC()
			var base runtime.MemStats
			runtime.ReadMemStats(&base)
			b.ResetTimer()
			var peak uint64
			for range b.N {
				s.DeleteLFSObject(ptr.OID)
				stop := peakHeap()
				if _, err := p.PutLFS(context.Background(), src); err != nil {
					b.Fatal(err)
				}
				if err := p.GetLFS(context.Background(), ptr, dst); err != nil {
					b.Fatal(err)
				}
				peak = max(peak, stop())
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(peak-min(peak, base.HeapInuse))/(1<<20), "heap-growth-MiB")
		})
	}
}
