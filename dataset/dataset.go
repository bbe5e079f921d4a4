// Package dataset builds the folder handed to engines: clean mono WAVs under
// wavs/ and a JSON-lines index (id, cell_id, reference, text, audio,
// duration), from cells whose recordings live in a project.
package dataset

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"gpu-worker/audio"
)

// Source is one cell to put in the dataset.
type Source struct {
	ID, CellID, Reference, Text string
	// Repository paths of the cell's recording: the real bytes (files/…, a
	// local folder has them) and the LFS pointer (pointers/…).
	FilesPath, PointersPath string
}

// Options say where and how to build.
type Options struct {
	Dir      string // the dataset folder
	CacheDir string // the job's download cache; "" = <Dir>/.download
	Parallel int    // concurrent downloads; 0 = 4
	// CleanParallel is how many ffmpeg runs at once; 0 = min(Parallel, CPUs).
	CleanParallel int
	Clean         audio.CleanOptions
	// NeedAudio drops cells without usable audio. Without it such cells
	// stay in the index with no audio (inputs for synthesis).
	NeedAudio bool
	Logger    *slog.Logger
	// Name, when set, learns which project file each downloaded copy
	// holds, so that what a team sees names the project's path.
	Name func(local, repoPath string)
}

// Entry is one line of the index.
type Entry struct {
	ID        string  `json:"id"`
	CellID    string  `json:"cell_id"`
	Reference string  `json:"reference"`
	Text      string  `json:"text"`
	Audio     string  `json:"audio"` // relative to the dataset folder; "" = none (null in the index)
	Duration  float64 `json:"duration"`
}

// Result is what Build wrote.
type Result struct {
	Index        string         // path of index.jsonl
	Items        []Entry        // in the order of the input
	Rejected     map[string]int // reason → cells dropped for it
	TotalSeconds float64
	// Examples names, for each reason, the first few project files
	// rejected for it.
	Examples map[string][]string
}

// maxExamples is how many rejected files a reason names.
const maxExamples = 3

// item is one Source on its way through the pipeline.
type item struct {
	src   Source
	wav   string // file name under wavs/
	from  string // the repository path the recording came from
	local string // its copy in the download cache
	entry *Entry
}

// Build fetches and cleans each item's audio into <Dir>/wavs and writes
// <Dir>/index.jsonl. A cell whose audio is unusable is skipped with one
// warning; Build fails only when no cell is left, or on an error that is no
// single file's fault (cancellation, a full disk, ffmpeg missing).
func Build(ctx context.Context, f Fetcher, items []Source, o Options) (*Result, error) {
	if len(items) == 0 {
		return nil, errors.New("build dataset: no items")
	}
	if o.Dir == "" {
		return nil, errors.New("build dataset: no dataset folder")
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.CleanParallel <= 0 {
		o.CleanParallel = min(o.Parallel, runtime.NumCPU())
	}
	if o.CacheDir == "" {
		o.CacheDir = filepath.Join(o.Dir, ".download")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "wavs"), 0o755); err != nil {
		return nil, fmt.Errorf("build dataset: %w", err)
	}

	res := &Result{Rejected: map[string]int{}, Examples: map[string][]string{}}
	var mu sync.Mutex
	reject := func(it *item, err error) {
		reason := DownloadFailed
		var rj *rejection
		if errors.As(err, &rj) {
			reason, err = rj.reason, rj.err
		} else if r := audio.ReasonOf(err); r != "" {
			reason = string(r)
		}
		if !o.NeedAudio && reason != DuplicateID {
			if reason != NoAudio {
				log.Warn("cell kept without audio", "cell", it.src.CellID, "ref", it.src.Reference, "audio", it.from, "reason", reason, "err", err)
			}
			it.entry = entryOf(it.src)
			return
		}
		log.Warn("cell skipped", "cell", it.src.CellID, "ref", it.src.Reference, "audio", it.from, "reason", reason, "err", err)
		mu.Lock()
		res.Rejected[reason]++
		if it.from != "" && len(res.Examples[reason]) < maxExamples {
			res.Examples[reason] = append(res.Examples[reason], it.from)
		}
		mu.Unlock()
	}

	work := plan(items, reject)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	fx := &fetcher{f: f, cache: o.CacheDir}
	fetched := make(chan *item)
	var cleaners sync.WaitGroup
	for range o.CleanParallel {
		cleaners.Go(func() {
			for it := range fetched {
				dst := filepath.Join(o.Dir, "wavs", it.wav)
				dur, err := audio.Clean(ctx, it.local, dst, o.Clean)
				switch {
				case err == nil:
					e := entryOf(it.src)
					e.Audio, e.Duration = "wavs/"+it.wav, math.Round(dur*1000)/1000
					it.entry = e
				case audio.ReasonOf(err) != "":
					reject(it, err)
				default:
					cancel(fmt.Errorf("clean audio of cell %s: %w", it.src.CellID, err))
				}
			}
		})
	}
	forEach(ctx, len(work), o.Parallel, func(i int) {
		it := work[i]
		if it.entry != nil || it.wav == "" {
			return // settled while planning
		}
		local, from, err := fx.fetch(ctx, it.src)
		it.from = from
		var rj *rejection
		switch {
		case ctx.Err() != nil:
			return
		case errors.As(err, &rj):
			reject(it, err)
			return
		case err != nil:
			cancel(fmt.Errorf("fetch audio of cell %s: %w", it.src.CellID, err))
			return
		}
		it.local = local
		if o.Name != nil {
			o.Name(local, from)
		}
		select {
		case fetched <- it:
		case <-ctx.Done():
		}
	})
	close(fetched)
	cleaners.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, fmt.Errorf("build dataset: %w", err)
	}

	for _, it := range work {
		if it.entry != nil {
			res.Items = append(res.Items, *it.entry)
			res.TotalSeconds += it.entry.Duration
		}
	}
	if len(res.Items) == 0 {
		return nil, fmt.Errorf("build dataset: no usable audio: %s", summary(res.Rejected, res.Examples, len(items)))
	}
	res.Index = filepath.Join(o.Dir, IndexName)
	if err := writeIndex(res.Index, res.Items); err != nil {
		return nil, fmt.Errorf("build dataset: %w", err)
	}
	rejected := len(items) - len(res.Items)
	log.Info("dataset built", "dir", o.Dir, "items", len(res.Items), "rejected", rejected,
		"seconds", math.Round(res.TotalSeconds*10)/10)
	return res, nil
}

func entryOf(s Source) *Entry {
	return &Entry{ID: s.ID, CellID: s.CellID, Reference: s.Reference, Text: s.Text}
}

// plan gives every item a unique WAV file name; a repeated id is rejected
// and items without a recording are settled at once.
func plan(items []Source, reject func(*item, error)) []*item {
	work := make([]*item, len(items))
	seen := map[string]bool{}
	names := map[string]bool{}
	for i, s := range items {
		if s.ID == "" {
			s.ID = s.CellID
		}
		it := &item{src: s}
		work[i] = it
		if seen[s.ID] {
			reject(it, &rejection{DuplicateID, fmt.Errorf("id %q appears twice", s.ID)})
			continue
		}
		seen[s.ID] = true
		if s.FilesPath == "" && s.PointersPath == "" {
			reject(it, &rejection{NoAudio, errors.New("the cell names no recording")})
			continue
		}
		base := fileName(s.ID)
		name := base
		for n := 2; names[name]; n++ {
			name = fmt.Sprintf("%s-%d", base, n)
		}
		names[name] = true
		it.wav = name + ".wav"
	}
	return work
}

// fileName makes an id ("GEN 1:1", a UUID) safe as a file name.
func fileName(id string) string {
	var b strings.Builder
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.Trim(b.String(), ".")
	if s == "" || len(s) > 120 {
		h := fnv.New64a()
		h.Write([]byte(id))
		s = fmt.Sprintf("item-%016x", h.Sum64())
	}
	return s
}

// summary says how many cells were rejected and why, largest count first,
// naming a few of the files.
func summary(rejected map[string]int, examples map[string][]string, total int) string {
	reasons := make([]string, 0, len(rejected))
	n := 0
	for r, c := range rejected {
		reasons = append(reasons, r)
		n += c
	}
	sort.Slice(reasons, func(i, j int) bool {
		if rejected[reasons[i]] != rejected[reasons[j]] {
			return rejected[reasons[i]] > rejected[reasons[j]]
		}
		return reasons[i] < reasons[j]
	})
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%d %s", rejected[r], r)
		if ex := examples[r]; len(ex) > 0 {
			parts[i] += ": " + strings.Join(ex, ", ")
		}
	}
	return fmt.Sprintf("%d of %d cells rejected (%s)", n, total, strings.Join(parts, ", "))
}

// forEach calls fn(0..n-1) from at most parallel goroutines, handing out no
// new index once ctx is done.
func forEach(ctx context.Context, n, parallel int, fn func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(parallel, n) {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
}
