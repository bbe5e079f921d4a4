// Package handlers holds the six job pipelines: TTS (StableTTS) and ASR
// (W2V2-BERT), each in training, inference and training_and_inference
// mode. A handler reads the project through the worker's JobEnv, hands a
// dataset folder to an engine and returns the outputs as an Outcome that
// the worker commits together with the final response.yaml.
package handlers

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"gpu-worker/codex"
	"gpu-worker/engine"
	"gpu-worker/manifest"
	"gpu-worker/project"
	"gpu-worker/worker"
)

// Registry returns the handler of every supported job kind; engines run
// with runner.
func Registry(runner engine.Runner) worker.Registry {
	r := worker.Registry{}
	tts := func(ctx context.Context, env *worker.JobEnv) (*worker.Outcome, error) {
		return runTTS(ctx, &runner, env)
	}
	asr := func(ctx context.Context, env *worker.JobEnv) (*worker.Outcome, error) {
		return runASR(ctx, &runner, env)
	}
	for _, mode := range []string{manifest.Training, manifest.Inference, manifest.TrainingAndInference} {
		r["tts/stabletts/"+mode] = worker.HandlerFunc(tts)
		r["asr/w2v2bert/"+mode] = worker.HandlerFunc(asr)
	}
	return r
}

// notebookDirs are where Codex keeps translation notebooks.
var notebookDirs = []string{"files/target"}

// loadNotebooks reads every .codex notebook of the project.
func loadNotebooks(ctx context.Context, p project.Project) (map[string]*codex.Notebook, error) {
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
			f, err := p.ReadFile(ctx, e.Path)
			if err != nil {
				return nil, fmt.Errorf("read notebook: %w", err)
			}
			nb, err := codex.Parse(e.Path, f.Content)
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
