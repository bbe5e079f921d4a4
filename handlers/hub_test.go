package handlers

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gpu-worker/engine"
	"gpu-worker/worker"
)

// recordingEngine succeeds at every command and appends what it was asked
// to calls.jsonl beside its config (in the job's folder).
const recordingEngine = `
import json, os, sys
cfg = json.load(open(sys.argv[4]))
with open(os.path.join(os.path.dirname(sys.argv[4]), "calls.jsonl"), "a") as f:
    f.write(json.dumps({"engine": sys.argv[1], "command": sys.argv[2], "config": cfg}) + "\n")
print(json.dumps({"event": "result"}), flush=True)
`

type engineRequest struct {
	Engine, Command string
	Config          struct {
		Refs         []string `json:"refs"`
		OptionalRefs []string `json:"optional_refs"`
	}
}

// recordingRun is a run of the job with fields, on a worker with settings,
// whose engines only record what they are asked.
func recordingRun(t *testing.T, fields string, settings map[string]string) *run {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required")
	}
	env := &worker.JobEnv{Job: job(t, fields), WorkDir: t.TempDir(), Log: slog.New(slog.DiscardHandler), LogWriter: io.Discard}
	cfg := Config{Engine: &engine.Runner{Python: py, EnginesDir: fakeEngines(t, recordingEngine)}, Settings: settings}
	return &run{JobEnv: env, cfg: cfg, out: &worker.Outcome{Result: map[string]any{}}}
}

// requests are what the run's engines were asked, in order.
func (r *run) requests(t *testing.T) []engineRequest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.WorkDir, "calls.jsonl"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []engineRequest
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var c engineRequest
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// A StableTTS job the worker cannot run (no vocoder) fails before it
// downloads anything; one it can run fetches base and vocoder once.
func TestRejectedTTSJobFetchesNothing(t *testing.T) {
	const fields = "job_type: tts, mode: training, model: {type: StableTTS}"
	base := "hf://KdaiP/StableTTS1.1/StableTTS/checkpoint_0.pt"
	r := recordingRun(t, fields, map[string]string{ttsBaseModelFlag: base})
	if err := prepareTTS(context.Background(), r); err == nil || !strings.Contains(err.Error(), "no vocoder") {
		t.Fatalf("err %v, want no vocoder", err)
	}
	if got := r.requests(t); len(got) != 0 {
		t.Errorf("a rejected job asked the engines %+v", got)
	}
	vocoder := "hf://KdaiP/StableTTS1.1/vocoders/vocos.pt"
	r = recordingRun(t, fields, map[string]string{ttsBaseModelFlag: base, ttsVocoderFlag: vocoder})
	if err := prepareTTS(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	got := r.requests(t)
	if len(got) != 1 || got[0].Command != "fetch" || !slices.Equal(got[0].Config.Refs, []string{base, vocoder}) {
		t.Errorf("a runnable job asked %+v, want one fetch of %s and %s", got, base, vocoder)
	}
}

// An MMS job fetches once: training its base and the language's published
// adapter, inference only the base.
func TestMMSFetchesOncePerJob(t *testing.T) {
	const typ = "job_type: asr, model: {type: MMS, language: swh}, "
	for _, c := range []struct {
		mode    string
		adapter bool
	}{{"training", true}, {"training_and_inference", true}, {"inference, base_checkpoint: gpu_jobs/job_a/models/mms_adapter.tar", false}} {
		r := recordingRun(t, typ+"mode: "+c.mode, nil)
		if err := mms.Prepare(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		got := r.requests(t)
		if len(got) != 1 || got[0].Command != "fetch" || !slices.Equal(got[0].Config.Refs, []string{"facebook/mms-1b-all"}) {
			t.Errorf("%s: engines asked %+v, want one fetch of facebook/mms-1b-all", c.mode, got)
			continue
		}
		adapter := []string{"hf://facebook/mms-1b-all/adapter.swh.safetensors"}
		if c.adapter != slices.Equal(got[0].Config.OptionalRefs, adapter) || (!c.adapter && len(got[0].Config.OptionalRefs) > 0) {
			t.Errorf("%s: optional refs %v, adapter wanted: %v", c.mode, got[0].Config.OptionalRefs, c.adapter)
		}
	}
	if d := engineDefaultString("mms", "transcribe", "base_model"); d != "" {
		t.Errorf("mms transcribe's base_model default read as %q, want none", d)
	}
}

// Scoring the trained voice sends the engine only what the pipeline
// decides (how many held-out verses); which split is the engine's default.
func TestTTSEvaluationLeavesTheSplitToTheEngine(t *testing.T) {
	r := recordingRun(t, "job_type: tts, mode: training, model: {type: StableTTS}", nil)
	r.evaluateTTS(context.Background(), filepath.Join(r.WorkDir, "best_model.pt"), map[string]any{})
	b, err := os.ReadFile(filepath.Join(r.WorkDir, "stabletts-evaluate.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sent map[string]any
	if err := json.Unmarshal(b, &sent); err != nil {
		t.Fatal(err)
	}
	if _, ok := sent["split"]; ok {
		t.Errorf("the evaluation names the split itself: %s", b)
	}
	if sent["max_items"] != float64(evalItems) {
		t.Errorf("max_items %v, want %d", sent["max_items"], evalItems)
	}
}
