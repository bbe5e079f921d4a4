package gitlab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/project"
)

func TestProjectsListing(t *testing.T) {
	s := gitlabtest.New(t)
	var idle []*gitlabtest.Project
	for i := range 205 {
		p := s.CreateProject(fmt.Sprintf("team/p%03d", i))
		if i%2 == 1 {
			idle = append(idle, p)
		}
	}
	for _, p := range idle {
		p.SetLastActivity(time.Now().Add(-72 * time.Hour))
	}
	c, err := New(Config{BaseURL: s.URL() + "/api/v4", Token: gitlabtest.DefaultToken, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	all, err := c.Projects(ctx, ListOptions{})
	if err != nil || len(all) != 205 {
		t.Fatalf("all: %d projects, %v", len(all), err)
	}
	if pages := s.RequestCount("GET projects"); pages != 3 {
		t.Fatalf("%d list requests, want 3 pages", pages)
	}
	active, err := c.Projects(ctx, ListOptions{ActiveAfter: time.Now().Add(-time.Hour)})
	if err != nil || len(active) != 103 {
		t.Fatalf("active: %d projects, %v", len(active), err)
	}
	only, err := c.Projects(ctx, ListOptions{Only: []string{"team/p004", "2", "team/p001"}, ActiveAfter: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range only {
		names = append(names, p.Name())
	}
	sort.Strings(names)
	if fmt.Sprint(names) != "[team/p004]" {
		t.Fatalf("only: %v", names)
	}
	if _, err := c.Project(ctx, "team/missing"); !errors.Is(err, project.ErrNotFound) {
		t.Fatalf("missing project: %v", err)
	}
	p, _ := c.Project(ctx, "team/p000")
	if p.Branch() != "main" || p.LastActivity().IsZero() || p.ID() != 1 {
		t.Fatalf("project fields: %s %v %d", p.Branch(), p.LastActivity(), p.ID())
	}
}

// TestPointerOnTrackedPath: committing pointer text for a new path that
// .gitattributes sends to LFS must store the pointer, not a pointer to it.
func TestPointerOnTrackedPath(t *testing.T) {
	s, _, p := emulated(t, gitlabtest.DefaultToken)
	s.UserCommit(t, testProject, "attrs", map[string][]byte{".gitattributes": []byte("*.webm filter=lfs diff=lfs merge=lfs -text\n")})
	src := filepath.Join(t.TempDir(), "a.webm")
	os.WriteFile(src, []byte("webm bytes"), 0o644)
	ctx := context.Background()
	ptr, err := p.PutLFS(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	const name = ".project/attachments/pointers/MAT/audio-1.webm"
	if _, err := p.Commit(ctx, "audio", []project.Action{{Kind: project.Create, Path: name, Content: []byte(ptr.String())}}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.ReadFile(testProject, name)
	if string(got) != ptr.String() {
		t.Fatalf("stored %q, want the pointer itself", got)
	}
	tree, _ := p.ListTree(ctx, "")
	if len(tree) != 2 {
		t.Fatalf("temporary file left in tree: %+v", tree)
	}
	_, err = p.Commit(ctx, "again", []project.Action{{Kind: project.Create, Path: name, Content: []byte(ptr.String())}})
	if !project.IsConflict(err, project.AlreadyExists) {
		t.Fatalf("second create: %v", err)
	}
}

// recordingTransport notes how LFS uploads were framed.
type recordingTransport struct {
	mu      sync.Mutex
	lengths []int64
	chunked bool
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut {
		r.mu.Lock()
		r.lengths = append(r.lengths, req.ContentLength)
		for _, te := range req.TransferEncoding {
			r.chunked = r.chunked || te == "chunked"
		}
		r.chunked = r.chunked || req.Header.Get("Transfer-Encoding") != ""
		r.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(req)
}

func TestUploadSendsContentLength(t *testing.T) {
	s := gitlabtest.New(t)
	s.CreateProject(testProject)
	rec := &recordingTransport{}
	c, _ := New(Config{BaseURL: s.URL(), Token: gitlabtest.DefaultToken, HTTPClient: &http.Client{Transport: rec}, Logger: quietLogger()})
	p, err := c.Project(context.Background(), testProject)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "m.pt")
	os.WriteFile(src, make([]byte, 123456), 0o644)
	if _, err := p.PutLFS(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	if len(rec.lengths) != 1 || rec.lengths[0] != 123456 || rec.chunked {
		t.Fatalf("upload framing: lengths %v, chunked %v", rec.lengths, rec.chunked)
	}
}

func TestCancelledContextStops(t *testing.T) {
	s := gitlabtest.New(t)
	s.CreateProject(testProject)
	c, _ := New(Config{BaseURL: s.URL(), Token: gitlabtest.DefaultToken, Logger: quietLogger(), MinBackoff: time.Second, MaxBackoff: time.Minute, MaxRetries: 50})
	p, err := c.Project(context.Background(), testProject)
	if err != nil {
		t.Fatal(err)
	}
	s.InjectFault(gitlabtest.Fault{Rate: 1, Status: 503})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = p.ReadFile(ctx, "x")
	if err == nil || ctx.Err() == nil {
		t.Fatalf("read returned %v before its context ended", err)
	}
	// The first backoff (0.5-1 s) outlasts the context: no second request.
	if n := s.RequestCount("GET files"); n != 1 {
		t.Fatalf("%d requests after the context ended", n)
	}
}
