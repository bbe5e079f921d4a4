package manifest

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// As the Codex extension writes it (js-yaml, 2-space indent).
const clientManifest = `version: 1
jobs:
  - job_id: "lqz3k8_9f2a1c7b0e"
    name: "Mark voice"
    job_type: tts
    mode: training_and_inference
    submitted_at: "2026-01-25T22:00:00Z"
    model:
      type: stable-tts
    epochs: 1000
    training:
      include_verses: ["MRK 1", "MRK 2:3"]
    inference:
      include_verses:
        - "MAT 1:1"
        - "5e7dadd4-9879-026e-82d9-80337922faad"
      exclude_verses: []
      audio_format: ogg
    voice_reference: "files/audio/speaker_sample.webm"
    timeout: "2027-01-01T00:00:00Z"
    canceled: false
    some_future_field: {a: 1}
  - job_id: "asr1"
    job_type: ASR
    mode: inference
    submitted_at: 2026-01-24T10:00:00Z
    model:
      type: Wav2Vec2-BERT
      base_checkpoint: gpu_jobs/job_abc/models/asr_model.tar
    transmorgrifier: {enabled: false}
    text_normalization: {lowercase: true}
`

// testCatalog stands for the handlers' descriptions: two models with a few
// fields of their own.
var testCatalog = Catalog{
	{Name: "StableTTS", Aliases: []string{"StableTTS-1.1"}, JobType: TTS, Engine: "stabletts",
		Fields: []Field{
			{Key: "voice_reference", Kind: RepoPath},
			{Key: "model.frontend", Kind: Choice, Choices: []string{"auto", "ipa"}, Engine: "train.frontend"},
			{Key: "inference.diffusion_steps", Kind: Int, Min: 1, Max: 1000, Engine: "synthesize.steps"},
			{Key: "cfg_scale", Kind: Float, Min: 0, Max: 20, Engine: "synthesize.cfg_scale"},
		},
		Memory: func(*Job) uint64 { return 1 }},
	{Name: "W2V2BERT", Aliases: []string{"wav2vec2bert", "w2v-bert"}, JobType: ASR, Engine: "w2v2bert",
		Fields: []Field{
			{Key: "transmorgrifier.enabled", Kind: Bool, Engine: "train.transmorgrifier.enabled"},
			{Key: "text_normalization.lowercase", Kind: Bool, Engine: "train.text_normalization.lowercase"},
			{Key: "text_normalization.remove_numbers", Kind: Bool, Engine: "train.text_normalization.remove_numbers"},
		},
		Memory: func(*Job) uint64 { return 1 }},
}

func TestParseClientManifest(t *testing.T) {
	m, err := testCatalog.Parse([]byte(clientManifest))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Jobs) != 2 {
		t.Fatalf("jobs = %d, want 2", len(m.Jobs))
	}
	j := m.Jobs[0]
	if j.Invalid != nil {
		t.Fatalf("job 0 invalid: %v", j.Invalid)
	}
	if j.ModelType != "StableTTS" || j.Kind() != "tts/stabletts/training_and_inference" {
		t.Errorf("model %q kind %q", j.ModelType, j.Kind())
	}
	if j.AudioFormat != "ogg" {
		t.Errorf("audio_format under inference: got %q", j.AudioFormat)
	}
	if got := strings.Join(j.Inference.Include, "|"); got != "MAT 1:1|5e7dadd4-9879-026e-82d9-80337922faad" {
		t.Errorf("inference include = %q", got)
	}
	if got := strings.Join(j.Training.Include, "|"); got != "MRK 1|MRK 2:3" {
		t.Errorf("training include = %q", got)
	}
	if !j.Timeout.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) || j.OptString("voice_reference") != "files/audio/speaker_sample.webm" {
		t.Errorf("timeout %v voice_reference %q", j.Timeout, j.OptString("voice_reference"))
	}
	// What the job set, and nothing else: the engine holds the defaults.
	if j.Knobs.Epochs == nil || *j.Knobs.Epochs != 1000 || j.Knobs.BatchSize != nil || j.Set("model.frontend") || j.Set("inference.diffusion_steps") {
		t.Errorf("knobs %+v options %v: want epochs 1000 and nothing else set", j.Knobs, j.Options)
	}
	a := m.Jobs[1]
	if a.Invalid != nil {
		t.Fatalf("job 1 invalid: %v", a.Invalid)
	}
	if a.JobType != ASR || a.ModelType != "W2V2BERT" || a.OptBoolPtr("transmorgrifier.enabled") == nil || a.OptBool("transmorgrifier.enabled") ||
		!a.OptBool("text_normalization.lowercase") || a.Set("text_normalization.remove_numbers") || a.AudioFormat != "webm" {
		t.Errorf("asr job parsed as %+v", a)
	}
	if a.Knobs.Epochs != nil {
		t.Errorf("inference job got training epochs %d", *a.Knobs.Epochs)
	}
	if a.SubmittedAt.IsZero() {
		t.Error("unquoted timestamp not read")
	}
	if s := m.Sorted(); s[0].ID != "asr1" {
		t.Errorf("oldest first: got %s first", s[0].ID)
	}
}

// A knob whose meaningful value is 0 keeps it: warmup_steps: 0 is no
// warmup, not "unset".
func TestZeroKnobsAreValues(t *testing.T) {
	m, err := testCatalog.Parse([]byte("version: 1\njobs:\n  - {job_id: a, job_type: tts, mode: training, model: {type: StableTTS}, warmup_steps: 0, learning_rate: 0.0003}\n  - {job_id: b, job_type: tts, mode: training, model: {type: StableTTS}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, b := m.Jobs[0].Knobs, m.Jobs[1].Knobs
	if a.WarmupSteps == nil || *a.WarmupSteps != 0 || a.LearningRate == nil || *a.LearningRate != 3e-4 {
		t.Errorf("set knobs %+v", a)
	}
	if b.WarmupSteps != nil || b.LearningRate != nil || b.BatchSize != nil {
		t.Errorf("knobs left out came back set: %+v", b)
	}
}

func TestCheckpointUploadInterval(t *testing.T) {
	m, err := Parse([]byte("version: 1\njobs:\n  - {job_id: a, job_type: tts, mode: training, model: {type: StableTTS}, checkpoint_upload_interval: 45}\n  - {job_id: b, job_type: tts, mode: training, model: {type: StableTTS}, checkpoint_upload_interval: \"90s\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := m.Jobs[0].CheckpointUploadInterval, m.Jobs[1].CheckpointUploadInterval; a != 45*time.Minute || b != 90*time.Second {
		t.Errorf("intervals %v %v", a, b)
	}
}

func TestSortedPriorityFirst(t *testing.T) {
	m, err := Parse([]byte(`version: 1
jobs:
  - {job_id: a, job_type: tts, mode: training, model: {type: StableTTS}, submitted_at: "2026-01-01T00:00:00Z"}
  - {job_id: b, job_type: tts, mode: training, model: {type: StableTTS}, submitted_at: "2026-01-03T00:00:00Z", priority: 5}
  - {job_id: c, job_type: tts, mode: training, model: {type: StableTTS}}
  - {job_id: d, job_type: tts, mode: training, model: {type: StableTTS}, submitted_at: "2026-01-02T00:00:00Z"}
`))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range m.Sorted() {
		ids = append(ids, j.ID)
	}
	if got := strings.Join(ids, ""); got != "badc" {
		t.Errorf("order = %s, want badc", got)
	}
}

func TestModelSpellings(t *testing.T) {
	for _, s := range []string{"StableTTS", "stabletts", "Stable-TTS", "STABLE_TTS", "stable tts 1.1"} {
		if m := testCatalog.Lookup(s); m == nil || m.Name != "StableTTS" {
			t.Errorf("%q not StableTTS", s)
		}
	}
	for _, s := range []string{"W2V2BERT", "w2v2-bert", "W2V2-BERT", "wav2vec2bert", "Wav2Vec2-BERT", "w2v-bert"} {
		if m := testCatalog.Lookup(s); m == nil || m.Name != "W2V2BERT" {
			t.Errorf("%q not W2V2BERT", s)
		}
	}
	if testCatalog.Lookup("whisper") != nil || testCatalog.Lookup("") != nil {
		t.Error("whisper or nothing accepted")
	}
}

// An empty path is a path left out, as clients write it.
func TestEmptyRepoPathIsAbsent(t *testing.T) {
	m, err := testCatalog.Parse([]byte("version: 1\njobs:\n  - {job_id: j1, job_type: tts, mode: training, model: {type: StableTTS}, voice_reference: \"\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if j := m.Jobs[0]; j.Invalid != nil || j.OptString("voice_reference") != "" {
		t.Errorf("invalid %v, voice_reference %q", j.Invalid, j.OptString("voice_reference"))
	}
}

// A job with several bad fields names every one of them.
func TestEveryBadFieldReported(t *testing.T) {
	m, err := testCatalog.Parse([]byte("version: 1\njobs:\n  - {job_id: j1, job_type: tts, mode: inference, model: {type: StableTTS, frontend: klingon}, voice_reference: ../v.webm, epochs: ten}\n"))
	if err != nil {
		t.Fatal(err)
	}
	inv := m.Jobs[0].Invalid
	if inv == nil {
		t.Fatal("job accepted")
	}
	for _, want := range []string{"voice_reference:", "model.base_checkpoint: required", "model.frontend:", "epochs:"} {
		if !strings.Contains(inv.Error(), want) {
			t.Errorf("%q missing from %v", want, inv)
		}
	}
}

func TestBadManifests(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"not yaml", "version: 1\njobs: [", "parse manifest"},
		{"no version", "jobs: []\n", `missing "version"`},
		{"version 2", "version: 2\njobs: []\n", "version: 2"},
		{"version string", "version: one\njobs: []\n", "one"},
		{"jobs not list", "version: 1\njobs: {a: 1}\n", "parse manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestBadJobs(t *testing.T) {
	const ok = `job_type: tts, mode: training, model: {type: StableTTS}`
	for _, tc := range []struct{ name, job, want string }{
		{"unknown job type", `job_type: ocr, mode: training, model: {type: StableTTS}`, `job_type: "ocr" is not a job type`},
		{"missing job type", `mode: training, model: {type: StableTTS}`, "job_type: missing"},
		{"unknown mode", `job_type: tts, mode: finetune, model: {type: StableTTS}`, `mode: "finetune" is not a mode`},
		{"missing mode", `job_type: tts, model: {type: StableTTS}`, "mode: missing"},
		{"unknown model", `job_type: tts, mode: training, model: {type: Tacotron}`, `model.type: "Tacotron" is not a model`},
		{"missing model", `job_type: tts, mode: training`, "model.type: missing"},
		{"model for other job type", `job_type: asr, mode: training, model: {type: StableTTS}`, "StableTTS cannot run a asr job (expected W2V2BERT)"},
		{"epochs word", ok + `, epochs: ten`, `epochs: must be a whole number, got "ten"`},
		{"epochs zero", ok + `, epochs: 0`, "epochs: must be between 1 and"},
		{"epochs negative", ok + `, epochs: -5`, "epochs: must be between 1 and"},
		{"epochs fraction", ok + `, epochs: 2.5`, "epochs: must be a whole number, got 2.5"},
		{"checkpoint outside gpu_jobs", `job_type: tts, mode: inference, model: {type: StableTTS, base_checkpoint: models/x.pt}`, "model.base_checkpoint: \"models/x.pt\" must be under gpu_jobs/"},
		{"checkpoint traversal", `job_type: tts, mode: inference, model: {type: StableTTS, base_checkpoint: gpu_jobs/../secret.pt}`, `must not contain ".."`},
		{"checkpoint absolute", `job_type: tts, mode: inference, model: {type: StableTTS, base_checkpoint: /etc/passwd}`, "must be relative to the project root"},
		{"inference without checkpoint", `job_type: asr, mode: inference, model: {type: W2V2BERT}`, "model.base_checkpoint: required for inference"},
		{"bad timeout", ok + `, timeout: "next tuesday"`, `timeout: "next tuesday" is not an ISO 8601 time`},
		{"bad submitted_at", ok + `, submitted_at: "yesterday"`, "submitted_at:"},
		{"bad audio format", ok + `, audio_format: flac`, `audio_format: "flac" is not supported`},
		{"canceled not bool", ok + `, canceled: "yes please"`, "canceled: must be true or false"},
		{"include not list", ok + `, training: {include_verses: "MAT 1:1"}`, "training.include_verses: must be a list"},
		{"voice reference traversal", ok + `, voice_reference: ../x.webm`, `voice_reference: "../x.webm" must not contain ".."`},
		{"model not mapping", `job_type: tts, mode: training, model: StableTTS`, "model: must be a mapping"},
		{"learning rate too big", ok + `, learning_rate: 3`, "learning_rate: must be greater than 0 and at most 1"},
		{"bad upload interval", ok + `, checkpoint_upload_interval: soon`, "checkpoint_upload_interval: must be a whole number"},
		{"bad size", `job_type: tts, mode: training, model: {type: StableTTS, size: huge}`, `model.size: "huge" is not a size`},
		{"bad choice", `job_type: tts, mode: training, model: {type: StableTTS, frontend: morse}`, `model.frontend: "morse" is not one of auto, ipa`},
		{"bad model int", ok + `, inference: {diffusion_steps: 0}`, "inference.diffusion_steps: must be between 1 and 1000"},
		{"bad model bool", `job_type: asr, mode: training, model: {type: W2V2BERT}, transmorgrifier: {enabled: maybe}`, "transmorgrifier.enabled: must be true or false"},
		{"model field not mapping", `job_type: asr, mode: training, model: {type: W2V2BERT}, text_normalization: yes`, "text_normalization: must be a mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := testCatalog.Parse([]byte("version: 1\njobs:\n  - {job_id: j1, " + tc.job + "}\n"))
			if err != nil {
				t.Fatalf("whole manifest rejected: %v", err)
			}
			j := m.Find("j1")
			if j == nil {
				t.Fatal("job dropped")
			}
			if j.Invalid == nil || !strings.Contains(j.Invalid.Error(), tc.want) {
				t.Fatalf("Invalid = %v, want it to contain %q", j.Invalid, tc.want)
			}
		})
	}
}

func TestUnidentifiableJobsSkipped(t *testing.T) {
	m, err := Parse([]byte("version: 1\njobs:\n  - {job_type: tts}\n  - 42\n  - {job_id: \"../../x\", job_type: tts}\n  - {job_id: ok, job_type: tts, mode: training, model: {type: StableTTS}}\n  - {job_id: ok, job_type: tts, mode: training, model: {type: StableTTS}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Skipped) != 3 || len(m.Jobs) != 2 {
		t.Fatalf("skipped %v, jobs %d", m.Skipped, len(m.Jobs))
	}
	if m.Jobs[1].Invalid == nil || !strings.Contains(m.Jobs[1].Invalid.Error(), "more than once") {
		t.Errorf("duplicate id not reported: %v", m.Jobs[1].Invalid)
	}
}

func TestResponseRoundTripAndOrder(t *testing.T) {
	ts := time.Date(2026, 1, 25, 22, 0, 0, 0, time.UTC)
	r := &Response{WorkerID: "w1", State: StateRunning, Timestamp: ts, RetryCount: 1,
		EpochsCompleted: Ptr(5), StatusMessage: "epoch 5/10", Result: map[string]any{"checkpoint_path": "gpu_jobs/job_x/models/best_model.pt"}}
	b := r.Marshal()
	want := []string{"worker_id: w1", "state: running", "timestamp: 2026-01-25T22:00:00Z", "retry_count: 1", "epochs_completed: 5", "expected_completion: null", "error_message: null", "termination_reason: null", "status_message: epoch 5/10", "result:"}
	last := -1
	for _, w := range want {
		i := strings.Index(string(b), w)
		if i < 0 || i < last {
			t.Fatalf("%q missing or out of order in:\n%s", w, b)
		}
		last = i
	}
	back, err := ParseResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.WorkerID != "w1" || !back.Timestamp.Equal(ts) || *back.EpochsCompleted != 5 || back.Result["checkpoint_path"] == nil {
		t.Errorf("round trip: %+v", back)
	}
	if !back.Stale(ts.Add(25*time.Hour), 24*time.Hour) || back.Stale(ts.Add(time.Hour), 24*time.Hour) {
		t.Error("staleness wrong")
	}
}

func TestValidateRepoPath(t *testing.T) {
	if err := ValidateRepoPath("gpu_jobs/job_1/models/best_model.pt", "gpu_jobs/"); err != nil {
		t.Error(err)
	}
	for _, p := range []string{"gpu_jobs/./x", "gpu_jobs//x", "gpu_jobsx/y"} {
		if ValidateRepoPath(p, "gpu_jobs/") == nil {
			t.Errorf("%q accepted", p)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(clientManifest))
	f.Add([]byte("version: 1\njobs:\n  - {job_id: a, epochs: 1e400}\n"))
	f.Add([]byte("version: 1\njobs: [{job_id: x, model: [1,2]}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := testCatalog.Parse(data)
		if err != nil {
			if m != nil {
				t.Fatal("manifest returned with error")
			}
			if !errors.Is(err, ErrVersion) && !strings.Contains(err.Error(), "parse manifest") {
				t.Fatalf("unexpected error shape: %v", err)
			}
			return
		}
		for _, j := range m.Jobs {
			if j.ID == "" || !validJobID(j.ID) {
				t.Fatalf("bad id %q kept", j.ID)
			}
			if j.Invalid == nil && (j.Kind() == "" || j.ModelType == "") {
				t.Fatalf("valid job without kind: %+v", j)
			}
			_ = j.Kind()
		}
		m.Sorted()
	})
}
