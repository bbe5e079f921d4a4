package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gpu-worker/atomicfile"
	"gpu-worker/codex"
	"gpu-worker/contract"
	"gpu-worker/engine"
	"gpu-worker/gpu"
	"gpu-worker/manifest"
	"gpu-worker/worker"
)

// The pipeline steps the CTC ASR models (W2V2BERT, MMS) share: their
// descriptions differ in engine, defaults and a few fields.

// asrRate is what the ASR feature extractors expect.
const asrRate = 16000

// ctcFields are the manifest fields every CTC ASR model accepts.
func ctcFields() []manifest.Field {
	return []manifest.Field{
		{Key: "transmorgrifier.enabled", Kind: manifest.Bool, Engine: "train.transmorgrifier.enabled",
			Help: "train a SentenceTransmorgrifier post-corrector on the model's errors; kept only when it lowers held-out CER"},
		{Key: "text_normalization.lowercase", Kind: manifest.Bool, Engine: "train.text_normalization.lowercase",
			Help: "train on lower-cased text (casing is not heard)"},
		{Key: "text_normalization.remove_punctuation", Kind: manifest.Bool, Engine: "train.text_normalization.remove_punctuation",
			Help: "train without punctuation (it is not heard)"},
		{Key: "text_normalization.remove_numbers", Kind: manifest.Bool, Engine: "train.text_normalization.remove_numbers",
			Help: "drop digits from the training text"},
		{Key: "lm.enabled", Kind: manifest.Bool, Engine: "train.lm.enabled",
			Help: "decode with an n-gram language model built from the project's own verse text"},
		{Key: "lm.order", Kind: manifest.Int, Min: 2, Max: 6, Engine: "train.lm.order", Help: "n-gram order of that model"},
		{Key: "test_split", Kind: manifest.Float, Min: 0, Max: 0.5, Engine: "train.test_split",
			Help: "share of verses held out for the reported CER/WER (never used to pick the model)"},
		{Key: "mask_time_prob", Kind: manifest.Float, Min: 0, Max: 0.9, Engine: "train.mask_time_prob",
			Help: "SpecAugment time masking"},
		{Key: "dropout", Kind: manifest.Float, Min: 0, Max: 0.9, Engine: "train.dropout", Help: "dropout of the encoder"},
		{Key: "inference.decoder", Kind: manifest.Choice, Choices: []string{"auto", "lm", "greedy"}, Engine: "transcribe.decoder",
			Help: "transcription decoder: the language model when the model has one (auto), or greedy"},
	}
}

// ctcMemory is the GPU memory estimate of a CTC model job; scale is the
// base model's size relative to w2v-bert-2.0 (0.6 B parameters).
func ctcMemory(scale float64, batch func(*manifest.Job) int) func(j *manifest.Job) uint64 {
	return func(j *manifest.Job) uint64 {
		if j.ModelSize == "tiny" {
			return gpu.GiB
		}
		if !j.Trains() {
			return uint64(3 * scale * gpu.GiB)
		}
		return uint64((10 + float64(batch(j))) * scale * gpu.GiB)
	}
}

// trainCTC trains a CTC model with cfg (the model's own settings filled
// in) and adds its artifact and figures to the outcome. arch is the base's
// architecture, which picks the engine's recipe.
func trainCTC(ctx context.Context, r *run, cfg *contract.CTCTrain, arch string) (string, error) {
	job := r.Job
	outDir := filepath.Join(r.WorkDir, "train")
	corpus, err := r.writeLMCorpus()
	if err != nil {
		return "", err
	}
	ctcTrainOptions(job, cfg)
	cfg.Dataset, cfg.OutputDir, cfg.LMCorpus = r.trainDir, outDir, corpus
	if job.BaseCheckpoint != "" {
		base := filepath.Join(r.WorkDir, r.model.ModelFile)
		if err := fetchModel(ctx, r.JobEnv, job.BaseCheckpoint, base); err != nil {
			return "", err
		}
		cfg.BaseCheckpoint = base
	}
	tr := newTraining(r.JobEnv, r.cfg, outDir, conditions(job, "architecture="+arch))
	res, err := tr.run(ctx, cfg)
	tr.report(r.out.Result)
	if err != nil {
		r.out.Actions = append(r.out.Actions, tr.partial(ctx)...)
		return "", trainError(err)
	}
	name := r.model.Artifact
	artifact := str(res["artifact"], filepath.Join(outDir, name))
	acts, err := r.uploadOutputs(ctx, map[string]string{
		name:          artifact,
		"metrics.csv": str(res["metrics_csv"], filepath.Join(outDir, "metrics.csv")),
		"loss.png":    str(res["loss_png"], filepath.Join(outDir, "loss.png")),
	})
	if err != nil {
		return "", err
	}
	r.out.Actions = append(r.out.Actions, acts...)
	if a, ok := tr.panelMetrics(ctx); ok {
		r.out.Actions = append(r.out.Actions, a)
	}
	out := r.out.Result
	out["checkpoint_path"] = modelPath(job.ID, name)
	out["metrics_path"] = modelPath(job.ID, "metrics.csv")
	copyKeys(out, res, "best_epoch", "epochs_completed", "gpu_memory_peak", "hyperparameters",
		"val_cer", "val_wer", "val_cer_lm", "val_wer_lm", "val_cer_corrected", "val_wer_corrected",
		"test_cer", "test_wer", "test_cer_lm", "test_wer_lm", "test_cer_corrected", "test_wer_corrected",
		"transmorgrifier", "lm", "decoder", "post_corrected", "train_items", "val_items", "test_items",
		"vocabulary_size", "new_characters", "base_model")
	return artifact, nil
}

// ctcTrainOptions sets what a job set of a CTC train command's knobs and
// options; everything else is the engine's.
func ctcTrainOptions(job *manifest.Job, cfg *contract.CTCTrain) {
	cfg.Train = trainKnobs(job)
	cfg.SaveEverySteps = job.Knobs.SaveInterval
	cfg.TestSplit = job.OptFloatPtr("test_split")
	cfg.Dropout = job.OptFloatPtr("dropout")
	if n := (contract.TextNormalization{Lowercase: job.OptBoolPtr("text_normalization.lowercase"),
		RemovePunctuation: job.OptBoolPtr("text_normalization.remove_punctuation"),
		RemoveNumbers:     job.OptBoolPtr("text_normalization.remove_numbers")}); n != (contract.TextNormalization{}) {
		cfg.TextNormalization = &n
	}
	if e := job.OptBoolPtr("transmorgrifier.enabled"); e != nil {
		cfg.Transmorgrifier = &contract.Transmorgrifier{Enabled: e}
	}
	if lm := (contract.LM{Enabled: job.OptBoolPtr("lm.enabled"), Order: job.OptIntPtr("lm.order")}); lm != (contract.LM{}) {
		cfg.LM = &lm
	}
}

// writeLMCorpus writes every verse text of the project, for the engine's
// n-gram language model (it leaves out its held-out verses).
func (r *run) writeLMCorpus() (string, error) {
	path := filepath.Join(r.WorkDir, "lm_corpus.jsonl")
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	for _, nb := range r.nbs {
		for _, c := range nb.Cells() {
			if !c.IsVerse() {
				continue
			}
			if t := strings.TrimSpace(c.Text()); t != "" {
				if err := enc.Encode(map[string]string{"cell_id": c.ID(), "text": t}); err != nil {
					return "", err
				}
			}
		}
	}
	if err := os.MkdirAll(r.WorkDir, 0o755); err != nil {
		return "", err
	}
	if err := atomicfile.Write(path, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("write language-model text: %w", err)
	}
	return path, nil
}

// transcribeCTC writes the model's transcription into the cells that need
// text; cfg holds the model's own engine settings.
func transcribeCTC(ctx context.Context, r *run, cfg contract.Transcribe, model string) error {
	job := r.Job
	items := r.selectInference(codex.NeedText)
	r.out.Result["cells_transcribed"] = 0
	if len(items) == 0 {
		r.out.Message = "completed: no verse needed text"
		return nil
	}
	ds, dir, err := r.buildDataset(ctx, items, "transcription-input", asrRate)
	if err != nil {
		return err
	}
	if len(ds.Rejected) > 0 {
		r.out.Result["errors"] = ds.Rejected
	}
	r.Report(worker.Progress{Message: fmt.Sprintf("transcribing %d verses", len(ds.Items))})
	texts := map[string]string{}
	shared := cfg.Shared()
	shared.Model, shared.Dataset, shared.Decoder = model, dir, job.OptString("inference.decoder")
	res, err := r.engine(ctx, cfg, func(ev engine.Event) {
		if ev.Kind == "item" && ev.ID != "" {
			if t, ok := ev.Fields["text"].(string); ok {
				texts[ev.ID] = t
			}
		}
	})
	if err != nil {
		return fmt.Errorf("transcription: %w", err)
	}
	byCell := map[string]codex.Item{}
	for _, it := range items {
		byCell[it.CellID] = it
	}
	empty := 0
	for _, e := range ds.Items {
		text := cleanTranscript(texts[e.ID])
		if text == "" {
			empty++
			continue
		}
		it := byCell[e.CellID]
		r.patch(it.Notebook, codex.Patch{CellID: it.CellID,
			Text: &codex.TextChange{Value: codex.EscapeText(text), Author: r.author()}})
	}
	n := len(ds.Items) - empty
	r.out.Result["cells_transcribed"] = n
	if empty > 0 {
		r.out.Result["empty_transcriptions"] = empty
	}
	copyKeys(r.out.Result, res, "decoder")
	if v, ok := res["rtf"]; ok {
		r.out.Result["real_time_factor"] = v
	}
	r.out.Message = fmt.Sprintf("completed: text transcribed for %d verses", n)
	return nil
}

// cleanTranscript guards the cells against tokens that are not text.
func cleanTranscript(s string) string {
	for _, tok := range []string{"[UNK]", "<unk>", "[PAD]", "<pad>"} {
		s = strings.ReplaceAll(s, tok, " ")
	}
	return strings.Join(strings.Fields(s), " ")
}
