package gitlabtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"gpu-worker/project"
)

type call struct {
	method, path, token string
	body                any
	basic               bool
}

func (s *Server) call(t *testing.T, c call) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := c.body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(c.method, s.URL()+c.path, rd)
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		if c.basic {
			req.SetBasicAuth("oauth2", c.token)
		} else {
			req.Header.Set("PRIVATE-TOKEN", c.token)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}

func wantAnswer(t *testing.T, resp *http.Response, body []byte, status int, text string) {
	t.Helper()
	if resp.StatusCode != status || !strings.Contains(string(body), text) {
		t.Fatalf("got %d %s, want %d with %q", resp.StatusCode, body, status, text)
	}
}

func commitBody(message string, actions ...map[string]any) map[string]any {
	return map[string]any{"branch": "main", "commit_message": message, "actions": actions}
}

const commitsPath = "/api/v4/projects/g%2Fp/repository/commits"

func TestCommitMessages(t *testing.T) {
	s := New(t)
	s.CreateProject("g/p")
	first := s.UserCommit(t, "g/p", "seed", map[string][]byte{"a.txt": []byte("a")})
	s.UserCommit(t, "g/p", "bump", map[string][]byte{"a.txt": []byte("b")})

	resp, body := s.call(t, call{"POST", commitsPath, DefaultToken, commitBody("dup", map[string]any{"action": "create", "file_path": "a.txt", "content": "x"}), false})
	wantAnswer(t, resp, body, 400, `{"message":"A file with this name already exists"}`)

	resp, body = s.call(t, call{"POST", commitsPath, DefaultToken, commitBody("stale",
		map[string]any{"action": "create", "file_path": "new.txt", "content": "n"},
		map[string]any{"action": "update", "file_path": "a.txt", "content": "c", "last_commit_id": first}), false})
	wantAnswer(t, resp, body, 400, `{"message":"The file has changed since you started editing it: a.txt"}`)
	if _, ok := s.ReadFile("g/p", "new.txt"); ok {
		t.Fatal("failed commit left new.txt behind")
	}

	resp, body = s.call(t, call{"POST", commitsPath, DefaultToken, commitBody("gone", map[string]any{"action": "delete", "file_path": "nope"}), false})
	wantAnswer(t, resp, body, 400, `{"message":"A file with this name doesn't exist"}`)

	s.InjectFault(Fault{Endpoint: "POST commits", Nth: 1, Status: 400})
	resp, body = s.call(t, call{"POST", commitsPath, DefaultToken, commitBody("race", map[string]any{"action": "create", "file_path": "r.txt", "content": "r"}), false})
	wantAnswer(t, resp, body, 400, `{"message":"Could not update refs/heads/main. Please refresh and try again."}`)

	resp, body = s.call(t, call{"POST", commitsPath, DefaultToken, commitBody("ok",
		map[string]any{"action": "create", "file_path": "bin", "content": base64.StdEncoding.EncodeToString([]byte{0, 1, 255}), "encoding": "base64"},
		map[string]any{"action": "move", "file_path": "moved.txt", "previous_path": "a.txt"}), false})
	wantAnswer(t, resp, body, 201, `"id":"`)
	if b, _ := s.ReadFile("g/p", "bin"); !bytes.Equal(b, []byte{0, 1, 255}) {
		t.Fatalf("base64 content stored as %v", b)
	}
	if b, _ := s.ReadFile("g/p", "moved.txt"); string(b) != "b" {
		t.Fatalf("moved content %q", b)
	}
	h := s.Commits("g/p")
	last := h[len(h)-1]
	if len(h) != 3 || last.Message != "ok" || len(last.Actions) != 2 || last.Actions[1] != (CommitAction{Kind: "move", Path: "moved.txt", PreviousPath: "a.txt"}) {
		t.Fatalf("history %+v", h)
	}
}

func TestFilesAPI(t *testing.T) {
	s := New(t)
	s.CreateProject("g/p")
	id := s.UserCommit(t, "g/p", "seed", map[string][]byte{"dir/a b.txt": []byte("hello")})
	file := "/api/v4/projects/1/repository/files/" + url.PathEscape("dir/a b.txt")

	resp, body := s.call(t, call{"GET", file + "?ref=main", DefaultToken, nil, false})
	var f map[string]any
	json.Unmarshal(body, &f)
	if resp.StatusCode != 200 || f["content"] != base64.StdEncoding.EncodeToString([]byte("hello")) ||
		f["last_commit_id"] != id || f["blob_id"] != "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0" {
		t.Fatalf("GET %d %s", resp.StatusCode, body)
	}
	resp, _ = s.call(t, call{"HEAD", file + "?ref=main", DefaultToken, nil, false})
	if resp.Header.Get("X-Gitlab-Blob-Id") != f["blob_id"] || resp.Header.Get("X-Gitlab-Last-Commit-Id") != id || resp.Header.Get("X-Gitlab-Size") != "5" {
		t.Fatalf("HEAD headers %v", resp.Header)
	}
	resp, body = s.call(t, call{"GET", "/api/v4/projects/1/repository/files/nope?ref=main", DefaultToken, nil, false})
	wantAnswer(t, resp, body, 404, `{"message":"404 File Not Found"}`)
	resp, body = s.call(t, call{"GET", "/api/v4/projects/9/repository/files/nope?ref=main", DefaultToken, nil, false})
	wantAnswer(t, resp, body, 404, `{"message":"404 Project Not Found"}`)

	resp, body = s.call(t, call{"POST", file, DefaultToken, map[string]any{"branch": "main", "commit_message": "m", "content": "x"}, false})
	wantAnswer(t, resp, body, 400, "A file with this name already exists")
	resp, body = s.call(t, call{"PUT", file, DefaultToken, map[string]any{"branch": "main", "commit_message": "m", "content": "x", "last_commit_id": strings.Repeat("0", 40)}, false})
	wantAnswer(t, resp, body, 400, "You are attempting to update a file that has changed since you started editing it.")
	resp, body = s.call(t, call{"PUT", file, DefaultToken, map[string]any{"branch": "main", "commit_message": "m", "content": "x", "last_commit_id": id}, false})
	wantAnswer(t, resp, body, 200, `"file_path":"dir/a b.txt"`)
	resp, _ = s.call(t, call{"DELETE", file, DefaultToken, map[string]any{"branch": "main", "commit_message": "m"}, false})
	if _, ok := s.ReadFile("g/p", "dir/a b.txt"); resp.StatusCode != 204 || ok {
		t.Fatalf("DELETE %d, file still there: %v", resp.StatusCode, ok)
	}
}

func TestAuth(t *testing.T) {
	s := New(t)
	s.CreateProject("g/p")
	s.AddToken("reader", "read_api")
	resp, body := s.call(t, call{"GET", "/api/v4/projects/1", "", nil, false})
	wantAnswer(t, resp, body, 401, `{"message":"401 Unauthorized"}`)
	resp, body = s.call(t, call{"GET", "/api/v4/projects/1", "wrong", nil, false})
	wantAnswer(t, resp, body, 401, `{"message":"401 Unauthorized"}`)
	resp, _ = s.call(t, call{"GET", "/api/v4/projects/g%2Fp", "reader", nil, false})
	if resp.StatusCode != 200 {
		t.Fatalf("read with read_api: %d", resp.StatusCode)
	}
	resp, body = s.call(t, call{"POST", commitsPath, "reader", commitBody("m", map[string]any{"action": "create", "file_path": "x", "content": "x"}), false})
	wantAnswer(t, resp, body, 403, "insufficient_scope")
	// Bearer works like PRIVATE-TOKEN.
	req, _ := http.NewRequest("GET", s.URL()+"/api/v4/projects/1", nil)
	req.Header.Set("Authorization", "Bearer "+DefaultToken)
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != 200 {
		t.Fatalf("bearer: %v %v", r, err)
	}
	// LFS wants Basic auth; the API header does not count there.
	batch := map[string]any{"operation": "download", "objects": []map[string]any{}}
	resp, _ = s.call(t, call{"POST", "/g/p.git/info/lfs/objects/batch", DefaultToken, batch, false})
	if resp.StatusCode != 401 {
		t.Fatalf("LFS with PRIVATE-TOKEN: %d", resp.StatusCode)
	}
	batch["operation"] = "upload"
	resp, _ = s.call(t, call{"POST", "/g/p.git/info/lfs/objects/batch", "reader", batch, true})
	if resp.StatusCode != 403 {
		t.Fatalf("LFS upload with read_api: %d", resp.StatusCode)
	}
}

func TestPagination(t *testing.T) {
	s := New(t)
	for i := range 5 {
		s.CreateProject(fmt.Sprintf("g/p%d", i))
	}
	files := map[string][]byte{}
	for i := range 130 {
		files[fmt.Sprintf("d/f%03d", i)] = []byte{byte(i)}
	}
	s.UserCommit(t, "g/p0", "many", files)

	resp, body := s.call(t, call{"GET", "/api/v4/projects?membership=true&per_page=2&page=2", DefaultToken, nil, false})
	var ps []map[string]any
	json.Unmarshal(body, &ps)
	h := resp.Header
	if len(ps) != 2 || ps[0]["path_with_namespace"] != "g/p2" || h.Get("X-Next-Page") != "3" || h.Get("X-Total") != "5" || h.Get("X-Page") != "2" {
		t.Fatalf("page 2: %s %v", body, h)
	}
	resp, _ = s.call(t, call{"GET", "/api/v4/projects?per_page=2&page=3", DefaultToken, nil, false})
	if _, ok := resp.Header["X-Next-Page"]; !ok || resp.Header.Get("X-Next-Page") != "" {
		t.Fatalf("last page X-Next-Page %q", resp.Header.Get("X-Next-Page"))
	}

	resp, body = s.call(t, call{"GET", "/api/v4/projects/1/repository/tree?recursive=true&per_page=500&path=d", DefaultToken, nil, false})
	var tree []map[string]any
	json.Unmarshal(body, &tree)
	if len(tree) != 100 || resp.Header.Get("X-Next-Page") != "2" || resp.Header.Get("X-Total") != "130" {
		t.Fatalf("tree page 1: %d entries, %v", len(tree), resp.Header)
	}
	resp, body = s.call(t, call{"GET", "/api/v4/projects/1/repository/tree?recursive=true&per_page=100&page=2&path=d", DefaultToken, nil, false})
	json.Unmarshal(body, &tree)
	if len(tree) != 30 || resp.Header.Get("X-Next-Page") != "" {
		t.Fatalf("tree page 2: %d entries", len(tree))
	}
	resp, body = s.call(t, call{"GET", "/api/v4/projects/1/repository/tree?path=nope", DefaultToken, nil, false})
	wantAnswer(t, resp, body, 404, "404 Tree Not Found")

	old := time.Now().Add(-48 * time.Hour)
	for _, p := range s.projects[1:] {
		p.SetLastActivity(old)
	}
	after := url.QueryEscape(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
	_, body = s.call(t, call{"GET", "/api/v4/projects?last_activity_after=" + after, DefaultToken, nil, false})
	json.Unmarshal(body, &ps)
	if len(ps) != 1 || ps[0]["path_with_namespace"] != "g/p0" {
		t.Fatalf("active projects: %s", body)
	}
}

func TestLFSTransformer(t *testing.T) {
	s := New(t)
	s.CreateProject("g/p")
	s.UserCommit(t, "g/p", "attrs", map[string][]byte{".gitattributes": []byte("*.wav filter=lfs diff=lfs merge=lfs -text\nmodels/** filter=lfs\n")})
	audio := []byte("RIFF....WAVEfmt ")
	ptr := project.Pointer{OID: hex.EncodeToString(sha256.New().Sum(nil)), Size: 0}
	resp, body := s.call(t, call{"POST", commitsPath, DefaultToken, commitBody("add",
		map[string]any{"action": "create", "file_path": "a/x.wav", "content": string(audio)},
		map[string]any{"action": "create", "file_path": "a/y.wav", "content": ptr.String()},
		map[string]any{"action": "create", "file_path": "a/tmp", "content": ptr.String()},
		map[string]any{"action": "move", "file_path": "a/z.wav", "previous_path": "a/tmp"},
		map[string]any{"action": "create", "file_path": "models/m.pt", "content": "weights"},
		map[string]any{"action": "create", "file_path": "a/x.txt", "content": "plain"}), false})
	if resp.StatusCode != 201 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	stored := func(name string) []byte {
		b, _ := s.ReadFile("g/p", name)
		p, err := project.ParsePointer(b)
		if err != nil {
			t.Fatalf("%s not a pointer: %q", name, b)
		}
		obj, ok := s.LFSObject(p.OID)
		if !ok {
			t.Fatalf("%s: object missing", name)
		}
		return obj
	}
	if !bytes.Equal(stored("a/x.wav"), audio) || string(stored("models/m.pt")) != "weights" {
		t.Fatal("raw content not turned into an LFS object")
	}
	if string(stored("a/y.wav")) != ptr.String() {
		t.Fatal("pointer created on a tracked path was not wrapped again")
	}
	if b, _ := s.ReadFile("g/p", "a/z.wav"); string(b) != ptr.String() {
		t.Fatalf("moved pointer changed: %q", b)
	}
	if b, _ := s.ReadFile("g/p", "a/x.txt"); string(b) != "plain" {
		t.Fatalf("untracked file changed: %q", b)
	}
	resp, body = s.call(t, call{"GET", "/api/v4/projects/1/repository/files/a%2Fx.wav/raw?ref=main&lfs=true", DefaultToken, nil, false})
	if resp.StatusCode != 200 || !bytes.Equal(body, audio) {
		t.Fatalf("raw lfs=true: %d %q", resp.StatusCode, body)
	}
}

func TestLFSBatch(t *testing.T) {
	s := New(t)
	s.CreateProject("g/p")
	have := s.PutLFSObject([]byte("stored"))
	content := []byte("new object")
	sum := sha256.Sum256(content)
	fresh := project.Pointer{OID: hex.EncodeToString(sum[:]), Size: int64(len(content))}
	batch := func(op string, p project.Pointer) map[string]any {
		resp, body := s.call(t, call{"POST", "/g/p.git/info/lfs/objects/batch", DefaultToken,
			map[string]any{"operation": op, "transfers": []string{"basic"}, "objects": []map[string]any{{"oid": p.OID, "size": p.Size}}}, true})
		if resp.StatusCode != 200 {
			t.Fatalf("batch %d %s", resp.StatusCode, body)
		}
		var out struct{ Objects []map[string]any }
		json.Unmarshal(body, &out)
		return out.Objects[0]
	}
	if o := batch("upload", have); o["actions"] != nil {
		t.Fatalf("stored object got actions: %v", o)
	}
	o := batch("upload", fresh)
	up := o["actions"].(map[string]any)["upload"].(map[string]any)
	hdr := up["header"].(map[string]any)
	if hdr["Transfer-Encoding"] != "chunked" {
		t.Fatalf("upload header %v", hdr)
	}
	if e := batch("download", fresh)["error"].(map[string]any); e["code"] != float64(404) {
		t.Fatalf("missing object error %v", e)
	}
	href := strings.TrimPrefix(up["href"].(string), s.URL())
	resp, _ := s.call(t, call{"PUT", href, DefaultToken, []byte("wrong bytes!"), true})
	if resp.StatusCode != 422 {
		t.Fatalf("bad upload accepted: %d", resp.StatusCode)
	}
	resp, _ = s.call(t, call{"PUT", href, DefaultToken, content, true})
	if got, ok := s.LFSObject(fresh.OID); resp.StatusCode != 200 || !ok || !bytes.Equal(got, content) {
		t.Fatalf("upload %d, stored %q", resp.StatusCode, got)
	}
	dl := batch("download", fresh)["actions"].(map[string]any)["download"].(map[string]any)
	resp, body := s.call(t, call{"GET", strings.TrimPrefix(dl["href"].(string), s.URL()), DefaultToken, nil, true})
	if resp.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Fatalf("download %d %q", resp.StatusCode, body)
	}
	s.CorruptLFSObject(fresh.OID)
	if got, _ := s.LFSObject(fresh.OID); bytes.Equal(got, content) {
		t.Fatal("corruption changed nothing")
	}
}

func TestFaults(t *testing.T) {
	s := New(t)
	s.CreateProject("g/p")
	s.InjectFault(Fault{Endpoint: "GET project", Nth: 2, Status: 503, RetryAfter: 2 * time.Second})
	codes := []int{}
	for range 3 {
		resp, _ := s.call(t, call{"GET", "/api/v4/projects/1", DefaultToken, nil, false})
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "2" {
			t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
		}
	}
	if fmt.Sprint(codes) != "[200 503 200]" {
		t.Fatalf("codes %v", codes)
	}
	s.InjectFault(Fault{Endpoint: "POST commits", Nth: 1, ApplyThenFail: true})
	resp, _ := s.call(t, call{"POST", commitsPath, DefaultToken, commitBody("m", map[string]any{"action": "create", "file_path": "x", "content": "x"}), false})
	if _, ok := s.ReadFile("g/p", "x"); resp.StatusCode != 502 || !ok {
		t.Fatalf("apply-then-fail: %d, applied %v", resp.StatusCode, ok)
	}
	s.InjectFault(Fault{Endpoint: "GET tree", Rate: 1, Drop: true})
	if _, err := http.Get(s.URL() + "/api/v4/projects/1/repository/tree"); err == nil {
		t.Fatal("dropped request got an answer")
	}
	if s.RequestCount("GET project") != 3 || s.RequestCount("POST commits") != 1 || s.FaultsFired() != 2+s.RequestCount("GET tree") {
		t.Fatalf("counts: %d %d %d", s.RequestCount("GET project"), s.RequestCount("POST commits"), s.FaultsFired())
	}
	s.ResetCounts()
	if s.TotalRequests() != 0 {
		t.Fatal("counts not reset")
	}
}
