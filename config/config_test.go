package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "worker.yaml")
	os.WriteFile(file, []byte("worker_id: from-file\nwork-dir: /file/work\nkeep-jobs: 9\nprojects: [a/b, 12]\nheartbeat-interval: 2m\n"), 0o644)
	s := New("run")
	id := s.String("worker-id", "host", "")
	wd := s.String("work-dir", "./work", "")
	keep := s.Int("keep-jobs", 5, "")
	loop := s.Int("loop-interval", 300, "")
	projects := s.String("projects", "", "")
	hb := s.Duration("heartbeat-interval", 5*time.Minute, "")
	s.Env("worker-id", "TEST_WORKER_ID")
	s.Env("work-dir", "TEST_WORK_DIR")
	t.Setenv("TEST_WORK_DIR", "/env/work")
	t.Setenv("TEST_WORKER_ID", "from-env")
	if err := s.Parse([]string{"--config", file, "--worker-id", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if *id != "from-flag" || *wd != "/env/work" || *keep != 9 || *loop != 300 || *projects != "a/b,12" || *hb != 2*time.Minute {
		t.Errorf("got id=%s wd=%s keep=%d loop=%d projects=%s hb=%v", *id, *wd, *keep, *loop, *projects, *hb)
	}
}

func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{"nosuch: 1\n", `unknown setting "nosuch"`},
		{"keep-jobs: many\n", `invalid value "many" for keep-jobs`},
		{"keep-jobs: [\n", "parse config file"},
	} {
		file := filepath.Join(dir, "c.yaml")
		os.WriteFile(file, []byte(tc.content), 0o644)
		s := New("run")
		s.Int("keep-jobs", 5, "")
		err := s.Parse([]string{"--config", file})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.content, err, tc.want)
		}
	}
}

func TestAliasOutranksEnvironmentAndFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "worker.yaml")
	os.WriteFile(file, []byte("listen: \":1\"\n"), 0o644)
	t.Setenv("TEST_LISTEN_ADDRESS", ":2")

	s := New("observe")
	addr := s.String("listen-address", "", "")
	s.Env("listen-address", "TEST_LISTEN_ADDRESS")
	s.Alias("listen", "listen-address")
	if err := s.Parse([]string{"--listen", ":3"}); err != nil {
		t.Fatal(err)
	}
	if *addr != ":3" {
		t.Errorf("--listen :3 gave listen-address %q", *addr)
	}

	s = New("observe")
	addr = s.String("listen-address", "", "")
	s.Alias("listen", "listen-address")
	if err := s.Parse([]string{"--config", file}); err != nil {
		t.Fatal(err)
	}
	if *addr != ":1" {
		t.Errorf("config key listen gave listen-address %q", *addr)
	}
}

// Only what the command line gave counts as given there: values from the
// environment and the file are set too, but not by the command line.
func TestFromCommandLine(t *testing.T) {
	file := filepath.Join(t.TempDir(), "worker.yaml")
	os.WriteFile(file, []byte("keep-jobs: 9\n"), 0o644)
	t.Setenv("TEST_TOKEN", "from-env")
	s := New("run")
	s.String("token", "", "")
	s.Int("keep-jobs", 5, "")
	s.String("listen-address", "", "")
	s.String("worker-id", "", "")
	s.Env("token", "TEST_TOKEN")
	s.Alias("listen", "listen-address")
	if err := s.Parse([]string{"--config", file, "--listen", ":1", "--worker-id", "w"}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"token": false, "keep-jobs": false, "listen-address": true, "worker-id": true, "config": true} {
		if got := s.FromCommandLine(name); got != want {
			t.Errorf("FromCommandLine(%q) = %v, want %v", name, got, want)
		}
	}
}
