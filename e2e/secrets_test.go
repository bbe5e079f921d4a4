package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gpu-worker/manifest"
)

// snoopEngine stands in for an engine that runs hostile code: for any
// command it tries to read the worker's environment through /proc, the
// worker's config and token files, and a listener on the host's loopback,
// and writes what it got where the test reads it.
const snoopEngine = `
import json, os, socket, sys
cfg = json.load(open(sys.argv[4]))
out = {}
def attempt(name, f):
    try:
        out[name] = "read: " + repr(f())
    except Exception as e:
        out[name] = "refused: " + type(e).__name__
worker = os.environ["GPU_WORKER_PARENT_PID"]
attempt("environ", lambda: open("/proc/%s/environ" % worker, "rb").read())
attempt("cmdline", lambda: open("/proc/%s/cmdline" % worker, "rb").read())
attempt("config_file", lambda: open(os.environ["PYTHON_SNOOP_CONFIG"]).read())
attempt("token_file", lambda: open(os.environ["PYTHON_SNOOP_TOKEN_FILE"]).read())
attempt("listener", lambda: socket.create_connection(("127.0.0.1", int(os.environ["PYTHON_SNOOP_PORT"])), timeout=3).close())
out["env"] = dict(os.environ)
with open(os.environ["PYTHON_SNOOP_OUT"], "w") as f:
    json.dump(out, f)
print(json.dumps({"event": "error", "message": "snooped"}), flush=True)
sys.exit(1)
`

// The GitLab token reaches no engine: not through its environment, not
// through /proc/<worker>/environ (the worker is undumpable and the engine
// holds no capability), not through the token or config file (hidden in
// its namespace), and the engine cannot reach the host's network. Without
// isolation (the control) the same engine, as root, reads all of it.
func TestEnginesCannotReachTheWorkersToken(t *testing.T) {
	e := newEnv(t, verses(3, 0, 0))
	e.setManifest(job("snoop", "tts", "training", "StableTTS", ""))

	dir := t.TempDir()
	fake := filepath.Join(dir, "engines", "gpuworker_engines")
	os.MkdirAll(fake, 0o755)
	os.WriteFile(filepath.Join(fake, "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(fake, "__main__.py"), []byte(snoopEngine), 0o644)
	token := "glpat-" + strings.Repeat("s3cr3t", 4)
	e.srv.AddToken(token, "api")
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	configFile := filepath.Join(dir, "gpu-worker.yaml")
	os.WriteFile(configFile, []byte("token-file: "+tokenFile+"\nworker-id: snoop-worker\n"), 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	snoop := func(isolate bool) (map[string]any, string) {
		t.Helper()
		out := filepath.Join(dir, "snooped.json")
		os.Remove(out)
		cmd := exec.Command(binary, "run", "--config", configFile, "--gitlab-url", e.srv.URL(), "--projects", e.path,
			"--work-dir", filepath.Join(e.work, "snoop"), "--loop-interval", "-1", "--allow-cpu",
			"--python", python, "--engines-dir", filepath.Join(dir, "engines"),
			"--engine-isolation="+map[bool]string{true: "true", false: "false"}[isolate])
		// The worker's own environment holds a secret too (as a token given
		// as GITLAB_TOKEN would); PYTHON* variables reach engines.
		cmd.Env = append(os.Environ(), "PYTHON_SNOOP_CONFIG="+configFile, "PYTHON_SNOOP_TOKEN_FILE="+tokenFile,
			"PYTHON_SNOOP_OUT="+out, "PYTHON_SNOOP_PORT="+strings.TrimPrefix(ln.Addr().String(), "127.0.0.1:"),
			"SNOOP_MARK="+token)
		log, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("worker: %v\n%s", err, tail(string(log)))
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatalf("the engine wrote nothing: %v\n%s", err, tail(string(log)))
		}
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		// The next run takes the job again.
		e.srv.UserCommit(t, e.path, "Requeue", map[string][]byte{manifest.ResponsePath("snoop"): nil})
		return got, string(log)
	}

	open, _ := snoop(false)
	if os.Geteuid() == 0 {
		for _, k := range []string{"environ", "token_file"} {
			if !strings.Contains(open[k].(string), token) {
				t.Errorf("control: without isolation a root engine should read %s: %v", k, open[k])
			}
		}
	}
	if !strings.HasPrefix(open["listener"].(string), "read:") {
		t.Errorf("control: without isolation the engine reaches the host's loopback: %v", open["listener"])
	}

	shut, log := snoop(true)
	if !strings.Contains(log, "engine isolation on") {
		t.Errorf("the worker's log does not say isolation is on:\n%s", tail(log))
	}
	for _, k := range []string{"environ", "config_file", "token_file", "listener"} {
		v := shut[k].(string)
		if strings.Contains(v, token) || strings.Contains(v, tokenFile) || strings.HasPrefix(v, "read: None") {
			t.Errorf("%s reached the engine: %s", k, v)
		}
	}
	if !strings.HasPrefix(shut["environ"].(string), "refused:") || !strings.HasPrefix(shut["listener"].(string), "refused:") {
		t.Errorf("environ %v, listener %v: want both refused", shut["environ"], shut["listener"])
	}
	env, _ := json.Marshal(shut["env"])
	if strings.Contains(string(env), token) {
		t.Errorf("the token is in the engine's environment")
	}
}
