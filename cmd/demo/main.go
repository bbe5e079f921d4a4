// Command demo builds a small Codex project (the Gospel of Mark, World
// English Bible, read by espeak-ng), queues an ASR and a TTS job at the tiny
// size, runs gpu-worker on it and shows what the translation team would see.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gpu-worker/codex"
	"gpu-worker/demoproject"
	"gpu-worker/manifest"
)

func main() {
	dir := flag.String("dir", "demo-project", "where to build the project (replaced if it exists)")
	workDir := flag.String("work-dir", "demo-work", "the worker's work folder")
	bin := flag.String("worker", "bin/gpu-worker", "the gpu-worker binary")
	quick := flag.Bool("quick", false, "fewer verses and epochs (for CI)")
	flag.Parse()
	if err := run(*dir, *workDir, *bin, *quick); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(dir, workDir, bin string, quick bool) error {
	ctx := context.Background()
	start := time.Now()
	train, ttsOnly, asrOnly, epochsTTS, epochsASR := 20, 4, 4, 60, 60
	if quick {
		train, ttsOnly, asrOnly, epochsTTS, epochsASR = 8, 2, 2, 3, 3
	}
	n := train + ttsOnly + asrOnly
	verses, err := demoproject.MarkVerses(ctx, 1, n)
	if err != nil {
		return err
	}
	for i := range verses {
		switch {
		case i < train:
			verses[i].Record = true
		case i < train+ttsOnly:
			// text, no recording: the TTS job will give it audio
		default:
			verses[i].Record, verses[i].Blank = true, true // the ASR job will transcribe it
		}
	}
	fmt.Printf("Building a Codex project in %s: Mark 1:1-%d, %d verses read by espeak-ng...\n", dir, n, train+asrOnly)
	p, err := demoproject.Generate(ctx, demoproject.Options{Book: "MRK", Verses: verses})
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := p.WriteDir(dir); err != nil {
		return err
	}
	now := time.Now().UTC()
	man := fmt.Sprintf(`version: 1
jobs:
  - job_id: "demo_asr"
    name: "Mark transcription (demo)"
    job_type: asr
    mode: training_and_inference
    submitted_at: "%s"
    model: {type: W2V2BERT, size: tiny}
    epochs: %d
    allow_cpu: true
    text_normalization: {lowercase: true, remove_punctuation: true}
  - job_id: "demo_tts"
    name: "Mark voice (demo)"
    job_type: tts
    mode: training_and_inference
    submitted_at: "%s"
    model: {type: StableTTS, size: tiny}
    epochs: %d
    allow_cpu: true
    audio_format: webm
`, now.Add(-time.Minute).Format(time.RFC3339), epochsASR, now.Format(time.RFC3339), epochsTTS)
	if err := os.MkdirAll(filepath.Join(dir, "gpu_jobs"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, manifest.Path), []byte(man), 0o644); err != nil {
		return err
	}
	gitInit(dir)
	fmt.Printf("Queued 2 jobs in %s. Running the worker (CPU, tiny models)...\n\n", manifest.Path)
	cmd := exec.Command(bin, "run", "--project-dir", dir, "--work-dir", workDir, "--loop-interval", "-1",
		"--allow-cpu", "--worker-id", "demo-worker", "--heartbeat-interval", "1m", "--cancel-check-interval", "10s")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	return summary(dir, time.Since(start))
}

// summary prints what the team would see in the editor.
func summary(dir string, took time.Duration) error {
	fmt.Printf("\n==== What the translation team sees (after %s) ====\n", took.Round(time.Second))
	failed := false
	for _, id := range []string{"demo_asr", "demo_tts"} {
		b, err := os.ReadFile(filepath.Join(dir, manifest.ResponsePath(id)))
		if err != nil {
			return fmt.Errorf("job %s has no response.yaml: %w", id, err)
		}
		r, err := manifest.ParseResponse(b)
		if err != nil {
			return err
		}
		fmt.Printf("\njob %s: %s", id, r.State)
		if r.ErrorMessage != nil {
			fmt.Printf(" — %s", *r.ErrorMessage)
			failed = true
		}
		fmt.Println()
		keys := make([]string, 0, len(r.Result))
		for k := range r.Result {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Printf("  %-24s %v\n", k+":", r.Result[k])
		}
		if r.State != manifest.StateCompleted {
			failed = true
		}
	}
	nbPath := filepath.Join(dir, "files/target/MRK.codex")
	data, err := os.ReadFile(nbPath)
	if err != nil {
		return err
	}
	nb, err := codex.Parse("files/target/MRK.codex", data)
	if err != nil {
		return fmt.Errorf("the notebook no longer parses: %w", err)
	}
	fmt.Printf("\n%s:\n", nbPath)
	for _, c := range nb.Cells() {
		refs := c.References()
		ref := c.ID()
		if len(refs) > 0 {
			ref = refs[0]
		}
		var notes []string
		if a, ok := c.Audio(); ok && c.Object().Path("metadata", "attachments", a.ID, "isGenerated").Truthy() {
			notes = append(notes, "audio generated → "+a.URL)
		}
		if edits := c.Object().Path("metadata", "edits").Elems(); len(edits) > 0 {
			last := edits[len(edits)-1]
			if t, _ := last.Get("type").Str(); t == "llm-generation" {
				notes = append(notes, fmt.Sprintf("text transcribed: %q", codex.PlainText(c.Value())))
			}
		}
		if len(notes) > 0 {
			fmt.Printf("  %-9s %s\n", ref, strings.Join(notes, "; "))
		}
	}
	fmt.Printf("\nModels, metrics and logs: %s/gpu_jobs/job_<id>/ (models/, logs.txt, response.yaml)\n", dir)
	if failed {
		return fmt.Errorf("a job did not complete")
	}
	return nil
}

// gitInit makes the folder a git working copy, as a Codex project is; the
// demo works without git too.
func gitInit(dir string) {
	if _, err := exec.LookPath("git"); err != nil {
		return
	}
	run := func(args ...string) {
		c := exec.Command("git", args...)
		c.Dir = dir
		_ = c.Run()
	}
	run("init", "-q")
	run("-c", "user.name=demo", "-c", "user.email=demo@localhost", "add", "-A")
	run("-c", "user.name=demo", "-c", "user.email=demo@localhost", "commit", "-q", "-m", "Demo project")
}
