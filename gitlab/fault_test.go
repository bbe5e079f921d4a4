package gitlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/project"
)

// TestFaultySequence runs 200 mixed operations while about 10% of requests
// fail, then checks the final state and that no commit landed twice.
func TestFaultySequence(t *testing.T) {
	s, _, p := emulated(t, gitlabtest.DefaultToken)
	ctx := context.Background()
	s.InjectFault(gitlabtest.Fault{Rate: 0.03, Status: 500})
	s.InjectFault(gitlabtest.Fault{Rate: 0.015, Status: 502})
	s.InjectFault(gitlabtest.Fault{Rate: 0.015, Status: 503})
	s.InjectFault(gitlabtest.Fault{Rate: 0.01, Status: 429})
	s.InjectFault(gitlabtest.Fault{Endpoint: "GET files", Nth: 7, Status: 429, RetryAfter: time.Second})
	s.InjectFault(gitlabtest.Fault{Rate: 0.02, Drop: true})
	s.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Rate: 0.05, ApplyThenFail: true})
	s.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Rate: 0.03, ApplyThenFail: true, Drop: true})

	rng := rand.New(rand.NewPCG(1, 2))
	files := map[string][]byte{} // what the project should hold
	last := map[string]string{}  // path -> our last commit id
	var names []string
	commits := 0
	dir := t.TempDir()
	var pointers []project.Pointer

	for op := 0; op < 200; op++ {
		switch k := rng.IntN(10); {
		case k < 3 || len(names) == 0: // create
			name := fmt.Sprintf("gpu_jobs/job_%03d/response.yaml", op)
			content := []byte(fmt.Sprintf("state: running\nop: %d\n", op))
			res, err := p.Commit(ctx, fmt.Sprintf("claim %d [skip ci]", op), []project.Action{{Kind: project.Create, Path: name, Content: content}})
			if err != nil {
				t.Fatalf("op %d create: %v", op, err)
			}
			files[name], last[name] = content, res.ID
			names = append(names, name)
			commits++
		case k < 5: // guarded update of two files at once
			a, b := names[rng.IntN(len(names))], names[rng.IntN(len(names))]
			actions := []project.Action{{Kind: project.Update, Path: a, Content: []byte(fmt.Sprintf("beat %d\n", op)), Guard: last[a]}}
			if b != a {
				actions = append(actions, project.Action{Kind: project.Update, Path: b, Content: []byte(fmt.Sprintf("beat %d b\n", op)), Guard: last[b]})
			}
			res, err := p.Commit(ctx, fmt.Sprintf("heartbeat %d [skip ci]", op), actions)
			if err != nil {
				t.Fatalf("op %d update: %v", op, err)
			}
			for _, a := range actions {
				files[a.Path], last[a.Path] = a.Content, res.ID
			}
			commits++
		case k < 7: // read
			name := names[rng.IntN(len(names))]
			f, err := p.ReadFile(ctx, name)
			if err != nil {
				t.Fatalf("op %d read: %v", op, err)
			}
			if !bytes.Equal(f.Content, files[name]) || f.Guard != last[name] {
				t.Fatalf("op %d read %s: %q at %s, want %q at %s", op, name, f.Content, f.Guard, files[name], last[name])
			}
		case k < 8: // stat, and a missing file
			name := names[rng.IntN(len(names))]
			st, err := p.StatFile(ctx, name)
			if err != nil || st.Guard != last[name] {
				t.Fatalf("op %d stat %s: %+v, %v", op, name, st, err)
			}
			if _, err := p.StatFile(ctx, name+".missing"); !errors.Is(err, project.ErrNotFound) {
				t.Fatalf("op %d stat missing: %v", op, err)
			}
		case k < 9: // LFS put
			src := filepath.Join(dir, fmt.Sprintf("obj%d", op))
			data := make([]byte, 64<<10+rng.IntN(64<<10))
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			os.WriteFile(src, data, 0o644)
			ptr, err := p.PutLFS(ctx, src)
			if err != nil {
				t.Fatalf("op %d put lfs: %v", op, err)
			}
			if stored, ok := s.LFSObject(ptr.OID); !ok || !bytes.Equal(stored, data) {
				t.Fatalf("op %d: stored object differs", op)
			}
			pointers = append(pointers, ptr)
		default: // LFS get (or a tree listing before the first put)
			if len(pointers) == 0 {
				tree, err := p.ListTree(ctx, "gpu_jobs")
				if err != nil || len(tree) != len(names) {
					t.Fatalf("op %d tree: %d entries, %v", op, len(tree), err)
				}
				continue
			}
			ptr := pointers[rng.IntN(len(pointers))]
			dst := filepath.Join(dir, fmt.Sprintf("get%d", op))
			if err := p.GetLFS(ctx, ptr, dst); err != nil {
				t.Fatalf("op %d get lfs: %v", op, err)
			}
			if got, err := project.HashFile(dst); err != nil || got != ptr {
				t.Fatalf("op %d get lfs: %+v, %v", op, got, err)
			}
		}
	}
	s.ClearFaults()

	for name, want := range files {
		got, ok := s.ReadFile(testProject, name)
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("%s: server has %q, want %q", name, got, want)
		}
	}
	history := s.Commits(testProject)
	seen := map[string]bool{}
	for _, c := range history {
		_, mark, ok := strings.Cut(c.Message, trailerKey)
		if !ok {
			t.Fatalf("commit %s lacks its mark: %q", c.ID, c.Message)
		}
		if seen[mark] {
			t.Fatalf("commit %q applied twice", c.Message)
		}
		seen[mark] = true
	}
	if len(history) != commits {
		t.Fatalf("history has %d commits, made %d", len(history), commits)
	}
	if fired, total := s.FaultsFired(), s.TotalRequests(); fired*100 < total*6 {
		t.Fatalf("only %d of %d requests failed; the test needs about 10%%", fired, total)
	}
	t.Logf("%d requests, %d failed, %d commits, %d ambiguous-and-checked (GET commits)", s.TotalRequests(), s.FaultsFired(), commits, s.RequestCount("GET commits"))
}

// TestCommitNotResentAfterApplyThenFail pins the ambiguous case down: the
// first answer is lost after the commit landed; the client must find it
// instead of sending it again.
func TestCommitNotResentAfterApplyThenFail(t *testing.T) {
	for _, drop := range []bool{false, true} {
		t.Run(fmt.Sprintf("drop=%v", drop), func(t *testing.T) {
			s, _, p := emulated(t, gitlabtest.DefaultToken)
			s.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Nth: 1, ApplyThenFail: true, Drop: drop})
			res, err := p.Commit(context.Background(), "claim", []project.Action{{Kind: project.Create, Path: "a.yaml", Content: []byte("x")}})
			if err != nil {
				t.Fatal(err)
			}
			h := s.Commits(testProject)
			if len(h) != 1 || h[0].ID != res.ID {
				t.Fatalf("history %+v, result %s", h, res.ID)
			}
			if n := s.RequestCount("POST commits"); n != 1 {
				t.Fatalf("commit sent %d times", n)
			}
		})
	}
}

// TestCommitResentWhenLost: a commit that failed before being applied is
// sent again once the history shows it did not land.
func TestCommitResentWhenLost(t *testing.T) {
	s, _, p := emulated(t, gitlabtest.DefaultToken)
	s.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Nth: 1, Status: 502})
	if _, err := p.Commit(context.Background(), "claim", []project.Action{{Kind: project.Create, Path: "a.yaml", Content: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if n, h := s.RequestCount("POST commits"), s.Commits(testProject); n != 2 || len(h) != 1 || s.RequestCount("GET commits") != 1 {
		t.Fatalf("%d posts, %d commits, %d checks", n, len(h), s.RequestCount("GET commits"))
	}
}

// TestBranchMovedRetried: GitLab's ref-update race leaves nothing applied,
// so the client sends the commit again.
func TestBranchMovedRetried(t *testing.T) {
	s, _, p := emulated(t, gitlabtest.DefaultToken)
	s.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Nth: 1, Status: 400})
	if _, err := p.Commit(context.Background(), "claim", []project.Action{{Kind: project.Create, Path: "a.yaml", Content: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if n := s.RequestCount("POST commits"); n != 2 {
		t.Fatalf("commit sent %d times, want 2", n)
	}
	// Always moving: the conflict surfaces as BranchMoved.
	s.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Rate: 1, Status: 400})
	_, err := p.Commit(context.Background(), "beat", []project.Action{{Kind: project.Update, Path: "a.yaml", Content: []byte("y")}})
	if !project.IsConflict(err, project.BranchMoved) {
		t.Fatalf("got %v, want BranchMoved", err)
	}
}

// TestRetryAfterHonoured: a 429 with Retry-After: 1 delays the retry by a second.
func TestRetryAfterHonoured(t *testing.T) {
	s, _, p := emulated(t, gitlabtest.DefaultToken)
	s.UserCommit(t, testProject, "seed", map[string][]byte{"a": []byte("x")})
	s.InjectFault(gitlabtest.Fault{Endpoint: "GET files", Nth: 1, Status: 429, RetryAfter: time.Second})
	start := time.Now()
	if _, err := p.ReadFile(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("retried after %v, server asked for 1s", waited)
	}
	if n := s.RequestCount("GET files"); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
}

// TestDownloadResumes: a dropped download continues from where it broke.
func TestDownloadResumes(t *testing.T) {
	s, _, p := emulated(t, gitlabtest.DefaultToken)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	ptr := s.PutLFSObject(data)
	s.InjectFault(gitlabtest.Fault{Endpoint: "GET lfs object", Nth: 1, Drop: true})
	s.InjectFault(gitlabtest.Fault{Endpoint: "GET lfs object", Nth: 2, CutAfter: 300_000})
	s.InjectFault(gitlabtest.Fault{Endpoint: "GET lfs object", Nth: 3, CutAfter: 500_000})
	dst := filepath.Join(t.TempDir(), "x")
	if err := p.GetLFS(context.Background(), ptr, dst); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, data) || s.RequestCount("GET lfs object") != 4 {
		t.Fatalf("%d bytes after %d requests", len(got), s.RequestCount("GET lfs object"))
	}
}

// TestCommitTimeouts: a commit whose answer never arrives in time is looked
// up, not resent; one the server dropped with the client is reported failed.
func TestCommitTimeouts(t *testing.T) {
	t.Run("request timeout, commit landed", func(t *testing.T) {
		s := gitlabtest.New(t)
		s.CreateProject(testProject)
		c, _ := New(Config{BaseURL: s.URL(), Token: gitlabtest.DefaultToken, Logger: quietLogger(),
			HTTPClient: &http.Client{Timeout: 200 * time.Millisecond}, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
		p, err := c.Project(context.Background(), testProject)
		if err != nil {
			t.Fatal(err)
		}
		s.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Nth: 1, ApplyThenFail: true, Latency: time.Second})
		res, err := p.Commit(context.Background(), "claim", []project.Action{{Kind: project.Create, Path: "a", Content: []byte("x")}})
		if err != nil {
			t.Fatal(err)
		}
		if h := s.Commits(testProject); len(h) != 1 || h[0].ID != res.ID || s.RequestCount("POST commits") != 1 {
			t.Fatalf("%d commits, %d posts", len(h), s.RequestCount("POST commits"))
		}
	})
	t.Run("caller gives up, commit landed", func(t *testing.T) {
		s, _, p := emulated(t, gitlabtest.DefaultToken)
		s.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Nth: 1, ApplyThenFail: true, Latency: time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		res, err := p.Commit(ctx, "claim", []project.Action{{Kind: project.Create, Path: "a", Content: []byte("x")}})
		if err != nil {
			t.Fatalf("landed commit reported as %v", err)
		}
		if h := s.Commits(testProject); len(h) != 1 || h[0].ID != res.ID {
			t.Fatalf("history %+v", h)
		}
	})
	t.Run("caller gives up, commit lands later", func(t *testing.T) {
		// GitLab may apply a request whose client left: the caller learns
		// that the outcome is unknown, not that nothing happened.
		s, _, p := emulated(t, gitlabtest.DefaultToken)
		s.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Nth: 1, Latency: time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		_, err := p.Commit(ctx, "claim", []project.Action{{Kind: project.Create, Path: "a", Content: []byte("x")}})
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "outcome unknown") {
			t.Fatalf("got %v, want an outcome-unknown deadline error", err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for len(s.Commits(testProject)) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the commit the caller gave up on never landed")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
