package handlers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"gpu-worker/contract"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gpu-worker/engine"
	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/manifest"
	"gpu-worker/project"
	"gpu-worker/worker"
)

// trainEngine is a stand-in engine speaking the protocol of a train
// command. It follows the config's plan step by step:
//
//	["checkpoint", tag]  write a resumable checkpoint (body(tag, batch)),
//	                     keep the two newest as the engines do, announce it
//	["wait", name]       wait for the test to create sync/name
//	["touch", name]      create sync/name
//	["sleep", seconds]
//	["oom_above", n]     run out of memory when the batch is above n
//	["die"]              exit 3 at once, saying nothing
//
// then reports a result. Every start appends its batch, accumulation and
// the content of its resume checkpoint to sync/calls. On SIGTERM it saves
// checkpoint "term" and exits 75, as the engines do.
const trainEngine = `
import json, os, signal, sys, time
cfg = json.load(open(sys.argv[4]))
sync, batch = cfg["sync"], cfg["batch_size"]
ckpts = os.path.join(cfg["output_dir"], "checkpoints")
os.makedirs(ckpts, exist_ok=True)
def emit(**kw): print(json.dumps(kw), flush=True)
resume = open(cfg["resume"]).read() if cfg.get("resume") else None
with open(os.path.join(sync, "calls"), "a") as f:
    f.write(json.dumps({"batch": batch, "accum": cfg["gradient_accumulation_steps"], "resume": resume}) + "\n")
def checkpoint(tag):
    path = os.path.join(ckpts, "resume_%d_%s.pt" % (time.time_ns(), tag))
    with open(path + ".tmp", "w") as f:
        f.write(("checkpoint %s at batch %d\n" % (tag, batch)) * 2000)
    os.replace(path + ".tmp", path)
    for old in sorted(os.listdir(ckpts))[:-2]:
        os.unlink(os.path.join(ckpts, old))
    emit(event="checkpoint", path=path, kind="resumable", epoch=1)
def on_term(*_):
    checkpoint("term")
    sys.exit(75)
signal.signal(signal.SIGTERM, on_term)
for step in cfg["plan"]:
    op = step[0]
    if op == "checkpoint":
        checkpoint(step[1])
    elif op == "touch":
        open(os.path.join(sync, step[1]), "w").write(str(os.getpid()))
    elif op == "wait":
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(sync, step[1])):
            if time.time() > deadline:
                emit(event="error", message="the test never created " + step[1])
                sys.exit(1)
            time.sleep(0.01)
    elif op == "sleep":
        time.sleep(step[1])
    elif op == "oom_above" and batch > step[1]:
        emit(event="error", message="CUDA out of memory. Tried to allocate 2.00 GiB", kind="oom")
        sys.exit(1)
    elif op == "die":
        os._exit(3)
emit(event="result", batch_size=batch)
`

// body is what trainEngine writes in a checkpoint.
func body(tag string, batch int) string {
	return strings.Repeat(fmt.Sprintf("checkpoint %s at batch %d\n", tag, batch), 2000)
}

func oid(content string) string {
	sum := sha256.Sum256([]byte(content))
	return hex.EncodeToString(sum[:])
}

// trainingManifest is one training job whose checkpoints are due for upload
// as soon as they come.
const trainingManifest = "version: 1\njobs:\n  - {job_id: t1, job_type: asr, mode: training, model: {type: W2V2BERT}, checkpoint_upload_interval: \"1ms\"}\n"

// trainingBench is a training job on the GitLab emulator, run by real
// workers, with a fake engine.
type trainingBench struct {
	t      *testing.T
	srv    *gitlabtest.Server
	client *gitlab.Client
	runner *engine.Runner
	sync   string // folder the engine and the test meet in
}

func newTrainingBench(t *testing.T) *trainingBench {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required")
	}
	srv := gitlabtest.New(t)
	srv.CreateProject("team/bible")
	srv.UserCommit(t, "team/bible", "queue a training job", map[string][]byte{manifest.Path: []byte(trainingManifest)})
	c, err := gitlab.New(gitlab.Config{BaseURL: srv.URL(), Token: gitlabtest.DefaultToken,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return &trainingBench{t: t, srv: srv, client: c, sync: t.TempDir(),
		runner: &engine.Runner{Python: py, EnginesDir: fakeEngines(t, trainEngine), Grace: 10 * time.Second}}
}

// project is the emulator's project as a worker sees it, watched.
func (b *trainingBench) project() *watched {
	p, err := b.client.Project(context.Background(), "team/bible")
	if err != nil {
		b.t.Fatal(err)
	}
	return &watched{Project: p}
}

// touch creates sync/name, for an engine waiting on it.
func (b *trainingBench) touch(name string) {
	if err := os.WriteFile(filepath.Join(b.sync, name), nil, 0o644); err != nil {
		b.t.Error(err)
	}
}

// waitFor waits until the engine created sync/name; it returns the file.
func (b *trainingBench) waitFor(ctx context.Context, name string) (string, error) {
	for {
		c, err := os.ReadFile(filepath.Join(b.sync, name))
		if err == nil {
			return string(c), nil
		}
		select {
		case <-ctx.Done():
			return "", context.Cause(ctx)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

type engineCall struct {
	Batch  int     `json:"batch"`
	Accum  int     `json:"accum"`
	Resume *string `json:"resume"`
}

// calls are the engine's starts, in order.
func (b *trainingBench) calls() []engineCall {
	raw, _ := os.ReadFile(filepath.Join(b.sync, "calls"))
	var out []engineCall
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var c engineCall
		if json.Unmarshal([]byte(line), &c) == nil {
			out = append(out, c)
		}
	}
	return out
}

// trainingRun is what one run of the job left for the test.
type trainingRun struct {
	env        *worker.JobEnv
	res        map[string]any
	err        error
	result     map[string]any // training.report's fields
	inFlight   int            // uploads still running when run returned
	snapshots  []string       // upload snapshots left in the job's folder
	progress   []string       // status lines reported
	oomRetried int
}

// run runs the job once with a worker named id that sees p, training with
// plan from a batch of 16. The handler does what the models' Train does
// with training's results: report, partial checkpoint on failure. stop,
// when set, is the worker's context (cancel it to shut the worker down).
func (b *trainingBench) run(stop context.Context, id string, p *watched, plan [][]any, tweak func(*worker.Config)) *trainingRun {
	b.t.Helper()
	out := &trainingRun{}
	var mu sync.Mutex
	var retried atomic.Int32
	h := worker.HandlerFunc(func(ctx context.Context, env *worker.JobEnv) (*worker.Outcome, error) {
		outDir := filepath.Join(env.WorkDir, "train")
		tr := newTraining(env, Config{Engine: b.runner, OOMRetried: func() { retried.Add(1) }, Schema: fakeSchema(b.t)}, outDir, nil)
		cfg := &fakeTrain{Sync: b.sync, Plan: plan}
		cfg.OutputDir, cfg.BatchSize, cfg.GradientAccumulationSteps = outDir, contract.Ptr(16), contract.Ptr(1)
		res, err := tr.run(ctx, cfg)
		p.mu.Lock()
		out.inFlight = p.inFlight
		p.mu.Unlock()
		out.snapshots, _ = filepath.Glob(filepath.Join(env.WorkDir, "upload*"))
		o := &worker.Outcome{Result: map[string]any{}}
		tr.report(o.Result)
		out.env, out.res, out.err, out.result = env, res, err, o.Result
		if err != nil {
			o.Actions = append(o.Actions, tr.partial(ctx)...)
		}
		return o, err
	})
	cfg := worker.Config{WorkerID: id, WorkDir: filepath.Join(b.t.TempDir(), "work"), LoopInterval: -1,
		HeartbeatInterval: time.Hour, CancelCheckInterval: time.Hour, ClaimTimeout: time.Hour,
		Hooks: worker.Hooks{Progress: func(_ *manifest.Job, pr worker.Progress) {
			mu.Lock()
			out.progress = append(out.progress, pr.Message)
			mu.Unlock()
		}}}
	if tweak != nil {
		tweak(&cfg)
	}
	if stop == nil {
		stop = context.Background()
	}
	w := worker.New(cfg, fixedSource{p}, worker.Registry{"asr/w2v2bert/training": h}, slog.New(slog.DiscardHandler))
	done := make(chan error, 1)
	go func() { done <- w.Run(stop) }()
	select {
	case err := <-done:
		if err != nil {
			b.t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		b.t.Fatal("the worker did not finish the job")
	}
	if out.env == nil {
		b.t.Fatal("the job did not run")
	}
	out.oomRetried = int(retried.Load())
	return out
}

// response is the job's response.yaml now.
func (b *trainingBench) response() *manifest.Response {
	raw, ok := b.srv.ReadFile("team/bible", manifest.ResponsePath("t1"))
	if !ok {
		b.t.Fatal("no response.yaml")
	}
	return parseResponse(b.t, raw)
}

// resumeOID is the object the project's resume checkpoint points at.
func (b *trainingBench) resumeOID() string {
	raw, ok := b.srv.ReadFile("team/bible", resumePath("t1"))
	if !ok {
		return ""
	}
	ptr, err := project.ParsePointer(raw)
	if err != nil {
		b.t.Fatalf("resume checkpoint: %v", err)
	}
	return ptr.OID
}

type fixedSource struct{ p project.Project }

func (s fixedSource) Projects(context.Context) ([]project.Project, error) {
	return []project.Project{s.p}, nil
}

// watched is a project whose LFS uploads and resume checkpoint commits a
// test sees, and can hold or cut off.
type watched struct {
	project.Project
	// hold, when set, runs as the nth upload (from 1) starts; it may block
	// it, or fail it.
	hold func(ctx context.Context, n int) error
	// landed, when set, hears each commit that wrote the resume checkpoint,
	// with the checkpoint's object id.
	landed func(message, oid string)
	// offline: every upload and commit fails from now on.
	offline atomic.Bool
	// refused, when set, hears each commit refused while offline.
	refused func(message string)

	mu          sync.Mutex
	n, inFlight int
	maxInFlight int
	uploads     []lfsUpload
	resumes     []string // the resume checkpoint's object in each commit that landed, in order
	messages    []string // those commits' messages
}

// lfsUpload is the file one upload read, at its start and at its end.
type lfsUpload struct {
	path          string
	before, after []byte
	err           error
}

var errOffline = errors.New("network unreachable")

func (w *watched) PutLFS(ctx context.Context, src string) (project.Pointer, error) {
	if w.offline.Load() {
		return project.Pointer{}, errOffline
	}
	before, _ := os.ReadFile(src)
	w.mu.Lock()
	w.n++
	n := w.n
	w.inFlight++
	w.maxInFlight = max(w.maxInFlight, w.inFlight)
	w.mu.Unlock()
	var ptr project.Pointer
	var err error
	if w.hold != nil {
		err = w.hold(ctx, n)
	}
	if err == nil {
		ptr, err = w.Project.PutLFS(ctx, src)
	}
	after, _ := os.ReadFile(src)
	w.mu.Lock()
	w.inFlight--
	w.uploads = append(w.uploads, lfsUpload{path: src, before: before, after: after, err: err})
	w.mu.Unlock()
	return ptr, err
}

func (w *watched) Commit(ctx context.Context, message string, actions []project.Action) (*project.CommitResult, error) {
	if w.offline.Load() {
		if w.refused != nil {
			w.refused(message)
		}
		return nil, errOffline
	}
	res, err := w.Project.Commit(ctx, message, actions)
	if err != nil {
		return res, err
	}
	for _, a := range actions {
		if a.Path != resumePath("t1") {
			continue
		}
		ptr, _ := project.ParsePointer(a.Content)
		w.mu.Lock()
		w.resumes, w.messages = append(w.resumes, ptr.OID), append(w.messages, message)
		w.mu.Unlock()
		if w.landed != nil {
			w.landed(message, ptr.OID)
		}
	}
	return res, err
}

// checkUploads fails the test for overlapping uploads and for an upload
// whose file changed while it ran (it was hashed as one checkpoint and sent
// as another).
func (w *watched) checkUploads(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.maxInFlight > 1 {
		t.Errorf("%d uploads ran at once", w.maxInFlight)
	}
	for _, u := range w.uploads {
		if !bytes.Equal(u.before, u.after) {
			t.Errorf("upload of %s: its file was replaced while it ran (started as %.24q, ended as %.24q)",
				filepath.Base(u.path), u.before, u.after)
		}
	}
}

// fakeTrain is the fake engine's train config: the common knobs and its
// plan.
type fakeTrain struct {
	contract.Train
	Sync string  `json:"sync"`
	Plan [][]any `json:"plan"`
}

func (*fakeTrain) Engine() (string, string)  { return "fake", "train" }
func (c *fakeTrain) Common() *contract.Train { return &c.Train }

// fakeSchema declares the fake engine's train command.
func fakeSchema(t *testing.T) *contract.Schema {
	t.Helper()
	fields := map[string]contract.Field{"sync": {Type: "path"}, "plan": {Type: "any"}}
	for _, k := range []string{"dataset", "output_dir", "size", "resume", "base_checkpoint"} {
		fields[k] = contract.Field{Type: "path"}
	}
	for _, k := range []string{"epochs", "batch_size", "gradient_accumulation_steps", "warmup_steps",
		"max_unpacked_bytes", "max_archive_members", "max_json_bytes"} {
		fields[k] = contract.Field{Type: "int"}
	}
	for _, k := range []string{"learning_rate", "val_split"} {
		fields[k] = contract.Field{Type: "float"}
	}
	return &contract.Schema{Format: contract.SchemaFormat,
		Engines: map[string]map[string]contract.Command{"fake": {"train": {Fields: fields}}}}
}
