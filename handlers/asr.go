package handlers

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"gpu-worker/codex"
	"gpu-worker/engine"
	"gpu-worker/worker"
)

// asrRate is what the ASR feature extractors expect.
const asrRate = 16000

const minASRItems = 4

func runASR(ctx context.Context, runner *engine.Runner, env *worker.JobEnv) (*worker.Outcome, error) {
	job := env.Job
	nbs, err := loadNotebooks(ctx, env.Project)
	if err != nil {
		return nil, err
	}
	out := &worker.Outcome{Result: map[string]any{}}
	var model string
	if job.Trains() {
		ds, dir, err := trainingSet(ctx, env, nbs, asrRate, minASRItems, "ASR")
		if err != nil {
			return nil, err
		}
		model, err = trainASR(ctx, runner, env, dir, out)
		if err != nil {
			return out, err
		}
		describeTraining(out.Result, ds)
	}
	if !job.Infers() {
		out.Message = "completed: ASR model trained"
		return out, nil
	}
	if model == "" {
		model = filepath.Join(env.WorkDir, "base_model.tar")
		if err := fetchModel(ctx, env.Project, job.BaseCheckpoint, model); err != nil {
			return nil, err
		}
	}
	return out, transcribeASR(ctx, runner, env, nbs, model, out)
}

func trainASR(ctx context.Context, runner *engine.Runner, env *worker.JobEnv, dir string, out *worker.Outcome) (string, error) {
	job := env.Job
	outDir := filepath.Join(env.WorkDir, "train")
	cfg := map[string]any{
		"dataset":                     dir,
		"output_dir":                  outDir,
		"device":                      "auto",
		"size":                        or(job.ModelSize, "default"),
		"base_model":                  or(job.BaseModel, "facebook/w2v-bert-2.0"),
		"epochs":                      job.Epochs,
		"batch_size":                  or(job.BatchSize, 4),
		"gradient_accumulation_steps": or(job.GradientAccumulationSteps, 1),
		"learning_rate":               or(job.LearningRate, 1e-4),
		"val_split":                   or(job.ValSplit, 0.1),
		"save_interval":               or(job.SaveInterval, 500),
		"progress_every_steps":        50,
		"text_normalization": map[string]bool{
			"lowercase":          job.TextNormalization.Lowercase,
			"remove_punctuation": job.TextNormalization.RemovePunctuation,
			"remove_numbers":     job.TextNormalization.RemoveNumbers,
		},
		"transmorgrifier": map[string]any{"enabled": job.Transmorgrifier},
	}
	if job.WarmupSteps > 0 {
		cfg["warmup_steps"] = job.WarmupSteps
	}
	if job.ModelSize == "tiny" {
		// The tiny preset trains a small random model in minutes: a larger
		// step, a short warmup and a small corrector, unless the job chose.
		cfg["learning_rate"] = or(job.LearningRate, 3e-3)
		cfg["warmup_steps"] = or(job.WarmupSteps, 10)
		cfg["transmorgrifier"] = map[string]any{"enabled": job.Transmorgrifier, "iterations": 30}
	}
	tr := &training{env: env, runner: runner, engine: "w2v2bert"}
	res, err := tr.run(ctx, cfg)
	tr.report(out.Result)
	if err != nil {
		out.Actions = append(out.Actions, tr.partial(ctx)...)
		return "", trainError(err)
	}
	artifact := str(res["artifact"], filepath.Join(outDir, "asr_model.tar"))
	acts, err := uploadOutputs(ctx, env.Project, job.ID, map[string]string{
		"asr_model.tar": artifact,
		"metrics.csv":   str(res["metrics_csv"], filepath.Join(outDir, "metrics.csv")),
		"loss.png":      str(res["loss_png"], filepath.Join(outDir, "loss.png")),
	})
	if err != nil {
		return "", err
	}
	out.Actions = append(out.Actions, acts...)
	out.Result["checkpoint_path"] = modelPath(job.ID, "asr_model.tar")
	out.Result["metrics_path"] = modelPath(job.ID, "metrics.csv")
	for _, k := range []string{"best_epoch", "epochs_completed", "gpu_memory_peak", "val_cer", "val_wer", "val_cer_corrected", "val_wer_corrected"} {
		if v, ok := res[k]; ok {
			out.Result[k] = v
		}
	}
	return artifact, nil
}

func transcribeASR(ctx context.Context, runner *engine.Runner, env *worker.JobEnv, nbs map[string]*codex.Notebook, model string, out *worker.Outcome) error {
	job := env.Job
	items, skips := codex.SelectInference(nbs, codex.NeedText, filterOf(job.Inference))
	if len(skips) > 0 {
		env.Log.Warn("cells skipped", "count", len(skips), "cells", skipLines(skips))
		out.Result["cells_skipped"] = summarizeSkips(skips)
	}
	out.Result["cells_transcribed"] = 0
	if len(items) == 0 {
		out.Message = "completed: no verse needed text"
		return nil
	}
	ds, dir, err := buildDataset(ctx, env, items, "transcription-input", asrRate)
	if err != nil {
		return err
	}
	if len(ds.Rejected) > 0 {
		out.Result["errors"] = ds.Rejected
	}
	env.Report(worker.Progress{Message: fmt.Sprintf("transcribing %d verses", len(ds.Items))})
	texts := map[string]string{}
	res, err := runEngine(ctx, runner, env, "w2v2bert", "transcribe", map[string]any{
		"model": model, "dataset": dir, "device": "auto", "batch_size": or(job.BatchSize, 8),
		"output_dir": filepath.Join(env.WorkDir, "transcription"),
	}, func(ev engine.Event) {
		if ev.Kind == "item" && ev.ID != "" {
			if t, ok := ev.Fields["text"].(string); ok {
				texts[ev.ID] = t
			}
		}
	})
	if err != nil {
		return fmt.Errorf("transcription: %w", err)
	}
	now := time.Now().UnixMilli()
	byCell := map[string]codex.Item{}
	for _, it := range items {
		byCell[it.CellID] = it
	}
	patches := map[string][]codex.Patch{}
	empty := 0
	for _, e := range ds.Items {
		text := strings.TrimSpace(texts[e.ID])
		if text == "" {
			empty++
			continue
		}
		it := byCell[e.CellID]
		patches[it.Notebook] = append(patches[it.Notebook], codex.Patch{CellID: it.CellID,
			Text: &codex.TextChange{Value: codex.EscapeText(text), Author: "gpu-worker W2V2BERT (job " + job.ID + ")", Timestamp: now}})
	}
	n := len(ds.Items) - empty
	out.Result["cells_transcribed"] = n
	out.Changes = transcriptions(patches, nbs, env.Log)
	if empty > 0 {
		out.Result["empty_transcriptions"] = empty
	}
	if v, ok := res["rtf"]; ok {
		out.Result["real_time_factor"] = v
	}
	out.Message = fmt.Sprintf("completed: text transcribed for %d verses", n)
	return nil
}
