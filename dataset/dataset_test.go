package dataset

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gpu-worker/audio"
)

var quiet = slog.New(slog.DiscardHandler)

var cleanOpts = audio.CleanOptions{SampleRate: 16000, Trim: true, PaddingMS: 100, Normalize: true}

func junk(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return b
}

// logLines returns a logger and the JSON records it wrote.
func logLines() (*slog.Logger, func() []map[string]any) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	return log, func() []map[string]any {
		var out []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil {
				out = append(out, rec)
			}
		}
		return out
	}
}

func src(id, files, pointers string) Source {
	return Source{ID: id, CellID: "cell-" + id, Reference: "GEN 1:" + id, Text: "text " + id, FilesPath: files, PointersPath: pointers}
}

func TestBuild(t *testing.T) {
	loadRecordings(t)
	p := newFake()
	good := p.addLFS("pointers/GEN/a1.webm", recordings.tone)
	// Real bytes in files/ win over the pointer (whose object is not even
	// in the store).
	p.files["files/GEN/a2.ogg"] = recordings.tone2
	unused := p.addLFS("pointers/GEN/a2.ogg", recordings.tone2[:len(recordings.tone2)-3])
	delete(p.objects, unused.OID)
	p.addLFS("pointers/GEN/a4.webm", junk(3000, 4))
	gone := p.addLFS("pointers/GEN/a5.webm", recordings.tone2[:len(recordings.tone2)-1])
	delete(p.objects, gone.OID)
	p.addLFS("pointers/GEN/a6.ogg", recordings.silence)
	bad := p.addLFS("pointers/GEN/a9.webm", recordings.tone2[:len(recordings.tone2)-2])
	p.objects[bad.OID] = recordings.tone // the store serves the wrong bytes

	items := []Source{
		src("1", "files/GEN/a1.webm", "pointers/GEN/a1.webm"), // files/ absent: the pointer
		src("2", "files/GEN/a2.ogg", "pointers/GEN/a2.ogg"),
		src("3", "files/GEN/a3.webm", "pointers/GEN/a3.webm"), // nowhere
		src("4", "", "pointers/GEN/a4.webm"),                  // corrupt
		src("5", "", "pointers/GEN/a5.webm"),                  // object missing
		src("6", "", "pointers/GEN/a6.ogg"),                   // silent
		src("7", "", "pointers/GEN/a1.webm"),                  // same recording as 1
		src("8", "", ""),                                      // no recording
		src("9", "", "pointers/GEN/a9.webm"),                  // object corrupt
		src("1", "", "pointers/GEN/a1.webm"),                  // repeated id
	}
	items[0].Text = `In the beginning <b>God</b> & "the" earth — בְּרֵאשִׁית`
	dir := t.TempDir()
	log, records := logLines()
	res, err := Build(context.Background(), p, items, Options{Dir: dir, CacheDir: filepath.Join(dir, "cache"), Clean: cleanOpts, NeedAudio: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}

	var ids []string
	for _, e := range res.Items {
		ids = append(ids, e.ID)
	}
	if want := []string{"1", "2", "7"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("items %v, want %v", ids, want)
	}
	wantRejected := map[string]int{AudioMissing: 1, "corrupt": 1, ObjectMissing: 1, "silent": 1, NoAudio: 1, ObjectCorrupt: 1, DuplicateID: 1}
	if !reflect.DeepEqual(res.Rejected, wantRejected) {
		t.Errorf("rejected %v, want %v", res.Rejected, wantRejected)
	}

	var total float64
	for _, e := range res.Items {
		if e.CellID != "cell-"+e.ID || e.Reference != "GEN 1:"+e.ID {
			t.Errorf("entry %+v lost its cell", e)
		}
		w, err := audio.ReadWAV(filepath.Join(dir, e.Audio))
		if err != nil {
			t.Fatal(err)
		}
		if w.Rate != 16000 || w.Channels != 1 || math.Abs(w.Duration()-e.Duration) > 0.001 {
			t.Errorf("%s: %d Hz, %d ch, %.3f s; entry says %.3f s", e.Audio, w.Rate, w.Channels, w.Duration(), e.Duration)
		}
		if want := toneSeconds + 0.2; math.Abs(e.Duration-want) > 0.06 {
			t.Errorf("%s lasts %.3f s, want the tone plus padding, %.2f s", e.Audio, e.Duration, want)
		}
		total += e.Duration
	}
	if math.Abs(total-res.TotalSeconds) > 1e-9 {
		t.Errorf("total %.3f, entries add up to %.3f", res.TotalSeconds, total)
	}

	// One warning per skipped cell, naming it and the reason.
	warned := map[string]string{}
	for _, r := range records() {
		if r["level"] == "WARN" {
			cell, _ := r["cell"].(string)
			if _, dup := warned[cell]; dup {
				t.Errorf("second warning for %s", cell)
			}
			warned[cell], _ = r["reason"].(string)
			if cell == "cell-4" && r["audio"] != "pointers/GEN/a4.webm" {
				t.Errorf("warning for cell-4 names audio %v, want its repository path", r["audio"])
			}
		}
	}
	wantWarned := map[string]string{"cell-3": AudioMissing, "cell-4": "corrupt", "cell-5": ObjectMissing,
		"cell-6": "silent", "cell-8": NoAudio, "cell-9": ObjectCorrupt, "cell-1": DuplicateID}
	if !reflect.DeepEqual(warned, wantWarned) {
		t.Errorf("warnings %v, want %v", warned, wantWarned)
	}

	// The shared recording came down once; files/ bytes needed no download.
	if n := p.gets[good.OID]; n != 1 {
		t.Errorf("recording of cells 1 and 7 downloaded %d times, want 1", n)
	}
	if n := p.gets[unused.OID]; n != 0 {
		t.Errorf("cell 2 fetched its pointer's object %d times; its files/ copy should do", n)
	}

	// The index is what the engines read.
	raw, err := os.ReadFile(res.Index)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "<b>God</b> & ") || !strings.Contains(string(raw), "בְּרֵאשִׁית") {
		t.Errorf("index escapes the text:\n%s", raw)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("index has %d lines, want 3", len(lines))
	}
	var row map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &row); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "cell_id", "reference", "text", "audio", "duration"} {
		if _, ok := row[k]; !ok {
			t.Errorf("index line lacks %q: %s", k, lines[0])
		}
	}
	back, err := ReadIndex(dir)
	if err != nil || !reflect.DeepEqual(back, res.Items) {
		t.Errorf("index reads back as %+v, %v", back, err)
	}
}

func TestBuildReusesCache(t *testing.T) {
	loadRecordings(t)
	p := newFake()
	p.addLFS("pointers/GEN/a.webm", recordings.tone)
	ptr := p.addLFS("pointers/GEN/b.ogg", recordings.tone2)
	items := []Source{src("1", "", "pointers/GEN/a.webm"), src("2", "", "pointers/GEN/b.ogg")}
	cache := t.TempDir()
	build := func() {
		t.Helper()
		if _, err := Build(context.Background(), p, items, Options{Dir: t.TempDir(), CacheDir: cache, Clean: cleanOpts, NeedAudio: true, Logger: quiet}); err != nil {
			t.Fatal(err)
		}
	}
	build()
	if n := p.totalGets(); n != 2 {
		t.Fatalf("first build downloaded %d objects, want 2", n)
	}
	build()
	if n := p.totalGets(); n != 2 {
		t.Errorf("second build downloaded %d more objects, want none", n-2)
	}
	// A damaged cache entry is fetched again.
	cached := filepath.Join(cache, ptr.OID[:2], ptr.OID+".ogg")
	if err := os.WriteFile(cached, junk(int(ptr.Size), 9), 0o644); err != nil {
		t.Fatal(err)
	}
	build()
	if n := p.gets[ptr.OID]; n != 2 {
		t.Errorf("damaged cache entry: object downloaded %d times in all, want 2", n)
	}
}

func TestBuildAllRejected(t *testing.T) {
	p := newFake()
	p.addLFS("pointers/GEN/a.webm", junk(2000, 1))
	p.addLFS("pointers/GEN/b.webm", junk(2000, 2))
	items := []Source{src("1", "", "pointers/GEN/a.webm"), src("2", "", "pointers/GEN/b.webm"), src("3", "", "pointers/GEN/c.webm")}
	dir := t.TempDir()
	log, records := logLines()
	_, err := Build(context.Background(), p, items, Options{Dir: dir, Clean: cleanOpts, NeedAudio: true, Logger: log})
	if err == nil {
		t.Fatal("built a dataset of nothing")
	}
	for _, want := range []string{"no usable audio", "3 of 3 cells rejected", "2 corrupt", "1 audio missing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, serr := os.Stat(filepath.Join(dir, IndexName)); !os.IsNotExist(serr) {
		t.Error("an index was written")
	}
	warns := 0
	for _, r := range records() {
		if r["level"] == "WARN" {
			warns++
		}
	}
	if warns != 3 {
		t.Errorf("%d warnings, want one per cell", warns)
	}
}

func TestBuildWithoutNeedAudio(t *testing.T) {
	loadRecordings(t)
	p := newFake()
	p.addLFS("pointers/GEN/a.webm", recordings.tone)
	items := []Source{src("1", "", "pointers/GEN/a.webm"), src("2", "", "pointers/GEN/gone.webm"), src("3", "", "")}
	res, err := Build(context.Background(), p, items, Options{Dir: t.TempDir(), Clean: cleanOpts, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 3 || len(res.Rejected) != 0 {
		t.Fatalf("items %+v, rejected %v; want all three kept", res.Items, res.Rejected)
	}
	if res.Items[0].Audio == "" || res.Items[1].Audio != "" || res.Items[2].Audio != "" {
		t.Errorf("audio fields %q %q %q; want only the first", res.Items[0].Audio, res.Items[1].Audio, res.Items[2].Audio)
	}
}

func TestBuildCancelled(t *testing.T) {
	p := newFake()
	p.latency, p.lfsLatency = 50*time.Millisecond, 150*time.Millisecond
	var items []Source
	for i := range 40 {
		id := string(rune('a'+i%26)) + string(rune('a'+i/26))
		p.addLFS("pointers/GEN/"+id+".webm", junk(100, uint64(i)))
		items = append(items, src(id, "", "pointers/GEN/"+id+".webm"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Build(ctx, p, items, Options{Dir: t.TempDir(), Clean: cleanOpts, NeedAudio: true, Logger: quiet})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the deadline", err)
	}
	// 40 items at 200 ms each over 4 workers would take 2 s.
	if p.totalGets() >= 40 {
		t.Errorf("all %d downloads ran after cancellation (%v)", p.totalGets(), time.Since(start))
	}
}

func TestBuildFailsOnBrokenCache(t *testing.T) {
	loadRecordings(t)
	p := newFake()
	p.files["files/GEN/a.webm"] = recordings.tone
	dir := t.TempDir()
	notDir := filepath.Join(dir, "cache")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Build(context.Background(), p, []Source{src("1", "files/GEN/a.webm", "")}, Options{Dir: dir, CacheDir: notDir, Clean: cleanOpts, NeedAudio: true, Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "cache audio") {
		t.Errorf("got %v, want the cache error, not a rejected cell", err)
	}
}

func TestWriteTextOnly(t *testing.T) {
	dir := t.TempDir()
	items := []Source{
		{ID: "u1", CellID: "u1", Reference: "MAT 1:1", Text: "Book of the <i>genealogy</i>"},
		{CellID: "u2", Reference: "MAT 1:2", Text: "Abraham & Isaac"},
	}
	if err := WriteTextOnly(dir, items); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, IndexName))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(raw), `"audio":null`); n != 2 {
		t.Errorf("%d lines with \"audio\":null, want 2:\n%s", n, raw)
	}
	got, err := ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{ID: "u1", CellID: "u1", Reference: "MAT 1:1", Text: "Book of the <i>genealogy</i>"},
		{ID: "u2", CellID: "u2", Reference: "MAT 1:2", Text: "Abraham & Isaac"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if err := WriteTextOnly(dir, append(items, items[0])); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("repeated id: got %v", err)
	}
}

func TestFileName(t *testing.T) {
	for in, want := range map[string]string{
		"GEN 1:1":                              "GEN_1_1",
		"1f0e6d5c-aaaa-bbbb-cccc-0123456789ab": "1f0e6d5c-aaaa-bbbb-cccc-0123456789ab",
		"../../etc/passwd":                     "_.._etc_passwd",
	} {
		if got := fileName(in); got != want {
			t.Errorf("fileName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := fileName(".."); !strings.HasPrefix(got, "item-") {
		t.Errorf(`fileName("..") = %q`, got)
	}
}

func TestBuildWithoutFFmpeg(t *testing.T) {
	loadRecordings(t)
	p := newFake()
	p.addLFS("pointers/GEN/a.webm", recordings.tone)
	t.Setenv("PATH", t.TempDir())
	_, err := Build(context.Background(), p, []Source{src("1", "", "pointers/GEN/a.webm")}, Options{Dir: t.TempDir(), Clean: cleanOpts, NeedAudio: true, Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "ffmpeg not found") || !strings.Contains(err.Error(), "install") {
		t.Errorf("got %v, want ffmpeg missing with how to install it", err)
	}
}

func TestBuildStopsAskingForFilesCopies(t *testing.T) {
	loadRecordings(t)
	p := newFake()
	var items []Source
	for i := range 10 {
		id := fmt.Sprint(i)
		p.addLFS("pointers/GEN/"+id+".webm", recordings.tone)
		items = append(items, src(id, "files/GEN/"+id+".webm", "pointers/GEN/"+id+".webm"))
	}
	res, err := Build(context.Background(), p, items, Options{Dir: t.TempDir(), Parallel: 1, Clean: cleanOpts, NeedAudio: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 10 {
		t.Fatalf("%d items, want 10", len(res.Items))
	}
	if want := 10 + filesMissesBeforeGivingUp; p.reads != want {
		t.Errorf("%d reads, want %d: one per pointer and %d tries of files/", p.reads, want, filesMissesBeforeGivingUp)
	}
}
