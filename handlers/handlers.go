// Package handlers runs the models the worker knows. Each model is one
// description (a Model in a file of its own: stabletts.go, w2v2bert.go,
// mms.go): its manifest spec (spellings, fields, defaults, memory need),
// its engine, its operator settings and its pipeline steps. pipeline.go
// runs any of them for training, inference or both: notebooks → dataset →
// engine → outputs → the Outcome the worker commits with response.yaml.
package handlers

import (
	"context"
	"fmt"
	"sort"

	"gpu-worker/contract"
	"gpu-worker/engine"
	"gpu-worker/gpu"
	"gpu-worker/limits"
	"gpu-worker/manifest"
	"gpu-worker/worker"
)

// Model is everything the worker knows of one model.
type Model struct {
	Spec manifest.ModelSpec
	// Settings are operator-wide settings the model reads; cmd turns each
	// into a flag, an environment variable and a config-file key.
	Settings []Setting
	// SampleRate is the audio rate the model's engine expects.
	SampleRate func(j *manifest.Job) int
	// MinTrainingItems is the fewest usable recordings training accepts.
	MinTrainingItems int
	// ModelFile is the local name of a job's base_checkpoint, e.g. "base_model.pt".
	ModelFile string
	// Artifact is the trained model's file under gpu_jobs/job_<id>/models/
	// (what a later job's base_checkpoint names).
	Artifact string
	// Prepare checks, before any data moves, what the job needs of the
	// host (e.g. a configured vocoder), so a job that cannot succeed fails
	// at once. Optional.
	Prepare func(ctx context.Context, r *run) error
	// Train trains on r's training set, adds its outputs and figures to
	// r.out and returns the local path of the trained model.
	Train func(ctx context.Context, r *run) (string, error)
	// Infer runs model over the cells that need it and adds the changes.
	Infer func(ctx context.Context, r *run, model string) error
	// Doctor lists host checks for this model (e.g. that the vocoder
	// loads). Optional.
	Doctor func(cfg Config) []Check
}

// Check is one host check of `gpu-worker doctor`; its fields are those of
// ops.Check, which the command converts it to.
type Check struct {
	Name string
	Run  func(ctx context.Context) (detail string, err error)
	Fix  string // what to do when it fails
}

// Setting is one operator-wide setting of a model.
type Setting struct {
	Flag string // flag name and config-file key, e.g. "tts-vocoder"
	Env  string // environment variable, e.g. "GPU_WORKER_TTS_VOCODER"
	Help string
}

// Config is what the operator gave the handlers.
type Config struct {
	Engine   *engine.Runner    // the engines' Python environment
	Settings map[string]string // Setting.Flag → value
	Limits   limits.Limits     // bounds on what a project makes a job read (zero: defaults)
	// GPUs are the host's devices: free memory before an engine starts,
	// peak use while it runs (nil: none, so only CPU slots run).
	GPUs gpu.Lister
	// OOMRetried hears each engine restart with a smaller batch after it
	// ran out of GPU memory (the metrics count them). Optional.
	OOMRetried func()
	// Schema is the engines' schema configs are checked against and
	// defaults read from (nil: the one the worker was built with).
	Schema *contract.Schema
}

// schema is the engines' schema this configuration runs with.
func (c Config) schema() *contract.Schema {
	if c.Schema != nil {
		return c.Schema
	}
	return contract.Engines()
}

// models are the descriptions, in file order; register adds one.
var models []*Model

func register(m *Model) *Model {
	models = append(models, m)
	return m
}

// Models lists every model description, by name.
func Models() []*Model {
	out := append([]*Model(nil), models...)
	sort.Slice(out, func(a, b int) bool { return out[a].Spec.Name < out[b].Spec.Name })
	return out
}

// Catalog is the models' manifest specs, for validating jobs.
func Catalog() manifest.Catalog {
	var c manifest.Catalog
	for _, m := range Models() {
		c = append(c, &m.Spec)
	}
	return c
}

// Lookup finds the model of a resolved job; nil when it has none.
func Lookup(j *manifest.Job) *Model {
	for _, m := range models {
		if j.Spec == &m.Spec || (j.Spec == nil && m.Spec.Name == j.ModelType) {
			return m
		}
	}
	return nil
}

// Registry returns the handler of every model and mode.
func Registry(cfg Config) worker.Registry {
	r := worker.Registry{}
	for _, m := range Models() {
		for _, mode := range []string{manifest.Training, manifest.Inference, manifest.TrainingAndInference} {
			job := &manifest.Job{JobType: m.Spec.JobType, ModelType: m.Spec.Name, Mode: mode}
			r[job.Kind()] = worker.HandlerFunc(func(ctx context.Context, env *worker.JobEnv) (*worker.Outcome, error) {
				return m.execute(ctx, env, cfg)
			})
		}
	}
	return r
}

// DoctorChecks are every model's host checks.
func DoctorChecks(cfg Config) []Check {
	var cs []Check
	for _, m := range Models() {
		if m.Doctor != nil {
			cs = append(cs, m.Doctor(cfg)...)
		}
	}
	return cs
}

// Complete reports what a description lacks; the registry test runs it on
// every model, so a new model cannot ship half-described.
func (m *Model) Complete() error {
	s := m.Spec
	var missing []string
	for _, c := range []struct {
		ok   bool
		what string
	}{
		{s.Name != "", "Spec.Name"},
		{s.JobType == manifest.TTS || s.JobType == manifest.ASR, "Spec.JobType"},
		{s.Engine != "", "Spec.Engine"},
		{s.Summary != "", "Spec.Summary"},
		{s.Licence != "", "Spec.Licence"},
		{s.Memory != nil, "Spec.Memory (the GPU memory guard needs an estimate)"},
		{m.SampleRate != nil, "SampleRate"},
		{m.MinTrainingItems > 0, "MinTrainingItems"},
		{m.ModelFile != "", "ModelFile"},
		{m.Artifact != "", "Artifact"},
		{m.Train != nil, "Train"},
		{m.Infer != nil, "Infer"},
	} {
		if !c.ok {
			missing = append(missing, c.what)
		}
	}
	for _, f := range s.Fields {
		if f.Key == "" || f.Help == "" {
			missing = append(missing, fmt.Sprintf("Spec.Fields %q: key and help", f.Key))
		}
	}
	for _, st := range m.Settings {
		if st.Flag == "" || st.Env == "" || st.Help == "" {
			missing = append(missing, fmt.Sprintf("Settings %q: flag, env and help", st.Flag))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("model %q lacks %v", s.Name, missing)
	}
	return nil
}
