package gitlab

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/project"
)

func TestUnknownToken401(t *testing.T) {
	s := gitlabtest.New(t)
	s.CreateProject(testProject)
	const secret = "glpat-UnknownSecret123"
	c, err := New(Config{BaseURL: s.URL(), Token: secret, Logger: quietLogger(), MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Project(context.Background(), testProject)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("got %v, want a 401", err)
	}
	if errors.Is(err, project.ErrNotFound) || strings.Contains(err.Error(), secret) {
		t.Fatalf("bad error: %v", err)
	}
	if n := s.RequestCount("GET project"); n != 1 {
		t.Fatalf("401 retried: %d requests", n)
	}
}

func TestReadOnlyToken403(t *testing.T) {
	s := gitlabtest.New(t)
	s.CreateProject(testProject)
	s.UserCommit(t, testProject, "seed", map[string][]byte{"a.txt": []byte("a")})
	s.AddToken("reader", "read_api")
	_, p := connect(t, s, "reader")
	ctx := context.Background()
	if f, err := p.ReadFile(ctx, "a.txt"); err != nil || string(f.Content) != "a" {
		t.Fatalf("read with read_api: %v", err)
	}
	_, err := p.Commit(ctx, "x", []project.Action{{Kind: project.Update, Path: "a.txt", Content: []byte("b")}})
	if err == nil || !strings.Contains(err.Error(), "403") || project.ConflictOf(err) != nil {
		t.Fatalf("commit with read_api: got %v, want 403", err)
	}
	if n := s.RequestCount("POST commits"); n != 1 {
		t.Fatalf("403 commit sent %d times", n)
	}
	src := filepath.Join(t.TempDir(), "obj")
	os.WriteFile(src, []byte("object"), 0o644)
	if _, err := p.PutLFS(ctx, src); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("put lfs with read_api: got %v, want 403", err)
	}
	if b, _ := s.ReadFile(testProject, "a.txt"); string(b) != "a" {
		t.Fatalf("file changed to %q", b)
	}
}

// TestTokenNeverShown drives every error path and retry log with a server
// that echoes the token back, and looks for it in errors and logs.
func TestTokenNeverShown(t *testing.T) {
	const secret = "glpat-VerySecretValue42"
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/info/lfs/objects/batch") {
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte(`{"message":"upstream refused token ` + secret + `"}`))
			return
		}
		if r.URL.Path == "/api/v4/projects/1" {
			w.Write([]byte(`{"id":1,"path_with_namespace":"a/b","default_branch":"main","http_url_to_repo":"` + "http://" + r.Host + `/a/b.git"}`))
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"message":"bad token ` + r.Header.Get("PRIVATE-TOKEN") + `"}`))
	}))
	defer echo.Close()

	c, err := New(Config{BaseURL: echo.URL, Token: secret, Logger: logger, MaxRetries: 2, MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, err := c.Project(ctx, "1")
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "obj")
	os.WriteFile(src, []byte("object"), 0o644)
	var errs []error
	_, err = p.ReadFile(ctx, "x")
	errs = append(errs, err)
	_, err = p.Commit(ctx, "m", []project.Action{{Kind: project.Create, Path: "x", Content: []byte("y")}})
	errs = append(errs, err)
	_, err = p.ListTree(ctx, "")
	errs = append(errs, err)
	_, err = p.PutLFS(ctx, src)
	errs = append(errs, err)
	errs = append(errs, p.GetLFS(ctx, project.Pointer{OID: strings.Repeat("0", 64), Size: 1}, filepath.Join(t.TempDir(), "d")))
	for i, err := range errs {
		if err == nil {
			t.Fatalf("call %d succeeded against a failing server", i)
		}
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("call %d: token in error: %v", i, err)
		}
	}
	if !strings.Contains(errs[0].Error(), "[REDACTED]") {
		t.Fatalf("echoed token not redacted: %v", errs[0])
	}
	if logs.Len() == 0 || strings.Contains(logs.String(), secret) {
		t.Fatalf("logs (%d bytes) hold the token or nothing:\n%s", logs.Len(), logs.String())
	}
}

func TestConfigRequiresToken(t *testing.T) {
	if _, err := New(Config{BaseURL: "http://x"}); err == nil {
		t.Fatal("client built without a token")
	}
	if _, err := New(Config{Token: "t"}); err == nil {
		t.Fatal("client built without a URL")
	}
}
