package handlers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gpu-worker/engine"
	"gpu-worker/project"
)

// uploadOutputs stores an engine's model files (LFS) and small reports
// (plain) under gpu_jobs/job_<id>/models/. Missing optional files are left
// out; every file must be the engine's own, inside the job's folder.
func (r *run) uploadOutputs(ctx context.Context, files map[string]string) ([]project.Action, error) {
	p, jobID := r.Project, r.Job.ID
	var acts []project.Action
	for name, local := range files {
		if !fileExists(local) {
			if filepath.Ext(name) == ".pt" || filepath.Ext(name) == ".tar" {
				return nil, fmt.Errorf("engine did not write %s", name)
			}
			continue
		}
		if err := engineFile(r.WorkDir, local); err != nil {
			return nil, err
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
