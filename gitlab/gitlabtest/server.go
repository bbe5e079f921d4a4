// Package gitlabtest is a GitLab emulator for tests: a real HTTP server
// speaking the subset of REST v4 and Git LFS the worker uses, with GitLab's
// status codes and messages, token scopes, request counting and fault
// injection.
//
//	s := gitlabtest.New(t)                      // token gitlabtest.DefaultToken, scope api
//	s.CreateProject("team/bible")               // default branch main
//	s.UserCommit(t, "team/bible", "edit", map[string][]byte{"a.codex": b})
//	s.InjectFault(gitlabtest.Fault{Endpoint: "POST commits", Nth: 1, ApplyThenFail: true})
//
// Served: GET /api/v4/projects and /projects/:id (id or encoded path);
// GET/HEAD/POST/PUT/DELETE …/repository/files/:path and GET …/raw
// (lfs=true); POST and GET …/repository/commits (atomic multi-action
// commits: create, update, delete, move, chmod; text or base64;
// last_commit_id guards); GET …/repository/tree; and Git LFS: POST
// <path>.git/info/lfs/objects/batch, PUT/GET of the returned hrefs (Basic
// auth, token as password; GET honours Range). Creates on paths that the
// root .gitattributes marks filter=lfs store their content as an LFS object
// and commit a pointer, as GitLab does (pointer text gets wrapped again).
// Pagination headers (X-Page, X-Per-Page, X-Total, X-Total-Pages,
// X-Next-Page, X-Prev-Page) follow GitLab's, per_page at most 100.
// last_activity_at moves with a commit only when it is an hour old or more,
// as on GitLab; SetClock drives the emulator's time.
package gitlabtest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultToken is accepted by every new Server with the api scope.
const DefaultToken = "test-token"

// Server is a running emulator.
type Server struct {
	ts     *httptest.Server
	lfsDir string

	// mu guards everything below; holding it for a whole commit serialises
	// commits the way Gitaly's ref lock does.
	mu        sync.Mutex
	tokens    map[string][]string
	projects  []*Project
	byPath    map[string]*Project
	commitSeq int
	counts    map[string]int
	total     int
	faults    []*faultState
	fired     int
	late      map[string][]*http.Request // held by a LandLate fault, by endpoint
	now       func() time.Time

	quit chan struct{} // closed when the test ends: slow requests give up
}

// New starts an emulator; it is closed when the test ends.
func New(t testing.TB) *Server {
	s := &Server{
		lfsDir: t.TempDir(),
		tokens: map[string][]string{DefaultToken: {"api"}},
		byPath: map[string]*Project{},
		counts: map[string]int{},
		late:   map[string][]*http.Request{},
		now:    time.Now,
		quit:   make(chan struct{}),
	}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		close(s.quit)
		s.ts.Close()
	})
	return s
}

// SetClock replaces the emulator's clock (commit times, last_activity_at).
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

func (s *Server) nowLocked() time.Time { return s.now().UTC() }

// URL is the server's base URL (no trailing slash, no /api/v4).
func (s *Server) URL() string { return s.ts.URL }

// AddToken registers a token with scopes ("api", "read_api",
// "read_repository", "write_repository"); none means "api".
func (s *Server) AddToken(token string, scopes ...string) {
	if len(scopes) == 0 {
		scopes = []string{"api"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = scopes
}

// RequestCount is the number of requests seen for an endpoint name such as
// "GET files", "HEAD files", "GET raw", "POST commits", "GET commits",
// "GET tree", "GET projects", "GET project", "POST files", "PUT files",
// "DELETE files", "POST lfs batch", "PUT lfs object", "GET lfs object".
func (s *Server) RequestCount(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[endpoint]
}

// TotalRequests counts every request since start or the last ResetCounts.
func (s *Server) TotalRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// ResetCounts zeroes the request counters.
func (s *Server) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts = map[string]int{}
	s.total = 0
}

// Fault makes matching requests fail. Endpoint uses RequestCount's names
// ("" matches any). Nth > 0 fails only the Nth matching request (counted
// from when the fault was added); otherwise Rate is the probability.
type Fault struct {
	Endpoint   string
	Nth        int
	Rate       float64
	Status     int // 500, 502, 503, 429; 400 on "POST commits" answers GitLab's branch-moved error (refs/heads/main)
	RetryAfter time.Duration
	Latency    time.Duration
	// Drop hijacks the connection and closes it without an answer.
	Drop bool
	// CutAfter sends this many bytes of the answer's body, then closes the
	// connection (a download broken midway).
	CutAfter int
	// ApplyThenFail performs the request, waits Latency, then answers
	// Status (502 if unset) or drops: the ambiguous case a client must
	// resolve by re-reading. Without it, Latency delays the request before
	// it is handled — and it is handled even when the client gave up
	// meanwhile, since GitLab promises nothing else.
	ApplyThenFail bool
	// LandLate answers Status (502 if unset) at once and applies the request
	// later: just before the next request to the same endpoint is handled.
	// A client checking whether its request landed sees nothing yet.
	LandLate bool
}

type faultState struct {
	Fault
	seen int
}

// InjectFault adds a fault; several may be active.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &faultState{Fault: f})
}

// FaultsFired counts requests a fault has hit since the server started.
func (s *Server) FaultsFired() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fired
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// pickFault returns the fault that hits this request, if any.
func (s *Server) pickFault(endpoint string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	var hit *Fault
	for _, f := range s.faults {
		if f.Endpoint != "" && f.Endpoint != endpoint {
			continue
		}
		f.seen++
		fires := false
		if f.Nth > 0 {
			fires = f.seen == f.Nth
		} else {
			fires = rand.Float64() < f.Rate
		}
		if fires && hit == nil {
			s.fired++
			c := f.Fault
			hit = &c
		}
	}
	return hit
}

// failNow answers a request with the fault (not used for ApplyThenFail).
func failNow(w http.ResponseWriter, f *Fault, endpoint string) {
	if f.Drop {
		dropConn(w)
		return
	}
	status := f.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if status == http.StatusBadRequest && endpoint == "POST commits" {
		writeMessage(w, status, "Could not update refs/heads/main. Please refresh and try again.")
		return
	}
	if f.RetryAfter > 0 {
		secs := int((f.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	if status == http.StatusTooManyRequests {
		w.Header().Set("RateLimit-Remaining", "0")
		writeText(w, status, "Retry later\n")
		return
	}
	writeMessage(w, status, fmt.Sprintf("%d %s", status, http.StatusText(status)))
}

func dropConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("gitlabtest: response writer cannot hijack")
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		conn.Close()
	}
}

// cutWriter passes on the first left bytes, then kills the connection.
type cutWriter struct {
	http.ResponseWriter
	left int
}

func (c *cutWriter) Write(b []byte) (int, error) {
	if c.left <= 0 {
		return 0, errCut
	}
	n := min(len(b), c.left)
	n, err := c.ResponseWriter.Write(b[:n])
	c.left -= n
	if err != nil {
		return n, err
	}
	if c.left == 0 {
		http.NewResponseController(c.ResponseWriter).Flush()
		dropConn(c.ResponseWriter)
		return n, errCut
	}
	return n, nil
}

var errCut = errors.New("gitlabtest: connection cut")

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeMessage(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg})
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	w.Write([]byte(msg))
}

// access is what a request may do.
type access int

const (
	readAPI access = iota
	writeAPI
	lfsRead
	lfsWrite
)

func allows(scopes []string, need access) bool {
	for _, sc := range scopes {
		switch {
		case sc == "api":
			return true
		case sc == "read_api" && need == readAPI:
			return true
		case sc == "read_repository" && (need == readAPI || need == lfsRead):
			return true
		case sc == "write_repository" && (need == lfsRead || need == lfsWrite):
			return true
		}
	}
	return false
}

// token finds the caller's token: PRIVATE-TOKEN, Bearer, or (LFS) Basic.
func requestToken(r *http.Request, lfs bool) string {
	if lfs {
		if _, pass, ok := r.BasicAuth(); ok {
			return pass
		}
		return ""
	}
	if t := r.Header.Get("PRIVATE-TOKEN"); t != "" {
		return t
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return t
	}
	return ""
}

// authorize answers 401/403 itself and reports whether to go on.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, need access) bool {
	lfs := need == lfsRead || need == lfsWrite
	tok := requestToken(r, lfs)
	s.mu.Lock()
	scopes, known := s.tokens[tok]
	s.mu.Unlock()
	if tok == "" || !known {
		if lfs {
			w.Header().Set("LFS-Authenticate", `Basic realm="GitLab"`)
			w.Header().Set("Content-Type", "application/vnd.git-lfs+json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"message":"Access forbidden. Check your access level.","documentation_url":""}`))
			return false
		}
		writeMessage(w, http.StatusUnauthorized, "401 Unauthorized")
		return false
	}
	if !allows(scopes, need) {
		if lfs {
			w.Header().Set("Content-Type", "application/vnd.git-lfs+json")
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"message":"Access forbidden. Check your access level.","documentation_url":""}`))
			return false
		}
		writeJSON(w, http.StatusForbidden, map[string]string{
			"error":             "insufficient_scope",
			"error_description": "The request requires higher privileges than provided by the access token.",
			"scope":             "api",
		})
		return false
	}
	return true
}

func basicHeader(token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("oauth2:"+token))
}

func (s *Server) objectPath(oid string) string {
	return filepath.Join(s.lfsDir, oid)
}

// LFSObject returns a stored LFS object's bytes.
func (s *Server) LFSObject(oid string) ([]byte, bool) {
	if !validOID(oid) {
		return nil, false
	}
	b, err := os.ReadFile(s.objectPath(oid))
	return b, err == nil
}

// DeleteLFSObject removes a stored object (benchmarks re-upload with it).
func (s *Server) DeleteLFSObject(oid string) {
	if validOID(oid) {
		os.Remove(s.objectPath(oid))
	}
}

// CorruptLFSObject flips a byte of a stored object (or, for an empty one,
// adds a byte) so that it no longer matches its oid.
func (s *Server) CorruptLFSObject(oid string) {
	b, ok := s.LFSObject(oid)
	if !ok {
		panic("gitlabtest: no LFS object " + oid)
	}
	if len(b) == 0 {
		b = []byte{0}
	} else {
		b[len(b)/2] ^= 0xff
	}
	if err := os.WriteFile(s.objectPath(oid), b, 0o644); err != nil {
		panic(err)
	}
}
