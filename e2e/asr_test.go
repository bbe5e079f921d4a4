package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gpu-worker/manifest"
)

// hubSnapshot writes a tiny-dimension model laid out like a hub snapshot
// (config.json, model.safetensors, preprocessor_config.json, …).
func hubSnapshot(t *testing.T, args ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "snapshot")
	cmd := exec.Command(python, append([]string{"-m", "gpuworker_engines.ctc.tinyhub", "--out", dir}, args...)...)
	cmd.Dir = enginesDir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tinyhub: %v\n%s", err, b)
	}
	return dir
}

// engineConfig reads the config the worker gave an engine command.
func engineConfig(t *testing.T, e *env, worker, name string) map[string]any {
	t.Helper()
	return jobEngineConfig(t, e, worker, "*", name)
}

// num reads a number of a result as YAML gave it back (int or float).
func num(v any) float64 {
	switch x := v.(type) {
	case int:
		return float64(x)
	case float64:
		return x
	}
	return -1
}

// transcribedCells counts cells whose newest edit is ours.
func transcribedCells(e *env) int {
	n := 0
	for _, c := range e.notebook().Cells() {
		edits := c.Object().Path("metadata", "edits").Elems()
		if len(edits) == 0 {
			continue
		}
		if typ, _ := edits[len(edits)-1].Get("type").Str(); typ == "llm-generation" {
			n++
		}
	}
	return n
}

// A W2V2BERT job at the default size — no size, no knobs beyond a short
// run — trains with the published recipe on a model laid out like the
// facebook/w2v-bert-2.0 snapshot, reports held-out figures and fills the
// cell that needed text.
func TestASRDefaultSizeTrainsTheRecipe(t *testing.T) {
	e := newEnv(t, verses(8, 0, 1))
	base := hubSnapshot(t, "--architecture", "w2v2bert")
	e.setManifest(`  - job_id: recipe
    job_type: asr
    mode: training_and_inference
    model: {type: W2V2BERT}
    epochs: 2
    allow_cpu: true
`)
	e.run("w1", "--w2v2bert-base-model", base)
	r := e.wantState("recipe", manifest.StateCompleted)
	// The worker sends the operator's base and what the job set; the
	// engine's recipe is the engine's, and it reports what it used.
	cfg := engineConfig(t, e, "w1", "w2v2bert-train.json")
	if cfg["base_model"] != base || cfg["lm_corpus"] == nil {
		t.Errorf("base or language-model text not sent: %v", cfg)
	}
	for _, k := range []string{"learning_rate", "warmup_steps", "batch_size", "gradient_accumulation_steps", "size",
		"add_adapter", "mask_time_prob", "text_normalization", "lm", "test_split"} {
		if _, ok := cfg[k]; ok {
			t.Errorf("the worker sent %s, which the job left to the engine's recipe: %v", k, cfg)
		}
	}
	hp, _ := r.Result["hyperparameters"].(map[string]any)
	if num(hp["learning_rate"]) != 5e-5 || num(hp["warmup_steps"]) != 500 || num(hp["effective_batch"]) != 32 ||
		num(hp["mask_time_prob"]) != 0 || hp["add_adapter"] != true || hp["architecture"] == nil {
		t.Errorf("the recipe used, as reported: %v", r.Result["hyperparameters"])
	}
	for _, k := range []string{"val_cer", "test_cer", "test_wer", "lm", "transmorgrifier"} {
		if _, ok := r.Result[k]; !ok {
			t.Errorf("result lacks %s: %v", k, r.Result)
		}
	}
	if r.Result["cells_transcribed"] != 1 || transcribedCells(e) != 1 {
		t.Errorf("cells_transcribed %v, %d cells carry our edit", r.Result["cells_transcribed"], transcribedCells(e))
	}
	if strings.Contains(string(mustFile(t, e, "files/target/MRK.codex")), "[UNK]") {
		t.Error("[UNK] reached the notebook")
	}
}

// An MMS job adapts the base's published adapter for its language, keeps
// the artifact small and fills the cells that need text.
func TestMMSAdapterJobFillsCells(t *testing.T) {
	e := newEnv(t, verses(8, 0, 2))
	base := hubSnapshot(t, "--architecture", "wav2vec2", "--adapter-languages", "xyz,abc")
	e.setManifest(`  - job_id: mms
    job_type: asr
    mode: training_and_inference
    model: {type: MMS, language: xyz}
    epochs: 2
    allow_cpu: true
`)
	e.run("w1", "--mms-base-model", base)
	r := e.wantState("mms", manifest.StateCompleted)
	if r.Result["checkpoint_path"] != manifest.JobDir("mms")+"/models/mms_adapter.tar" {
		t.Errorf("checkpoint_path %v", r.Result["checkpoint_path"])
	}
	art := e.lfsFile(manifest.JobDir("mms") + "/models/mms_adapter.tar")
	cfg := engineConfig(t, e, "w1", "mms-train.json")
	if cfg["language"] != "xyz" || cfg["base_model"] != base || cfg["learning_rate"] != nil {
		t.Errorf("engine config %v", cfg)
	}
	if hp, _ := r.Result["hyperparameters"].(map[string]any); num(hp["learning_rate"]) != 1e-3 {
		t.Errorf("the MMS adapter recipe used, as reported: %v", r.Result["hyperparameters"])
	}
	if r.Result["cells_transcribed"] != 2 || transcribedCells(e) != 2 {
		t.Errorf("cells_transcribed %v, %d cells carry our edit", r.Result["cells_transcribed"], transcribedCells(e))
	}
	t.Logf("adapter artifact %d bytes", len(art))
}

func mustFile(t *testing.T, e *env, path string) []byte {
	t.Helper()
	b, ok := e.file(path)
	if !ok {
		t.Fatalf("%s missing", path)
	}
	return b
}
