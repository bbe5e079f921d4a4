package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"gpu-worker/manifest"
)

// jobEngineConfig reads the config the worker wrote for one job's engine
// command.
func jobEngineConfig(t *testing.T, e *env, worker, jobID, name string) map[string]any {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(e.work, worker, "job_"+jobID+"_*", name))
	if len(paths) != 1 {
		t.Fatalf("job %s: engine config %s: found %v", jobID, name, paths)
	}
	b, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A job's knobs reach each engine exactly as written — warmup_steps: 0 is
// no warmup, not "unset" — and nothing the job left out is sent: the
// engine's own defaults apply, and it reports what it used.
func TestKnobsReachEachEngineAsWritten(t *testing.T) {
	e := newEnv(t, verses(8, 0, 0))
	mmsBase := hubSnapshot(t, "--architecture", "wav2vec2", "--adapter-languages", "xyz")
	knobs := "    epochs: 1\n    warmup_steps: 0\n    learning_rate: 0.0007\n    batch_size: 3\n"
	e.setManifest(
		job("tts", "tts", "training", "StableTTS", knobs),
		job("w2v", "asr", "training", "W2V2BERT", knobs),
		strings.Replace(job("mms", "asr", "training", "MMS", knobs), "    model: {type: MMS, size: tiny}\n",
			"    model: {type: MMS, size: tiny, language: xyz, base_model: "+mmsBase+"}\n", 1),
	)
	e.run("w1")
	for _, c := range []struct{ id, config string }{
		{"tts", "stabletts-train.json"}, {"w2v", "w2v2bert-train.json"}, {"mms", "mms-train.json"},
	} {
		r := e.wantState(c.id, manifest.StateCompleted)
		cfg := jobEngineConfig(t, e, "w1", c.id, c.config)
		if cfg["warmup_steps"] != 0.0 || cfg["learning_rate"] != 0.0007 || cfg["batch_size"] != 3.0 || cfg["epochs"] != 1.0 {
			t.Errorf("%s: sent %v", c.id, cfg)
		}
		var sent []string
		for k := range cfg {
			sent = append(sent, k)
		}
		sort.Strings(sent)
		for _, k := range []string{"gradient_accumulation_steps", "val_split", "save_every_epochs", "save_every_steps", "device", "progress_every_steps"} {
			if _, ok := cfg[k]; ok {
				t.Errorf("%s: the worker sent %s, which the job left to the engine (sent %v)", c.id, k, sent)
			}
		}
		hp, _ := r.Result["hyperparameters"].(map[string]any)
		if hp["warmup_steps"] != 0 || hp["learning_rate"] != 0.0007 || hp["batch_size"] != 3 {
			t.Errorf("%s: the engine reports it used %v", c.id, r.Result["hyperparameters"])
		}
	}
}
