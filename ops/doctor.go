package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gpu-worker/gpu"
)

// Check is one line of `gpu-worker doctor`.
type Check struct {
	Name string
	Run  func(ctx context.Context) (detail string, err error)
	Fix  string // what to do when it fails
}

// Result is a check's outcome.
type Result struct {
	Name, Detail, Fix string
	Err               error
}

// OK reports a passed check.
func (r Result) OK() bool { return r.Err == nil }

// TokenInspector reads the scopes of the token in use.
type TokenInspector interface {
	TokenScopes(ctx context.Context) ([]string, error)
}

// Pinger checks that GitLab answers and accepts the token.
type Pinger interface {
	Ping(ctx context.Context) error
}

// ErrScopesUnknown: the server does not say which scopes a token has.
var ErrScopesUnknown = errors.New("token scopes not reported by this server")

// DoctorDeps are the probes the checks use; tests pass fakes.
type DoctorDeps struct {
	// GitLab (nil when serving a local project folder).
	Token TokenInspector
	API   Pinger
	LFS   func(ctx context.Context) error
	// Local project folder (nil with GitLab).
	Local func(ctx context.Context) error

	FFmpeg    func(ctx context.Context) (string, error)
	Engines   func(ctx context.Context) (string, error)
	GPUs      gpu.Lister
	GPUReason string // why GPUs is empty, from gpu.Discover
	AllowCPU  bool

	WorkDir     string
	FreeDisk    func(dir string) (uint64, error)
	MinFreeDisk uint64 // default 20 GiB
}

// DoctorChecks lists the checks for a host: token scopes, GitLab and LFS
// reachability (or the local folder), ffmpeg, the engines' environment,
// GPUs and free disk in the work dir.
func DoctorChecks(d DoctorDeps) []Check {
	var cs []Check
	if d.Token != nil {
		cs = append(cs, Check{Name: "token scopes", Fix: "create a personal, group or project access token with the api scope and pass it with --token or GITLAB_TOKEN",
			Run: func(ctx context.Context) (string, error) {
				scopes, err := d.Token.TokenScopes(ctx)
				if errors.Is(err, ErrScopesUnknown) {
					return "not reported by this GitLab; write access shows at the first claim", nil
				}
				if err != nil {
					return "", err
				}
				if !slices.Contains(scopes, "api") {
					return "", fmt.Errorf("token has %s but not api: the worker commits results", strings.Join(scopes, ", "))
				}
				return strings.Join(scopes, ", "), nil
			}})
	}
	if d.API != nil {
		cs = append(cs, Check{Name: "GitLab API", Fix: "check --gitlab-url, the network path to GitLab (proxy, firewall) and that the token is valid",
			Run: func(ctx context.Context) (string, error) { return "reachable, token accepted", d.API.Ping(ctx) }})
	}
	if d.LFS != nil {
		cs = append(cs, Check{Name: "Git LFS", Fix: "enable LFS on the project (Settings → General → Visibility → Git LFS) and allow the worker to reach <project>.git/info/lfs",
			Run: func(ctx context.Context) (string, error) { return "batch API answers", d.LFS(ctx) }})
	}
	if d.Local != nil {
		cs = append(cs, Check{Name: "project folder", Fix: "point --project-dir at a Codex project folder the worker can read and write",
			Run: func(ctx context.Context) (string, error) { return "readable, manifest valid or absent", d.Local(ctx) }})
	}
	cs = append(cs,
		Check{Name: "ffmpeg", Fix: "install ffmpeg (apt-get install ffmpeg) and put it on PATH", Run: d.FFmpeg},
		Check{Name: "engines environment", Fix: "create it with scripts/engines-env.sh, or set --python to a Python with engines/requirements.txt installed", Run: d.Engines},
		Check{Name: "GPUs", Fix: "install the NVIDIA driver and expose the GPUs (docker run --gpus all; Kubernetes resource nvidia.com/gpu), or start with --allow-cpu to serve CPU jobs only",
			Run: func(ctx context.Context) (string, error) { return gpuCheck(ctx, d) }},
		Check{Name: "disk", Fix: "free space in --work-dir or point it at a larger volume (jobs keep audio, checkpoints and logs there)",
			Run: func(context.Context) (string, error) { return diskCheck(d) }},
	)
	return cs
}

func gpuCheck(ctx context.Context, d DoctorDeps) (string, error) {
	var devs []gpu.Device
	if d.GPUs != nil {
		var err error
		if devs, err = d.GPUs.Devices(ctx); err != nil {
			return "", err
		}
	}
	var parts []string
	for _, dv := range devs {
		if dv.Available {
			parts = append(parts, fmt.Sprintf("%d: %s, %.0f of %.0f GiB free", dv.Index, dv.Name, float64(dv.MemFree)/gpu.GiB, float64(dv.MemTotal)/gpu.GiB))
		} else {
			parts = append(parts, fmt.Sprintf("%d: unreadable", dv.Index))
		}
	}
	if len(parts) > 0 {
		return strings.Join(parts, "; "), nil
	}
	reason := d.GPUReason
	if reason == "" {
		reason = "no GPU found"
	}
	if d.AllowCPU {
		return reason + "; serving CPU jobs (--allow-cpu)", nil
	}
	return "", errors.New(reason)
}

func diskCheck(d DoctorDeps) (string, error) {
	need := d.MinFreeDisk
	if need == 0 {
		need = 20 * gpu.GiB
	}
	dir := d.WorkDir
	if dir == "" {
		dir = "."
	}
	// The work dir may not exist yet: measure the volume it will be on.
	probe, _ := filepath.Abs(dir)
	for {
		if _, err := os.Stat(probe); err == nil || filepath.Dir(probe) == probe {
			break
		}
		probe = filepath.Dir(probe)
	}
	free, err := d.FreeDisk(probe)
	if err != nil {
		return "", fmt.Errorf("free space of %s: %w", probe, err)
	}
	msg := fmt.Sprintf("%.1f GiB free in %s", float64(free)/gpu.GiB, probe)
	if free < need {
		return "", fmt.Errorf("%s; want at least %.0f GiB", msg, float64(need)/gpu.GiB)
	}
	return msg, nil
}

// RunChecks runs every check, each bounded by timeout.
func RunChecks(ctx context.Context, checks []Check, timeout time.Duration) []Result {
	out := make([]Result, 0, len(checks))
	for _, c := range checks {
		r := Result{Name: c.Name, Fix: c.Fix}
		if c.Run == nil {
			r.Err = errors.New("no probe configured")
		} else {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			r.Detail, r.Err = c.Run(cctx)
			cancel()
		}
		out = append(out, r)
	}
	return out
}

// WriteReport prints one OK/FAIL line per check (and the fix under each
// failure) and reports whether all passed.
func WriteReport(w io.Writer, results []Result) bool {
	ok := true
	for _, r := range results {
		if r.OK() {
			fmt.Fprintf(w, "OK    %-20s %s\n", r.Name, r.Detail)
			continue
		}
		ok = false
		fmt.Fprintf(w, "FAIL  %-20s %s\n", r.Name, oneLine(r.Err.Error(), 200))
		fmt.Fprintf(w, "      %-20s fix: %s\n", "", r.Fix)
	}
	return ok
}
