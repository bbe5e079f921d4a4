package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"

	"gpu-worker/config"
	"gpu-worker/gitlab"
	"gpu-worker/local"
	"gpu-worker/ops"
	"gpu-worker/project"
	"gpu-worker/worker"
)

// common holds the flags every command that talks to projects shares.
// --token and --gitlab-url are GitLab's own; the rest name projects the
// same way for either backend.
type common struct {
	token, tokenFile, gitlabURL, projectDir, projects *string
	// tokenFromFlag: the token was given as --token on the command line,
	// where every process of the host can read it.
	tokenFromFlag bool
	set           *config.Set
}

func addCommon(s *config.Set) *common {
	c := &common{
		token:      s.String("token", "", "GitLab token with api scope (prefer --token-file: a command line is visible to every process of the host)"),
		tokenFile:  s.String("token-file", "", "file holding the GitLab token (e.g. a Kubernetes secret volume or systemd credential); the token then sits in no environment"),
		gitlabURL:  s.String("gitlab-url", "https://gitlab.com", "GitLab base URL"),
		projectDir: s.String("project-dir", "", "serve one local Codex project folder instead of GitLab"),
		projects:   s.String("projects", "", "comma-separated projects to serve (GitLab ids or paths; default: all the token can see)"),
	}
	s.Env("token", "GITLAB_TOKEN")
	s.Env("token-file", "GITLAB_TOKEN_FILE")
	s.Env("gitlab-url", "GITLAB_URL")
	s.Env("project-dir", "GPU_WORKER_PROJECT_DIR")
	s.Env("projects", "GPU_WORKER_PROJECTS")
	c.set = s
	return c
}

// backend is the project store the flags name: one local Codex folder
// (--project-dir) or GitLab. It is built here and only here, for run,
// jobs, submit, cancel and doctor.
type backend struct {
	folder *local.Project // --project-dir
	client *gitlab.Client // otherwise
	only   []string       // --projects
	cfg    *common
}

// backendOptions tune the GitLab client of a command.
type backendOptions struct {
	http       *http.Client // nil: the default transport
	maxRetries int          // 0: the client's default
}

// errNoBackend: neither a folder nor a token was given.
var errNoBackend = errors.New("no GitLab token (set --token or GITLAB_TOKEN), or use --project-dir for a local project")

// loadToken reads --token-file into the token; each command calls it once,
// after parsing (parseOps, runCmd).
func (c *common) loadToken() error {
	c.tokenFromFlag = c.set.FromCommandLine("token")
	if *c.tokenFile == "" {
		return nil
	}
	if *c.token != "" {
		return fmt.Errorf("%w: give the token once: --token-file or --token (GITLAB_TOKEN), not both", errUsage)
	}
	b, err := os.ReadFile(*c.tokenFile)
	if err != nil {
		return fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return fmt.Errorf("read token file: %s is empty", *c.tokenFile)
	}
	*c.token = tok
	return nil
}

// checkOnly refuses --only PROJECT:JOB for a project that --projects
// leaves out: a worker limited to some projects claims in no other.
func (c *common) checkOnly(proj string) error {
	only := splitList(*c.projects)
	if proj == "" || *c.projectDir != "" || len(only) == 0 || slices.Contains(only, proj) {
		return nil
	}
	return fmt.Errorf("--only names project %s, which --projects (%s) does not serve; name the project as --projects does", proj, strings.Join(only, ", "))
}

func (c *common) backend(log *slog.Logger, o backendOptions) (*backend, error) {
	if *c.projectDir != "" {
		p, err := local.Open(*c.projectDir)
		if err != nil {
			return nil, fmt.Errorf("open project dir: %w", err)
		}
		return &backend{folder: p, cfg: c}, nil
	}
	if *c.token == "" {
		return nil, errNoBackend
	}
	client, err := gitlab.New(gitlab.Config{BaseURL: *c.gitlabURL, Token: *c.token, HTTPClient: o.http, Logger: log, MaxRetries: o.maxRetries})
	if err != nil {
		return nil, err
	}
	return &backend{client: client, only: splitList(*c.projects), cfg: c}, nil
}

// source is what the worker scans.
func (b *backend) source() worker.Source {
	if b.folder != nil {
		return staticSource{b.folder}
	}
	return gitlab.NewSource(b.client, b.only)
}

// sourceOf serves only the named project: GitLab's by id or path; for a
// folder, the folder (the name is not checked: a folder has one project).
func (b *backend) sourceOf(name string) worker.Source {
	if b.folder != nil {
		return staticSource{b.folder}
	}
	return gitlab.NewSource(b.client, []string{name})
}

// one is the project a submit or cancel is about: the folder, the named
// one, or the only one --projects names.
func (b *backend) one(ctx context.Context, name string) (project.Project, error) {
	if b.folder != nil {
		return b.folder, nil
	}
	if name == "" && len(b.only) == 1 {
		name = b.only[0]
	}
	if name == "" {
		return nil, errors.New("no project: name one with --project group/name (or use --project-dir)")
	}
	return b.client.Project(ctx, name)
}

// doctor adds the backend's own checks: the folder, or GitLab's token
// scopes, API and LFS.
func (b *backend) doctor(d *ops.DoctorDeps) {
	if b.folder != nil {
		d.Local = func(ctx context.Context) error { return ops.ProbeLocal(ctx, b.folder) }
		return
	}
	g := &ops.GitLabHTTP{BaseURL: *b.cfg.gitlabURL, Token: *b.cfg.token}
	d.Token, d.API = g, g
	d.LFS = func(ctx context.Context) error {
		ps, err := b.client.Projects(ctx, gitlab.ListOptions{Only: b.only})
		if err != nil {
			return err
		}
		if len(ps) == 0 {
			return errors.New("the token sees no project to probe")
		}
		return ops.ProbeLFS(ctx, ps[0], os.TempDir())
	}
}

type staticSource []project.Project

func (s staticSource) Projects(context.Context) ([]project.Project, error) { return s, nil }

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
