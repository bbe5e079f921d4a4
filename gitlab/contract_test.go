package gitlab

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/project"
	"gpu-worker/project/projecttest"
)

const testProject = "team/bible"

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// emulated starts an emulator with one project and a client for it.
func emulated(t testing.TB, token string) (*gitlabtest.Server, *Client, *Project) {
	t.Helper()
	s := gitlabtest.New(t)
	s.CreateProject(testProject)
	c, p := connect(t, s, token)
	return s, c, p
}

func connect(t testing.TB, s *gitlabtest.Server, token string) (*Client, *Project) {
	t.Helper()
	c, err := New(Config{BaseURL: s.URL(), Token: token, Logger: quietLogger(), MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Project(context.Background(), testProject)
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

func TestContract(t *testing.T) {
	projecttest.Run(t, func(t *testing.T) projecttest.Env {
		s, _, p := emulated(t, gitlabtest.DefaultToken)
		return projecttest.Env{
			Project:    p,
			UserWrite:  func(t testing.TB, files map[string][]byte) { s.UserCommit(t, testProject, "user edit", files) },
			CorruptLFS: func(t testing.TB, oid string) { s.CorruptLFSObject(oid) },
			LFSUploads: func() int { return s.RequestCount("PUT lfs object") },
		}
	})
	if url, token, proj := os.Getenv("GITLAB_TEST_URL"), os.Getenv("GITLAB_TEST_TOKEN"), os.Getenv("GITLAB_TEST_PROJECT"); url != "" && token != "" && proj != "" {
		t.Run("RealGitLab", func(t *testing.T) { runReal(t, url, token, proj) })
	} else {
		t.Log("contract against a real GitLab did not run: set GITLAB_TEST_URL, GITLAB_TEST_TOKEN and GITLAB_TEST_PROJECT (see README.md)")
	}
}

// runReal runs the contract against a real project. Corruption is done in
// transit: the server's copy is never touched.
func runReal(t *testing.T, url, token, proj string) {
	tr := &tamperTransport{base: http.DefaultTransport, corrupt: map[string]bool{}}
	c, err := New(Config{BaseURL: url, Token: token, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	user, err := New(Config{BaseURL: url, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, err := c.Project(ctx, proj)
	if err != nil {
		t.Fatal(err)
	}
	up, err := user.Project(ctx, proj)
	if err != nil {
		t.Fatal(err)
	}
	projecttest.Run(t, func(t *testing.T) projecttest.Env {
		return projecttest.Env{
			Project:    p,
			UserWrite:  func(t testing.TB, files map[string][]byte) { userWrite(t, up, files) },
			CorruptLFS: func(t testing.TB, oid string) { tr.mark(oid) },
			LFSUploads: tr.uploads,
		}
	})
}

// userWrite commits files through a second client, as a person would.
func userWrite(t testing.TB, p *Project, files map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	var actions []project.Action
	for name, content := range files {
		_, err := p.StatFile(ctx, name)
		exists := err == nil
		switch {
		case content == nil && exists:
			actions = append(actions, project.Action{Kind: project.Delete, Path: name})
		case content == nil:
		case exists:
			actions = append(actions, project.Action{Kind: project.Update, Path: name, Content: content})
		default:
			actions = append(actions, project.Action{Kind: project.Create, Path: name, Content: content})
		}
	}
	if _, err := p.Commit(ctx, "user edit", actions); err != nil {
		t.Fatalf("user write: %v", err)
	}
}

// tamperTransport flips a byte in downloads of marked objects and counts
// object uploads.
type tamperTransport struct {
	base    http.RoundTripper
	mu      sync.Mutex
	corrupt map[string]bool
	puts    int
}

func (tr *tamperTransport) mark(oid string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.corrupt[oid] = true
}

func (tr *tamperTransport) uploads() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.puts
}

func (tr *tamperTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	tr.mu.Lock()
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/lfs/objects/") {
		tr.puts++
	}
	hit := false
	for oid := range tr.corrupt {
		hit = hit || (r.Method == http.MethodGet && strings.Contains(r.URL.Path, oid))
	}
	tr.mu.Unlock()
	resp, err := tr.base.RoundTrip(r)
	if err == nil && hit {
		resp.Body = &flipFirst{ReadCloser: resp.Body}
	}
	return resp, err
}

type flipFirst struct {
	io.ReadCloser
	done bool
}

func (f *flipFirst) Read(b []byte) (int, error) {
	n, err := f.ReadCloser.Read(b)
	if n > 0 && !f.done {
		b[0] ^= 0xff
		f.done = true
	}
	return n, err
}
