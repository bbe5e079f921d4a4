package codex

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bibleBooks: the 66 books with their chapter counts (1,189 chapters).
var bibleBooks = []struct {
	code     string
	chapters int
}{
	{"GEN", 50}, {"EXO", 40}, {"LEV", 27}, {"NUM", 36}, {"DEU", 34}, {"JOS", 24}, {"JDG", 21}, {"RUT", 4},
	{"1SA", 31}, {"2SA", 24}, {"1KI", 22}, {"2KI", 25}, {"1CH", 29}, {"2CH", 36}, {"EZR", 10}, {"NEH", 13},
	{"EST", 10}, {"JOB", 42}, {"PSA", 150}, {"PRO", 31}, {"ECC", 12}, {"SNG", 8}, {"ISA", 66}, {"JER", 52},
	{"LAM", 5}, {"EZK", 48}, {"DAN", 12}, {"HOS", 14}, {"JOL", 3}, {"AMO", 9}, {"OBA", 1}, {"JON", 4},
	{"MIC", 7}, {"NAM", 3}, {"HAB", 3}, {"ZEP", 3}, {"HAG", 2}, {"ZEC", 14}, {"MAL", 4},
	{"MAT", 28}, {"MRK", 16}, {"LUK", 24}, {"JHN", 21}, {"ACT", 28}, {"ROM", 16}, {"1CO", 16}, {"2CO", 13},
	{"GAL", 6}, {"EPH", 6}, {"PHP", 4}, {"COL", 4}, {"1TH", 5}, {"2TH", 3}, {"1TI", 6}, {"2TI", 4},
	{"TIT", 3}, {"PHM", 1}, {"HEB", 13}, {"JAS", 5}, {"1PE", 5}, {"2PE", 3}, {"1JN", 5}, {"2JN", 1},
	{"3JN", 1}, {"JUD", 1}, {"REV", 22},
}

const bibleVerses = 31102

// syntheticBible writes 66 migrated notebooks holding 31,102 verses (UUID
// ids, globalReferences, one user edit each; every other verse has a
// selected recording), in the editor's format.
func syntheticBible(t testing.TB) map[string][]byte {
	t.Helper()
	chapters := 0
	for _, b := range bibleBooks {
		chapters += b.chapters
	}
	per, extra := bibleVerses/chapters, bibleVerses%chapters
	out := map[string][]byte{}
	n, ch := 0, 0
	for _, b := range bibleBooks {
		cells := NewArray()
		for c := 1; c <= b.chapters; c++ {
			verses := per
			if ch < extra {
				verses++
			}
			ch++
			for v := 1; v <= verses; v++ {
				n++
				ref := b.code + " " + strconv.Itoa(c) + ":" + strconv.Itoa(v)
				text := fmt.Sprintf("<span>In the beginning of %s the word was spoken, and the people heard it and wrote it down for their children (%d).</span>", ref, n)
				ts := int64(1760000000000 + n)
				meta := NewObject(
					Member{"id", NewString(uuidOf(ref))},
					Member{"type", NewString("text")},
					Member{"edits", NewArray(NewObject(
						Member{"editMap", NewArray(NewString("value"))},
						Member{"value", NewString(text)},
						Member{"timestamp", NewInt(ts)},
						Member{"type", NewString("user-edit")},
						Member{"author", NewString("translator")},
						Member{"validatedBy", NewArray(NewObject(
							Member{"username", NewString("translator")},
							Member{"creationTimestamp", NewInt(ts)},
							Member{"updatedTimestamp", NewInt(ts)},
							Member{"isDeleted", NewBool(false)},
						))},
					))},
					Member{"data", NewObject(Member{"globalReferences", NewArray(NewString(ref))})},
				)
				if n%2 == 0 {
					id := fmt.Sprintf("audio-%d-%08x", ts, n)
					meta.Set("attachments", NewObject(Member{id, NewObject(
						Member{"url", NewString(AttachmentURL(b.code, id, "webm"))},
						Member{"type", NewString("audio")},
						Member{"createdAt", NewInt(ts)},
						Member{"updatedAt", NewInt(ts)},
						Member{"isDeleted", NewBool(false)},
					)}))
					meta.Set("selectedAudioId", NewString(id))
					meta.Set("selectionTimestamp", NewInt(ts))
				}
				cells.Append(NewObject(
					Member{"kind", NewInt(2)}, Member{"languageId", NewString("html")},
					Member{"value", NewString(text)}, Member{"metadata", meta},
				))
			}
		}
		root := NewObject(Member{"cells", cells}, Member{"metadata", NewObject(
			Member{"id", NewString(b.code)}, Member{"originalName", NewString(b.code)}, Member{"corpusMarker", NewString("OT")},
		)})
		out["files/target/"+b.code+".codex"] = append(AppendJSON(nil, root), '\n')
	}
	if n != bibleVerses {
		t.Fatalf("generated %d verses", n)
	}
	return out
}

// bibleRun is one job's pass over the project: parse every notebook, select
// the verses lacking audio (TTS inference, with an exclude list), attach
// audio to each, and serialize the changed notebooks.
func bibleRun(t testing.TB, files map[string][]byte) (nbs map[string]*Notebook, selected, written int) {
	nbs, err := ParseAll(files)
	if err != nil {
		t.Fatal(err)
	}
	items, _ := SelectInference(nbs, NeedAudio, Filter{Exclude: []string{"PSA 119", "JUD", uuidOf("GEN 1:1")}})
	byNB := map[string][]Patch{}
	for i, it := range items {
		byNB[it.Notebook] = append(byNB[it.Notebook], Patch{CellID: it.CellID, Audio: &AudioChange{
			ID: fmt.Sprintf("audio-1764000000000-%08x", i), Ext: "webm",
			Meta: AudioMeta{MimeType: "audio/webm", SizeBytes: 30000, SampleRate: 48000, Channels: 1, DurationSec: 3.5, BitrateKbps: 64},
		}})
	}
	// Patch and serialize each notebook on its own goroutine: notebooks are
	// independent, and the machine has two cores.
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for path, patches := range byNB {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			nb := nbs[path]
			if n, _ := Apply(nb, nil, patches); n != len(patches) {
				t.Errorf("%s: applied %d of %d", path, n, len(patches))
			}
			size := len(nb.Marshal())
			mu.Lock()
			written += size
			mu.Unlock()
		}()
	}
	wg.Wait()
	return nbs, len(items), written
}

func TestSyntheticBibleRun(t *testing.T) {
	files := syntheticBible(t)
	_, selected, written := bibleRun(t, files)
	// Half the verses lack audio; PSA 119 (176 verses spread as 26–27 here),
	// Jude and GEN 1:1 (which has none) are excluded.
	if selected < 15000 || selected >= bibleVerses/2 || written == 0 {
		t.Errorf("selected %d, wrote %d bytes", selected, written)
	}
}

func BenchmarkBible(b *testing.B) {
	files := syntheticBible(b)
	total := 0
	for _, f := range files {
		total += len(f)
	}
	b.SetBytes(int64(total))
	runtime.GC()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bibleRun(b, files)
	}
	b.StopTimer()
	// CPU time is reported beside wall time: on a shared machine the wall
	// clock includes waiting for a core.
	b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
	// Live heap with every parsed, patched notebook still referenced (the
	// input files are counted too).
	nbs, _, _ := bibleRun(b, files)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(nbs)
	b.ReportMetric(float64(total)/1e6, "input-MB")
	b.ReportMetric(float64(after.HeapAlloc)/1e6, "live-heap-MB")
	if hwm := vmHWM(); hwm > 0 {
		b.ReportMetric(float64(hwm)/1e6, "peak-RSS-MB")
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// vmHWM reads the process's peak resident set size (Linux).
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1000
		}
	}
	return 0
}

func BenchmarkParse(b *testing.B) {
	data := readFile(b, "testdata/fixtures/TheChosen_101_en.codex")
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		if _, err := Parse("x.codex", data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	data := readFile(b, "testdata/fixtures/TheChosen_101_en.codex")
	nb, err := Parse("x.codex", data)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		nb.Marshal()
	}
}
