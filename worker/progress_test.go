package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gpu-worker/manifest"
)

// fakeClock is a settable Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(d time.Duration, start time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = start.Add(d)
}

// The console shows a training job's progress at most every 10 s, with the
// job, phase, epoch and step of total, loss and ETA; the heartbeat writes
// the same line as status_message. Engine output stays in the job log.
func TestProgressOnConsoleAndInStatus(t *testing.T) {
	tp := newTestProject(t, "version: 1\njobs:\n"+jobYAML("j1", ""))
	start := time.Now()
	clock := &fakeClock{t: start}
	console := &syncBuffer{}
	loss := 0.5
	want := "training: epoch 2/10, step 40/200, loss 0.5000, val cer 0.3100, ETA 1m30s"
	seen := make(chan struct{})
	var once sync.Once
	reg := registryOf(func(ctx context.Context, env *JobEnv) (*Outcome, error) {
		fmt.Fprintln(env.LogWriter, "0:\tlearn: 0.6931\ttotal: 12ms\tremaining: 1.2s")
		fmt.Fprintln(env.LogWriter, "Training:  45%|████▌     | 45/100 [00:03<00:04]")
		// Reports at 0, 3, 7.9, 8.5, 12, 25 s: the console shows 0, 8.5 and 25.
		for i, at := range []time.Duration{0, 3 * time.Second, 7900 * time.Millisecond, 8500 * time.Millisecond, 12 * time.Second, 25 * time.Second} {
			clock.set(at, start)
			env.Report(Progress{Phase: "training", Epoch: 2, Epochs: 10, Step: 40 + i, Steps: 200, Loss: &loss, ETA: 90 * time.Second, Message: "val cer 0.3100"})
		}
		env.Report(Progress{Phase: "training", Epoch: 2, Epochs: 10, Step: 40, Steps: 200, Loss: &loss, ETA: 90 * time.Second, Message: "val cer 0.3100"})
		for ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
			if r := tp.response("j1"); r.StatusMessage == want {
				once.Do(func() { close(seen) })
				return &Outcome{}, nil
			}
		}
		return nil, ctx.Err()
	})
	cfg := Config{WorkerID: "w1", WorkDir: filepath.Join(t.TempDir(), "work"), LoopInterval: -1,
		HeartbeatInterval: 20 * time.Millisecond, CancelCheckInterval: time.Hour, ClaimTimeout: time.Hour, Now: clock.now}
	w := New(cfg, single{tp.p}, reg, slog.New(slog.NewTextHandler(console, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-seen:
	default:
		t.Errorf("heartbeat never wrote status_message %q (last: %q)", want, tp.response("j1").StatusMessage)
	}
	var lines []string
	for _, l := range strings.Split(console.String(), "\n") {
		if strings.Contains(l, "msg=progress") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 3 {
		t.Fatalf("%d progress lines on the console, want 3 (one per 8 s):\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for i, step := range []string{"step=40/200", "step=43/200", "step=45/200"} {
		for _, part := range []string{"job=j1", "phase=training", "epoch=2/10", step, "loss=0.5000", "eta=1m30s"} {
			if !strings.Contains(lines[i], part) {
				t.Errorf("line %d lacks %s: %s", i, part, lines[i])
			}
		}
	}
	out := console.String()
	if strings.Contains(out, "learn: 0.6931") || strings.Contains(out, "45/100") {
		t.Errorf("engine progress bars reached the console:\n%s", out)
	}
	entries, _ := os.ReadDir(w.cfg.WorkDir)
	if len(entries) != 1 {
		t.Fatalf("job folders %v", entries)
	}
	logs, _ := os.ReadFile(filepath.Join(w.cfg.WorkDir, entries[0].Name(), "logs.txt"))
	if !strings.Contains(string(logs), "learn: 0.6931") || !strings.Contains(string(logs), "45/100") {
		t.Errorf("engine output missing from the job log:\n%s", logs)
	}
}

func TestProgressLine(t *testing.T) {
	loss := 1.23456
	for _, tc := range []struct {
		p    Progress
		want string
	}{
		{Progress{Message: "preparing 40 recordings"}, "preparing 40 recordings"},
		{Progress{Phase: "synthesizing", Step: 20, Steps: 40, ETA: 61500 * time.Millisecond}, "synthesizing: step 20/40, ETA 1m2s"},
		{Progress{Phase: "training", Epoch: 1, Epochs: 3, Loss: &loss}, "training: epoch 1/3, loss 1.2346"},
		{Progress{Phase: "evaluating"}, "evaluating"},
	} {
		if got := tc.p.Line(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.p, got, tc.want)
		}
	}
	// A status line keeps the epochs reached for epochs_completed.
	var b progressBox
	b.set(Progress{Phase: "training", Epoch: 3, Epochs: 3})
	b.set(Progress{Message: "uploading the model"})
	var r manifest.Response
	b.apply(&r, time.Now())
	if r.EpochsCompleted == nil || *r.EpochsCompleted != 3 || r.StatusMessage != "uploading the model" {
		t.Errorf("response %+v", r)
	}
}
