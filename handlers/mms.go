package handlers

import (
	"context"
	"fmt"
	"regexp"

	"gpu-worker/gpu"
	"gpu-worker/manifest"
)

// MMS is adapter fine-tuning of Meta's Massively Multilingual Speech
// model (facebook/mms-1b-all, trained on New Testament recordings in over
// 1,100 languages): the base stays frozen, only the language adapter and
// the output head train, so a job fits a small GPU and its model is small.
var mms = register(&Model{
	Spec: manifest.ModelSpec{
		Name:    "MMS",
		Aliases: []string{"MMS-1B-all", "mms1ball", "MMS-1B", "mms-adapter"},
		JobType: manifest.ASR,
		Engine:  "mms",
		Summary: "speech recognition by adapter fine-tuning of facebook/mms-1b-all, starting from its published adapter for model.language",
		Licence: "CC-BY-NC 4.0 (facebook/mms-1b-all and its adapters): non-commercial use only",
		Fields: append(ctcFields(),
			manifest.Field{Key: "model.base_model", Kind: manifest.Text,
				Help: "the multilingual base: a hub id or a local folder (default: the operator's --mms-base-model, else facebook/mms-1b-all)"},
			manifest.Field{Key: "model.language", Kind: manifest.Text,
				Help: "ISO 639-3 code of the language; its published adapter is the starting point when the base has one"}),
		Defaults: func(j *manifest.Job) manifest.Knobs {
			if j.ModelSize == "tiny" {
				return manifest.Knobs{Epochs: 10, BatchSize: 4, GradientAccumulationSteps: 1, WarmupSteps: 10,
					SaveInterval: 500, LearningRate: 3e-3, ValSplit: 0.1}
			}
			// adapter training: a large step on few parameters
			return manifest.Knobs{Epochs: 10, BatchSize: 8, GradientAccumulationSteps: 4, WarmupSteps: 100,
				SaveInterval: 500, LearningRate: 1e-3, ValSplit: 0.1}
		},
		Memory: func(j *manifest.Job) uint64 {
			switch {
			case j.ModelSize == "tiny":
				return gpu.GiB
			case !j.Trains():
				return 5 * gpu.GiB
			}
			// the frozen 1 B base in memory, activations for the batch
			return 6*gpu.GiB + uint64(j.BatchSize)*gpu.GiB*3/4
		},
		Check: func(j *manifest.Job) []error {
			if l := j.OptString("model.language"); l != "" && !iso6393.MatchString(l) {
				return []error{fmt.Errorf("model.language: %q is not an ISO 639-3 code (three lower-case letters, e.g. swh)", l)}
			}
			return nil
		},
	},
	Settings: []Setting{{Flag: mmsBaseFlag, Env: "GPU_WORKER_MMS_BASE_MODEL",
		Help: "where MMS jobs find facebook/mms-1b-all: a hub id or a local copy of its snapshot (default: the hub id)"}},
	SampleRate:       func(*manifest.Job) int { return asrRate },
	MinTrainingItems: 4,
	ModelFile:        "base_adapter.tar",
	Artifact:         "mms_adapter.tar",
	Train: func(ctx context.Context, r *run) (string, error) {
		return trainCTC(ctx, r, "mms", mmsSettings(ctx, r))
	},
	Infer: func(ctx context.Context, r *run, model string) error {
		return transcribeCTC(ctx, r, "mms", model, mmsSettings(ctx, r))
	},
})

const (
	defaultMMSBase = "facebook/mms-1b-all"
	mmsBaseFlag    = "mms-base-model"
)

var iso6393 = regexp.MustCompile(`^[a-z]{3}$`)

// mmsSettings are the engine settings of an MMS job: the base the adapter
// belongs to and its language.
func mmsSettings(ctx context.Context, r *run) map[string]any {
	base := or(r.Job.OptString("model.base_model"), or(r.setting(mmsBaseFlag), defaultMMSBase))
	if r.Job.ModelSize != "tiny" {
		// The base's published adapter for the language, when it has one.
		var adapter []string
		if lang := r.Job.OptString("model.language"); lang != "" && isHubRef(base) && hubRepoID.MatchString(base) {
			adapter = []string{"hf://" + base + "/adapter." + lang + ".safetensors"}
		}
		r.fetchHubOptional(ctx, []string{base}, adapter)
	}
	s := map[string]any{
		"base_model":     base,
		"language":       r.Job.OptString("model.language"),
		"mask_time_prob": 0.05,
	}
	if v, ok := r.Job.Opt("mask_time_prob").(float64); ok {
		s["mask_time_prob"] = v
	}
	return s
}
