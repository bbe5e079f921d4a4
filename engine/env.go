package engine

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ParentPIDEnv tells an engine which process started it: the engine exits
// when that process is gone, even with a launcher (torchrun) in between.
const ParentPIDEnv = "GPU_WORKER_PARENT_PID"

// passedEnv are the worker's variables an engine gets; nothing else of the
// worker's environment (its GitLab token above all) reaches the engine.
var passedEnv = map[string]bool{
	"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "LANG": true, "LANGUAGE": true,
	"TZ": true, "TMPDIR": true, "TMP": true, "TEMP": true, "LD_LIBRARY_PATH": true,
	"XDG_CACHE_HOME": true, "SSL_CERT_FILE": true, "SSL_CERT_DIR": true, "REQUESTS_CA_BUNDLE": true,
}

// passedPrefixes: locale, CUDA and NCCL, Hugging Face, PyTorch and its
// compilers, thread pools, Python.
var passedPrefixes = []string{
	"LC_", "CUDA_", "NCCL_", "NVIDIA_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH", "PYTORCH_",
	"TRITON_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "PYTHON",
}

func passed(name string) bool {
	if passedEnv[name] {
		return true
	}
	for _, p := range passedPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// environ is the engine's environment: the allowed part of ours, then the
// protocol's own variables, then the runner's extra ones (which win).
func (r *Runner) environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if passed(name) && name != "PYTHONPATH" {
			env = append(env, kv)
		}
	}
	env = append(env, "PYTHONUNBUFFERED=1", "PYTHONPATH="+r.EnginesDir, ParentPIDEnv+"="+strconv.Itoa(os.Getpid()))
	return append(env, r.Env...)
}

// live holds the process groups of the engines running now.
var live = groups{m: map[int]bool{}}

type groups struct {
	mu sync.Mutex
	m  map[int]bool
}

func (g *groups) add(pgid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.m[pgid] = true
}

func (g *groups) remove(pgid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.m, pgid)
}

// KillAll sends SIGKILL to the process group of every engine still
// running, for a worker that must exit now without leaving them behind.
// It returns how many groups it signalled.
func KillAll() int {
	live.mu.Lock()
	defer live.mu.Unlock()
	for pgid := range live.m {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	return len(live.m)
}
