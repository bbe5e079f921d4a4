package handlers

import (
	"context"
	"gpu-worker/contract"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gpu-worker/manifest"
	"gpu-worker/worker"
)

// Every model is described completely; a description missing a part is
// caught (here, and so before it ships).
func TestDescriptionsComplete(t *testing.T) {
	if len(Models()) < 2 {
		t.Fatalf("models: %d", len(Models()))
	}
	names := map[string]bool{}
	for _, m := range Models() {
		if err := m.Complete(); err != nil {
			t.Error(err)
		}
		if names[m.Spec.Name] {
			t.Errorf("two models named %s", m.Spec.Name)
		}
		names[m.Spec.Name] = true
		for _, a := range m.Spec.Aliases {
			if got := Catalog().Lookup(a); got == nil || got.Name != m.Spec.Name {
				t.Errorf("alias %q of %s resolves to %v", a, m.Spec.Name, got)
			}
		}
	}
	broken := *stableTTS
	broken.Spec.Memory = nil
	broken.Infer = nil
	err := broken.Complete()
	if err == nil || !strings.Contains(err.Error(), "Memory") || !strings.Contains(err.Error(), "Infer") {
		t.Errorf("incomplete description passed: %v", err)
	}
}

// Every model/mode pair has a handler, under the key the worker looks up.
func TestRegistryCoversEveryModelAndMode(t *testing.T) {
	reg := Registry(Config{})
	for _, m := range Models() {
		for _, mode := range []string{manifest.Training, manifest.Inference, manifest.TrainingAndInference} {
			j := job(t, "job_type: "+m.Spec.JobType+", mode: "+mode+", model: {type: "+strings.ToLower(m.Spec.Name)+", base_checkpoint: gpu_jobs/job_x/models/"+m.Artifact+"}")
			if reg[j.Kind()] == nil {
				t.Errorf("no handler for %s", j.Kind())
			}
			if Lookup(j) != m {
				t.Errorf("%s looks up %v", j.Kind(), Lookup(j))
			}
		}
	}
}

func job(t *testing.T, fields string) *manifest.Job {
	t.Helper()
	m, err := Catalog().Parse([]byte("version: 1\njobs:\n  - {job_id: j1, " + fields + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return m.Jobs[0]
}

// A job with several bad fields names all of them at once.
func TestValidationNamesEveryBadField(t *testing.T) {
	j := job(t, "job_type: tts, mode: inference, model: {type: StableTTS}, voice_reference: ../elsewhere.webm, cfg_scale: 99")
	if j.Invalid == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"voice_reference", "model.base_checkpoint", "cfg_scale"} {
		if !strings.Contains(j.Invalid.Error(), want) {
			t.Errorf("%q not named in %v", want, j.Invalid)
		}
	}
	if j := job(t, "job_type: tts, mode: training, model: {type: StableTTS, from_scratch: true, base_checkpoint: gpu_jobs/job_a/models/best_model.pt}"); j.Invalid == nil {
		t.Error("from_scratch with a base checkpoint accepted")
	}
}

// What a job leaves out is not sent: the engine's default applies (its
// recipe turns normalisation on); what it sets is sent as written, false
// and 0 included.
func TestCTCOptionsReachTheEngineAsSet(t *testing.T) {
	cfg := contract.NewCTCTrain("w2v2bert")
	ctcTrainOptions(job(t, "job_type: asr, mode: training, model: {type: W2V2BERT}"), cfg)
	if cfg.TextNormalization != nil || cfg.Transmorgrifier != nil || cfg.LM != nil || cfg.LearningRate != nil ||
		cfg.BatchSize != nil || cfg.WarmupSteps != nil || cfg.TestSplit != nil || cfg.Size != "" {
		t.Errorf("a job that set nothing sends %+v", cfg)
	}
	cfg = contract.NewCTCTrain("w2v2bert")
	ctcTrainOptions(job(t, "job_type: asr, mode: training, model: {type: W2V2BERT}, text_normalization: {lowercase: false}, "+
		"lm: {order: 3}, warmup_steps: 0, learning_rate: 0.0002, batch_size: 2, save_interval: 7"), cfg)
	n, lm := cfg.TextNormalization, cfg.LM
	if n == nil || n.Lowercase == nil || *n.Lowercase || n.RemovePunctuation != nil ||
		lm == nil || lm.Order == nil || *lm.Order != 3 || lm.Enabled != nil {
		t.Errorf("normalisation %+v lm %+v", n, lm)
	}
	if cfg.WarmupSteps == nil || *cfg.WarmupSteps != 0 || *cfg.LearningRate != 2e-4 || *cfg.BatchSize != 2 || *cfg.SaveEverySteps != 7 {
		t.Errorf("knobs %+v", cfg.Train)
	}
}

func TestASRArchitecture(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type": "wav2vec2-bert"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if asrArchitecture(dir) != "w2v2bert" || asrArchitecture("facebook/mms-1b-all") != "wav2vec2" ||
		asrArchitecture("facebook/w2v-bert-2.0") != "w2v2bert" || asrArchitecture("facebook/wav2vec2-xls-r-300m") != "wav2vec2" {
		t.Error("architecture detection")
	}
}

// Each model's memory estimate grows with the batch, and tiny < inference
// < training.
func TestMemoryEstimatesOrdered(t *testing.T) {
	for _, m := range Models() {
		typ := m.Spec.JobType + ", model: {type: " + m.Spec.Name
		tiny := m.Spec.Memory(job(t, "job_type: "+typ+", size: tiny}, mode: training"))
		inf := m.Spec.Memory(job(t, "job_type: "+typ+", base_checkpoint: gpu_jobs/job_a/models/x}, mode: inference"))
		small := m.Spec.Memory(job(t, "job_type: "+typ+"}, mode: training, batch_size: 2"))
		big := m.Spec.Memory(job(t, "job_type: "+typ+"}, mode: training, batch_size: 16"))
		if !(tiny < inf && inf < small && small < big) {
			t.Errorf("%s: tiny %d inference %d batch2 %d batch16 %d", m.Spec.Name, tiny, inf, small, big)
		}
	}
}

func TestCleanTranscript(t *testing.T) {
	if got := cleanTranscript(" in the [UNK] beginning [PAD]<unk> "); got != "in the beginning" {
		t.Errorf("got %q", got)
	}
}

func TestCharErrorRate(t *testing.T) {
	if got := charErrorRate([]string{"In the beginning."}, []string{"in the begining"}); got < 0.06 || got > 0.07 {
		t.Errorf("one deletion in 16 characters: %g", got)
	}
	if got := charErrorRate([]string{"abc"}, []string{"abc"}); got != 0 {
		t.Errorf("identical: %g", got)
	}
}

// Saving a stopped job's outputs fits the stop budget on a shutdown.
func TestAfterJobBoundedOnShutdown(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(worker.ErrShutdown)
	sctx, done := afterJob(ctx)
	defer done()
	if dl, ok := sctx.Deadline(); !ok || time.Until(dl) > time.Minute {
		t.Errorf("shutdown save deadline %v", dl)
	}
	ctx2, cancel2 := context.WithCancelCause(context.Background())
	cancel2(worker.ErrCanceledByUser)
	sctx2, done2 := afterJob(ctx2)
	defer done2()
	if dl, _ := sctx2.Deadline(); time.Until(dl) < 10*time.Minute {
		t.Errorf("canceled job save deadline %v", dl)
	}
}
