package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gpu-worker/codex"
	"gpu-worker/manifest"
)

// publishedBase writes a randomly initialised StableTTS in the published
// v1.1 layout and config (a bare state_dict, as checkpoint_0.pt is).
func publishedBase(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "checkpoint_0.pt")
	script := `import sys, torch
from gpuworker_engines.stabletts.config import ModelConfig
from gpuworker_engines.stabletts.model import StableTTS
torch.manual_seed(0)
torch.save(StableTTS(ModelConfig.published(), 401).state_dict(), sys.argv[1])`
	cmd := exec.Command(python, "-c", script, out)
	cmd.Dir = enginesDir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make published base: %v\n%s", err, b)
	}
	return out
}

// The vocoder fixture is a small Vocos in the published layout with the
// real head (n_fft 2048, hop 512).
func publishedVocoder() string {
	return filepath.Join(enginesDir, "tests", "fixtures", "stabletts", "tiny_vocoder.pt")
}

// A TTS job at the default size — what a team gets without knobs —
// fine-tunes the operator's published-format base model, is scored on its
// held-out verse, speaks through the published-format vocoder and attaches
// the audio; the panel's loss table and the sidecar land beside the model.
func TestTTSDefaultSizeFineTunesPublishedBase(t *testing.T) {
	e := newEnv(t, verses(5, 1, 0))
	e.setManifest(`  - job_id: voice
    job_type: tts
    mode: training_and_inference
    model: {type: StableTTS}
    epochs: 1
    batch_size: 2
    inference: {include_verses: ["MRK 1:6"], solver: euler, diffusion_steps: 4}
    allow_cpu: true
`)
	base := publishedBase(t)
	e.run("w1", "--tts-base-model", base, "--tts-vocoder", publishedVocoder())
	r := e.wantState("voice", manifest.StateCompleted)
	if r.Result["base_model"] != base || r.Result["frontend"] != "ipa" {
		t.Errorf("base %v frontend %v", r.Result["base_model"], r.Result["frontend"])
	}
	dir := manifest.JobDir("voice")
	e.lfsFile(dir + "/models/best_model.pt")
	if side, ok := e.file(dir + "/models/best_model.json"); !ok || !strings.Contains(string(side), "symbols") {
		t.Errorf("sidecar missing or without symbols: %.200s", side)
	}
	if csv, ok := e.file(dir + "/checkpoint/training_metrics.csv"); !ok || !strings.HasPrefix(string(csv), "epoch,train_total_loss,val_total_loss") {
		t.Errorf("panel loss table: %.120q", csv)
	}
	if r.Result["evaluation_split"] != "val" || r.Result["evaluation_items"] != 1 {
		t.Errorf("evaluation on %v items of split %v", r.Result["evaluation_items"], r.Result["evaluation_split"])
	}
	if r.Result["audio_generated"] != 1 {
		t.Fatalf("audio_generated = %v", r.Result["audio_generated"])
	}
	c := cellByRef(e.notebook(), "MRK 1:6")
	if c == nil {
		t.Fatal("MRK 1:6 not in the notebook")
	}
	a, ok := c.CurrentAudio()
	if !ok {
		t.Fatal("MRK 1:6 has no audio")
	}
	_, pointers := codexPaths(a.URL)
	if obj := e.lfsFile(pointers); len(obj) < 100 {
		t.Errorf("audio of %d bytes", len(obj))
	}
}

func cellByRef(nb *codex.Notebook, ref string) *codex.Cell {
	for _, c := range nb.Cells() {
		for _, r := range c.References() {
			if r == ref {
				return c
			}
		}
	}
	return nil
}

// Without a vocoder a non-tiny job fails at once, naming the setting.
func TestTTSWithoutVocoderFailsAtOnce(t *testing.T) {
	e := newEnv(t, verses(4, 0, 0))
	e.setManifest("  - {job_id: novoc, job_type: tts, mode: training, model: {type: StableTTS}, allow_cpu: true}\n")
	e.run("w1", "--tts-base-model", "/models/checkpoint_0.pt")
	r := e.wantState("novoc", manifest.StateFailed)
	if r.ErrorMessage == nil || !strings.Contains(*r.ErrorMessage, "--tts-vocoder") {
		t.Errorf("error %v does not name --tts-vocoder", r.ErrorMessage)
	}
	if _, ok := e.file(manifest.JobDir("novoc") + "/models/best_model.pt"); ok {
		t.Error("a model was trained anyway")
	}
}

// doctor loads the operator's vocoder and base model through the engine
// and says what it found; a vocoder that is not one fails the check.
func TestDoctorLoadsTheTTSFiles(t *testing.T) {
	proj := t.TempDir()
	base := publishedBase(t)
	args := []string{"doctor", "--project-dir", proj, "--allow-cpu", "--min-free-disk", "0", "--python", python, "--engines-dir", enginesDir}
	out, _ := exec.Command(binary, append(args, "--tts-vocoder", publishedVocoder(), "--tts-base-model", base)...).CombinedOutput()
	if !strings.Contains(string(out), "vocoder loads") || !strings.Contains(string(out), "base model loads (parameters 31644545") {
		t.Errorf("doctor with the TTS files:\n%s", out)
	}
	out, _ = exec.Command(binary, append(args, "--tts-vocoder", base)...).CombinedOutput()
	if !strings.Contains(string(out), "TTS vocoder and base model") || !strings.Contains(string(out), "not a Vocos") {
		t.Errorf("doctor with a checkpoint for a vocoder:\n%s", out)
	}
}

// A TTS job in a project with an ASR model from an earlier job scores its
// voice by transcribing the held-out verses it synthesised.
func TestTTSRoundTripCERWithTheProjectsASRModel(t *testing.T) {
	e := newEnv(t, verses(6, 0, 0))
	e.setManifest(job("asr", "asr", "training", "W2V2BERT", "    epochs: 2\n    transmorgrifier: {enabled: false}\n"))
	e.run("w1")
	e.wantState("asr", manifest.StateCompleted)
	e.setManifest(job("asr", "asr", "training", "W2V2BERT", "    epochs: 2\n    transmorgrifier: {enabled: false}\n"),
		job("voice", "tts", "training", "StableTTS", "    epochs: 2\n"))
	e.run("w1")
	r := e.wantState("voice", manifest.StateCompleted)
	cer, ok := r.Result["round_trip_cer"].(float64)
	if !ok || cer < 0 {
		t.Fatalf("round_trip_cer = %v (result %v)", r.Result["round_trip_cer"], r.Result)
	}
	if r.Result["round_trip_asr_model"] != manifest.JobDir("asr")+"/models/asr_model.tar" {
		t.Errorf("scored with %v", r.Result["round_trip_asr_model"])
	}
}
