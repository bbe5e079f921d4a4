package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/manifest"
	"gpu-worker/metrics"
)

// queueProject is a GitLab project with two queued jobs, one claimed with
// a live heartbeat and one invalid.
func queueProject(t *testing.T) *gitlabtest.Server {
	t.Helper()
	srv := gitlabtest.New(t)
	srv.CreateProject("team/a")
	claim := manifest.Response{WorkerID: "gpu-7", State: manifest.StateRunning, Timestamp: time.Now().Add(-time.Minute)}
	srv.UserCommit(t, "team/a", "queue", map[string][]byte{
		manifest.Path: []byte("version: 1\njobs:\n" +
			"  - {job_id: voice, job_type: tts, mode: training, model: {type: StableTTS}, submitted_at: '2026-01-01T00:00:00Z'}\n" +
			"  - {job_id: small, job_type: asr, mode: training, model: {type: W2V2BERT, size: tiny}}\n" +
			"  - {job_id: busy, job_type: asr, mode: inference, model: {type: MMS, language: swh}}\n" +
			"  - {job_id: broken, job_type: tts, mode: training, model: {type: StableTTS}, epochs: ten}\n"),
		manifest.ResponsePath("busy"): claim.Marshal(),
	})
	return srv
}

func TestQueueCommand(t *testing.T) {
	srv := queueProject(t)
	// The config file of `run` serves `queue` too.
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte("gitlab-url: "+srv.URL()+"\nwork-dir: /tmp/w\ngpus: all\nclaim-timeout: 2h\nlisten-address: ':9402'\n"), 0o644)
	base := []string{"queue", "--config", cfg, "--token", gitlabtest.DefaultToken}

	var out, errOut bytes.Buffer
	if code := realMain(append(base, "--json"), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep metrics.QueueReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if rep.Runnable != 2 || rep.Running != 1 || rep.Wanted != 3 || len(rep.Jobs) != 4 {
		t.Fatalf("report %+v", rep)
	}
	jobs := map[string]metrics.QueueJob{}
	for _, j := range rep.Jobs {
		jobs[j.ID] = j
	}
	if j := jobs["voice"]; j.State != "runnable" || j.Model != "StableTTS" || j.Type != "tts" || j.Size != "default" ||
		j.MemoryEstimateBytes == 0 || j.AgeSeconds < 3600 || j.Project != "team/a" {
		t.Errorf("voice: %+v", j)
	}
	if j := jobs["small"]; j.State != "runnable" || j.Size != "tiny" || j.MemoryEstimateBytes >= jobs["voice"].MemoryEstimateBytes*10 {
		t.Errorf("small: %+v", j)
	}
	if j := jobs["busy"]; j.State != "running" || j.WorkerID != "gpu-7" || j.Model != "MMS" || j.LastHeartbeat.IsZero() {
		t.Errorf("busy: %+v", j)
	}
	if j := jobs["broken"]; j.State != "failing" || !strings.Contains(j.Reason, "epochs") {
		t.Errorf("broken: %+v", j)
	}
	if rep.OldestRunnableAgeSeconds < 3600 || rep.ScanRequests == 0 {
		t.Errorf("oldest %v, requests %d", rep.OldestRunnableAgeSeconds, rep.ScanRequests)
	}

	out.Reset()
	if code := realMain(base, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"PROJECT", "team/a", "voice", "StableTTS", "gpu-7", "runnable 2, running 1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if n := srv.RequestCount("POST commits"); n != 0 {
		t.Errorf("queue committed %d times", n)
	}
	if code := realMain([]string{"queue"}, &out, &errOut); code != 2 {
		t.Errorf("queue without a token: exit %d", code)
	}
}

// observe serves /queue and the queue series, and counts a job committed
// after it started within one loop interval.
func TestObserveServes(t *testing.T) {
	srv := queueProject(t)
	var logs lockedBuffer
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- observeCmd(ctx, []string{"--gitlab-url", srv.URL(), "--token", gitlabtest.DefaultToken,
			"--listen", "127.0.0.1:0", "--loop-interval", "1"}, io.Discard, &logs)
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("observe: %v", err)
		}
	}()
	addr := regexp.MustCompile(`address=(127\.0\.0\.1:\d+)`)
	var base string
	for deadline := time.Now().Add(10 * time.Second); base == ""; time.Sleep(10 * time.Millisecond) {
		if m := addr.FindStringSubmatch(logs.String()); m != nil {
			base = "http://" + m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("observe never listened:\n%s", logs.String())
		}
	}
	report := func() metrics.QueueReport {
		t.Helper()
		resp, err := http.Get(base + "/queue")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rep metrics.QueueReport
		if resp.StatusCode == http.StatusOK {
			json.NewDecoder(resp.Body).Decode(&rep)
		}
		return rep
	}
	waitFor := func(what string, ok func(metrics.QueueReport) bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(report()); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: /queue %+v", what, report())
			}
		}
	}
	waitFor("first scan", func(r metrics.QueueReport) bool { return r.Runnable == 2 && r.Running == 1 })
	srv.UserCommit(t, "team/a", "one more", map[string][]byte{manifest.Path: append(emulatorFile(t, srv, "team/a", manifest.Path),
		[]byte("  - {job_id: later, job_type: tts, mode: training, model: {type: StableTTS}}\n")...)})
	committed := time.Now()
	waitFor("the new job", func(r metrics.QueueReport) bool { return r.Runnable == 3 })
	if d := time.Since(committed); d > 2*time.Second {
		t.Errorf("the new job showed after %v, over a loop interval of 1s", d)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`gpu_worker_jobs_runnable{job_type="tts",model="StableTTS"} 2`,
		`gpu_worker_jobs_runnable{job_type="asr",model="W2V2BERT"} 1`,
		`gpu_worker_jobs_runnable{job_type="asr",model="MMS"} 0`,
		`gpu_worker_jobs_claimed{job_type="asr",model="MMS"} 1`,
		`gpu_worker_scans_total{result="ok"}`,
		`gpu_worker_scan_duration_seconds_count`,
		`gpu_worker_api_requests_total{endpoint="files",status="200"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	age := -1.0
	if m := regexp.MustCompile(`(?m)^gpu_worker_job_oldest_runnable_age_seconds (\S+)$`).FindSubmatch(body); m != nil {
		age, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if age < 3600 {
		t.Errorf("oldest runnable age under an hour for a job submitted in 2026-01:\n%s", grepLines(string(body), "oldest"))
	}
	if n := srv.RequestCount("POST commits"); n != 0 {
		t.Errorf("observe committed %d times", n)
	}
}

func emulatorFile(t *testing.T, srv *gitlabtest.Server, proj, path string) []byte {
	t.Helper()
	b, ok := srv.ReadFile(proj, path)
	if !ok {
		t.Fatalf("%s: no %s", proj, path)
	}
	return b
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// run --exit-when-idle exits 0 on an empty queue; --only reports a job it
// cannot run and exits 1; a malformed --only is a usage error.
func TestRunIdleExitAndOnly(t *testing.T) {
	dir := t.TempDir()
	proj := filepath.Join(dir, "project")
	os.MkdirAll(filepath.Join(proj, "gpu_jobs"), 0o755)
	os.WriteFile(filepath.Join(proj, manifest.Path), []byte("version: 1\njobs:\n"+
		"  - {job_id: broken, job_type: tts, mode: training, model: {type: StableTTS}, epochs: ten}\n"), 0o644)
	base := []string{"run", "--project-dir", proj, "--work-dir", filepath.Join(dir, "work"), "--allow-cpu", "--gpus", "none",
		"--python", "/bin/true", "--engines-dir", fakeEnginesDir(t), "--loop-interval", "1"}

	var out bytes.Buffer
	if code := realMain(append(base, "--only", "local:broken"), &out, &out); code != 1 || !strings.Contains(out.String(), "closed instead of run: invalid job") {
		t.Fatalf("--only on an invalid job: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := realMain(append(base, "--only", "nope"), &out, &out); code != 1 || !strings.Contains(out.String(), "job nope is in no project's manifest") {
		t.Fatalf("--only on a missing job: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := realMain(append(base, "--only", "team/a:"), &out, &out); code != 2 {
		t.Fatalf("--only without a job: exit %d\n%s", code, out.String())
	}
	out.Reset()
	start := time.Now()
	if code := realMain(append(base, "--exit-when-idle", "1500ms"), &out, &out); code != 0 || !strings.Contains(out.String(), "no runnable job") {
		t.Fatalf("--exit-when-idle: exit %d\n%s", code, out.String())
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Errorf("exited after %v", d)
	}
}

// queue and observe bound their scans as run does: a manifest over the
// workers' max-manifest-jobs holds no job they would take.
func TestQueueKeepsTheWorkersLimits(t *testing.T) {
	srv := queueProject(t)
	count := func(extra ...string) int {
		t.Helper()
		var out, errOut bytes.Buffer
		args := append([]string{"queue", "--gitlab-url", srv.URL(), "--token", gitlabtest.DefaultToken, "--json"}, extra...)
		if code := realMain(args, &out, &errOut); code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		var rep metrics.QueueReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("%v: %s", err, out.String())
		}
		return len(rep.Jobs)
	}
	if n := count(); n != 4 {
		t.Fatalf("within the default limits: %d jobs, want 4", n)
	}
	if n := count("--max-manifest-jobs", "3"); n != 0 {
		t.Errorf("a manifest over --max-manifest-jobs 3: %d jobs counted, want none", n)
	}
	var out, errOut bytes.Buffer
	if code := realMain([]string{"queue", "--token", "t", "--max-manifest-jobs", "many"}, &out, &errOut); code != 2 {
		t.Errorf("--max-manifest-jobs many: exit %d, want 2 (%s)", code, errOut.String())
	}
}

// The operator commands read --token-file once, as run does: the token
// serves the scan, and a second token is refused.
func TestQueueReadsTokenFile(t *testing.T) {
	srv := queueProject(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(gitlabtest.DefaultToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"queue", "--gitlab-url", srv.URL(), "--token-file", tokenFile, "--json"}
	var out, errOut bytes.Buffer
	if code := realMain(base, &out, &errOut); code != 0 || !strings.Contains(out.String(), `"voice"`) {
		t.Fatalf("--token-file: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	errOut.Reset()
	if code := realMain(append(base, "--token", "t"), &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "give the token once") {
		t.Errorf("--token-file and --token: exit %d\n%s", code, errOut.String())
	}
}
