package ops

import (
	"context"
	"errors"
	"fmt"

	"gopkg.in/yaml.v3"

	"gpu-worker/manifest"
	"gpu-worker/project"
)

// ErrJobEnded reports a cancel of a job that already reached a final state.
var ErrJobEnded = errors.New("job already ended")

// Cancel sets canceled: true on a job (compare-and-swap, like Submit). A
// running job's worker sees it at its next cancel check and stops, keeping
// what it can. Canceling twice is not an error.
func Cancel(ctx context.Context, p project.Project, id string) error {
	f, err := p.ReadFile(ctx, manifest.ResponsePath(id))
	switch {
	case err == nil:
		if r, perr := manifest.ParseResponse(f.Content); perr == nil && r.Terminal() {
			return fmt.Errorf("cancel job %s: %w (%s)", id, ErrJobEnded, r.State)
		}
	case !errors.Is(err, project.ErrNotFound):
		return fmt.Errorf("cancel job %s: read response: %w", id, err)
	}
	canceled := func(doc *yaml.Node) bool {
		j := findJob(doc, id)
		v := lookup(j, "canceled")
		return v != nil && v.Value == "true"
	}
	err = editManifest(ctx, p, fmt.Sprintf("Cancel job %s [skip ci]", id), func(doc *yaml.Node) error {
		j := findJob(doc, id)
		if j == nil {
			return fmt.Errorf("%w: %s", ErrJobNotFound, id)
		}
		if canceled(doc) {
			return errNoChange
		}
		set(j, "canceled", boolean(true), "")
		return nil
	}, canceled)
	if err != nil {
		return fmt.Errorf("cancel job %s: %w", id, err)
	}
	return nil
}
