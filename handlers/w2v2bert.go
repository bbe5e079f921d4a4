package handlers

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	"gpu-worker/contract"
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
		Memory: ctcMemory(1, func(j *manifest.Job) int {
			return batchSize(contract.Engines(), "w2v2bert", j.Knobs.BatchSize,
				conditions(j, "architecture="+asrArchitecture(w2v2BaseOf(j))))
		}),
	},
	Settings: []Setting{{Flag: w2v2BERTBaseFlag, Env: "GPU_WORKER_W2V2BERT_BASE_MODEL",
		Help: "where W2V2BERT jobs find facebook/w2v-bert-2.0: a hub id or a local copy of its snapshot (default: the hub id)"}},
	SampleRate:       func(*manifest.Job) int { return asrRate },
	MinTrainingItems: 4,
	ModelFile:        "base_model.tar",
	Artifact:         "asr_model.tar",
	Train: func(ctx context.Context, r *run) (string, error) {
		// The base the job or the operator names; else the engine's.
		set := or(r.Job.OptString("model.base_model"), r.setting(w2v2BERTBaseFlag))
		base := or(set, engineDefaultString("w2v2bert", "train", "base_model"))
		arch := asrArchitecture(base)
		if r.Job.ModelSize != "tiny" {
			r.fetchHub(ctx, base)
		}
		cfg := contract.NewCTCTrain("w2v2bert")
		cfg.BaseModel, cfg.MaskTimeProb = set, r.Job.OptFloatPtr("mask_time_prob")
		if r.Job.ModelSize == "tiny" && set != "" {
			cfg.Architecture = arch // a tiny random model of the named base's kind
		}
		return trainCTC(ctx, r, cfg, arch)
	},
	Infer: func(ctx context.Context, r *run, model string) error {
		return transcribeCTC(ctx, r, contract.NewCTCTranscribe("w2v2bert"), model)
	},
})

const w2v2BERTBaseFlag = "w2v2bert-base-model"

// w2v2BaseOf is the pretrained model a W2V2BERT job fine-tunes when the
// operator names none: the job's, else the engine's default.
func w2v2BaseOf(j *manifest.Job) string {
	return or(strings.TrimSpace(j.OptString("model.base_model")), engineDefaultString("w2v2bert", "train", "base_model"))
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
