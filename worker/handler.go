package worker

import (
	"context"
	"io"
	"log/slog"
	"time"

	"gpu-worker/codex"
	"gpu-worker/engine"
	"gpu-worker/manifest"
	"gpu-worker/project"
)

// Handler runs one kind of job (job_type/model/mode).
type Handler interface {
	Run(ctx context.Context, env *JobEnv) (*Outcome, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, env *JobEnv) (*Outcome, error)

func (f HandlerFunc) Run(ctx context.Context, env *JobEnv) (*Outcome, error) { return f(ctx, env) }

// Registry maps a job's Kind() ("tts/stabletts/training") to its handler.
type Registry map[string]Handler

// JobEnv is what a handler gets: the job, its project, a work dir, a logger
// writing into the job log, the engine runner and the lease's services.
type JobEnv struct {
	Job        *manifest.Job
	Project    project.Project
	WorkDir    string
	Log        *slog.Logger
	LogWriter  io.Writer // raw job log, for engine output
	Engine     *engine.Runner
	RetryCount int // > 0 when this run took the job over from another worker
	Slot       Slot

	report func(Progress)
	commit func(ctx context.Context, message string, actions []project.Action) error
}

// Progress is what a handler knows about how far it is.
type Progress struct {
	Epoch   int
	Epochs  int
	ETA     time.Duration // 0 = unknown
	Message string
}

// Report records progress; the next heartbeat writes it to response.yaml.
func (e *JobEnv) Report(p Progress) {
	if e.report != nil {
		e.report(p)
	}
}

// Commit lands intermediate files (e.g. a resumable checkpoint) together
// with a heartbeat, so they land only while this worker holds the lease.
func (e *JobEnv) Commit(ctx context.Context, message string, actions []project.Action) error {
	if e.commit == nil {
		return nil
	}
	return e.commit(ctx, message, actions)
}

// Outcome is what a handler produced. Actions (e.g. LFS pointers of models)
// and Patches (.codex changes) land in the same commit as the final
// response.yaml — also when the job was canceled and the outcome is partial.
type Outcome struct {
	Result  map[string]any
	Actions []project.Action
	Patches map[string][]codex.Patch
	// Bases are the notebooks the patches were computed from; a cell a user
	// changed since then keeps the user's version.
	Bases map[string]*codex.Notebook
	// Message overrides the final status_message.
	Message string
}
