package handlers

import (
	"context"
	"fmt"
	"log/slog"

	"gpu-worker/codex"
	"gpu-worker/project"
	"gpu-worker/worker"
)

// cellChanges are a job's .codex patches as worker.Changes: re-applied to
// the notebooks as they are when the job ends, and reported by what the
// commit writes, not by what the job planned.
type cellChanges struct {
	patches map[string][]codex.Patch
	// bases are the notebooks the patches were computed from; a cell a user
	// changed since keeps the user's version.
	bases map[string]*codex.Notebook
	// counted is the result field of the cells written (cells_transcribed).
	counted string
	// done is the completed status line for n cells written.
	done func(n int) string
	// maxCommitBytes bounds one commit; 0 = codex's default.
	maxCommitBytes int64
	log            *slog.Logger
}

func (c *cellChanges) Commit(ctx context.Context, p project.Project, message string, g worker.Guard) error {
	_, err := codex.Commit(ctx, p, message, c.patches, nil, codex.CommitOptions{
		Bases: c.bases, Guard: codexGuard{g, c}, MaxCommitBytes: c.maxCommitBytes, Logger: c.log,
	})
	return err
}

// written turns a commit's plan into the result: cells written under
// counted; under kept_user_edits the cells where a translator's edit made
// since the job read the notebook stays on display, ours left out or kept
// under it; other cells not written by reason.
func (c *cellChanges) written(plan *codex.CommitReport) worker.Written {
	n := 0
	for _, v := range plan.Applied {
		n += v
	}
	var kept []string
	seen := map[string]bool{}
	other := map[string]int{}
	for _, s := range plan.Skipped {
		switch s.Reason {
		case codex.ReasonTextChanged, codex.ReasonAudioChanged, codex.ReasonTextUnder, codex.ReasonAudioUnder:
			if key := s.Notebook + "\x00" + s.CellID; !seen[key] {
				seen[key] = true
				kept = append(kept, or(s.Reference, s.CellID))
			}
		default:
			other[s.Reason]++
		}
	}
	res := map[string]any{c.counted: n}
	msg := c.done(n)
	if len(kept) > 0 {
		res["kept_user_edits"] = map[string]any{"count": len(kept), "cells": kept}
		msg += fmt.Sprintf("; %d kept a translator's newer edit", len(kept))
	}
	if len(other) > 0 {
		res["cells_not_written"] = other
	}
	return worker.Written{Result: res, Message: msg}
}

// codexGuard passes the worker's lease to codex.Commit.
type codexGuard struct {
	g worker.Guard
	c *cellChanges
}

func (a codexGuard) Step() []project.Action { return a.g.Step() }

func (a codexGuard) Final(plan *codex.CommitReport) []project.Action {
	return a.g.Final(a.c.written(plan))
}

func (a codexGuard) Landed(res *project.CommitResult) { a.g.Landed(res) }

// transcriptions are an ASR job's text patches.
func transcriptions(patches map[string][]codex.Patch, bases map[string]*codex.Notebook, log *slog.Logger) *cellChanges {
	return &cellChanges{patches: patches, bases: bases, log: log, counted: "cells_transcribed",
		done: func(n int) string { return fmt.Sprintf("completed: text transcribed for %d verses", n) }}
}

// recordings are a TTS job's audio patches.
func recordings(patches map[string][]codex.Patch, bases map[string]*codex.Notebook, log *slog.Logger) *cellChanges {
	return &cellChanges{patches: patches, bases: bases, log: log, counted: "audio_generated",
		done: func(n int) string { return fmt.Sprintf("completed: audio generated for %d verses", n) }}
}
