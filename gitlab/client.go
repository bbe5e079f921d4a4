// Package gitlab implements project.Project over GitLab's REST v4 API and
// the Git LFS batch API.
//
// REST calls go through the official client with its own retries turned
// off: this package retries reads itself (backoff, jitter, Retry-After) and
// never re-sends a commit before checking whether the previous attempt
// landed. LFS objects stream both ways with flat memory.
package gitlab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"

	"gpu-worker/project"
)

// Config says how to reach GitLab.
type Config struct {
	BaseURL string // e.g. https://gitlab.com (with or without /api/v4)
	Token   string // scopes: api (LFS also works with write_repository)

	HTTPClient *http.Client
	Logger     *slog.Logger

	MaxRetries int           // per call; default 8
	MinBackoff time.Duration // default 250ms
	MaxBackoff time.Duration // default 30s

	Branch string // default: each project's default branch
}

// Client talks to one GitLab instance.
type Client struct {
	cfg  Config
	api  *gl.Client
	http *http.Client
	log  *slog.Logger
}

// New checks cfg and builds a client; it does not contact the server.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("gitlab config: no base URL")
	}
	if cfg.Token == "" {
		return nil, errors.New("gitlab config: no token")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = 8
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	base := strings.TrimSuffix(strings.TrimSuffix(cfg.BaseURL, "/"), "/api/v4")
	api, err := gl.NewClient(cfg.Token,
		gl.WithBaseURL(base+"/api/v4"),
		gl.WithHTTPClient(cfg.HTTPClient),
		gl.WithoutRetries(),
	)
	if err != nil {
		return nil, fmt.Errorf("gitlab client: %w", redact(err, cfg.Token))
	}
	return &Client{cfg: cfg, api: api, http: cfg.HTTPClient, log: cfg.Logger}, nil
}

// Project is one GitLab project; it implements project.Project.
type Project struct {
	c            *Client
	id           int64
	path         string
	branch       string
	repoURL      string // http_url_to_repo, ends in .git
	lastActivity time.Time
}

var _ project.Project = (*Project)(nil)

func (c *Client) newProject(p *gl.Project) *Project {
	branch := c.cfg.Branch
	if branch == "" {
		branch = p.DefaultBranch
	}
	if branch == "" {
		branch = "main"
	}
	out := &Project{c: c, id: p.ID, path: p.PathWithNamespace, branch: branch, repoURL: p.HTTPURLToRepo}
	if p.LastActivityAt != nil {
		out.lastActivity = *p.LastActivityAt
	}
	return out
}

// Project looks a project up by numeric id or full path.
func (c *Client) Project(ctx context.Context, idOrPath string) (*Project, error) {
	var p *gl.Project
	err := c.retry(ctx, "get project", func(ctx context.Context) error {
		var err error
		p, _, err = c.api.Projects.GetProject(idOrPath, nil, gl.WithContext(ctx))
		return err
	})
	if err != nil {
		if errors.Is(err, gl.ErrNotFound) {
			return nil, fmt.Errorf("project %s: %w", idOrPath, project.ErrNotFound)
		}
		return nil, fmt.Errorf("project %s: %w", idOrPath, c.clean(err))
	}
	return c.newProject(p), nil
}

// ListOptions narrows Projects.
type ListOptions struct {
	// Only restricts the scan to these projects (ids or paths).
	Only []string
	// ActiveAfter skips projects with no activity since then (zero: none skipped).
	ActiveAfter time.Time
}

// Projects lists the non-archived projects the token is a member of, all pages.
func (c *Client) Projects(ctx context.Context, opts ListOptions) ([]*Project, error) {
	if len(opts.Only) > 0 {
		var out []*Project
		for _, id := range opts.Only {
			p, err := c.Project(ctx, id)
			if err != nil {
				return nil, err
			}
			if opts.ActiveAfter.IsZero() || p.lastActivity.IsZero() || p.lastActivity.After(opts.ActiveAfter) {
				out = append(out, p)
			}
		}
		return out, nil
	}
	lo := &gl.ListProjectsOptions{
		ListOptions: gl.ListOptions{PerPage: 100, Page: 1},
		Membership:  gl.Ptr(true),
		Archived:    gl.Ptr(false),
	}
	if !opts.ActiveAfter.IsZero() {
		lo.LastActivityAfter = gl.Ptr(opts.ActiveAfter.UTC())
	}
	var out []*Project
	for {
		var page []*gl.Project
		var resp *gl.Response
		err := c.retry(ctx, "list projects", func(ctx context.Context) error {
			var err error
			page, resp, err = c.api.Projects.ListProjects(lo, gl.WithContext(ctx))
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("list projects: %w", c.clean(err))
		}
		for _, p := range page {
			out = append(out, c.newProject(p))
		}
		if resp.NextPage == 0 {
			return out, nil
		}
		lo.Page = resp.NextPage
	}
}

// Name is the project's full path.
func (p *Project) Name() string { return p.path }

// ID is the numeric project id.
func (p *Project) ID() int64 { return p.id }

// Branch is the branch this project reads and commits to.
func (p *Project) Branch() string { return p.branch }

// LastActivity is GitLab's last_activity_at when the project was listed.
func (p *Project) LastActivity() time.Time { return p.lastActivity }

func (p *Project) pid() string { return strconv.FormatInt(p.id, 10) }

// Source serves, on every scan, the projects the token can see (or Only).
// It implements the worker's project source.
type Source struct {
	Client *Client
	Only   []string
}

// Projects lists the projects to scan.
func (s Source) Projects(ctx context.Context) ([]project.Project, error) {
	ps, err := s.Client.Projects(ctx, ListOptions{Only: s.Only})
	if err != nil {
		return nil, err
	}
	out := make([]project.Project, len(ps))
	for i, p := range ps {
		out[i] = p
	}
	return out, nil
}
