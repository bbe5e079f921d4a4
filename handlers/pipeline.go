package handlers

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"gpu-worker/codex"
	"gpu-worker/contract"
	"gpu-worker/dataset"
	"gpu-worker/engine"
	"gpu-worker/limits"
	"gpu-worker/manifest"
	"gpu-worker/project"
	"gpu-worker/worker"
)

// run is one job's pass through its model's pipeline.
type run struct {
	*worker.JobEnv
	model *Model
	cfg   Config
	// nbs are the notebooks as read: codex stamps our changes from them
	// (codex/stamp.go) and keeps what translators changed since.
	nbs map[string]*codex.Notebook
	out *worker.Outcome
	// patches are the cell changes inference made, by notebook.
	patches map[string][]codex.Patch
	// The prepared training set (nil for inference-only jobs).
	trainSet *dataset.Result
	trainDir string
}

// execute is the one pipeline every model shares: notebooks → (training set →
// train) → (model → inference) → the outcome the worker commits.
func (m *Model) execute(ctx context.Context, env *worker.JobEnv, cfg Config) (*worker.Outcome, error) {
	bounded := *env
	bounded.Project = boundedProject{Project: env.Project, maxLFS: cfg.limits().LFSObjectBytes}
	env = &bounded
	r := &run{JobEnv: env, model: m, cfg: cfg, out: &worker.Outcome{Result: map[string]any{}}}
	if m.Prepare != nil {
		if err := m.Prepare(ctx, r); err != nil {
			return nil, err
		}
	}
	var err error
	if r.nbs, err = loadNotebooks(ctx, env.Project, cfg.limits()); err != nil {
		return nil, err
	}
	job := env.Job
	var trained string
	if job.Trains() {
		if err := r.prepareTrainingSet(ctx); err != nil {
			return nil, err
		}
		if trained, err = m.Train(ctx, r); err != nil {
			return r.out, err
		}
		describeTraining(r.out.Result, r.trainSet)
		r.out.Message = fmt.Sprintf("completed: model trained on %d verses", len(r.trainSet.Items))
	}
	if !job.Infers() {
		return r.out, nil
	}
	if trained == "" {
		trained = filepath.Join(env.WorkDir, m.ModelFile)
		if err := fetchModel(ctx, env, job.BaseCheckpoint, trained); err != nil {
			return nil, err
		}
	}
	err = m.Infer(ctx, r, trained)
	if c := r.changes(); c != nil {
		r.out.Changes = c
	}
	return r.out, err
}

// train is what every train command gets: the prepared set, where its
// outputs go, and the knobs the job set (the engine holds the defaults of
// the others).
func (r *run) train(outDir string) contract.Train {
	t := trainKnobs(r.Job)
	t.Dataset, t.OutputDir = r.trainDir, outDir
	return t
}

// trainKnobs are the knobs a job set, as every train command takes them.
func trainKnobs(j *manifest.Job) contract.Train {
	k := j.Knobs
	return contract.Train{Size: j.ModelSize,
		Epochs: k.Epochs, BatchSize: k.BatchSize, GradientAccumulationSteps: k.GradientAccumulationSteps,
		LearningRate: k.LearningRate, WarmupSteps: k.WarmupSteps, ValSplit: k.ValSplit,
	}
}

// setting is an operator setting's value.
func (r *run) setting(flag string) string { return r.cfg.Settings[flag] }

// notebookDirs are where Codex keeps translation notebooks.
var notebookDirs = []string{"files/target"}

// loadNotebooks reads every .codex notebook of the project, within the
// worker's bounds.
func loadNotebooks(ctx context.Context, p project.Project, lim limits.Limits) (map[string]*codex.Notebook, error) {
	out := map[string]*codex.Notebook{}
	for _, dir := range notebookDirs {
		entries, err := p.ListTree(ctx, dir)
		if errors.Is(err, project.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list notebooks: %w", err)
		}
		for _, e := range entries {
			if path.Ext(e.Path) != ".codex" {
				continue
			}
			info, err := p.StatFile(ctx, e.Path)
			if err != nil {
				return nil, fmt.Errorf("read notebook: %w", err)
			}
			if err := limits.CheckBytes(e.Path, info.Size, lim.NotebookBytes, "max-notebook-bytes"); err != nil {
				return nil, err
			}
			f, err := p.ReadFile(ctx, e.Path)
			if err != nil {
				return nil, fmt.Errorf("read notebook: %w", err)
			}
			if err := limits.CheckBytes(e.Path, int64(len(f.Content)), lim.NotebookBytes, "max-notebook-bytes"); err != nil {
				return nil, err
			}
			nb, err := codex.ParseLimited(e.Path, f.Content, lim.JSONDepth)
			if err != nil {
				return nil, fmt.Errorf("notebook %s: %w", e.Path, err)
			}
			out[e.Path] = nb
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no .codex notebooks found under %s", strings.Join(notebookDirs, ", "))
	}
	return out, nil
}

// prepareTrainingSet selects the verses with text and usable audio and
// prepares them, failing with a message the team can act on when too few
// are left.
func (r *run) prepareTrainingSet(ctx context.Context) error {
	min := r.model.MinTrainingItems
	// Only human work (or generated work a person validated) teaches a
	// model; what was left out, and why, goes in the result.
	items, skips := codex.SelectTrainingSet(r.nbs, filterOf(r.Job.Training), codex.TrainingOptions{AllowGenerated: r.Job.IncludeGenerated})
	if len(skips) > 0 {
		r.out.Result["training_skipped"] = summarizeSkips(skips)
	}
	if len(items) < min {
		return fmt.Errorf("%s training needs at least %d verses with both human text and a usable human recording; the project has %d (record more verses, validate generated ones, or widen training.include_verses)",
			r.model.Spec.Name, min, len(items))
	}
	ds, dir, err := r.buildDataset(ctx, items, "dataset", r.model.SampleRate(r.Job))
	if err != nil {
		return err
	}
	if len(ds.Items) < min {
		return fmt.Errorf("only %d usable recordings after cleaning (rejected: %v); %s training needs at least %d",
			len(ds.Items), ds.Rejected, r.model.Spec.Name, min)
	}
	r.trainSet, r.trainDir = ds, dir
	return nil
}

// selectInference picks the cells that need the model's output, recording
// the skipped ones in the result.
func (r *run) selectInference(want codex.Output) []codex.Item {
	items, skips := codex.SelectInference(r.nbs, want, filterOf(r.Job.Inference))
	if len(skips) > 0 {
		r.Log.Warn("cells skipped", "count", len(skips), "cells", skipLines(skips))
		r.out.Result["cells_skipped"] = summarizeSkips(skips)
	}
	return items
}

// patch adds one cell change to the outcome, computed from r's notebooks.
func (r *run) patch(nbPath string, p codex.Patch) {
	if r.patches == nil {
		r.patches = map[string][]codex.Patch{}
	}
	r.patches[nbPath] = append(r.patches[nbPath], p)
}

// changes are the cell patches as the worker commits them: re-applied to
// the notebooks as they are then, counted by what landed.
func (r *run) changes() worker.Changes {
	if len(r.patches) == 0 {
		return nil
	}
	if r.model.Spec.JobType == manifest.ASR {
		return transcriptions(r.patches, r.nbs, r.Log)
	}
	return recordings(r.patches, r.nbs, r.Log)
}

// engine runs one engine command for the job.
func (r *run) engine(ctx context.Context, cfg contract.Config, onEvent func(engine.Event)) (map[string]any, error) {
	return r.cfg.runEngine(ctx, r.JobEnv, cfg, onEvent)
}

// author names the job in the edits it makes.
func (r *run) author() string {
	return fmt.Sprintf("gpu-worker %s (job %s)", r.model.Spec.Name, r.Job.ID)
}

func filterOf(f manifest.Filter) codex.Filter {
	return codex.Filter{Include: f.Include, Exclude: f.Exclude}
}

// summarizeSkips counts skip reasons for the result.
func summarizeSkips(skips []codex.Skip) map[string]int {
	out := map[string]int{}
	for _, s := range skips {
		out[s.Reason]++
	}
	return out
}

// or returns v unless it is the zero value.
func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
