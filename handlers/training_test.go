package handlers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gpu-worker/engine"
	"gpu-worker/manifest"
	"gpu-worker/worker"
)

// Checkpoints come faster than they upload: one upload runs at a time, each
// from a snapshot of its own that nothing replaces while it is hashed and
// sent; the first checkpoint goes at once and the newest one next, and no
// snapshot outlives its upload.
func TestTrainingUploadsOneAtATimeEachFromItsSnapshot(t *testing.T) {
	b := newTrainingBench(t)
	p := b.project()
	p.hold = func(ctx context.Context, n int) error {
		if n == 1 { // the first upload runs until the engine wrote c
			_, err := b.waitFor(ctx, "c written")
			return err
		}
		return nil
	}
	p.landed = func(_, id string) {
		if id == oid(body("c", 16)) {
			b.touch("c uploaded")
		}
	}
	r := b.run(nil, "w", p, [][]any{
		{"checkpoint", "a"}, {"sleep", 0.02}, {"checkpoint", "b"}, {"sleep", 0.02}, {"checkpoint", "c"},
		{"touch", "c written"}, {"wait", "c uploaded"},
	}, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	p.checkUploads(t)
	if want := []string{oid(body("a", 16)), oid(body("c", 16))}; !slices.Equal(p.resumes, want) {
		t.Errorf("resume checkpoints committed %v, want a then c %v", short(p.resumes), short(want))
	}
	paths := map[string]bool{}
	for _, u := range p.uploads {
		if paths[u.path] {
			t.Errorf("two uploads from one file %s", u.path)
		}
		paths[u.path] = true
	}
	if r.inFlight != 0 || len(r.snapshots) != 0 {
		t.Errorf("after the run: %d uploads running, snapshots left %v", r.inFlight, r.snapshots)
	}
}

// A worker that took the job over from one that vanished after its
// periodic upload resumes from that upload: the engine gets it as resume.
func TestTrainingResumesFromTheUploadAfterATakeover(t *testing.T) {
	b := newTrainingBench(t)
	first := b.project()
	first.landed = func(message, _ string) {
		if strings.HasPrefix(message, "Checkpoint") {
			first.offline.Store(true) // the machine loses its network, then dies
			b.touch("a1 uploaded")
		}
	}
	// Its final write is refused and waits to be retried; the machine is
	// gone, so the worker stops there.
	gone, vanish := context.WithCancel(context.Background())
	defer vanish()
	first.refused = func(message string) {
		if strings.HasPrefix(message, "Job t1") {
			vanish()
		}
	}
	r := b.run(gone, "w-a", first, [][]any{{"checkpoint", "a1"}, {"wait", "a1 uploaded"}, {"checkpoint", "a2"}, {"die"}}, nil)
	if r.err == nil {
		t.Fatal("the first worker's engine died, yet its training succeeded")
	}
	if resp := b.response(); resp.State != manifest.StateRunning || resp.WorkerID != "w-a" {
		t.Fatalf("after the first worker vanished: %s by %s", resp.State, resp.WorkerID)
	}
	if got := b.resumeOID(); got != oid(body("a1", 16)) {
		t.Fatalf("the project's resume checkpoint is %.12s, want a1's upload", got)
	}

	// The claim goes stale; another worker takes the job over.
	later := func(c *worker.Config) { c.Now = func() time.Time { return time.Now().Add(2 * time.Hour) } }
	r = b.run(nil, "w-b", b.project(), [][]any{{"checkpoint", "b1"}}, later)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.env.RetryCount != 1 {
		t.Errorf("retry count %d, want 1 (a takeover)", r.env.RetryCount)
	}
	calls := b.calls()
	if len(calls) != 2 || calls[1].Resume == nil || *calls[1].Resume != body("a1", 16) {
		t.Fatalf("engine starts %+v; the second should resume from a1", describeCalls(calls))
	}
	if r.result["resumed_from_checkpoint"] != resumePath("t1") {
		t.Errorf("result %v does not say it resumed", r.result)
	}
	if resp := b.response(); resp.State != manifest.StateCompleted || resp.WorkerID != "w-b" || resp.RetryCount != 1 {
		t.Errorf("after the takeover: %s by %s, retry %d", resp.State, resp.WorkerID, resp.RetryCount)
	}
}

// An engine out of memory restarts at half the batch and twice the
// accumulation, from the checkpoint it wrote, until it fits; each restart
// is said in the status and counted.
func TestTrainingRetriesOOMAtHalfBatch(t *testing.T) {
	b := newTrainingBench(t)
	r := b.run(nil, "w", b.project(), [][]any{{"checkpoint", "x"}, {"oom_above", 4}}, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	calls := b.calls()
	want := []string{"16x1 from none", "8x2 from " + body("x", 16)[:24], "4x4 from " + body("x", 8)[:24]}
	if got := describeCalls(calls); !slices.Equal(got, want) {
		t.Errorf("engine starts %q, want %q", got, want)
	}
	if r.res["batch_size"] != float64(4) {
		t.Errorf("result %v, want the run at batch 4", r.res)
	}
	if r.oomRetried != 2 {
		t.Errorf("%d restarts counted, want 2", r.oomRetried)
	}
	for _, note := range []string{oomNote(8, 2), oomNote(4, 4)} {
		if !slices.Contains(r.progress, note) {
			t.Errorf("status never said %q (said %q)", note, r.progress)
		}
	}
}

// A job stopped while a checkpoint uploads, by a worker shutting down or by
// the team canceling it: the upload stops with the job and nothing of it
// lands after; the job's end keeps the checkpoint the engine saved on its
// way out.
func TestTrainingStoppedDuringAnUpload(t *testing.T) {
	canceled := strings.Replace(trainingManifest, "model:", "canceled: true, model:", 1)
	for _, c := range []struct {
		name    string
		stop    func(b *trainingBench, shutdown func())
		tweak   func(*worker.Config)
		stopped func(*manifest.Response) bool
	}{
		{"shutdown", func(_ *trainingBench, shutdown func()) { shutdown() }, nil,
			(*manifest.Response).HandedBack},
		{"canceled", func(b *trainingBench, _ func()) {
			b.srv.UserCommit(b.t, "team/bible", "cancel the job", map[string][]byte{manifest.Path: []byte(canceled)})
		}, func(c *worker.Config) { c.CancelCheckInterval = 20 * time.Millisecond },
			func(r *manifest.Response) bool { return r.State == manifest.StateCanceled }},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newTrainingBench(t)
			p := b.project()
			stop, shutdown := context.WithCancel(context.Background())
			defer shutdown()
			p.hold = func(ctx context.Context, n int) error {
				if n > 1 {
					return nil
				}
				c.stop(b, shutdown)
				<-ctx.Done()
				return context.Cause(ctx)
			}
			r := b.run(stop, "w", p, [][]any{{"checkpoint", "e1"}, {"wait", "never"}}, c.tweak)
			if !errors.Is(r.err, engine.ErrInterrupted) {
				t.Fatalf("run ended with %v, want the engine interrupted", r.err)
			}
			if r.inFlight != 0 || len(r.snapshots) != 0 {
				t.Errorf("after the run: %d uploads running, snapshots left %v", r.inFlight, r.snapshots)
			}
			p.checkUploads(t)
			for _, m := range p.messages {
				if strings.HasPrefix(m, "Checkpoint") {
					t.Errorf("the stopped upload landed: %q", m)
				}
			}
			if resp := b.response(); !c.stopped(resp) {
				t.Errorf("response %s (%v)", resp.State, resp.TerminationReason)
			}
			if got := b.resumeOID(); got != oid(body("term", 16)) {
				t.Errorf("the resume checkpoint is %.12s, want the one saved on SIGTERM", got)
			}
		})
	}
}

// An engine that dies while its checkpoint uploads: the upload still
// lands, before the job's end, which saves the newest checkpoint.
func TestTrainingEngineDiesDuringAnUpload(t *testing.T) {
	b := newTrainingBench(t)
	p := b.project()
	p.hold = func(ctx context.Context, n int) error {
		if n > 1 {
			return nil
		}
		b.touch("uploading")
		pid, err := b.waitFor(ctx, "dying")
		if err != nil {
			return err
		}
		return waitGone(ctx, pid)
	}
	r := b.run(nil, "w", p, [][]any{{"checkpoint", "d1"}, {"wait", "uploading"}, {"checkpoint", "d2"}, {"touch", "dying"}, {"die"}}, nil)
	var ee *engine.Error
	if !errors.As(r.err, &ee) || ee.ExitCode != 3 || engine.IsOOM(r.err) {
		t.Fatalf("run ended with %v, want the engine's death", r.err)
	}
	p.checkUploads(t)
	d1, d2 := oid(body("d1", 16)), oid(body("d2", 16))
	n := len(p.resumes)
	if n < 2 || p.resumes[0] != d1 || !strings.HasPrefix(p.messages[0], "Checkpoint") ||
		p.resumes[n-1] != d2 || !strings.HasPrefix(p.messages[n-1], "Job") {
		t.Errorf("resume checkpoints committed %v in %q; want d1's upload, then d2 with the job's end", short(p.resumes), p.messages)
	}
	if resp := b.response(); resp.State != manifest.StateFailed || b.resumeOID() != d2 {
		t.Errorf("after the death: %s, resume %.12s", resp.State, b.resumeOID())
	}
	if r.inFlight != 0 || len(r.snapshots) != 0 {
		t.Errorf("after the run: %d uploads running, snapshots left %v", r.inFlight, r.snapshots)
	}
}

// waitGone waits until process pid has exited (gone, or a zombie left for
// its parent to reap).
func waitGone(ctx context.Context, pid string) error {
	for {
		stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
		if err != nil {
			return nil
		}
		if _, rest, ok := strings.Cut(string(stat), ") "); ok && strings.HasPrefix(rest, "Z") {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// describeCalls reads engine starts as "batch x accumulation from resume".
func describeCalls(calls []engineCall) []string {
	var out []string
	for _, c := range calls {
		from := "none"
		if c.Resume != nil {
			from = (*c.Resume)[:min(24, len(*c.Resume))]
		}
		out = append(out, fmt.Sprintf("%dx%d from %s", c.Batch, c.Accum, from))
	}
	return out
}

func short(oids []string) []string {
	out := make([]string, len(oids))
	for i, o := range oids {
		out[i] = o[:min(12, len(o))]
	}
	return out
}
