package demoproject

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"gpu-worker/codex"
	"gpu-worker/local"
	"gpu-worker/project"
)

func TestCellUUIDMatchesEditor(t *testing.T) {
	if got := CellUUID("GEN 1:1"); got != "98c7b6a3-55fa-1148-069c-f7c0c46ee3fa" {
		t.Fatalf("CellUUID(GEN 1:1) = %s", got)
	}
}

// The generated project reads back as the worker will read it: verses
// selected by reference, recordings resolved through LFS pointers.
func TestGeneratedProjectReadsBack(t *testing.T) {
	p, err := Generate(context.Background(), Options{Book: "MRK", Verses: []Verse{
		{Ref: "MRK 1:1", Text: "in the beginning", Record: true},
		{Ref: "MRK 1:2", Text: "the voice of one crying"},
		{Ref: "MRK 1:3", Text: "make ready the way", Record: true, Blank: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := p.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "files/target/MRK.codex"))
	if err != nil {
		t.Fatal(err)
	}
	nb, err := codex.Parse("files/target/MRK.codex", data)
	if err != nil {
		t.Fatal(err)
	}
	if string(nb.Marshal()) != string(data) {
		t.Error("generated notebook does not round-trip byte for byte")
	}
	nbs := map[string]*codex.Notebook{"files/target/MRK.codex": nb}
	train := codex.SelectTraining(nbs, codex.Filter{Include: []string{"MRK 1"}})
	if len(train) != 1 || train[0].Reference != "MRK 1:1" || train[0].CellID != CellUUID("MRK 1:1") {
		t.Fatalf("training selection = %+v", train)
	}
	tts, _ := codex.SelectInference(nbs, codex.NeedAudio, codex.Filter{})
	asr, _ := codex.SelectInference(nbs, codex.NeedText, codex.Filter{})
	if len(tts) != 1 || tts[0].Reference != "MRK 1:2" || len(asr) != 1 || asr[0].Reference != "MRK 1:3" {
		t.Fatalf("inference selections: tts %+v asr %+v", tts, asr)
	}
	lp, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := lp.ReadFile(context.Background(), train[0].PointersPath)
	if err != nil {
		t.Fatal(err)
	}
	ptr, err := project.ParsePointer(f.Content)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "a.webm")
	if err := lp.GetLFS(context.Background(), ptr, dst); err != nil {
		t.Fatalf("recording not in the LFS store: %v", err)
	}
	if b, _ := os.ReadFile(dst); len(b) < 1000 || string(b[:4]) != "\x1a\x45\xdf\xa3" {
		t.Errorf("recording is not WebM (%d bytes)", len(b))
	}
}

func TestMarkVerses(t *testing.T) {
	vs, err := MarkVerses(context.Background(), 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if vs[0].Ref != "MRK 1:1" || vs[0].Text != "The beginning of the Good News of Jesus Christ, the Son of God." {
		t.Errorf("Mark 1:1 = %+v", vs[0])
	}
	if vs[2].Ref != "MRK 1:3" || len(vs[2].Text) < 40 {
		t.Errorf("multi-line verse joined wrongly: %+v", vs[2])
	}
}

// A generated project mixing people's work and machine output: training
// takes the human and the validated verses only, inference skips locked and
// hidden cells.
func TestGeneratedMixedProject(t *testing.T) {
	p, err := Generate(context.Background(), Options{Book: "MRK", Verses: []Verse{
		{Ref: "MRK 1:1", Text: "human", Record: true},
		{Ref: "MRK 1:2", Text: "generated text", Record: true, GeneratedText: true},
		{Ref: "MRK 1:3", Text: "generated audio", Record: true, GeneratedAudio: true},
		{Ref: "MRK 1:4", Text: "validated text and audio", Record: true, GeneratedText: true, GeneratedAudio: true, Validated: true},
		{Ref: "MRK 1:5", Text: "hidden", Record: true, Hidden: true},
		{Ref: "MRK 1:6", Text: "locked", Locked: true},
		{Ref: "MRK 1:7", Text: "to voice"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	data := p.Files["files/target/MRK.codex"]
	nb, err := codex.Parse("files/target/MRK.codex", data)
	if err != nil {
		t.Fatal(err)
	}
	if string(nb.Marshal()) != string(data) {
		t.Error("generated notebook does not round-trip byte for byte")
	}
	nbs := map[string]*codex.Notebook{"files/target/MRK.codex": nb}
	items, skips := codex.SelectTrainingSet(nbs, codex.Filter{}, codex.TrainingOptions{})
	reasons := map[string]string{}
	for _, s := range skips {
		reasons[s.Reference] = s.Reason
	}
	if len(items) != 2 || items[0].Reference != "MRK 1:1" || items[1].Reference != "MRK 1:4" {
		t.Errorf("training %+v", items)
	}
	want := map[string]string{
		"MRK 1:2": codex.ReasonGeneratedText, "MRK 1:3": codex.ReasonGeneratedAudio, "MRK 1:5": codex.ReasonHidden,
		"MRK 1:6": codex.ReasonNoAudio, "MRK 1:7": codex.ReasonNoAudio,
	}
	if len(reasons) != len(want) {
		t.Errorf("skips %v, want %v", reasons, want)
	}
	for ref, r := range want {
		if reasons[ref] != r {
			t.Errorf("%s: %q, want %q", ref, reasons[ref], r)
		}
	}
	tts, skips := codex.SelectInference(nbs, codex.NeedAudio, codex.Filter{})
	if len(tts) != 1 || tts[0].Reference != "MRK 1:7" || len(skips) != 1 || skips[0].Reference != "MRK 1:6" || skips[0].Reason != codex.ReasonLocked {
		t.Errorf("TTS %+v, skips %+v", tts, skips)
	}
}
