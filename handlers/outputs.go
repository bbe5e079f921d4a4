package handlers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"gpu-worker/engine"
	"gpu-worker/project"
)

// uploadOutputs stores an engine's model files (LFS) and small reports
// (plain) under gpu_jobs/job_<id>/models/. Missing optional files are left
// out; every file must be the engine's own, inside the job's folder.
func (r *run) uploadOutputs(ctx context.Context, files map[string]string) ([]project.Action, error) {
	jobID := r.Job.ID
	var acts []project.Action
	for name, local := range files {
		act, err := r.uploadOutput(ctx, name, local, modelPath(jobID, name))
		if errors.Is(err, fs.ErrNotExist) {
			if filepath.Ext(name) == ".pt" || filepath.Ext(name) == ".tar" {
				return nil, fmt.Errorf("engine did not write %s", name)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		acts = append(acts, act)
	}
	return acts, nil
}

// uploadOutput reads one engine file through the job folder's confinement:
// models go to LFS from a copy the worker owns, reports are committed.
func (r *run) uploadOutput(ctx context.Context, name, local, repoPath string) (project.Action, error) {
	switch filepath.Ext(name) {
	case ".pt", ".tar":
		cp := filepath.Join(r.WorkDir, "outputs", name)
		defer os.Remove(cp)
		if err := copyEngineFile(r.WorkDir, local, cp); err != nil {
			return project.Action{}, err
		}
		return lfsAction(ctx, r.Project, cp, repoPath)
	default:
		b, err := readEngineFile(r.WorkDir, local)
		if err != nil {
			return project.Action{}, err
		}
		return fileAction(ctx, r.Project, repoPath, b)
	}
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
