package ops

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"gpu-worker/manifest"
	"gpu-worker/project"
)

// GitLabHTTP answers the doctor's token and reachability questions with
// plain REST calls.
type GitLabHTTP struct {
	BaseURL string
	Token   string
	Client  *http.Client
}

// ErrTokenRejected: GitLab answered 401.
var ErrTokenRejected = errors.New("GitLab rejected the token (401): expired, revoked or mistyped")

func (g *GitLabHTTP) get(ctx context.Context, path string, v any) error {
	base := strings.TrimSuffix(strings.TrimSuffix(g.BaseURL, "/"), "/api/v4")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v4/"+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("PRIVATE-TOKEN", g.Token)
	c := g.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("reach GitLab: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return ErrTokenRejected
	case resp.StatusCode == http.StatusNotFound:
		return project.ErrNotFound
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("GitLab answered %s", resp.Status)
	}
	if v == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// TokenScopes reads GET /personal_access_tokens/self (also answers for
// project and group tokens).
func (g *GitLabHTTP) TokenScopes(ctx context.Context) ([]string, error) {
	var tok struct {
		Scopes []string `json:"scopes"`
		Active *bool    `json:"active"`
	}
	err := g.get(ctx, "personal_access_tokens/self", &tok)
	if errors.Is(err, project.ErrNotFound) {
		return nil, ErrScopesUnknown
	}
	if err != nil {
		return nil, err
	}
	if tok.Active != nil && !*tok.Active {
		return nil, errors.New("token is not active")
	}
	return tok.Scopes, nil
}

// Ping lists one project: the server answers and reads are allowed.
func (g *GitLabHTTP) Ping(ctx context.Context) error {
	return g.get(ctx, "projects?membership=true&per_page=1", nil)
}

// ProbeLFS asks the project's LFS server for an object nobody stored: a
// "not found" answer shows the endpoint is reachable and accepts the token.
func ProbeLFS(ctx context.Context, p project.Project, tmpDir string) error {
	var b [32]byte
	rand.Read(b[:])
	ptr := project.Pointer{OID: hex.EncodeToString(b[:]), Size: 1}
	err := p.GetLFS(ctx, ptr, filepath.Join(tmpDir, "gpu-worker-lfs-probe"))
	if err == nil || errors.Is(err, project.ErrNotFound) {
		return nil
	}
	return err
}

// ProbeLocal checks a project folder: readable, manifest valid or absent.
func ProbeLocal(ctx context.Context, p project.Project) error {
	f, err := p.ReadFile(ctx, manifest.Path)
	if errors.Is(err, project.ErrNotFound) {
		_, err = p.ListTree(ctx, "")
		return err
	}
	if err != nil {
		return err
	}
	_, err = manifest.Parse(f.Content)
	return err
}

// FFmpegVersion runs ffmpeg -version.
func FFmpegVersion(ctx context.Context) (string, error) {
	path, err := exec.LookPath("ffmpeg")
	if err != nil {
		return "", errors.New("ffmpeg not found on PATH")
	}
	out, err := exec.CommandContext(ctx, path, "-hide_banner", "-version").Output()
	if err != nil {
		return "", fmt.Errorf("ffmpeg -version: %w", err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line), nil
}

// EngineProbe imports torch and the engines package with the engines'
// Python and reports torch's version and the GPUs it sees.
func EngineProbe(python, enginesDir string) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		if enginesDir == "" {
			return "", errors.New("engines folder not found")
		}
		cmd := exec.CommandContext(ctx, python, "-c",
			"import torch, gpuworker_engines; print('torch', torch.__version__, 'sees', torch.cuda.device_count(), 'GPU(s)')")
		cmd.Dir = enginesDir
		cmd.Env = append(os.Environ(), "PYTHONPATH="+enginesDir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			msg := strings.TrimSpace(stderr.String())
			if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
				msg = msg[i+1:]
			}
			return "", fmt.Errorf("%s: %v %s", python, err, msg)
		}
		return python + ": " + strings.TrimSpace(string(out)), nil
	}
}
