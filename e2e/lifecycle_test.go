package e2e

import (
	"bytes"
	"strings"
	"syscall"
	"testing"
	"time"

	"gpu-worker/codex"
	"gpu-worker/manifest"
)

func codexPaths(url string) (string, string) { return codex.AudioPaths(url) }

func TestCancelMidTrainingUploadsPartialModel(t *testing.T) {
	e := newEnv(t, verses(6, 0, 0))
	long := job("long", "tts", "training", "StableTTS", "    epochs: 2000\n")
	e.setManifest(long)
	cmd := e.command("w1", "--heartbeat-interval", "1s", "--cancel-check-interval", "1s", "--engine-grace", "60s")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "training progress in response.yaml", 5*time.Minute, func() bool {
		b, ok := e.file(manifest.ResponsePath("long"))
		if !ok {
			return false
		}
		r, _ := manifest.ParseResponse(b)
		return r != nil && r.EpochsCompleted != nil && *r.EpochsCompleted >= 1
	})
	e.setManifest(strings.Replace(long, "allow_cpu: true\n", "allow_cpu: true\n    canceled: true\n", 1))
	done := make(chan error)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("worker: %v\n%s", err, tail(out.String()))
		}
	case <-time.After(3 * time.Minute):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("worker did not stop after cancel\n%s", tail(out.String()))
	}
	r := e.wantState("long", manifest.StateCanceled)
	if r.TerminationReason == nil || *r.TerminationReason != manifest.ReasonCanceled {
		t.Errorf("termination_reason = %v", r.TerminationReason)
	}
	e.lfsFile(manifest.JobDir("long") + "/checkpoints/resume.pt")
	// the engine's process group is gone with the worker
	if err := syscall.Kill(-cmd.Process.Pid, 0); err == nil {
		t.Error("engine processes still alive after the worker exited")
	}
}

func TestKilledWorkerIsTakenOverAndResumes(t *testing.T) {
	e := newEnv(t, verses(6, 0, 0))
	const epochs = 40
	e.setManifest(job("resume", "tts", "training", "StableTTS", "    epochs: 40\n    save_interval: 1\n    checkpoint_upload_interval: \"1s\"\n"))
	cmd := e.command("w1", "--heartbeat-interval", "1s")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a checkpoint upload", 5*time.Minute, func() bool {
		_, ok := e.file(manifest.JobDir("resume") + "/checkpoints/resume.pt")
		return ok
	})
	// Let training go a little past the upload, then kill worker and engine.
	time.Sleep(2 * time.Second)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	if r := e.response("resume"); r.State != manifest.StateRunning || r.WorkerID != "w1" {
		t.Fatalf("after kill: %+v", r)
	}
	// The claim goes stale once its last heartbeat is claim-timeout old; w2
	// scans at once and exits when nothing is claimable yet.
	time.Sleep(3 * time.Second)
	logs := e.run("w2", "--claim-timeout", "3s", "--heartbeat-interval", "1s")
	r := e.wantState("resume", manifest.StateCompleted)
	if r.WorkerID != "w2" || r.RetryCount != 1 {
		t.Errorf("takeover: worker %s retry %d", r.WorkerID, r.RetryCount)
	}
	if r.Result["resumed_from_checkpoint"] == nil {
		t.Errorf("second worker did not resume: %v\n%s", r.Result, tail(logs))
	}
	run := intOf(r.Result["epochs_run"])
	if run <= 0 || run >= epochs {
		t.Errorf("second worker ran %d epochs; resuming should need fewer than %d", run, epochs)
	}
}
