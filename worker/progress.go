package worker

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"gpu-worker/manifest"
)

// progressEvery is how often at most the console shows a job's progress.
// Engines report at least every 2 s, so a line comes every 8–10 s.
const progressEvery = 8 * time.Second

// Line is the progress as a person reads it, e.g. "training: epoch 2/10,
// step 40/200, loss 0.4321, ETA 3m20s". A report without a phase is its
// message alone.
func (p Progress) Line() string {
	if p.Phase == "" {
		return p.Message
	}
	var parts []string
	if p.Epochs > 0 {
		parts = append(parts, fmt.Sprintf("epoch %d/%d", p.Epoch, p.Epochs))
	}
	if p.Steps > 0 {
		parts = append(parts, fmt.Sprintf("step %d/%d", p.Step, p.Steps))
	}
	if p.Loss != nil {
		parts = append(parts, fmt.Sprintf("loss %.4f", *p.Loss))
	}
	if p.Message != "" {
		parts = append(parts, p.Message)
	}
	if p.ETA > 0 {
		parts = append(parts, "ETA "+p.ETA.Round(time.Second).String())
	}
	if len(parts) == 0 {
		return p.Phase
	}
	return p.Phase + ": " + strings.Join(parts, ", ")
}

// attrs are the progress as log fields.
func (p Progress) attrs() []any {
	var a []any
	if p.Phase != "" {
		a = append(a, "phase", p.Phase)
	}
	if p.Epochs > 0 {
		a = append(a, "epoch", fmt.Sprintf("%d/%d", p.Epoch, p.Epochs))
	}
	if p.Steps > 0 {
		a = append(a, "step", fmt.Sprintf("%d/%d", p.Step, p.Steps))
	}
	if p.Loss != nil {
		a = append(a, "loss", fmt.Sprintf("%.4f", *p.Loss))
	}
	if p.ETA > 0 {
		a = append(a, "eta", p.ETA.Round(time.Second).String())
	}
	if p.Message != "" {
		a = append(a, "status", p.Message)
	}
	return a
}

// progressLog shows a job's progress on the worker's console, at most once
// every progressEvery; the job log has the engine's own line per step.
type progressLog struct {
	log  *slog.Logger
	now  func() time.Time
	mu   sync.Mutex
	last time.Time
}

func (c *progressLog) show(p Progress) {
	now := c.now()
	c.mu.Lock()
	if !c.last.IsZero() && now.Sub(c.last) < progressEvery {
		c.mu.Unlock()
		return
	}
	c.last = now
	c.mu.Unlock()
	c.log.Info("progress", p.attrs()...)
}

// progressBox holds the latest progress between heartbeats.
type progressBox struct {
	mu sync.Mutex
	p  Progress
	ok bool
	// The epochs reached outlive reports without epochs (status lines).
	epoch, epochs int
}

func (b *progressBox) set(p Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.Epochs > 0 {
		b.epoch, b.epochs = p.Epoch, p.Epochs
	}
	b.p, b.ok = p, true
}

// apply writes the progress into a response: epochs, expected completion
// and the status line with phase and ETA.
func (b *progressBox) apply(r *manifest.Response, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.ok {
		return
	}
	if b.epochs > 0 {
		r.EpochsCompleted = manifest.Ptr(b.epoch)
	}
	if b.p.ETA > 0 {
		r.ExpectedCompletion = manifest.Ptr(now.Add(b.p.ETA))
	}
	if line := b.p.Line(); line != "" {
		r.StatusMessage = line
	}
}
