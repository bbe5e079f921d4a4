//go:build linux

package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sandboxEngine tries what hostile code in an engine would: read the
// worker's environment through /proc, read the token file, reach a
// listener on the host's loopback. It also checks that loopback itself
// works (multi-process training meets there).
const sandboxEngine = `
import json, os, socket, sys
cfg = json.load(open(sys.argv[4]))
out = {}
def attempt(name, f):
    try:
        out[name] = "read: " + repr(f())[:200]
    except Exception as e:
        out[name] = "refused: " + type(e).__name__
parent = os.environ["GPU_WORKER_PARENT_PID"]
attempt("proc_environ", lambda: open("/proc/%s/environ" % parent, "rb").read())
attempt("token_file", lambda: open(cfg["token_file"]).read())
def connect():
    socket.create_connection(("127.0.0.1", cfg["port"]), timeout=3).close()
    return "connected"
attempt("host_listener", connect)
def own_loopback():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    socket.create_connection(s.getsockname(), timeout=3).close()
    return "connected"
attempt("own_loopback", own_loopback)
out["env_token"] = os.environ.get("GITLAB_TOKEN", "")
print(json.dumps({"event": "result", **out}), flush=True)
`

const testToken = "glpat-sandbox-test-token"

// sandboxFixture is a fake engines folder, a token file and a listener on
// the host's loopback, all readable by any user (an engine account too).
type sandboxFixture struct {
	runner    *Runner
	tokenFile string
	port      int
	workDir   string
}

func newSandboxFixture(t *testing.T) *sandboxFixture {
	t.Helper()
	// /usr/bin/python3 rather than a python under root's home: an engine
	// account must be able to start it.
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			t.Fatal("python3 is required for engine tests")
		}
	}
	dir := openTempDir(t)
	pkg := filepath.Join(dir, "gpuworker_engines")
	os.MkdirAll(pkg, 0o755)
	os.WriteFile(filepath.Join(pkg, "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(pkg, "__main__.py"), []byte(sandboxEngine), 0o644)
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte(testToken), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Setenv("GITLAB_TOKEN", testToken)
	return &sandboxFixture{
		runner:    &Runner{Python: py, EnginesDir: dir, Grace: time.Second},
		tokenFile: token, port: ln.Addr().(*net.TCPAddr).Port, workDir: openTempDir(t),
	}
}

// attempt runs the probing engine and returns what it could do.
func (f *sandboxFixture) attempt(t *testing.T) map[string]any {
	t.Helper()
	var log strings.Builder
	res, err := f.runner.Run(context.Background(), "fake", "probe",
		map[string]any{"token_file": f.tokenFile, "port": f.port, "output_dir": filepath.Join(f.workDir, "out")},
		f.workDir, &log, nil)
	if err != nil {
		t.Fatalf("engine: %v\n%s", err, log.String())
	}
	return res
}

// openTempDir is a temporary folder any user can enter.
func openTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/" && d != "."; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	return dir
}

// shim is a copy of this test binary any user can execute (go test's own
// build folder is private).
func shim(t *testing.T) string {
	t.Helper()
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(openTempDir(t), "shim")
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustSay(t *testing.T, res map[string]any, key, prefix string) {
	t.Helper()
	if got := fmt.Sprint(res[key]); !strings.HasPrefix(got, prefix) {
		t.Errorf("%s: got %q, want %s…", key, got, prefix)
	}
}

// Without a sandbox a worker running as root lends its engines everything
// (the control: the probe can tell); isolated, an engine cannot read the
// worker's environment or the hidden token file, nor reach the host's
// loopback, while its own loopback works.
func TestIsolatedEngineCannotReachTheWorkersSecrets(t *testing.T) {
	if err := MakeUndumpable(); err != nil {
		t.Fatal(err)
	}
	f := newSandboxFixture(t)
	open := f.attempt(t)
	if os.Geteuid() == 0 {
		mustSay(t, open, "proc_environ", "read:")
	}
	mustSay(t, open, "token_file", "read: '"+testToken)
	mustSay(t, open, "host_listener", "read: 'connected'")
	if open["env_token"] != "" {
		t.Errorf("the token reached the engine's environment: %v", open["env_token"])
	}

	sb := &Sandbox{Isolate: true, Shim: shim(t), Hide: []string{f.tokenFile}}
	line := sb.Probe(context.Background())
	if !sb.Isolated() {
		t.Fatalf("this host allows user namespaces, yet: %s", line)
	}
	if !strings.Contains(line, "isolation on") || !strings.Contains(line, f.tokenFile) {
		t.Errorf("probe line %q", line)
	}
	f.runner.Sandbox = sb
	shut := f.attempt(t)
	mustSay(t, shut, "proc_environ", "refused:")
	if got := fmt.Sprint(shut["token_file"]); strings.Contains(got, testToken) {
		t.Errorf("token file readable in the sandbox: %s", got)
	}
	mustSay(t, shut, "host_listener", "refused:")
	mustSay(t, shut, "own_loopback", "read: 'connected'")
}

// A worker running as root runs engines as --engine-user, who cannot read
// the token file, with or without namespaces.
func TestEngineAccountCannotReadTheTokenFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running engines as another user needs a worker running as root")
	}
	nobody, err := LookupAccount("nobody")
	if err != nil {
		t.Fatal(err)
	}
	f := newSandboxFixture(t)
	for _, isolate := range []bool{false, true} {
		t.Run(fmt.Sprintf("isolate=%v", isolate), func(t *testing.T) {
			sb := &Sandbox{Isolate: isolate, Account: nobody, Shim: shim(t)}
			sb.Probe(context.Background())
			if sb.Isolated() != isolate {
				t.Fatalf("isolated %v, want %v", sb.Isolated(), isolate)
			}
			f.runner.Sandbox = sb
			res := f.attempt(t)
			mustSay(t, res, "token_file", "refused: PermissionError")
			if isolate {
				mustSay(t, res, "host_listener", "refused:")
			}
			st, err := os.Stat(filepath.Join(f.workDir, "out"))
			if err != nil {
				t.Fatal(err)
			}
			if uid := st.Sys().(*syscall.Stat_t).Uid; uid != nobody.UID {
				t.Errorf("output_dir belongs to uid %d, want the engine account's %d", uid, nobody.UID)
			}
		})
	}
}

const probeInNamespaceEnv = "ENGINE_TEST_PROBE_WITHOUT_USERNS"

// probeWithoutUserNamespaces runs in a user namespace of its own whose
// limit of nested namespaces is 0: a kernel that refuses them.
func probeWithoutUserNamespaces() int {
	if err := os.WriteFile("/proc/sys/user/max_user_namespaces", []byte("0"), 0); err != nil {
		fmt.Println("set limit:", err)
		return 1
	}
	sb := &Sandbox{Isolate: true, Shim: os.Args[0]}
	fmt.Println(sb.Probe(context.Background()))
	if sb.Isolated() {
		return 1
	}
	return 0
}

// Where the kernel refuses namespaces the worker says so in its log line,
// and engines still run.
func TestProbeSaysWhenTheKernelRefusesNamespaces(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), probeInNamespaceEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe in a namespace without nested namespaces: %v\n%s", err, out)
	}
	if s := string(out); !strings.Contains(s, "engine isolation off: the kernel does not allow") {
		t.Errorf("log line: %q", s)
	}
}

// Before each run the worker gives the engine account its folders, and
// nothing they hold: a file there may be a hard link to a host file, a
// subfolder a link an engine swapped in. An output folder that is itself
// a link is refused, its target left as it was.
func TestEngineFoldersAreGivenWithoutWhatTheyHold(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving folders to another user needs a worker running as root")
	}
	nobody, err := LookupAccount("nobody")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	out := filepath.Join(work, "train")
	os.MkdirAll(filepath.Join(out, "checkpoints"), 0o755)
	host := filepath.Join(out, "checkpoints", "host-file") // stands for a hard link to a host file
	os.WriteFile(host, []byte("root's"), 0o600)
	sb := &Sandbox{Account: nobody}
	if _, err := sb.prepare(work, out); err != nil {
		t.Fatal(err)
	}
	owner := func(p string) uint32 {
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Uid
	}
	for _, d := range []string{out, filepath.Join(work, "engine-home")} {
		if uid := owner(d); uid != nobody.UID {
			t.Errorf("%s belongs to uid %d, want the engine account's %d", d, uid, nobody.UID)
		}
	}
	for _, p := range []string{host, filepath.Dir(host)} {
		if uid := owner(p); uid != 0 {
			t.Errorf("%s was given to uid %d; the worker walked the engine's folder", p, uid)
		}
	}

	elsewhere := t.TempDir()
	linked := filepath.Join(work, "linked")
	os.Symlink(elsewhere, linked)
	if _, err := sb.prepare(work, linked); err == nil {
		t.Error("an output folder that is a link was accepted")
	}
	if uid := owner(elsewhere); uid != 0 {
		t.Errorf("the link's target was given to uid %d", uid)
	}
}
