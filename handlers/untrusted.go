package handlers

import (
	"context"

	"gpu-worker/limits"
	"gpu-worker/project"
)

// boundedProject is a job's project with the worker's bound on LFS
// downloads: a pointer any translator can commit must not make the worker
// fetch an object of any size.
type boundedProject struct {
	project.Project
	maxLFS int64
}

func (b boundedProject) GetLFS(ctx context.Context, p project.Pointer, dst string) error {
	if err := limits.CheckBytes("its LFS object", p.Size, b.maxLFS, "max-lfs-object-bytes"); err != nil {
		return err
	}
	return b.Project.GetLFS(ctx, p, dst)
}

// limits are the operator's bounds (the defaults when none were set).
func (c Config) limits() limits.Limits {
	return c.Limits.OrDefault()
}
