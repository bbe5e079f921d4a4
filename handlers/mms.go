package handlers

import (
	"context"
	"fmt"
	"regexp"

	"gpu-worker/contract"
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
		Memory: func(j *manifest.Job) uint64 {
			switch {
			case j.ModelSize == "tiny":
				return gpu.GiB
			case !j.Trains():
				return 5 * gpu.GiB
			}
			// the frozen 1 B base in memory, activations for the batch
			batch := batchSize(contract.Engines(), "mms", j.Knobs.BatchSize, conditions(j, "architecture=wav2vec2"))
			return 6*gpu.GiB + uint64(batch)*gpu.GiB*3/4
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
	Prepare:          fetchMMS,
	Train: func(ctx context.Context, r *run) (string, error) {
		cfg := contract.NewCTCTrain("mms")
		cfg.BaseModel, cfg.Language = mmsBase(r), r.Job.OptString("model.language")
		cfg.MaskTimeProb = r.Job.OptFloatPtr("mask_time_prob")
		return trainCTC(ctx, r, cfg, "wav2vec2")
	},
	Infer: func(ctx context.Context, r *run, model string) error {
		cfg := contract.NewMMSTranscribe()
		cfg.BaseModel = mmsBase(r)
		return transcribeCTC(ctx, r, cfg, model)
	},
})

const mmsBaseFlag = "mms-base-model"

var iso6393 = regexp.MustCompile(`^[a-z]{3}$`)

// mmsBase is the base the job or the operator names ("": the engine's
// default).
func mmsBase(r *run) string {
	return or(r.Job.OptString("model.base_model"), r.setting(mmsBaseFlag))
}

// fetchMMS brings the job's hub references into the engines' cache, once
// a job, before an engine starts. Training fetches its base and the
// base's published adapter for the job's language (when it has one).
// Inference needs only the base the adapter was trained on: the one named,
// else training's default, which an adapter trained unnamed records.
func fetchMMS(ctx context.Context, r *run) error {
	if r.Job.ModelSize == "tiny" {
		return nil
	}
	ref := or(mmsBase(r), engineDefaultString("mms", "train", "base_model"))
	var adapter []string
	if l := r.Job.OptString("model.language"); r.Job.Trains() && l != "" && isHubRef(ref) && hubRepoID.MatchString(ref) {
		adapter = []string{"hf://" + ref + "/adapter." + l + ".safetensors"}
	}
	r.fetchHubOptional(ctx, []string{ref}, adapter)
	return nil
}
