package handlers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gpu-worker/audio"
	"gpu-worker/codex"
	"gpu-worker/contract"
	"gpu-worker/dataset"
	"gpu-worker/engine"
	"gpu-worker/gpu"
	"gpu-worker/manifest"
	"gpu-worker/project"
	"gpu-worker/worker"
)

// StableTTS is the published StableTTS v1.1: a team's voice is fine-tuned
// from the published 600-hour checkpoint and spoken through the published
// Vocos vocoder.
var stableTTS = register(&Model{
	Spec: manifest.ModelSpec{
		Name:    "StableTTS",
		Aliases: []string{"StableTTS1.1", "StableTTS11"},
		JobType: manifest.TTS,
		Engine:  "stabletts",
		Summary: "a synthetic voice from the project's recordings (StableTTS v1.1 fine-tuned from the published checkpoint)",
		Licence: "MIT (StableTTS v1.1 checkpoint and Vocos vocoder, KdaiP/StableTTS1.1)",
		Fields: []manifest.Field{
			{Key: "voice_reference", Kind: manifest.RepoPath,
				Help: "recording whose voice to speak with (default: a project recording near 6 s)"},
			{Key: "model.frontend", Kind: manifest.Choice, Choices: []string{"auto", "ipa", "uroman", "graphemes"}, Engine: "train.frontend",
				Help: "text front-end: ipa (English IPA, the published symbols), uroman (romanise any script, then ipa), graphemes (the data's own letters as new symbols); auto picks uroman when most letters are non-Latin, else ipa"},
			{Key: "model.use_uroman", Kind: manifest.Bool,
				Help: "earlier workers' switch: true = frontend uroman, false = frontend ipa (when model.frontend is auto)"},
			{Key: "model.from_scratch", Kind: manifest.Bool, Engine: "train.from_scratch",
				Help: "train from random weights instead of fine-tuning the base model (needs hours of recordings)"},
			{Key: "inference.diffusion_steps", Kind: manifest.Int, Min: 1, Max: 1000, Engine: "synthesize.steps",
				Help: "output steps of the flow-matching ODE"},
			{Key: "inference.solver", Kind: manifest.Choice, Choices: []string{"euler", "midpoint", "dopri5"}, Engine: "synthesize.solver",
				Help: "ODE solver"},
			{Key: "temperature", Kind: manifest.Float, Min: 0, Max: 10, Engine: "synthesize.temperature", Help: "scale of the initial noise"},
			{Key: "length_scale", Kind: manifest.Float, Min: 0, Max: 10, Engine: "synthesize.length_scale", Help: "speaking-rate factor (> 1 is slower)"},
			{Key: "cfg_scale", Kind: manifest.Float, Min: 0, Max: 20, Engine: "synthesize.cfg_scale", Help: "classifier-free guidance scale, as in the published inference"},
		},
		Memory: func(j *manifest.Job) uint64 {
			switch {
			case j.ModelSize == "tiny":
				return gpu.GiB / 4
			case !j.Trains():
				return 3 * gpu.GiB / 2
			}
			batch := batchSize(contract.Engines(), "stabletts", j.Knobs.BatchSize, conditions(j))
			return 2*gpu.GiB + uint64(batch)*gpu.GiB*2/5
		},
		Check: func(j *manifest.Job) []error {
			if j.OptBool("model.from_scratch") && j.BaseCheckpoint != "" {
				return []error{fmt.Errorf("model.from_scratch: cannot be combined with model.base_checkpoint (fine-tuning starts from it)")}
			}
			return nil
		},
	},
	Settings: []Setting{
		{Flag: ttsBaseModelFlag, Env: "GPU_WORKER_TTS_BASE_MODEL",
			Help: "base model TTS jobs fine-tune: the published StableTTS checkpoint_0.pt (a path, or hf://KdaiP/StableTTS1.1/StableTTS/checkpoint_0.pt)"},
		{Flag: ttsVocoderFlag, Env: "GPU_WORKER_TTS_VOCODER",
			Help: "vocoder TTS jobs speak through: the published vocos.pt (a path, or hf://KdaiP/StableTTS1.1/vocoders/vocos.pt)"},
	},
	SampleRate: func(j *manifest.Job) int {
		if j.ModelSize == "tiny" {
			return 16000
		}
		return 44100
	},
	MinTrainingItems: 2,
	ModelFile:        "base_model.pt",
	Artifact:         "best_model.pt",
	Prepare:          prepareTTS,
	Train:            trainTTS,
	Infer:            synthesizeTTS,
	Doctor:           doctorTTS,
})

const (
	ttsBaseModelFlag = "tts-base-model"
	ttsVocoderFlag   = "tts-vocoder"
	// evalItems caps the held-out verses the quality figures synthesise.
	// It is the pipeline's choice, not a job's knob: scoring runs on the
	// job's clock after training (each verse is synthesised, and heard
	// again by an ASR model for the round trip), and a fixed count keeps
	// the figures of one job comparable with the next. The engine's own
	// default (0: every held-out item) suits a person running it by hand.
	evalItems = 8
)

// prepareTTS fails at once a job that would otherwise train for hours and
// then speak through Griffin-Lim, or train from nothing.
func prepareTTS(ctx context.Context, r *run) error {
	j := r.Job
	if j.ModelSize == "tiny" {
		return nil
	}
	if r.setting(ttsVocoderFlag) == "" {
		return fmt.Errorf("no vocoder configured on this worker: the operator sets --%s (environment GPU_WORKER_TTS_VOCODER, config key %s) to the published vocos.pt; see README \"Models\"",
			ttsVocoderFlag, ttsVocoderFlag)
	}
	if j.Trains() && j.BaseCheckpoint == "" && !j.OptBool("model.from_scratch") && r.setting(ttsBaseModelFlag) == "" {
		return fmt.Errorf("no base model to fine-tune: the operator sets --%s (environment GPU_WORKER_TTS_BASE_MODEL) to the published checkpoint_0.pt, or the job names model.base_checkpoint (a model of an earlier job) or sets model.from_scratch: true",
			ttsBaseModelFlag)
	}
	// Only a job that will run fetches (gigabytes, for a base model).
	r.fetchHub(ctx, r.setting(ttsBaseModelFlag), r.setting(ttsVocoderFlag))
	return nil
}

// ttsFrontend is the front-end the job asks for ("": the engine's
// default).
func ttsFrontend(j *manifest.Job) string {
	f := j.OptString("model.frontend")
	if u, ok := j.Opt("model.use_uroman").(bool); ok && (f == "" || f == "auto") {
		if u {
			return "uroman"
		}
		return "ipa"
	}
	return f
}

// ttsBase is what training starts from: a model of an earlier job, the
// operator's published checkpoint, or nothing (from scratch).
func ttsBase(ctx context.Context, r *run) (string, error) {
	j := r.Job
	switch {
	case j.OptBool("model.from_scratch"):
		return "", nil
	case j.BaseCheckpoint != "":
		base := filepath.Join(r.WorkDir, "base_model.pt")
		return base, fetchModel(ctx, r.JobEnv, j.BaseCheckpoint, base)
	case j.ModelSize == "tiny":
		return "", nil
	}
	return r.setting(ttsBaseModelFlag), nil
}

func trainTTS(ctx context.Context, r *run) (string, error) {
	job := r.Job
	outDir := filepath.Join(r.WorkDir, "train")
	base, err := ttsBase(ctx, r)
	if err != nil {
		return "", err
	}
	cfg := &contract.StableTTSTrain{Train: r.train(outDir), SaveEveryEpochs: job.Knobs.SaveInterval,
		Frontend: ttsFrontend(job), FromScratch: job.OptBoolPtr("model.from_scratch")}
	cfg.BaseCheckpoint = base
	tr := newTraining(r.JobEnv, r.cfg, outDir, conditions(job))
	res, err := tr.run(ctx, cfg)
	tr.report(r.out.Result)
	if err != nil {
		r.out.Actions = append(r.out.Actions, tr.partial(ctx)...)
		if best := filepath.Join(outDir, "best_model.pt"); fileExists(best) {
			sctx, cancel := afterJob(ctx)
			defer cancel()
			if acts, aerr := r.uploadOutputs(sctx, map[string]string{
				"best_model.pt": best, "best_model.json": sidecar(best)}); aerr == nil {
				r.out.Actions = append(r.out.Actions, acts...)
				r.out.Result["checkpoint_path"] = modelPath(job.ID, "best_model.pt")
				r.out.Result["partial"] = true
			}
		}
		return "", trainError(err)
	}
	best := str(res["best_model"], filepath.Join(outDir, "best_model.pt"))
	final := str(res["final_model"], filepath.Join(outDir, "final_model.pt"))
	r.evaluateTTS(ctx, best, res)
	outputs := map[string]string{
		"best_model.pt":    best,
		"best_model.json":  sidecar(best),
		"final_model.pt":   final,
		"final_model.json": sidecar(final),
		"metrics.csv":      str(res["metrics_csv"], filepath.Join(outDir, "metrics.csv")),
		"loss.png":         str(res["loss_png"], filepath.Join(outDir, "loss.png")),
	}
	// The published code's continue_training reads a folder of
	// <name>_<epoch>.pt files only: the best model again under that name
	// (the same LFS object, so nothing more is uploaded).
	if k := str(res["kdaip_checkpoint"], ""); k != "" {
		outputs["kdaip/"+filepath.Base(k)] = k
	}
	acts, err := r.uploadOutputs(ctx, outputs)
	if err != nil {
		return "", err
	}
	r.out.Actions = append(r.out.Actions, acts...)
	if a, ok := tr.panelMetrics(ctx); ok {
		r.out.Actions = append(r.out.Actions, a)
	}
	res2 := r.out.Result
	res2["checkpoint_path"] = modelPath(job.ID, "best_model.pt")
	res2["final_checkpoint_path"] = modelPath(job.ID, "final_model.pt")
	res2["metrics_path"] = modelPath(job.ID, "metrics.csv")
	if k := str(res["kdaip_checkpoint"], ""); k != "" {
		res2["kdaip_checkpoint_path"] = modelPath(job.ID, "kdaip/"+filepath.Base(k))
	}
	res2["base_model"] = or(base, "none (trained from scratch)")
	copyKeys(res2, res, "best_epoch", "best_val_loss", "epochs_completed", "gpu_memory_peak", "frontend", "unmapped_characters", "parameters", "hyperparameters")
	r.warnUnmapped(res)
	return best, nil
}

// sidecar is the JSON file an engine writes beside a model file (symbols,
// front-end, configuration): best_model.pt → best_model.json.
func sidecar(model string) string {
	return strings.TrimSuffix(model, filepath.Ext(model)) + ".json"
}

// evaluateTTS scores the trained voice on held-out verses: mel-cepstral
// distortion, and the character error rate of an earlier job's ASR model
// on the synthesised audio when the project has one.
func (r *run) evaluateTTS(ctx context.Context, best string, train map[string]any) {
	r.Report(worker.Progress{Message: "evaluating the trained voice on held-out verses"})
	wavs, texts := map[string]string{}, map[string]string{}
	splitFile, _ := train["split_file"].(string)
	eval, err := r.engine(ctx, &contract.StableTTSEvaluate{
		Checkpoint: best, Dataset: r.trainDir, OutputDir: filepath.Join(r.WorkDir, "evaluate"),
		Vocoder: r.setting(ttsVocoderFlag), SplitFile: splitFile, MaxItems: contract.Ptr(evalItems),
	}, func(ev engine.Event) {
		if ev.Kind == "item" && ev.ID != "" && ev.Path != "" {
			wavs[ev.ID] = ev.Path
			if t, ok := ev.Fields["text"].(string); ok {
				texts[ev.ID] = t
			}
		}
	})
	if err != nil {
		if ctx.Err() == nil {
			r.Log.Warn("evaluation failed; the model is kept", "err", err)
		}
		return
	}
	res := r.out.Result
	res["evaluation_split"] = str(eval["split"], "val")
	res["evaluation_items"] = eval["items_scored"]
	if v, ok := eval["mcd"]; ok && v != nil {
		res["val_mcd"] = v
	}
	if cer, note := r.roundTripCER(ctx, wavs, texts); note != "" {
		res["round_trip_cer"] = note
	} else {
		res["round_trip_cer"] = cer
	}
}

func synthesizeTTS(ctx context.Context, r *run, model string) error {
	job := r.Job
	items := r.selectInference(codex.NeedAudio)
	r.out.Result["audio_generated"] = 0
	if len(items) == 0 {
		r.out.Message = "completed: no verse needed audio"
		return nil
	}
	voice, err := voiceReference(ctx, r, r.model.SampleRate(job))
	if err != nil {
		return err
	}
	dir := filepath.Join(r.WorkDir, "synthesis-input")
	if err := dataset.WriteTextOnly(dir, sources(items)); err != nil {
		return err
	}
	done := 0
	r.Report(worker.Progress{Message: fmt.Sprintf("synthesizing %d verses", len(items))})
	wavs := map[string]string{}
	res, err := r.engine(ctx, &contract.StableTTSSynthesize{
		Checkpoint: model, Dataset: dir, VoiceReference: voice, OutputDir: filepath.Join(r.WorkDir, "synthesis"),
		Vocoder: r.setting(ttsVocoderFlag), Steps: job.OptIntPtr("inference.diffusion_steps"),
		Temperature: job.OptFloatPtr("temperature"), CFGScale: job.OptFloatPtr("cfg_scale"),
		LengthScale: job.OptFloatPtr("length_scale"), Solver: job.OptString("inference.solver"),
		BatchSize: job.Knobs.BatchSize,
	}, func(ev engine.Event) {
		if ev.Kind == "item" && ev.ID != "" && ev.Path != "" {
			wavs[ev.ID] = ev.Path
			done++
			if done%20 == 0 {
				r.Report(worker.Progress{Message: fmt.Sprintf("synthesized %d/%d verses", done, len(items))})
			}
		}
	})
	if err != nil {
		return fmt.Errorf("synthesis: %w", err)
	}
	failed := map[string]int{}
	for _, it := range items {
		wav, ok := wavs[it.CellID]
		if !ok {
			failed["not synthesized"]++
			continue
		}
		if err := r.attachAudio(ctx, it, wav); err != nil {
			if ctx.Err() != nil {
				return err
			}
			r.Log.Warn("encode failed", "cell", it.CellID, "err", err)
			failed["encode failed"]++
		}
	}
	generated := len(items) - sum(failed)
	r.out.Result["audio_generated"] = generated
	r.out.Result["audio_format"] = job.AudioFormat
	if len(failed) > 0 {
		r.out.Result["audio_failed"] = failed
	}
	copyKeys(r.out.Result, res, "unmapped_characters", "solver")
	if v, ok := res["rtf"]; ok {
		r.out.Result["real_time_factor"] = v
	}
	r.warnUnmapped(res)
	if generated == 0 {
		return fmt.Errorf("no audio could be generated for %d verses (%v)", len(items), failed)
	}
	r.out.Message = fmt.Sprintf("completed: audio generated for %d verses", generated)
	return nil
}

// attachAudio encodes a synthesised verse, stores it in LFS where the
// editor keeps recordings and adds the cell's new take to the outcome.
func (r *run) attachAudio(ctx context.Context, it codex.Item, wav string) error {
	format := r.Job.AudioFormat
	id := codex.NewAudioID(time.Now())
	encoded := filepath.Join(r.WorkDir, "encoded", id+"."+format)
	synth := filepath.Join(r.WorkDir, "synthesised", id+".wav")
	defer os.Remove(synth)
	if err := copyEngineFile(r.WorkDir, wav, synth); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(encoded), 0o755); err != nil {
		return err
	}
	meta, err := audio.Encode(ctx, synth, encoded, format)
	if err != nil {
		return err
	}
	_, pointers := codex.AudioPaths(codex.AttachmentURL(it.Notebook, id, format))
	ptr, err := r.Project.PutLFS(ctx, encoded)
	if err != nil {
		return fmt.Errorf("upload audio: %w", err)
	}
	r.out.Actions = append(r.out.Actions, project.Action{Kind: project.Create, Path: pointers, Content: []byte(ptr.String())})
	r.patch(it.Notebook, codex.Patch{CellID: it.CellID, Audio: &codex.AudioChange{
		ID: id, Ext: format, CreatedBy: "gpu-worker",
		Meta: codex.AudioMeta{MimeType: meta.MimeType, SizeBytes: meta.SizeBytes, SampleRate: meta.SampleRate,
			Channels: meta.Channels, DurationSec: meta.DurationSec, BitrateKbps: meta.BitrateKbps},
	}})
	return nil
}

// warnUnmapped says in the job log which characters the front-end could
// not speak; the counts are in the result.
func (r *run) warnUnmapped(res map[string]any) {
	if m, ok := res["unmapped_characters"].(map[string]any); ok && len(m) > 0 {
		r.Log.Warn("characters the text front-end cannot map were left out", "characters", m)
	}
}

// doctorTTS checks that the configured vocoder and base model load.
func doctorTTS(cfg Config) []Check {
	return []Check{{
		Name: "TTS vocoder and base model",
		Fix: fmt.Sprintf("download vocos.pt and checkpoint_0.pt from the KdaiP/StableTTS1.1 model repository and set --%s and --%s (README \"Models\")",
			ttsVocoderFlag, ttsBaseModelFlag),
		Run: func(ctx context.Context) (string, error) {
			voc, base := cfg.Settings[ttsVocoderFlag], cfg.Settings[ttsBaseModelFlag]
			if voc == "" {
				return "", fmt.Errorf("--%s is not set: TTS jobs other than size tiny fail", ttsVocoderFlag)
			}
			if cfg.Engine == nil {
				return "", fmt.Errorf("no engines environment")
			}
			check := &contract.StableTTSCheck{Vocoder: voc, BaseCheckpoint: base, Device: "cpu"}
			dir, err := os.MkdirTemp("", "gpu-worker-doctor-")
			if err != nil {
				return "", err
			}
			defer os.RemoveAll(dir)
			res, err := cfg.runChecked(ctx, cfg.Engine, check, dir, nil, nil)
			if err != nil {
				return "", err
			}
			detail := fmt.Sprintf("vocoder loads (%v)", describe(res["vocoder"]))
			if base == "" {
				return detail + "; no --" + ttsBaseModelFlag + ": TTS training needs model.base_checkpoint or model.from_scratch", nil
			}
			return detail + fmt.Sprintf("; base model loads (%v)", describe(res["base_checkpoint"])), nil
		},
	}}
}

// describe prints an engine's check answer compactly.
func describe(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Sprint(v)
	}
	var parts []string
	for _, k := range []string{"parameters", "sample_rate", "symbols", "frontend"} {
		switch x := m[k].(type) {
		case nil:
		case float64: // JSON numbers: counts read better without an exponent
			parts = append(parts, fmt.Sprintf("%s %s", k, strconv.FormatFloat(x, 'f', -1, 64)))
		default:
			parts = append(parts, fmt.Sprintf("%s %v", k, x))
		}
	}
	return strings.Join(parts, ", ")
}

// copyKeys copies the keys present in src into dst.
func copyKeys(dst, src map[string]any, keys ...string) {
	for _, k := range keys {
		if v, ok := src[k]; ok && v != nil {
			dst[k] = v
		}
	}
}
