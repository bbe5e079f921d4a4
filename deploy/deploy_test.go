package deploy

import (
	"gpu-worker/handlers"
	"slices"

	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const repoRoot = ".."

// binarySettings scans the command's sources for its flags and the
// environment variables tied to them, so packaging cannot drift from them.
func binarySettings(t *testing.T) (flags, env map[string]bool) {
	t.Helper()
	flags, env = map[string]bool{}, map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(repoRoot, "cmd", "gpu-worker", "*.go"))
	files = append(files, filepath.Join(repoRoot, "config", "config.go"))
	flagRe := regexp.MustCompile(`\.(?:String|Int|Bool|Duration)(?:Var)?\((?:&[\w.]+, )?"([a-z-]+)"`)
	envRe := regexp.MustCompile(`(?:\.Env\("[a-z-]+", |env\["config"\] = )"([A-Z_]+)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range flagRe.FindAllStringSubmatch(string(b), -1) {
			flags[m[1]] = true
		}
		for _, m := range envRe.FindAllStringSubmatch(string(b), -1) {
			env[m[1]] = true
		}
	}
	// The models' own settings become flags and variables at run time.
	for _, m := range handlers.Models() {
		for _, st := range m.Settings {
			flags[st.Flag], env[st.Env] = true, true
		}
	}
	for _, want := range []string{"listen-address", "gpus", "work-dir", "token", "tts-vocoder"} {
		if !flags[want] {
			t.Fatalf("flag scan missed %q: %v", want, flags)
		}
	}
	if !env["GITLAB_TOKEN"] || !env["GPU_WORKER_CONFIG"] {
		t.Fatalf("env scan incomplete: %v", env)
	}
	return flags, env
}

// ownVariable: a variable the worker itself reads (others, like NVIDIA_*,
// belong to the runtime).
func ownVariable(name string) bool {
	return strings.HasPrefix(name, "GPU_WORKER_") || strings.HasPrefix(name, "GITLAB_") ||
		name == "WORK_DIR" || name == "WORKER_ID" || name == "LOOP_INTERVAL" || name == "KEEP_JOBS"
}

type instruction struct {
	line int
	cmd  string
	args string
}

// parseDockerfile joins continuation lines and drops comments.
func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	start, n := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if body, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{start, strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: file ends inside a continued line", path)
	}
	return out
}

func TestDockerfile(t *testing.T) {
	_, env := binarySettings(t)
	ins := parseDockerfile(t, "Dockerfile")
	valid := map[string]bool{"FROM": true, "RUN": true, "CMD": true, "LABEL": true, "EXPOSE": true, "ENV": true, "ADD": true,
		"COPY": true, "ENTRYPOINT": true, "VOLUME": true, "USER": true, "WORKDIR": true, "ARG": true, "ONBUILD": true,
		"STOPSIGNAL": true, "HEALTHCHECK": true, "SHELL": true}
	if len(ins) == 0 || (ins[0].cmd != "FROM" && ins[0].cmd != "ARG") {
		t.Fatalf("must start with FROM or ARG: %+v", ins)
	}
	stages := map[string]bool{}
	envs := map[string]string{}
	var exposed []string
	froms := 0
	for _, in := range ins {
		if !valid[in.cmd] {
			t.Errorf("line %d: unknown instruction %s", in.line, in.cmd)
		}
		if in.args == "" {
			t.Errorf("line %d: %s without arguments", in.line, in.cmd)
		}
		switch in.cmd {
		case "FROM":
			froms++
			f := strings.Fields(in.args)
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stages[f[2]] = true
			} else if len(f) != 1 {
				t.Errorf("line %d: FROM %s", in.line, in.args)
			}
		case "COPY", "ADD":
			f := strings.Fields(in.args)
			from := ""
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				if v, ok := strings.CutPrefix(f[0], "--from="); ok {
					from = v
				}
				f = f[1:]
			}
			if len(f) < 2 {
				t.Errorf("line %d: %s needs a source and a destination", in.line, in.cmd)
				continue
			}
			if from != "" {
				if !stages[from] {
					t.Errorf("line %d: --from=%s names no earlier stage", in.line, from)
				}
				continue
			}
			for _, src := range f[:len(f)-1] {
				matches, _ := filepath.Glob(filepath.Join(repoRoot, src))
				if len(matches) == 0 {
					t.Errorf("line %d: %s source %s does not exist in the build context", in.line, in.cmd, src)
				}
			}
		case "ENV":
			for _, kv := range strings.Fields(in.args) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Errorf("line %d: ENV %q is not KEY=value", in.line, kv)
				}
				envs[k] = v
			}
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "ENTRYPOINT", "CMD", "VOLUME":
			var arr []string
			if err := json.Unmarshal([]byte(in.args), &arr); err != nil || len(arr) == 0 {
				t.Errorf("line %d: %s is not a JSON array (exec form): %v", in.line, in.cmd, err)
			}
		case "HEALTHCHECK":
			_, cmd, ok := strings.Cut(in.args, "CMD ")
			var arr []string
			if !ok || json.Unmarshal([]byte(cmd), &arr) != nil {
				t.Errorf("line %d: HEALTHCHECK CMD is not exec form", in.line)
			}
		case "STOPSIGNAL":
			if in.args != "SIGTERM" && in.args != "SIGQUIT" {
				t.Errorf("line %d: stop signal %s is neither of the worker's", in.line, in.args)
			}
		}
	}
	if froms < 2 {
		t.Errorf("want a build stage and a runtime stage, got %d FROM", froms)
	}
	for k := range envs {
		if ownVariable(k) && !env[k] {
			t.Errorf("ENV %s is not a variable the worker reads", k)
		}
	}
	_, port, _ := strings.Cut(envs["GPU_WORKER_LISTEN_ADDRESS"], ":")
	if port == "" || len(exposed) != 1 || exposed[0] != port {
		t.Errorf("EXPOSE %v does not match the listen address %q", exposed, envs["GPU_WORKER_LISTEN_ADDRESS"])
	}
	for _, k := range []string{"GPU_WORKER_PYTHON", "GPU_WORKER_ENGINES", "WORK_DIR"} {
		if envs[k] == "" {
			t.Errorf("ENV %s not set", k)
		}
	}
}

// parseUnit reads a systemd unit file: section → key → values.
func parseUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]string{}
	section := ""
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if out[section] == nil {
				out[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.TrimSpace(k) != k || k == "" {
				t.Errorf("%s:%d: not a key=value line in a section: %q", path, i+1, line)
				continue
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	_, env := binarySettings(t)
	u := parseUnit(t, "gpu-worker.service")
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Fatalf("missing [%s]", s)
		}
	}
	known := map[string]map[string]bool{
		"Unit":    {"Description": true, "Documentation": true, "Wants": true, "After": true, "Requires": true},
		"Install": {"WantedBy": true},
		"Service": {"Type": true, "User": true, "Group": true, "EnvironmentFile": true, "Environment": true, "LoadCredential": true,
			"WorkingDirectory": true, "StateDirectory": true, "ExecStart": true, "ExecReload": true, "KillMode": true,
			"KillSignal": true, "TimeoutStopSec": true, "Restart": true, "RestartSec": true, "NoNewPrivileges": true,
			"ProtectSystem": true, "ProtectHome": true, "PrivateTmp": true, "ReadWritePaths": true},
	}
	for sec, keys := range u {
		for k := range keys {
			if !known[sec][k] {
				t.Errorf("[%s] %s: not a setting this unit should use (typo?)", sec, k)
			}
		}
	}
	svc := u["Service"]
	one := func(k string) string {
		if len(svc[k]) != 1 {
			t.Errorf("[Service] %s: want one value, got %v", k, svc[k])
			return ""
		}
		return svc[k][0]
	}
	exec := strings.Fields(one("ExecStart"))
	if len(exec) < 2 || !filepath.IsAbs(exec[0]) || exec[1] != "run" {
		t.Errorf("ExecStart %v: want an absolute path to gpu-worker run", exec)
	}
	// The token comes as a credential file, in no environment.
	cred, _, _ := strings.Cut(one("LoadCredential"), ":")
	if !slices.Contains(exec, "--token-file") || !slices.Contains(exec, "%d/"+cred) {
		t.Errorf("ExecStart %v: want --token-file %%d/%s (the LoadCredential)", exec, cred)
	}
	if one("KillSignal") != "SIGTERM" || one("KillMode") != "mixed" {
		t.Errorf("stop must send SIGTERM to the worker alone")
	}
	if !strings.Contains(one("ExecReload"), "-QUIT $MAINPID") || one("Restart") != "always" {
		t.Errorf("reload must drain (SIGQUIT) and the service restart after it")
	}
	if d, err := time.ParseDuration(one("TimeoutStopSec") + "s"); err != nil || d < shippedStopTimeout(t)+stopMargin {
		t.Errorf("TimeoutStopSec %v: must exceed the worker's stop timeout (%v) by %v", d, shippedStopTimeout(t), stopMargin)
	}
	for _, e := range svc["Environment"] {
		k, _, _ := strings.Cut(e, "=")
		if ownVariable(k) && !env[k] {
			t.Errorf("Environment %s is not a variable the worker reads", k)
		}
	}
	if u["Install"]["WantedBy"][0] != "multi-user.target" {
		t.Errorf("WantedBy %v", u["Install"]["WantedBy"])
	}
}

// stopMargin is what a service manager's stop budget must leave beyond the
// worker's own stop timeout (exit, log flush).
const stopMargin = 5 * time.Second

// shippedStopTimeout is the stop timeout the packaged config sets, which
// must also be the flag's default, and must leave the engine grace plus
// time for the final write.
func shippedStopTimeout(t *testing.T) time.Duration {
	t.Helper()
	var cfg struct {
		Stop  string `yaml:"stop-timeout"`
		Grace string `yaml:"engine-grace"`
	}
	b, err := os.ReadFile("config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	stop, err1 := time.ParseDuration(cfg.Stop)
	grace, err2 := time.ParseDuration(cfg.Grace)
	if err1 != nil || err2 != nil {
		t.Fatalf("config.example.yaml: stop-timeout %q, engine-grace %q", cfg.Stop, cfg.Grace)
	}
	run, err := os.ReadFile(filepath.Join(repoRoot, "cmd", "gpu-worker", "run.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(run), `s.Duration("stop-timeout", `+strconv.Itoa(int(stop.Seconds()))+`*time.Second`) {
		t.Errorf("config.example.yaml stop-timeout %v differs from the flag's default", stop)
	}
	if grace+10*time.Second > stop {
		t.Errorf("engine-grace %v leaves the final write less than 10s of stop-timeout %v", grace, stop)
	}
	return stop
}

func TestConfigExample(t *testing.T) {
	flags, _ := binarySettings(t)
	b, err := os.ReadFile("config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	checkConfig(t, "config.example.yaml", b, flags)
}

func checkConfig(t *testing.T, name string, data []byte, flags map[string]bool) map[string]any {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(cfg) == 0 {
		t.Fatalf("%s: empty", name)
	}
	for k := range cfg {
		if !flags[strings.ReplaceAll(k, "_", "-")] {
			t.Errorf("%s: %q is not a setting of gpu-worker run", name, k)
		}
	}
	if _, ok := cfg["token"]; ok {
		t.Errorf("%s: the token belongs in the environment, not the file", name)
	}
	return cfg
}
