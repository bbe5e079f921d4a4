package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/gpu"
	"gpu-worker/handlers"
	"gpu-worker/manifest"
	"gpu-worker/worker"
)

// The packaged config files must parse with run's own flags.
func TestPackagedConfigsParse(t *testing.T) {
	s, f := newRunFlags("test", &bytes.Buffer{})
	if err := s.Parse([]string{"--config", "../../deploy/config.example.yaml"}); err != nil {
		t.Fatal(err)
	}
	if *f.gpus != "auto" || *f.listen != ":9402" || *f.hb != 5*time.Minute || *f.grace != 60*time.Second {
		t.Errorf("example settings: gpus %q listen %q heartbeat %v grace %v", *f.gpus, *f.listen, *f.hb, *f.grace)
	}

	data, err := os.ReadFile("../../deploy/kubernetes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var cfg string
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if dec.Decode(&doc) != nil {
			break
		}
		if doc.Kind == "ConfigMap" {
			cfg = doc.Data["config.yaml"]
		}
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(path, []byte(cfg), 0o644)
	s, f = newRunFlags("test", &bytes.Buffer{})
	if err := s.Parse([]string{"--config", path}); err != nil {
		t.Fatalf("ConfigMap config.yaml: %v", err)
	}
	if *f.gpus != "all" {
		t.Errorf("ConfigMap gpus %q", *f.gpus)
	}
}

func TestOperatorCommandsOnLocalProject(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := realMain(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	// A config file written for `run` is accepted by the operator commands.
	code, out, errs := run("submit", "--config", "../../deploy/config.example.yaml", "--project-dir", dir,
		"--job-type", "tts", "--mode", "training", "--model", "StableTTS", "--epochs", "7", "--priority", "3")
	if code != 0 {
		t.Fatalf("submit: %d %s %s", code, out, errs)
	}
	id := strings.Fields(out)[2]
	m, err := manifest.Parse(mustRead(t, filepath.Join(dir, manifest.Path)))
	if err != nil || m.Find(id) == nil || m.Find(id).Knobs.Epochs == nil || *m.Find(id).Knobs.Epochs != 7 || m.Find(id).Priority != 3 {
		t.Fatalf("manifest after submit: %v %+v", err, m)
	}
	code, out, _ = run("jobs", "--project-dir", dir)
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "pending") || !strings.Contains(out, "0/7") {
		t.Errorf("jobs: %d\n%s", code, out)
	}
	if code, _, errs = run("cancel", "--project-dir", dir); code != 2 || !strings.Contains(errs, "JOB_ID") {
		t.Errorf("cancel without an id: %d %q", code, errs)
	}
	if code, out, errs = run("cancel", "--project-dir", dir, id); code != 0 {
		t.Fatalf("cancel: %d %s %s", code, out, errs)
	}
	code, out, _ = run("jobs", "--project-dir", dir, "--state", "canceled", "--json")
	if code != 0 || !strings.Contains(out, `"job_id": "`+id+`"`) {
		t.Errorf("jobs --json after cancel: %d\n%s", code, out)
	}
	if code, _, errs = run("submit", "--project-dir", dir, "--job-type", "tts", "--mode", "dance"); code != 1 || !strings.Contains(errs, "mode") {
		t.Errorf("invalid submit: %d %q", code, errs)
	}
	code, out, _ = run("doctor", "--project-dir", dir, "--allow-cpu", "--min-free-disk", "100000")
	if code != 1 || !strings.Contains(out, "OK    project folder") || !strings.Contains(out, "FAIL  disk") {
		t.Errorf("doctor: %d\n%s", code, out)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// resolvedJob reads one manifest entry as the worker does.
func resolvedJob(t *testing.T, entry string) *manifest.Job {
	t.Helper()
	m, err := handlers.Catalog().Parse([]byte("version: 1\njobs:\n  - " + entry + "\n"))
	if err != nil || len(m.Jobs) != 1 || m.Jobs[0].Invalid != nil {
		t.Fatalf("job %s: %v %+v", entry, err, m)
	}
	return m.Jobs[0]
}

func TestHostCanRun(t *testing.T) {
	devs := gpu.Static{
		{Index: 0, MemTotal: 80 * gpu.GiB, MemFree: 2 * gpu.GiB, Available: true}, // busy with something else
		{Index: 1, MemTotal: 80 * gpu.GiB, MemFree: 70 * gpu.GiB, Available: true},
	}
	single := &host{lister: devs, memCheck: true, slots: buildSlots([][]int{{0}, {1}})}
	single.widest = widest(single.slots)
	asr := resolvedJob(t, "{job_id: a, job_type: asr, mode: training, model: {type: W2V2BERT}}")
	if err := single.canRun(asr); err != nil {
		t.Errorf("GPU 1 has room: %v", err)
	}
	two := resolvedJob(t, "{job_id: b, job_type: asr, mode: training, model: {type: W2V2BERT}, gpus: 2}")
	if err := single.canRun(two); err == nil || !strings.Contains(err.Error(), "widest slot") {
		t.Errorf("two-GPU job on single slots: %v", err)
	}
	wide := &host{lister: devs, memCheck: true, slots: buildSlots([][]int{{0, 1}})}
	wide.widest = 2
	if err := wide.canRun(two); err == nil || !strings.Contains(err.Error(), "GPU 0 has 2.0 GiB free") {
		t.Errorf("two-GPU job with one GPU busy: %v", err)
	}
	wide.memCheck = false
	if err := wide.canRun(two); err != nil {
		t.Errorf("memory check off: %v", err)
	}
	cpu := &host{lister: gpu.None{}, slots: []worker.Slot{{Name: "cpu"}}}
	if err := cpu.canRun(asr); err == nil {
		t.Errorf("CPU host took a GPU job")
	}
	if err := cpu.canRun(&manifest.Job{AllowCPU: true}); err != nil {
		t.Errorf("job allowed on CPU: %v", err)
	}
	cpu.allowCPU = true
	if err := cpu.canRun(asr); err != nil {
		t.Errorf("--allow-cpu: %v", err)
	}
}

func TestDoctorAgainstGitLab(t *testing.T) {
	s := gitlabtest.New(t)
	s.CreateProject("team/mark")
	s.AddToken("reader", "read_api")
	doctor := func(token string) (int, string) {
		var out, errb bytes.Buffer
		code := realMain([]string{"doctor", "--gitlab-url", s.URL(), "--token", token, "--allow-cpu", "--min-free-disk", "1"}, &out, &errb)
		return code, out.String()
	}
	_, out := doctor(gitlabtest.DefaultToken)
	for _, line := range []string{"OK    token scopes", "OK    GitLab API", "OK    Git LFS", "OK    GPUs", "OK    disk"} {
		if !strings.Contains(out, line) {
			t.Errorf("good token: no %q in\n%s", line, out)
		}
	}
	code, out := doctor("wrong")
	if code != 1 || !strings.Contains(out, "FAIL  GitLab API") || !strings.Contains(out, "FAIL  Git LFS") {
		t.Errorf("bad token: %d\n%s", code, out)
	}
}
