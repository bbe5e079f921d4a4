package gitlabtest

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// GitLab refreshes last_activity_at at most once an hour, so a commit made
// within an hour of the last refresh leaves it where it was.
func TestLastActivityMovesAtMostHourly(t *testing.T) {
	s := New(t)
	var mu sync.Mutex
	now := time.Date(2026, 1, 25, 12, 0, 0, 0, time.UTC)
	s.SetClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s.CreateProject("g/p")
	created := s.LastActivity("g/p")
	advance(59 * time.Minute)
	s.UserCommit(t, "g/p", "edit", map[string][]byte{"a": []byte("1")})
	if got := s.LastActivity("g/p"); !got.Equal(created) {
		t.Fatalf("a commit 59 min after the last refresh moved last_activity_at to %v", got)
	}
	advance(2 * time.Minute)
	s.UserCommit(t, "g/p", "edit", map[string][]byte{"a": []byte("2")})
	if got := s.LastActivity("g/p"); !got.Equal(now) {
		t.Fatalf("a commit 61 min after the last refresh: last_activity_at %v, want %v", got, now)
	}
	resp, body := s.call(t, call{"GET", "/api/v4/projects/1", DefaultToken, nil, false})
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"last_activity_at":"2026-01-25T13:01:00Z"`) {
		t.Fatalf("project JSON %s", body)
	}
}

// A request whose client gave up during the latency is still applied.
func TestLatencyAppliesWhenClientGivesUp(t *testing.T) {
	s := New(t)
	s.CreateProject("g/p")
	s.InjectFault(Fault{Endpoint: "POST commits", Nth: 1, Latency: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", s.URL()+commitsPath,
		strings.NewReader(`{"branch":"main","commit_message":"m","actions":[{"action":"create","file_path":"x","content":"x"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("PRIVATE-TOKEN", DefaultToken)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the client got an answer (%d) before it gave up", resp.StatusCode)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, ok := s.ReadFile("g/p", "x"); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the request the client gave up on never applied")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LandLate: the request fails at once, nothing shows until the next request
// to the endpoint, which finds it applied.
func TestLandLate(t *testing.T) {
	s := New(t)
	s.CreateProject("g/p")
	s.InjectFault(Fault{Endpoint: "POST commits", Nth: 1, LandLate: true})
	create := commitBody("m", map[string]any{"action": "create", "file_path": "x", "content": "x"})
	resp, _ := s.call(t, call{"POST", commitsPath, DefaultToken, create, false})
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("first answer %d, want 502", resp.StatusCode)
	}
	if _, ok := s.ReadFile("g/p", "x"); ok || len(s.Commits("g/p")) != 0 {
		t.Fatal("landed before the next request")
	}
	resp, body := s.call(t, call{"POST", commitsPath, DefaultToken, create, false})
	wantAnswer(t, resp, body, 400, "A file with this name already exists")
	if len(s.Commits("g/p")) != 1 {
		t.Fatalf("%d commits", len(s.Commits("g/p")))
	}
}
