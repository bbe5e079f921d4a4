package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/gpu"
)

type fakeToken struct {
	scopes []string
	err    error
}

func (f fakeToken) TokenScopes(context.Context) ([]string, error) { return f.scopes, f.err }

type fakePing struct{ err error }

func (f fakePing) Ping(context.Context) error { return f.err }

func healthyDeps() DoctorDeps {
	return DoctorDeps{
		Token:    fakeToken{scopes: []string{"api", "read_repository"}},
		API:      fakePing{},
		LFS:      func(context.Context) error { return nil },
		FFmpeg:   func(context.Context) (string, error) { return "ffmpeg version 7", nil },
		Engines:  func(context.Context) (string, error) { return "torch 2.15", nil },
		GPUs:     gpu.Static{{Index: 0, Name: "H100", MemTotal: 80 * gpu.GiB, MemFree: 79 * gpu.GiB, Available: true}},
		WorkDir:  "/nonexistent/work/dir",
		FreeDisk: func(string) (uint64, error) { return 100 * gpu.GiB, nil },
	}
}

// TestDoctorEachCheckFailingInTurn breaks one probe at a time: exactly that
// line says FAIL, with its fix, and the others stay OK.
func TestDoctorEachCheckFailingInTurn(t *testing.T) {
	breakers := map[string]func(*DoctorDeps){
		"token scopes": func(d *DoctorDeps) { d.Token = fakeToken{scopes: []string{"read_api"}} },
		"GitLab API":   func(d *DoctorDeps) { d.API = fakePing{err: errors.New("dial tcp: connection refused")} },
		"Git LFS":      func(d *DoctorDeps) { d.LFS = func(context.Context) error { return errors.New("lfs batch: 403") } },
		"ffmpeg": func(d *DoctorDeps) {
			d.FFmpeg = func(context.Context) (string, error) { return "", errors.New("ffmpeg not found") }
		},
		"engines environment": func(d *DoctorDeps) {
			d.Engines = func(context.Context) (string, error) { return "", errors.New("No module named torch") }
		},
		"GPUs": func(d *DoctorDeps) { d.GPUs, d.GPUReason = gpu.None{}, "libnvidia-ml.so.1 not found" },
		"disk": func(d *DoctorDeps) { d.FreeDisk = func(string) (uint64, error) { return 3 * gpu.GiB, nil } },
	}
	ctx := context.Background()
	all := RunChecks(ctx, DoctorChecks(healthyDeps()), time.Second)
	var out bytes.Buffer
	if !WriteReport(&out, all) || len(all) != len(breakers) {
		t.Fatalf("healthy host:\n%s", out.String())
	}
	for name, brk := range breakers {
		d := healthyDeps()
		brk(&d)
		res := RunChecks(ctx, DoctorChecks(d), time.Second)
		out.Reset()
		if WriteReport(&out, res) {
			t.Errorf("%s broken but all OK:\n%s", name, out.String())
		}
		for _, r := range res {
			if (r.Name == name) == r.OK() {
				t.Errorf("%s broken: line %q OK=%v", name, r.Name, r.OK())
			}
		}
		report := out.String()
		if strings.Count(report, "FAIL") != 1 || !strings.Contains(report, "FAIL  "+name) || !strings.Contains(report, "fix: ") {
			t.Errorf("%s broken, report:\n%s", name, report)
		}
	}
}

func TestDoctorVariants(t *testing.T) {
	ctx := context.Background()
	d := healthyDeps()
	d.GPUs, d.GPUReason, d.AllowCPU = gpu.None{}, "no driver", true
	d.Token = fakeToken{err: ErrScopesUnknown}
	res := RunChecks(ctx, DoctorChecks(d), time.Second)
	var out bytes.Buffer
	if !WriteReport(&out, res) || !strings.Contains(out.String(), "--allow-cpu") {
		t.Errorf("CPU host with --allow-cpu, scopes unknown:\n%s", out.String())
	}
	// A local project folder replaces the GitLab checks.
	d = healthyDeps()
	d.Token, d.API, d.LFS = nil, nil, nil
	d.Local = func(context.Context) error { return errors.New("parse manifest: bad") }
	res = RunChecks(ctx, DoctorChecks(d), time.Second)
	if len(res) != 5 || res[0].Name != "project folder" || res[0].OK() {
		t.Errorf("local checks: %+v", res)
	}
}

func TestGitLabProbes(t *testing.T) {
	ctx := context.Background()
	s, _, p := emulated(t, nil)
	s.AddToken("reader", "read_api")
	g := &GitLabHTTP{BaseURL: s.URL(), Token: gitlabtest.DefaultToken}
	if err := g.Ping(ctx); err != nil {
		t.Errorf("ping: %v", err)
	}
	if _, err := g.TokenScopes(ctx); !errors.Is(err, ErrScopesUnknown) {
		t.Errorf("emulator has no token endpoint: %v", err)
	}
	if err := (&GitLabHTTP{BaseURL: s.URL(), Token: "wrong"}).Ping(ctx); !errors.Is(err, ErrTokenRejected) {
		t.Errorf("bad token: %v", err)
	}
	if err := ProbeLFS(ctx, p, t.TempDir()); err != nil {
		t.Errorf("lfs probe: %v", err)
	}
	if err := (&GitLabHTTP{BaseURL: "http://127.0.0.1:1", Token: "x"}).Ping(ctx); err == nil {
		t.Errorf("unreachable server answered")
	}

	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v4/personal_access_tokens/self" || r.Header.Get("PRIVATE-TOKEN") != "t" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"scopes": []string{"read_api", "read_repository"}, "active": true})
	}))
	defer tokens.Close()
	scopes, err := (&GitLabHTTP{BaseURL: tokens.URL + "/api/v4", Token: "t"}).TokenScopes(ctx)
	if err != nil || strings.Join(scopes, ",") != "read_api,read_repository" {
		t.Errorf("scopes %v %v", scopes, err)
	}
}

func TestHostProbes(t *testing.T) {
	ctx := context.Background()
	free, err := FreeDisk(t.TempDir())
	if err != nil || free == 0 {
		t.Errorf("free disk %d %v", free, err)
	}
	if _, err := exec.LookPath("ffmpeg"); err == nil {
		v, err := FFmpegVersion(ctx)
		if err != nil || !strings.HasPrefix(v, "ffmpeg version") {
			t.Errorf("ffmpeg: %q %v", v, err)
		}
	}
	// An engines folder without the package fails with the import error.
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required")
	}
	if _, err := EngineProbe(py, t.TempDir())(ctx); err == nil || !strings.Contains(err.Error(), "No module named") {
		t.Errorf("engine probe without engines: %v", err)
	}
}
