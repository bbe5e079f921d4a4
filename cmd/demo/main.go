// Command demo builds a small Codex project (the Gospel of Mark, World
// English Bible, read by espeak-ng), queues an ASR and a TTS job (at the
// tiny size unless told otherwise), runs gpu-worker on each and shows what
// the translation team would see. Arguments after "--" go to gpu-worker
// run (e.g. the operator's model settings for --size default).
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
	size := flag.String("size", "tiny", "model size of both jobs: tiny (CPU) or default (a GPU, and the models README names)")
	from := flag.String("project-from", "", "copy this already built demo project instead of building one (no espeak-ng or Bible text needed)")
	buildOnly := flag.Bool("build-only", false, "build the project and stop (for --project-from elsewhere)")
	flag.Parse()
	if *size != "tiny" && *size != "default" {
		fmt.Fprintln(os.Stderr, "demo: --size is tiny or default")
		os.Exit(2)
	}
	o := options{dir: *dir, workDir: *workDir, bin: *bin, size: *size, quick: *quick, from: *from, buildOnly: *buildOnly, workerArgs: flag.Args()}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// options are the demo's flags.
type options struct {
	dir, workDir, bin, size, from string
	quick, buildOnly              bool
	workerArgs                    []string
}

func run(o options) error {
	start := time.Now()
	dir, workDir, bin, size := o.dir, o.workDir, o.bin, o.size
	epochsTTS, epochsASR := 60, 60
	if o.quick {
		epochsTTS, epochsASR = 3, 3
	}
	if err := buildProject(o); err != nil {
		return err
	}
	if o.buildOnly {
		fmt.Printf("Built the demo project in %s.\n", dir)
		return nil
	}
	now := time.Now().UTC()
	asrJob := fmt.Sprintf(`  - job_id: "demo_asr"
    name: "Mark transcription (demo)"
    job_type: asr
    mode: training_and_inference
    submitted_at: "%s"
    model: {type: W2V2BERT, size: %s}
    epochs: %d
    allow_cpu: true
`, now.Add(-time.Minute).Format(time.RFC3339), size, epochsASR)
	ttsJob := fmt.Sprintf(`  - job_id: "demo_tts"
    name: "Mark voice (demo)"
    job_type: tts
    mode: training_and_inference
    submitted_at: "%s"
    model: {type: StableTTS, size: %s}
    epochs: %d
    allow_cpu: true
    audio_format: webm
`, now.Format(time.RFC3339), size, epochsTTS)
	if err := os.MkdirAll(filepath.Join(dir, "gpu_jobs"), 0o755); err != nil {
		return err
	}
	// One job after the other, each timed: the transcription first, then
	// the voice (which, training on human work only, ignores what the
	// transcription wrote).
	jobs := ""
	for _, phase := range []struct{ name, entry string }{{"asr", asrJob}, {"tts", ttsJob}} {
		jobs += phase.entry
		if err := os.WriteFile(filepath.Join(dir, manifest.Path), []byte("version: 1\njobs:\n"+jobs), 0o644); err != nil {
			return err
		}
		fmt.Printf("Queued the %s job in %s. Running the worker (%s models)...\n\n", phase.name, manifest.Path, size)
		args := append([]string{"run", "--project-dir", dir, "--work-dir", workDir, "--loop-interval", "-1",
			"--allow-cpu", "--worker-id", "demo-worker", "--heartbeat-interval", "1m", "--cancel-check-interval", "10s"}, o.workerArgs...)
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("worker: %w", err)
		}
		fmt.Printf("\nphase %s took %.1f s\n\n", phase.name, time.Since(t0).Seconds())
	}
	return summary(dir, time.Since(start))
}

// buildProject generates the project (Mark 1 read by espeak-ng), or
// copies one built earlier.
func buildProject(o options) error {
	if err := os.RemoveAll(o.dir); err != nil {
		return err
	}
	if o.from != "" {
		fmt.Printf("Copying the demo project %s to %s...\n", o.from, o.dir)
		return os.CopyFS(o.dir, os.DirFS(o.from))
	}
	ctx, dir := context.Background(), o.dir
	train, ttsOnly, asrOnly := 20, 4, 4
	if o.quick {
		train, ttsOnly, asrOnly = 8, 2, 2
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
	if err := p.WriteDir(dir); err != nil {
		return err
	}
	gitInit(dir)
	return nil
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
