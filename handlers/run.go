package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"gpu-worker/atomicfile"
	"gpu-worker/contract"
	"gpu-worker/engine"
	"gpu-worker/manifest"
	"gpu-worker/project"
	"gpu-worker/worker"
)

// defaultCheckpointUpload is how often a training job's latest resumable
// checkpoint is uploaded, so a worker that takes over can resume.
const defaultCheckpointUpload = 30 * time.Minute

// resumePath is where a job's latest resumable checkpoint lives in the project.
func resumePath(jobID string) string { return manifest.JobDir(jobID) + "/checkpoints/resume.pt" }

// modelPath is where a job's outputs go.
func modelPath(jobID, name string) string { return manifest.JobDir(jobID) + "/models/" + name }

// panelMetricsPath is the loss table the Codex job panel draws
// (epoch, train_total_loss, val_total_loss, sub-losses).
func panelMetricsPath(jobID string) string {
	return manifest.JobDir(jobID) + "/checkpoint/training_metrics.csv"
}

// training runs an engine's train command: progress drives heartbeats,
// resumable checkpoints are uploaded periodically, one at a time, an
// out-of-memory error is retried with half the batch and twice the
// accumulation.
type training struct {
	env *worker.JobEnv
	cfg Config
	// conditions pick the engine's presets for the job ("size=tiny"), to
	// know the batch an OOM retry halves.
	conditions []string
	// panelCSV is the engine's training_metrics.csv, uploaded with each
	// checkpoint so the job panel can draw the losses while it trains.
	panelCSV string

	mu           sync.Mutex
	lastCkpt     string // newest resumable checkpoint on disk
	lastUpload   time.Time
	lastPortable string // newest upload-sized checkpoint (no optimizer state)
	resumed      bool
	epochsRun    map[int]bool // epochs this run trained, for the result

	// due wakes the uploader when a checkpoint comes due; one waiting wake
	// is enough, since it uploads the newest checkpoint there is.
	due chan struct{}
	// snapshots numbers the uploads' copies (the uploader's alone).
	snapshots int
}

// newTraining is a training run of engine for env's job; outDir is the
// engine's output_dir.
func newTraining(env *worker.JobEnv, cfg Config, outDir string, conditions []string) *training {
	return &training{env: env, cfg: cfg, conditions: conditions, panelCSV: filepath.Join(outDir, "training_metrics.csv")}
}

// run trains with cfg (which it may adjust for OOM retries) and returns the
// engine's result. ErrInterrupted (with the context's cause) when stopped.
func (t *training) run(ctx context.Context, cfg contract.TrainOf) (map[string]any, error) {
	env := t.env
	common := cfg.Common()
	// A resume checkpoint anyone could have committed: one that cannot be
	// fetched or loaded fails the job, naming it; deleting it from the
	// project trains from the start.
	if ckpt, err := t.fetchResume(ctx); err != nil {
		return nil, fmt.Errorf("%w (delete it from the project to train from the start)", err)
	} else if ckpt != "" {
		common.Resume = ckpt
		t.resumed = true
		env.Log.Info("resuming from the checkpoint a previous worker uploaded", "path", ckpt)
		env.Report(worker.Progress{Message: "resuming training from the last uploaded checkpoint"})
	}
	t.lastUpload = time.Now()
	t.epochsRun = map[int]bool{}
	t.due = make(chan struct{}, 1)
	engineDone := make(chan struct{})
	uploaderDone := make(chan struct{})
	go func() {
		defer close(uploaderDone)
		t.uploads(ctx, engineDone)
	}()
	// An upload under way when the engine stops lands first: the outputs or
	// the interrupted run's checkpoint (partial) commit after it.
	defer func() { close(engineDone); <-uploaderDone }()
	interval := or(env.Job.CheckpointUploadInterval, defaultCheckpointUpload)
	// An out-of-memory retry halves the batch and keeps the effective batch:
	// it doubles the accumulation, unless the engine derives that from an
	// effective batch of its own.
	engineName, _ := cfg.Engine()
	schema := t.cfg.schema()
	batch := batchSize(schema, engineName, common.BatchSize, t.conditions)
	accum := derefOr(common.GradientAccumulationSteps, max(1, schema.Int(engineName, "train", "gradient_accumulation_steps", t.conditions...)))
	_, derived := schema.Default(engineName, "train", "effective_batch", t.conditions...)
	derived = derived && common.GradientAccumulationSteps == nil
	var res map[string]any
	// The first run sends the job's settings as written; a retry's
	// settings go into cfg before it starts.
	err := runWithOOMRetry(ctx, func(int, int) error {
		var err error
		res, err = t.cfg.runEngine(ctx, env, cfg, func(ev engine.Event) { t.onEvent(ev, interval) })
		return err
	}, batch, accum, maxOOMHalvings, func(batch, accum int) {
		common.BatchSize = &batch
		if !derived {
			common.GradientAccumulationSteps = &accum
		}
		if ck := t.latest(); ck != "" {
			common.Resume = ck
		}
		msg := oomNote(batch, accum)
		env.Log.Warn(msg)
		env.Report(worker.Progress{Message: msg})
		if t.cfg.OOMRetried != nil {
			t.cfg.OOMRetried()
		}
	})
	return res, err
}

func (t *training) onEvent(ev engine.Event, interval time.Duration) {
	switch ev.Kind {
	case "progress":
		t.mu.Lock()
		t.epochsRun[ev.Epoch] = true
		t.mu.Unlock()
		var val []string
		for k, v := range ev.Val {
			val = append(val, fmt.Sprintf("val %s %.4f", k, v))
		}
		sort.Strings(val)
		p := worker.Progress{Phase: "training", Epoch: ev.Epoch, Epochs: ev.Epochs, Step: ev.Step, Steps: ev.Steps,
			Loss: ev.Loss, Message: strings.Join(val, ", ")}
		if ev.ETA != nil {
			p.ETA = time.Duration(*ev.ETA * float64(time.Second))
		}
		t.env.Report(p)
	case "checkpoint":
		if ev.Path == "" || (ev.Checkpoint != "resumable" && ev.Checkpoint != "portable") {
			return
		}
		t.mu.Lock()
		if ev.Checkpoint == "portable" {
			t.lastPortable = ev.Path
		} else {
			t.lastCkpt = ev.Path
		}
		// A "portable" checkpoint (no optimizer state) is the one sized for
		// upload; engines that write only full ones upload those.
		upload := ev.Checkpoint == "portable" || t.lastPortable == ""
		due := upload && time.Since(t.lastUpload) >= interval
		if due {
			t.lastUpload = time.Now()
		}
		t.mu.Unlock()
		if due {
			select {
			case t.due <- struct{}{}:
			default: // a wake is waiting already
			}
		}
	}
}

// uploads commits the newest checkpoint each time one comes due, one upload
// at a time, until the engine is done (what is due then is left to the
// outputs or partial) or the job's context ends.
func (t *training) uploads(ctx context.Context, engineDone <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-engineDone:
			return
		case <-t.due:
			select { // the wake may have come with the end
			case <-ctx.Done():
				return
			case <-engineDone:
				return
			default:
			}
			if err := t.upload(ctx, t.latestUpload()); err != nil && ctx.Err() == nil {
				t.env.Log.Warn("checkpoint upload failed; will try again at the next one", "err", err)
			}
		}
	}
}

// latest is the newest checkpoint to resume from on this machine.
func (t *training) latest() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return or(t.lastCkpt, t.lastPortable)
}

// latestUpload is the newest checkpoint to upload for another worker.
func (t *training) latestUpload() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return or(t.lastPortable, t.lastCkpt)
}

// upload commits a resumable checkpoint with a heartbeat (lease-guarded).
func (t *training) upload(ctx context.Context, local string) error {
	// The engine rotates its checkpoints: a copy of this upload's own keeps
	// the file whole from its hash to the last byte sent.
	t.snapshots++
	snap := filepath.Join(t.env.WorkDir, fmt.Sprintf("upload-%d.pt", t.snapshots))
	defer os.Remove(snap)
	if err := copyEngineFile(t.env.WorkDir, local, snap); err != nil {
		return fmt.Errorf("snapshot checkpoint: %w", err)
	}
	act, err := lfsAction(ctx, t.env.Project, snap, resumePath(t.env.Job.ID))
	if err != nil {
		return err
	}
	acts := []project.Action{act}
	if a, ok := t.panelMetrics(ctx); ok {
		acts = append(acts, a)
	}
	if err := t.env.Commit(ctx, "Checkpoint job "+t.env.Job.ID, acts); err != nil {
		return err
	}
	t.env.Log.Info("uploaded resumable checkpoint", "path", resumePath(t.env.Job.ID), "from", filepath.Base(local))
	return nil
}

// panelMetrics is the action writing the job panel's loss table, when the
// engine has written one.
func (t *training) panelMetrics(ctx context.Context) (project.Action, bool) {
	if t.panelCSV == "" {
		return project.Action{}, false
	}
	// The engine's account owns its output folder: the table is read
	// confined to the job's folder like every engine file.
	b, err := readEngineFile(t.env.WorkDir, t.panelCSV)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.env.Log.Warn("training metrics not uploaded", "err", err)
	}
	if err != nil || len(b) == 0 {
		return project.Action{}, false
	}
	act, err := fileAction(ctx, t.env.Project, panelMetricsPath(t.env.Job.ID), b)
	if err != nil {
		t.env.Log.Warn("training metrics not uploaded", "err", err)
		return project.Action{}, false
	}
	return act, true
}

// report adds how the run went to a result.
func (t *training) report(result map[string]any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	result["epochs_run"] = len(t.epochsRun)
	if t.resumed {
		result["resumed_from_checkpoint"] = resumePath(t.env.Job.ID)
	}
}

// partial returns the actions that save an interrupted run's newest
// checkpoint, for the final commit. It runs after the job's context ended.
func (t *training) partial(ctx context.Context) []project.Action {
	ctx, cancel := afterJob(ctx)
	defer cancel()
	var acts []project.Action
	if a, ok := t.panelMetrics(ctx); ok {
		acts = append(acts, a)
	}
	ck := t.latestUpload()
	if ck == "" {
		return acts
	}
	snap := filepath.Join(t.env.WorkDir, "upload-partial.pt")
	defer os.Remove(snap)
	if err := copyEngineFile(t.env.WorkDir, ck, snap); err != nil {
		t.env.Log.Warn("the interrupted run's checkpoint is not saved", "err", err)
		return acts
	}
	act, err := lfsAction(ctx, t.env.Project, snap, resumePath(t.env.Job.ID))
	if err != nil {
		t.env.Log.Warn("could not save the interrupted run's checkpoint", "err", err)
		return acts
	}
	return append(acts, act)
}

// fetchResume downloads the job's uploaded resumable checkpoint, if any.
func (t *training) fetchResume(ctx context.Context) (string, error) {
	f, err := t.env.Project.ReadFile(ctx, resumePath(t.env.Job.ID))
	if errors.Is(err, project.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", resumePath(t.env.Job.ID), err)
	}
	ptr, err := project.ParsePointer(f.Content)
	if err != nil {
		return "", fmt.Errorf("resume checkpoint %s: not an LFS pointer: %w", resumePath(t.env.Job.ID), err)
	}
	dst := filepath.Join(t.env.WorkDir, "resume-from.pt")
	t.env.Name(dst, resumePath(t.env.Job.ID))
	if err := t.env.Project.GetLFS(ctx, ptr, dst); err != nil {
		return "", fmt.Errorf("download %s: %w", resumePath(t.env.Job.ID), err)
	}
	return dst, nil
}

// afterJob gives work that saves a stopped job's outputs a context of its own.
// On a worker shutdown the stop budget (150 s in the shipped units) leaves
// it only a short while: the periodic uploads are what a takeover resumes
// from then.
func afterJob(ctx context.Context) (context.Context, context.CancelFunc) {
	d := saveTimeout
	if errors.Is(context.Cause(ctx), worker.ErrShutdown) {
		d = shutdownSaveTimeout
	}
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

const (
	saveTimeout         = 15 * time.Minute
	shutdownSaveTimeout = 30 * time.Second
)

// lfsAction stores a local file as an LFS object and returns the commit
// action that writes its pointer at repoPath.
func lfsAction(ctx context.Context, p project.Project, local, repoPath string) (project.Action, error) {
	ptr, err := p.PutLFS(ctx, local)
	if err != nil {
		return project.Action{}, fmt.Errorf("upload %s: %w", filepath.Base(local), err)
	}
	return fileAction(ctx, p, repoPath, []byte(ptr.String()))
}

// fileAction writes content at repoPath, creating or updating it.
func fileAction(ctx context.Context, p project.Project, repoPath string, content []byte) (project.Action, error) {
	kind := project.Update
	if _, err := p.StatFile(ctx, repoPath); errors.Is(err, project.ErrNotFound) {
		kind = project.Create
	} else if err != nil {
		return project.Action{}, err
	}
	return project.Action{Kind: kind, Path: repoPath, Content: content}, nil
}

// fetchModel downloads a model the manifest names (an LFS pointer or, for
// small files, the file itself) into dst, with the JSON sidecar an engine
// writes beside its model files (best_model.json) when the project has one.
func fetchModel(ctx context.Context, env *worker.JobEnv, repoPath, dst string) error {
	if err := fetchFile(ctx, env, repoPath, dst); errors.Is(err, project.ErrNotFound) {
		return fmt.Errorf("model.base_checkpoint %s does not exist in the project", repoPath)
	} else if err != nil {
		return err
	}
	if filepath.Ext(repoPath) == ".json" {
		return nil
	}
	if err := fetchFile(ctx, env, sidecar(repoPath), sidecar(dst)); err != nil && !errors.Is(err, project.ErrNotFound) {
		return err
	}
	return nil
}

// fetchFile downloads one project file (following an LFS pointer) to dst;
// what the team sees names dst by repoPath.
func fetchFile(ctx context.Context, env *worker.JobEnv, repoPath, dst string) error {
	p := env.Project
	env.Name(dst, repoPath)
	f, err := p.ReadFile(ctx, repoPath)
	if err != nil {
		if errors.Is(err, project.ErrNotFound) {
			return err
		}
		return fmt.Errorf("read %s: %w", repoPath, err)
	}
	if ptr, perr := project.ParsePointer(f.Content); perr == nil {
		if err := p.GetLFS(ctx, ptr, dst); err != nil {
			return fmt.Errorf("download %s: %w", repoPath, err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	_, err = atomicfile.WriteFrom(dst, bytes.NewReader(f.Content), 0o644)
	return err
}

// derefOr is *p, or def when p is nil.
func derefOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
