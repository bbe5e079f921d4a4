package worker

import (
	"context"
	"io"
	"log/slog"
	"time"

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
// writing into the job log, its slot and the lease's services.
type JobEnv struct {
	Job        *manifest.Job
	Project    project.Project
	WorkDir    string
	Log        *slog.Logger
	LogWriter  io.Writer // raw job log, for engine output
	RetryCount int       // > 0 when this run took the job over from another worker
	Slot       Slot

	report func(Progress)
	commit func(ctx context.Context, message string, actions []project.Action) error
	names  *pathNames
}

// Name says that the host file local holds the project file repoPath: what
// the team sees (logs.txt, error_message) names repoPath instead.
func (e *JobEnv) Name(local, repoPath string) {
	if e.names != nil {
		e.names.add(local, repoPath)
	}
}

// Progress is what a handler knows about how far it is.
type Progress struct {
	Phase  string // what the job does now: "training", "synthesizing"...
	Epoch  int
	Epochs int
	Step   int // steps done of Steps in the whole run; 0 = unknown
	Steps  int
	Loss   *float64
	ETA    time.Duration // 0 = unknown
	// Message is a status line on its own (without Phase) or detail of
	// the phase (validation metrics).
	Message string
}

// Report records progress; the next heartbeat writes it to response.yaml
// and the worker's console shows it every few seconds.
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
// and Changes land in the same commit as the final response.yaml — also
// when the job was canceled and the outcome is partial.
type Outcome struct {
	Result  map[string]any
	Actions []project.Action
	// Changes are edits to merge into the project's files as they are when
	// the job ends (e.g. cells of notebooks a translator may have edited).
	Changes Changes
	// Message overrides the final status_message of a completed job.
	Message string
}

// Changes are a handler's edits of files others may change meanwhile. They
// are merged into the current versions and committed with the final
// response.yaml, in one commit or, when too large, several.
type Changes interface {
	// Commit writes the changes. Every commit it makes must carry the
	// guard's actions (Step for one that is not the last, Final for the
	// last) and be reported to the guard once it landed; a conflict on a
	// path of the guard's actions is returned as is.
	Commit(ctx context.Context, p project.Project, message string, g Guard) error
}

// Guard is the lease as Changes see it: its actions make a commit land only
// while this worker still holds the job.
type Guard interface {
	// Step returns the actions of a commit that is not the last.
	Step() []project.Action
	// Final returns the actions of the last commit: the final response.yaml
	// reporting w, the job's other outputs and its log. Call it again for
	// each attempt, once the changes were planned against the current files.
	Final(w Written) []project.Action
	// Landed records a commit that carried Step's or Final's actions.
	Landed(res *project.CommitResult)
}

// Written is what the commits of Changes write, for the final response.
type Written struct {
	// Result fields replacing the handler's (counts of what lands).
	Result map[string]any
	// Message replaces the completed status_message when set.
	Message string
}
