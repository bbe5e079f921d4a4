package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gpu-worker/limits"
	"gpu-worker/local"
	"gpu-worker/manifest"
	"gpu-worker/project"
)

// testProject is a local project folder plus helpers to act as a user.
type testProject struct {
	t   *testing.T
	dir string
	p   *local.Project
}

func newTestProject(t *testing.T, manifestYAML string) *testProject {
	t.Helper()
	dir := t.TempDir()
	p, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tp := &testProject{t: t, dir: dir, p: p}
	if manifestYAML != "" {
		tp.userWrite(manifest.Path, manifestYAML)
	}
	return tp
}

// userWrite changes a file the way a user's editor would.
func (tp *testProject) userWrite(path, content string) {
	tp.t.Helper()
	full := filepath.Join(tp.dir, path)
	os.MkdirAll(filepath.Dir(full), 0o755)
	tmp := full + ".user-tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		tp.t.Fatal(err)
	}
	if err := os.Rename(tmp, full); err != nil {
		tp.t.Fatal(err)
	}
}

func (tp *testProject) response(jobID string) *manifest.Response {
	tp.t.Helper()
	b, err := os.ReadFile(filepath.Join(tp.dir, manifest.ResponsePath(jobID)))
	if err != nil {
		tp.t.Fatalf("response of %s: %v", jobID, err)
	}
	r, err := manifest.ParseResponse(b)
	if err != nil {
		tp.t.Fatal(err)
	}
	return r
}

func (tp *testProject) commits() []local.CommitRecord {
	tp.t.Helper()
	cs, err := tp.p.Commits(context.Background())
	if err != nil {
		tp.t.Fatal(err)
	}
	return cs
}

type single struct{ p project.Project }

func (s single) Projects(context.Context) ([]project.Project, error) {
	return []project.Project{s.p}, nil
}

func jobYAML(id, extra string) string {
	return fmt.Sprintf("  - {job_id: %q, job_type: tts, mode: training, model: {type: StableTTS}, epochs: 3%s}\n", id, extra)
}

func testWorker(t *testing.T, id string, src Source, reg Registry, tweak func(*Config)) *Worker {
	cfg := Config{
		WorkerID: id, WorkDir: filepath.Join(t.TempDir(), "work"), LoopInterval: -1,
		HeartbeatInterval: time.Hour, CancelCheckInterval: 20 * time.Millisecond, ClaimTimeout: time.Hour,
		Secrets: []string{"glpat-SECRET-TOKEN"},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	return New(cfg, src, reg, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func registryOf(h HandlerFunc) Registry {
	return Registry{"tts/stabletts/training": h}
}

func TestCompletesJobWithResultAndLog(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	w := testWorker(t, "w1", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		env.Log.Info("training with token glpat-SECRET-TOKEN")
		env.Report(Progress{Epoch: 3, Epochs: 3, Message: "epoch 3/3"})
		env.Report(Progress{Message: "uploading the model"})
		return &Outcome{
			Result:  map[string]any{"checkpoint_path": manifest.JobDir("j1") + "/models/best_model.pt"},
			Actions: []project.Action{{Kind: project.Create, Path: manifest.JobDir("j1") + "/models/best_model.pt", Content: []byte("weights")}},
		}, nil
	}), nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := tp.response("j1")
	if r.State != manifest.StateCompleted || r.WorkerID != "w1" || r.Result["checkpoint_path"] == nil || r.EpochsCompleted == nil || *r.EpochsCompleted != 3 {
		t.Fatalf("response = %+v", r)
	}
	logs, err := os.ReadFile(filepath.Join(tp.dir, manifest.JobDir("j1"), "logs.txt"))
	if err != nil || !strings.Contains(string(logs), "training with token [REDACTED]") || strings.Contains(string(logs), "SECRET") {
		t.Fatalf("logs.txt = %q, %v", logs, err)
	}
	cs := tp.commits()
	if len(cs) != 2 {
		t.Fatalf("want claim + finish commits, got %d", len(cs))
	}
	final := cs[1]
	paths := map[string]bool{}
	for _, a := range final.Actions {
		paths[a.Path] = true
	}
	if !paths[manifest.ResponsePath("j1")] || !paths[manifest.JobDir("j1")+"/models/best_model.pt"] || !paths[manifest.JobDir("j1")+"/logs.txt"] {
		t.Errorf("final commit holds %v", paths)
	}
	if !strings.HasSuffix(final.Message, "[skip ci]") {
		t.Errorf("message %q", final.Message)
	}
}

func TestInvalidJobFailedWithReason(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n  - {job_id: bad, job_type: tts, mode: training, model: {type: StableTTS}, epochs: ten}\n")
	var ran atomic.Bool
	w := testWorker(t, "w1", single{tp.p}, registryOf(func(context.Context, *JobEnv) (*Outcome, error) {
		ran.Store(true)
		return nil, nil
	}), nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := tp.response("bad")
	if ran.Load() || r.State != manifest.StateFailed || r.ErrorMessage == nil || !strings.Contains(*r.ErrorMessage, `epochs: must be a whole number, got "ten"`) {
		t.Fatalf("response = %+v ran=%v", r, ran.Load())
	}
	if n := len(tp.commits()); n != 1 {
		t.Errorf("claim-and-fail should be one commit, got %d", n)
	}
	// Like every terminal job, it has its log, in the same commit.
	logs, err := os.ReadFile(filepath.Join(tp.dir, manifest.JobDir("bad"), "logs.txt"))
	if err != nil || !strings.Contains(string(logs), "job failed before it started") || !strings.Contains(string(logs), "epochs") {
		t.Errorf("logs.txt of the invalid job: %v %q", err, logs)
	}
}

func TestHandlerErrorAndPanicFail(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("a", ", submitted_at: '2026-01-01T00:00:00Z'")+jobYAML("b", ", submitted_at: '2026-01-02T00:00:00Z'"))
	w := testWorker(t, "w1", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		if env.Job.ID == "a" {
			return nil, errors.New("only 0 usable recordings (3 rejected: 3 missing audio)")
		}
		panic("index out of range")
	}), nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := tp.response("a"); r.State != manifest.StateFailed || !strings.Contains(*r.ErrorMessage, "3 missing audio") {
		t.Errorf("a: %+v", r)
	}
	if r := tp.response("b"); r.State != manifest.StateFailed || !strings.Contains(*r.ErrorMessage, "internal error: index out of range") {
		t.Errorf("b: %+v", r)
	}
}

// blockUntilDone is a handler that runs until its context ends and then
// returns a partial model, as a training handler does.
func blockUntilDone(started chan<- string) HandlerFunc {
	return func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		started <- env.Job.ID
		<-ctx.Done()
		return &Outcome{Actions: []project.Action{{Kind: project.Create, Path: manifest.JobDir(env.Job.ID) + "/models/partial.pt", Content: []byte("partial")}}}, context.Cause(ctx)
	}
}

func TestCancelByUserAndRemoval(t *testing.T) {
	for _, tc := range []struct {
		name, edit, reason string
	}{
		{"canceled", "version: 1\njobs:\n" + jobYAML("j1", ", canceled: true"), manifest.ReasonCanceled},
		{"removed", "version: 1\njobs: []\n", manifest.ReasonRemoved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
			started := make(chan string, 1)
			w := testWorker(t, "w1", single{tp.p}, registryOf(blockUntilDone(started)), nil)
			done := make(chan error)
			go func() { done <- w.Run(context.Background()) }()
			<-started
			tp.userWrite(manifest.Path, tc.edit)
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("job not canceled")
			}
			r := tp.response("j1")
			if r.State != manifest.StateCanceled || r.TerminationReason == nil || *r.TerminationReason != tc.reason {
				t.Fatalf("response = %+v", r)
			}
			if _, err := os.Stat(filepath.Join(tp.dir, manifest.JobDir("j1"), "models/partial.pt")); err != nil {
				t.Errorf("partial model not committed: %v", err)
			}
		})
	}
}

func TestTimeoutFailsJob(t *testing.T) {
	deadline := time.Now().Add(300 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ", timeout: '"+deadline+"'")+jobYAML("late", ", timeout: '2020-01-01T00:00:00Z'"))
	started := make(chan string, 2)
	w := testWorker(t, "w1", single{tp.p}, registryOf(blockUntilDone(started)), nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := tp.response("j1"); r.State != manifest.StateFailed || !strings.Contains(*r.ErrorMessage, "timeout reached at") {
		t.Errorf("j1: %+v", r)
	}
	if r := tp.response("late"); r.State != manifest.StateFailed || !strings.Contains(*r.ErrorMessage, "timeout reached at 2020-01-01T00:00:00Z") {
		t.Errorf("late: %+v", r)
	}
	if len(started) != 1 {
		t.Errorf("a job past its deadline must not start; %d started", len(started))
	}
}

func TestHeartbeatWritesProgressAndDetectsLostLease(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	beat := make(chan struct{})
	var once sync.Once
	w := testWorker(t, "w1", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		env.Report(Progress{Epoch: 2, Epochs: 3, ETA: time.Hour, Message: "epoch 2/3, loss 0.5"})
		for ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
			if r := tp.response("j1"); r.EpochsCompleted != nil && *r.EpochsCompleted == 2 {
				once.Do(func() {
					if r.ExpectedCompletion == nil || r.StatusMessage != "epoch 2/3, loss 0.5" {
						t.Errorf("heartbeat wrote %+v", r)
					}
					close(beat)
				})
			}
		}
		return &Outcome{Result: map[string]any{"x": 1}}, nil
	}), func(c *Config) { c.HeartbeatInterval = 30 * time.Millisecond })
	done := make(chan error)
	go func() { done <- w.Run(context.Background()) }()
	<-beat
	// Another worker takes the job over behind our back.
	other := &manifest.Response{WorkerID: "w2", State: manifest.StateRunning, Timestamp: time.Now(), RetryCount: 1}
	tp.userWrite(manifest.ResponsePath("j1"), string(other.Marshal()))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r := tp.response("j1"); r.WorkerID != "w2" || r.State != manifest.StateRunning {
		t.Fatalf("the worker that lost the lease wrote anyway: %+v", r)
	}
}

func TestShutdownInterruptsAndAnotherWorkerResumes(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	shutDownWhileRunning(t, tp)
	if r := tp.response("j1"); !r.HandedBack() {
		t.Fatalf("after shutdown: %+v", r)
	}
	var retry int
	w2 := testWorker(t, "w2", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		retry = env.RetryCount
		return &Outcome{}, nil
	}), nil)
	if err := w2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := tp.response("j1"); r.State != manifest.StateCompleted || r.WorkerID != "w2" || r.RetryCount != 1 || retry != 1 {
		t.Fatalf("takeover: %+v (handler saw retry %d)", r, retry)
	}
}

func TestStaleClaimTakeoverAndRetryLimit(t *testing.T) {
	old := time.Now().Add(-2 * time.Hour)
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("fresh", "")+jobYAML("stale", "")+jobYAML("tired", ""))
	write := func(id string, r manifest.Response) { tp.userWrite(manifest.ResponsePath(id), string(r.Marshal())) }
	write("fresh", manifest.Response{WorkerID: "dead", State: manifest.StateRunning, Timestamp: time.Now()})
	write("stale", manifest.Response{WorkerID: "dead", State: manifest.StateRunning, Timestamp: old})
	write("tired", manifest.Response{WorkerID: "dead", State: manifest.StateRunning, Timestamp: old, RetryCount: 3})
	var ran []string
	w := testWorker(t, "w2", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		ran = append(ran, env.Job.ID)
		return &Outcome{}, nil
	}), nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if strings.Join(ran, ",") != "stale" {
		t.Fatalf("ran %v, want only the stale job", ran)
	}
	if r := tp.response("fresh"); r.WorkerID != "dead" {
		t.Errorf("fresh claim taken: %+v", r)
	}
	if r := tp.response("stale"); r.State != manifest.StateCompleted || r.RetryCount != 1 {
		t.Errorf("stale: %+v", r)
	}
	if r := tp.response("tired"); r.State != manifest.StateFailed || !strings.Contains(*r.ErrorMessage, "giving up after 3 retries") {
		t.Errorf("tired: %+v", r)
	}
}

func TestRacingTakersOneWins(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("stale", ""))
	tp.userWrite(manifest.ResponsePath("stale"), string((&manifest.Response{WorkerID: "dead", State: manifest.StateRunning, Timestamp: time.Now().Add(-2 * time.Hour)}).Marshal()))
	var runs atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		w := testWorker(t, fmt.Sprintf("w%d", i), single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
			runs.Add(1)
			time.Sleep(50 * time.Millisecond)
			return &Outcome{}, nil
		}), nil)
		go func() { defer wg.Done(); w.Run(context.Background()) }()
	}
	wg.Wait()
	if runs.Load() != 1 {
		t.Fatalf("job ran %d times", runs.Load())
	}
	if r := tp.response("stale"); r.RetryCount != 1 || r.State != manifest.StateCompleted {
		t.Fatalf("%+v", r)
	}
}

func TestManyWorkersEachJobOnce(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\njobs:\n")
	for i := 0; i < 40; i++ {
		b.WriteString(jobYAML(fmt.Sprintf("job%02d", i), ""))
	}
	tp := newTestProject(t, b.String())
	var mu sync.Mutex
	runs := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		w := testWorker(t, fmt.Sprintf("w%d", i), single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
			mu.Lock()
			runs[env.Job.ID]++
			mu.Unlock()
			return &Outcome{}, nil
		}), nil)
		go func() { defer wg.Done(); w.Run(context.Background()) }()
	}
	wg.Wait()
	creates := map[string]int{}
	for _, c := range tp.commits() {
		for _, a := range c.Actions {
			if a.Action == string(project.Create) && strings.HasSuffix(a.Path, "/response.yaml") {
				creates[a.Path]++
			}
		}
	}
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("job%02d", i)
		if runs[id] != 1 || creates[manifest.ResponsePath(id)] != 1 {
			t.Errorf("%s ran %d times, created %d times", id, runs[id], creates[manifest.ResponsePath(id)])
		}
		if r := tp.response(id); r.State != manifest.StateCompleted {
			t.Errorf("%s: %s", id, r.State)
		}
	}
}

func TestRetentionKeepsNewest(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\njobs:\n")
	for i := 0; i < 4; i++ {
		b.WriteString(jobYAML(fmt.Sprintf("r%d", i), fmt.Sprintf(", submitted_at: '2026-01-0%dT00:00:00Z'", i+1)))
	}
	tp := newTestProject(t, b.String())
	w := testWorker(t, "w1", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		time.Sleep(20 * time.Millisecond)
		return &Outcome{}, nil
	}), func(c *Config) { c.KeepJobs = 2 })
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(w.cfg.WorkDir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || !strings.HasPrefix(names[0], "job_r2_") || !strings.HasPrefix(names[1], "job_r3_") {
		t.Fatalf("kept %v", names)
	}
}

func TestDrainFinishesRunningJobAndClaimsNoMore(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("a", ", submitted_at: '2026-01-01T00:00:00Z'")+jobYAML("b", ", submitted_at: '2026-01-02T00:00:00Z'"))
	release := make(chan struct{})
	started := make(chan string, 2)
	w := testWorker(t, "w1", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		started <- env.Job.ID
		select {
		case <-release:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		return &Outcome{}, nil
	}), nil)
	done := make(chan error)
	go func() { done <- w.Run(context.Background()) }()
	if id := <-started; id != "a" {
		t.Fatalf("started %s first", id)
	}
	w.Drain()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r := tp.response("a"); r.State != manifest.StateCompleted {
		t.Errorf("running job not finished on drain: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(tp.dir, manifest.ResponsePath("b"))); !os.IsNotExist(err) {
		t.Errorf("job b claimed while draining")
	}
}

// What a team sees (error_message, logs.txt) names the project file a
// handler fetched, and "[work]" for the rest of the job's folder: never
// the host's paths.
func TestTeamSeesProjectPathsNotHostPaths(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("a", ""))
	var workDir string
	w := testWorker(t, "w1", single{tp.p}, registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		workDir = env.WorkDir
		local := filepath.Join(env.WorkDir, "resume-from.pt")
		env.Name(local, "gpu_jobs/job_a/checkpoints/resume.pt")
		env.Log.Info("resuming", "path", local)
		fmt.Fprintf(env.LogWriter, "engine: loading %s\nengine: outputs in %s\n", local, filepath.Join(env.WorkDir, "train"))
		return nil, fmt.Errorf("engine: %s: refused: not a plain tensor file", local)
	}), nil)
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := tp.response("a")
	if r.ErrorMessage == nil || *r.ErrorMessage != "engine: gpu_jobs/job_a/checkpoints/resume.pt: refused: not a plain tensor file" {
		t.Errorf("error_message %v", r.ErrorMessage)
	}
	logs, err := os.ReadFile(filepath.Join(tp.dir, manifest.JobDir("a"), "logs.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if workDir == "" || strings.Contains(string(logs), workDir) {
		t.Errorf("logs.txt shows the host's work folder %q:\n%s", workDir, logs)
	}
	for _, want := range []string{"engine: loading gpu_jobs/job_a/checkpoints/resume.pt", "outputs in [work]/train", `path=gpu_jobs/job_a/checkpoints/resume.pt`} {
		if !strings.Contains(string(logs), want) {
			t.Errorf("logs.txt lacks %q:\n%s", want, logs)
		}
	}
}

// A worker given only some bounds keeps the defaults of the others: a
// manifest with a YAML alias is read, not refused for "more than 0 aliases".
func TestPartLimitsKeepOtherDefaults(t *testing.T) {
	tp := newTestProject(t, "version: 1\nepochs: &n 3\njobs:\n  - {job_id: j1, job_type: tts, mode: training, model: {type: StableTTS}, epochs: *n}\n")
	var runs atomic.Int32
	w := testWorker(t, "w1", single{tp.p}, registryOf(countRuns(&runs)), func(c *Config) { c.Limits = limits.Limits{ManifestBytes: 1 << 20} })
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := tp.response("j1"); runs.Load() != 1 || r.State != manifest.StateCompleted {
		t.Fatalf("ran %d times; response %+v", runs.Load(), r)
	}
}
