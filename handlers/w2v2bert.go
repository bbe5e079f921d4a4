package handlers

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	"gpu-worker/manifest"
)

// W2V2BERT is CTC fine-tuning of facebook/w2v-bert-2.0 (or, with
// model.base_model, of a wav2vec2-family base such as XLS-R), as the
// published fine-tuning recipes train it.
var w2v2BERT = register(&Model{
	Spec: manifest.ModelSpec{
		Name:    "W2V2BERT",
		Aliases: []string{"W2V2-BERT", "Wav2Vec2BERT", "w2vbert", "w2v2bert20", "wav2vec2", "w2v2"},
		JobType: manifest.ASR,
		Engine:  "w2v2bert",
		Summary: "speech recognition fine-tuned from facebook/w2v-bert-2.0 (CTC), with an n-gram language model and a post-corrector",
		Licence: "MIT (facebook/w2v-bert-2.0); a wav2vec2 base named in model.base_model keeps its own licence",
		Fields: append(ctcFields(),
			manifest.Field{Key: "model.base_model", Kind: manifest.Text,
				Help: "the pretrained model to fine-tune: a hub id or a local folder (default: the operator's --w2v2bert-base-model, else facebook/w2v-bert-2.0)"}),
		Defaults: func(j *manifest.Job) manifest.Knobs {
			switch {
			case j.ModelSize == "tiny":
				// a small random model in minutes: a larger step, a short warmup
				return manifest.Knobs{Epochs: 10, BatchSize: 4, GradientAccumulationSteps: 1, WarmupSteps: 10,
					SaveInterval: 500, LearningRate: 3e-3, ValSplit: 0.1}
			case asrArchitecture(w2v2BaseOf(j)) == "wav2vec2":
				// the wav2vec2 / XLS-R / MMS fine-tuning recipe
				return manifest.Knobs{Epochs: 10, BatchSize: 8, GradientAccumulationSteps: 4, WarmupSteps: 500,
					SaveInterval: 500, LearningRate: 3e-4, ValSplit: 0.1}
			}
			// the W2V2-BERT recipe: 5e-5, an effective batch of 32, warmup 500
			return manifest.Knobs{Epochs: 10, BatchSize: 8, GradientAccumulationSteps: 4, WarmupSteps: 500,
				SaveInterval: 500, LearningRate: 5e-5, ValSplit: 0.1}
		},
		Memory: ctcMemory(1),
	},
	Settings: []Setting{{Flag: w2v2BERTBaseFlag, Env: "GPU_WORKER_W2V2BERT_BASE_MODEL",
		Help: "where W2V2BERT jobs find facebook/w2v-bert-2.0: a hub id or a local copy of its snapshot (default: the hub id)"}},
	SampleRate:       func(*manifest.Job) int { return asrRate },
	MinTrainingItems: 4,
	ModelFile:        "base_model.tar",
	Artifact:         "asr_model.tar",
	Train: func(ctx context.Context, r *run) (string, error) {
		base := or(r.Job.OptString("model.base_model"), or(r.setting(w2v2BERTBaseFlag), defaultW2V2BERTBase))
		arch := asrArchitecture(base)
		if r.Job.ModelSize != "tiny" {
			r.fetchHub(ctx, base)
		}
		extra := map[string]any{"base_model": base, "architecture": arch, "add_adapter": arch == "w2v2bert"}
		extra["mask_time_prob"] = 0.0
		if arch == "wav2vec2" {
			extra["mask_time_prob"] = 0.05
		}
		if v, ok := r.Job.Opt("mask_time_prob").(float64); ok {
			extra["mask_time_prob"] = v
		}
		return trainCTC(ctx, r, "w2v2bert", extra)
	},
	Infer: func(ctx context.Context, r *run, model string) error {
		return transcribeCTC(ctx, r, "w2v2bert", model, nil)
	},
})

const (
	defaultW2V2BERTBase = "facebook/w2v-bert-2.0"
	w2v2BERTBaseFlag    = "w2v2bert-base-model"
)

// w2v2BaseOf is the pretrained model a W2V2BERT job fine-tunes.
func w2v2BaseOf(j *manifest.Job) string {
	return or(strings.TrimSpace(j.OptString("model.base_model")), defaultW2V2BERTBase)
}

// asrArchitecture tells a W2V2-BERT base from a wav2vec2-family one (which
// takes raw waveforms and has its own recipe): by the config.json of a
// local folder, else by the hub id.
func asrArchitecture(base string) string {
	if b, err := os.ReadFile(filepath.Join(base, "config.json")); err == nil {
		var c struct {
			ModelType string `json:"model_type"`
		}
		if json.Unmarshal(b, &c) == nil && c.ModelType != "" {
			if c.ModelType == "wav2vec2-bert" {
				return "w2v2bert"
			}
			return "wav2vec2"
		}
	}
	id := strings.ToLower(base)
	if strings.Contains(id, "w2v-bert") || strings.Contains(id, "wav2vec2-bert") || strings.Contains(id, "w2v2-bert") {
		return "w2v2bert"
	}
	return "wav2vec2"
}
