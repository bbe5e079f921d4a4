package handlers

import (
	"context"
	"fmt"

	"gpu-worker/engine"
)

// maxOOMHalvings is how often a training run halves its batch after running
// out of GPU memory before it fails.
const maxOOMHalvings = 3

// runWithOOMRetry calls run with batch and accum; when the engine reports
// out of memory it calls run again with half the batch and twice the
// gradient accumulation — the same effective batch for even sizes — at
// most maxHalvings times. onRetry (may be nil) hears each new setting
// before the retry, so the caller can say so in status_message and count
// the restart.
func runWithOOMRetry(ctx context.Context, run func(batch, accum int) error, batch, accum, maxHalvings int, onRetry func(batch, accum int)) error {
	batch, accum = max(batch, 1), max(accum, 1)
	for halvings := 0; ; halvings++ {
		err := run(batch, accum)
		if err == nil || !engine.IsOOM(err) {
			return err
		}
		if halvings >= maxHalvings || batch == 1 {
			return fmt.Errorf("out of GPU memory at batch size %d after %d halvings: %w", batch, halvings, err)
		}
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("out of GPU memory; retry abandoned: %w", context.Cause(ctx))
		}
		batch, accum = batch/2, accum*2
		if onRetry != nil {
			onRetry(batch, accum)
		}
	}
}

// oomNote is the status line for a retry after running out of memory.
func oomNote(batch, accum int) string {
	return fmt.Sprintf("out of GPU memory; retrying with batch size %d and %d gradient accumulation steps (same effective batch)", batch, accum)
}
