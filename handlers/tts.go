package handlers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"gpu-worker/audio"
	"gpu-worker/codex"
	"gpu-worker/dataset"
	"gpu-worker/engine"
	"gpu-worker/manifest"
	"gpu-worker/project"
	"gpu-worker/worker"
)

// ttsRate is the sample rate of each StableTTS size's mel front-end.
func ttsRate(j *manifest.Job) int {
	if j.ModelSize == "tiny" {
		return 16000
	}
	return 44100
}

const minTTSItems = 2

func runTTS(ctx context.Context, runner *engine.Runner, env *worker.JobEnv) (*worker.Outcome, error) {
	job := env.Job
	nbs, err := loadNotebooks(ctx, env.Project)
	if err != nil {
		return nil, err
	}
	out := &worker.Outcome{Result: map[string]any{}}
	var model string
	var trainSet *dataset.Result
	var trainDir string
	if job.Trains() {
		trainSet, trainDir, err = trainingSet(ctx, env, nbs, ttsRate(job), minTTSItems, "TTS")
		if err != nil {
			return nil, err
		}
		model, err = trainTTS(ctx, runner, env, trainDir, trainSet, out)
		if err != nil {
			return out, err
		}
	}
	if !job.Infers() {
		out.Message = fmt.Sprintf("completed: model trained on %d verses", len(trainSet.Items))
		return out, nil
	}
	if model == "" {
		model = filepath.Join(env.WorkDir, "base_model.pt")
		if err := fetchModel(ctx, env.Project, job.BaseCheckpoint, model); err != nil {
			return nil, err
		}
	}
	voice, err := voiceReference(ctx, env, nbs, trainSet, trainDir, ttsRate(job))
	if err != nil {
		return out, err
	}
	return out, synthesizeTTS(ctx, runner, env, nbs, model, voice, out)
}

func trainTTS(ctx context.Context, runner *engine.Runner, env *worker.JobEnv, dir string, ds *dataset.Result, out *worker.Outcome) (string, error) {
	job := env.Job
	outDir := filepath.Join(env.WorkDir, "train")
	cfg := map[string]any{
		"dataset":                     dir,
		"output_dir":                  outDir,
		"device":                      "auto",
		"size":                        or(job.ModelSize, "default"),
		"epochs":                      job.Epochs,
		"batch_size":                  or(job.BatchSize, 8),
		"gradient_accumulation_steps": or(job.GradientAccumulationSteps, 1),
		"learning_rate":               or(job.LearningRate, 1e-4),
		"val_split":                   or(job.ValSplit, 0.1),
		"save_interval":               or(job.SaveInterval, 100),
		"progress_every_steps":        50,
	}
	if job.WarmupSteps > 0 {
		cfg["warmup_steps"] = job.WarmupSteps
	}
	if job.ModelSize == "tiny" {
		// The tiny preset trains a small model on few steps: a short warmup
		// and a larger step, unless the job chose its own.
		cfg["learning_rate"] = or(job.LearningRate, 2e-3)
		cfg["warmup_steps"] = or(job.WarmupSteps, 10)
	}
	if job.BaseCheckpoint != "" {
		base := filepath.Join(env.WorkDir, "base_model.pt")
		if err := fetchModel(ctx, env.Project, job.BaseCheckpoint, base); err != nil {
			return "", err
		}
		cfg["base_checkpoint"] = base
	}
	tr := &training{env: env, runner: runner, engine: "stabletts"}
	res, err := tr.run(ctx, cfg)
	tr.report(out.Result)
	if err != nil {
		out.Actions = append(out.Actions, tr.partial(ctx)...)
		if best := filepath.Join(outDir, "best_model.pt"); fileExists(best) {
			sctx, cancel := afterJob(ctx)
			defer cancel()
			if act, aerr := lfsAction(sctx, env.Project, best, modelPath(job.ID, "best_model.pt")); aerr == nil {
				out.Actions = append(out.Actions, act)
				out.Result["checkpoint_path"] = modelPath(job.ID, "best_model.pt")
				out.Result["partial"] = true
			}
		}
		return "", trainError(err)
	}
	best := str(res["best_model"], filepath.Join(outDir, "best_model.pt"))
	final := str(res["final_model"], filepath.Join(outDir, "final_model.pt"))
	env.Report(worker.Progress{Message: "evaluating the trained voice (mel-cepstral distortion)"})
	eval, err := runEngine(ctx, runner, env, "stabletts", "evaluate", map[string]any{
		"checkpoint": best, "dataset": dir, "output_dir": filepath.Join(env.WorkDir, "evaluate"),
		"device": "auto", "max_items": 8, "split": "val",
	}, nil)
	if err != nil {
		if ctx.Err() != nil {
			return "", err
		}
		env.Log.Warn("evaluation failed; the model is kept", "err", err)
	}
	acts, err := uploadOutputs(ctx, env.Project, job.ID, map[string]string{
		"best_model.pt":  best,
		"final_model.pt": final,
		"metrics.csv":    str(res["metrics_csv"], filepath.Join(outDir, "metrics.csv")),
		"loss.png":       str(res["loss_png"], filepath.Join(outDir, "loss.png")),
	})
	if err != nil {
		return "", err
	}
	out.Actions = append(out.Actions, acts...)
	out.Result["checkpoint_path"] = modelPath(job.ID, "best_model.pt")
	out.Result["final_checkpoint_path"] = modelPath(job.ID, "final_model.pt")
	out.Result["metrics_path"] = modelPath(job.ID, "metrics.csv")
	describeTraining(out.Result, ds)
	for _, k := range []string{"best_epoch", "best_val_loss", "epochs_completed", "gpu_memory_peak"} {
		if v, ok := res[k]; ok {
			out.Result[k] = v
		}
	}
	if v, ok := eval["mcd"]; ok {
		out.Result["val_mcd"] = v
	}
	return best, nil
}

func synthesizeTTS(ctx context.Context, runner *engine.Runner, env *worker.JobEnv, nbs map[string]*codex.Notebook, model, voice string, out *worker.Outcome) error {
	job := env.Job
	items, skips := codex.SelectInference(nbs, codex.NeedAudio, filterOf(job.Inference))
	if len(skips) > 0 {
		env.Log.Warn("cells skipped", "count", len(skips), "cells", skipLines(skips))
		out.Result["cells_skipped"] = summarizeSkips(skips)
	}
	out.Result["audio_generated"] = 0
	if len(items) == 0 {
		out.Message = "completed: no verse needed audio"
		return nil
	}
	dir := filepath.Join(env.WorkDir, "synthesis-input")
	if err := dataset.WriteTextOnly(dir, sources(items)); err != nil {
		return err
	}
	wavDir := filepath.Join(env.WorkDir, "synthesis")
	done := 0
	env.Report(worker.Progress{Message: fmt.Sprintf("synthesizing %d verses", len(items))})
	wavs := map[string]string{}
	res, err := runEngine(ctx, runner, env, "stabletts", "synthesize", map[string]any{
		"checkpoint": model, "dataset": dir, "voice_reference": voice, "output_dir": wavDir, "device": "auto",
		"steps": or(job.DiffusionSteps, 10), "temperature": or(job.Temperature, 1.0),
		"cfg_scale": or(job.CFGScale, 3.0), "length_scale": or(job.LengthScale, 1.0),
		"solver": "euler", "vocoder": os.Getenv("GPU_WORKER_VOCODER"), "batch_size": or(job.BatchSize, 8),
	}, func(ev engine.Event) {
		if ev.Kind == "item" && ev.ID != "" && ev.Path != "" {
			wavs[ev.ID] = ev.Path
			done++
			if done%20 == 0 {
				env.Report(worker.Progress{Message: fmt.Sprintf("synthesized %d/%d verses", done, len(items))})
			}
		}
	})
	if err != nil {
		return fmt.Errorf("synthesis: %w", err)
	}
	now := time.Now()
	patches := map[string][]codex.Patch{}
	failed := map[string]int{}
	for _, it := range items {
		wav, ok := wavs[it.CellID]
		if !ok {
			failed["not synthesized"]++
			continue
		}
		id := codex.NewAudioID(now)
		encoded := filepath.Join(env.WorkDir, "encoded", id+"."+job.AudioFormat)
		if err := os.MkdirAll(filepath.Dir(encoded), 0o755); err != nil {
			return err
		}
		meta, err := audio.Encode(ctx, wav, encoded, job.AudioFormat)
		if err != nil {
			env.Log.Warn("encode failed", "cell", it.CellID, "err", err)
			failed["encode failed"]++
			continue
		}
		_, pointers := codex.AudioPaths(codex.AttachmentURL(it.Notebook, id, job.AudioFormat))
		ptr, err := env.Project.PutLFS(ctx, encoded)
		if err != nil {
			return fmt.Errorf("upload audio: %w", err)
		}
		out.Actions = append(out.Actions, project.Action{Kind: project.Create, Path: pointers, Content: []byte(ptr.String())})
		patches[it.Notebook] = append(patches[it.Notebook], codex.Patch{CellID: it.CellID, Audio: &codex.AudioChange{
			ID: id, Ext: job.AudioFormat, Timestamp: now.UnixMilli(), CreatedBy: "gpu-worker",
			Meta: codex.AudioMeta{MimeType: meta.MimeType, SizeBytes: meta.SizeBytes, SampleRate: meta.SampleRate,
				Channels: meta.Channels, DurationSec: meta.DurationSec, BitrateKbps: meta.BitrateKbps},
		}})
	}
	generated := len(items) - sum(failed)
	out.Result["audio_generated"] = generated
	out.Changes = recordings(patches, nbs, env.Log)
	out.Result["audio_format"] = job.AudioFormat
	if len(failed) > 0 {
		out.Result["audio_failed"] = failed
	}
	if v, ok := res["rtf"]; ok {
		out.Result["real_time_factor"] = v
	}
	if generated == 0 {
		return fmt.Errorf("no audio could be generated for %d verses (%v)", len(items), failed)
	}
	out.Message = fmt.Sprintf("completed: audio generated for %d verses", generated)
	return nil
}

// uploadOutputs stores model files (LFS) and small reports (plain) under
// gpu_jobs/job_<id>/models/. Missing optional files are left out.
func uploadOutputs(ctx context.Context, p project.Project, jobID string, files map[string]string) ([]project.Action, error) {
	var acts []project.Action
	for name, local := range files {
		if !fileExists(local) {
			if filepath.Ext(name) == ".pt" || filepath.Ext(name) == ".tar" {
				return nil, fmt.Errorf("engine did not write %s", name)
			}
			continue
		}
		var act project.Action
		var err error
		switch filepath.Ext(name) {
		case ".pt", ".tar":
			act, err = lfsAction(ctx, p, local, modelPath(jobID, name))
		default:
			var b []byte
			if b, err = os.ReadFile(local); err == nil {
				act, err = fileAction(ctx, p, modelPath(jobID, name), b)
			}
		}
		if err != nil {
			return nil, err
		}
		acts = append(acts, act)
	}
	return acts, nil
}

// trainError keeps the engine's own message for the team.
func trainError(err error) error {
	if errors.Is(err, engine.ErrInterrupted) {
		return fmt.Errorf("training stopped: %w", err)
	}
	return fmt.Errorf("training: %w", err)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func str(v any, def string) string {
	if s, ok := v.(string); ok && s != "" {
		return s
	}
	return def
}

func round(v float64, digits int) float64 {
	p := 1.0
	for i := 0; i < digits; i++ {
		p *= 10
	}
	return float64(int64(v*p+0.5)) / p
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
