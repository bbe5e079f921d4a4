package dataset

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/project"
)

// The download benchmarks fetch benchFiles recordings of benchSize bytes,
// each request paying benchRTT, as on a network.
const (
	benchFiles = 500
	benchSize  = 48 << 10
	benchRTT   = 5 * time.Millisecond
)

func benchItems() []Source {
	items := make([]Source, benchFiles)
	for i := range items {
		id := fmt.Sprintf("%03d", i)
		items[i] = Source{ID: id, CellID: id, PointersPath: fmt.Sprintf("pointers/GEN/audio-%s.webm", id)}
	}
	return items
}

// sequential is the plain way: read each pointer, download its object.
func sequential(ctx context.Context, f Fetcher, items []Source, cache string) error {
	for _, s := range items {
		file, err := f.ReadFile(ctx, s.PointersPath)
		if err != nil {
			return err
		}
		ptr, err := project.ParsePointer(file.Content)
		if err != nil {
			return err
		}
		if err := f.GetLFS(ctx, ptr, filepath.Join(cache, ptr.OID)); err != nil {
			return err
		}
	}
	return nil
}

// pooled is Build's download stage.
func pooled(ctx context.Context, f Fetcher, items []Source, cache string, parallel int) error {
	fx := &fetcher{f: f, cache: cache}
	errs := make([]error, len(items))
	forEach(ctx, len(items), parallel, func(i int) {
		_, _, errs[i] = fx.fetch(ctx, items[i])
	})
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func benchDownloads(b *testing.B, f Fetcher, gets func() int) {
	items := benchItems()
	run := func(name string, fetch func(ctx context.Context, cache string) error) {
		b.Run(name, func(b *testing.B) {
			var n int
			for b.Loop() {
				cache, err := os.MkdirTemp(b.TempDir(), "cache")
				if err != nil {
					b.Fatal(err)
				}
				before := gets()
				if err := fetch(context.Background(), cache); err != nil {
					b.Fatal(err)
				}
				if got := gets() - before; got != benchFiles {
					b.Fatalf("%d downloads, want %d", got, benchFiles)
				}
				n++
			}
			b.ReportMetric(float64(benchFiles*n)/b.Elapsed().Seconds(), "files/s")
		})
	}
	run("sequential", func(ctx context.Context, cache string) error { return sequential(ctx, f, items, cache) })
	for _, p := range []int{4, 8, 16} {
		run(fmt.Sprintf("parallel-%d", p), func(ctx context.Context, cache string) error {
			return pooled(ctx, f, items, cache, p)
		})
	}
}

// BenchmarkDownloadFake: an in-memory project, ReadFile costing one round
// trip and GetLFS two (batch request, object), as the API does.
func BenchmarkDownloadFake(b *testing.B) {
	p := newFake()
	for i, s := range benchItems() {
		p.addLFS(s.PointersPath, junk(benchSize, uint64(i)))
	}
	p.latency, p.lfsLatency = benchRTT, 2*benchRTT
	benchDownloads(b, p, p.totalGets)
}

// BenchmarkDownloadEmulator: the real GitLab client against the emulator
// over loopback, every request delayed by benchRTT.
func BenchmarkDownloadEmulator(b *testing.B) {
	s := gitlabtest.New(b)
	const path = "team/bible"
	s.CreateProject(path)
	files := map[string][]byte{}
	for i, it := range benchItems() {
		ptr := s.PutLFSObject(junk(benchSize, uint64(i)))
		files[it.PointersPath] = []byte(ptr.String())
	}
	s.UserCommit(b, path, "recordings", files)
	c, err := gitlab.New(gitlab.Config{BaseURL: s.URL(), Token: gitlabtest.DefaultToken, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	proj, err := c.Project(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	s.InjectFault(gitlabtest.Fault{Rate: 1, Latency: benchRTT})
	benchDownloads(b, proj, func() int { return s.RequestCount("GET lfs object") })
}

// BenchmarkBuild: the whole stage for 40 cells (one short recording each,
// already cached after the first round), so mostly ffmpeg and the WAV writes.
func BenchmarkBuild(b *testing.B) {
	loadRecordings(b)
	p := newFake()
	var items []Source
	for i := range 40 {
		id := fmt.Sprintf("%02d", i)
		p.addLFS("pointers/GEN/"+id+".webm", recordings.tone)
		items = append(items, Source{ID: id, CellID: id, PointersPath: "pointers/GEN/" + id + ".webm"})
	}
	cache := b.TempDir()
	var secs float64
	cpu0 := cpuTime()
	for b.Loop() {
		res, err := Build(context.Background(), p, items, Options{Dir: b.TempDir(), CacheDir: cache, Clean: cleanOpts, NeedAudio: true, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		secs = res.TotalSeconds
	}
	b.ReportMetric(float64(len(items)*b.N)/b.Elapsed().Seconds(), "cells/s")
	b.ReportMetric(secs*float64(b.N)/b.Elapsed().Seconds(), "audio-s/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N*len(items)), "cpu-ms/cell")
}

// cpuTime is the CPU this process and its finished children have used:
// unlike wall time, it does not grow with the load of a shared machine.
func cpuTime() time.Duration {
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}
