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
	"sync"
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
	// StallTimeout abandons a request that sends or receives nothing for
	// this long (default 2m): no request can hang forever, however large
	// the upload or download it streams.
	StallTimeout time.Duration

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
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 2 * time.Minute
	}
	hc := *cfg.HTTPClient
	hc.Transport = &stallGuard{base: hc.Transport, idle: cfg.StallTimeout}
	cfg.HTTPClient = &hc
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
	listedAt     time.Time // when lastActivity was read
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
	out := &Project{c: c, id: p.ID, path: p.PathWithNamespace, branch: branch, repoURL: p.HTTPURLToRepo, listedAt: time.Now()}
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

// Projects lists the non-archived projects the token is a member of, all
// pages. With Only, a named project that cannot be found (or seen with this
// token) is skipped with a warning; the error is returned only when none is.
func (c *Client) Projects(ctx context.Context, opts ListOptions) ([]*Project, error) {
	if len(opts.Only) > 0 {
		var out []*Project
		var errs []error
		for _, id := range opts.Only {
			p, err := c.Project(ctx, id)
			if err != nil {
				if ctx.Err() != nil {
					return nil, err
				}
				c.log.Warn("skipping a project of --projects", "project", id, "err", err)
				errs = append(errs, err)
				continue
			}
			if opts.ActiveAfter.IsZero() || p.lastActivity.IsZero() || p.lastActivity.After(opts.ActiveAfter) {
				out = append(out, p)
			}
		}
		if len(errs) == len(opts.Only) {
			return nil, errors.Join(errs...)
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
// GitLab moves it at most once an hour, so it only hints at a change.
func (p *Project) LastActivity() time.Time { return p.lastActivity }

// ListedAt is when LastActivity was read.
func (p *Project) ListedAt() time.Time { return p.listedAt }

func (p *Project) pid() string { return strconv.FormatInt(p.id, 10) }

// Source serves, on every scan, the projects the token can see (or Only).
// It implements the worker's project source.
type Source struct {
	Client *Client
	Only   []string
	// cache, when set (NewSource), keeps the Only projects between scans.
	cache *onlyCache
}

// onlyCache holds the resolved Only projects: looking each one up on every
// scan would cost a request per project before any manifest is checked.
type onlyCache struct {
	mu       sync.Mutex
	projects []project.Project
	at       time.Time
}

// onlyRefresh is how long resolved Only projects are reused (a project
// renamed, archived or added to the token's reach shows up after that).
const onlyRefresh = 10 * time.Minute

// onlyRetry is how soon a listing that missed some Only projects is redone.
const onlyRetry = time.Minute

// NewSource is a Source that resolves Only projects once per onlyRefresh.
func NewSource(c *Client, only []string) Source {
	return Source{Client: c, Only: only, cache: &onlyCache{}}
}

// Projects lists the projects to scan.
func (s Source) Projects(ctx context.Context) ([]project.Project, error) {
	if len(s.Only) > 0 && s.cache != nil {
		s.cache.mu.Lock()
		defer s.cache.mu.Unlock()
		if s.cache.projects != nil && time.Since(s.cache.at) < onlyRefresh {
			return s.cache.projects, nil
		}
	}
	ps, err := s.Client.Projects(ctx, ListOptions{Only: s.Only})
	if err != nil {
		return nil, err
	}
	out := make([]project.Project, len(ps))
	for i, p := range ps {
		out[i] = p
	}
	if len(s.Only) > 0 && s.cache != nil {
		s.cache.projects, s.cache.at = out, time.Now()
		if len(out) < len(s.Only) {
			// Some were not found: look again sooner.
			s.cache.at = s.cache.at.Add(onlyRetry - onlyRefresh)
		}
	}
	return out, nil
}
