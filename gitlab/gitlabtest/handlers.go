package gitlabtest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"gpu-worker/project"
)

// route names a request's endpoint and the pieces of its path.
type route struct {
	endpoint string
	project  string // escaped id or path
	file     string // unescaped file path
	oid      string
	size     string
	lfs      bool
}

func parseRoute(r *http.Request) (route, bool) {
	raw := r.URL.EscapedPath()
	if rest, ok := strings.CutPrefix(raw, "/api/v4/projects"); ok {
		if rest == "" || rest == "/" {
			return route{endpoint: r.Method + " projects"}, true
		}
		parts := strings.SplitN(strings.TrimPrefix(rest, "/"), "/", 2)
		rt := route{project: parts[0]}
		if len(parts) == 1 {
			rt.endpoint = r.Method + " project"
			return rt, true
		}
		switch sub := parts[1]; {
		case sub == "repository/commits":
			rt.endpoint = r.Method + " commits"
		case sub == "repository/tree":
			rt.endpoint = r.Method + " tree"
		case strings.HasPrefix(sub, "repository/files/"):
			f := strings.TrimPrefix(sub, "repository/files/")
			rt.endpoint = r.Method + " files"
			if esc, ok := strings.CutSuffix(f, "/raw"); ok {
				f, rt.endpoint = esc, r.Method+" raw"
			}
			name, err := url.PathUnescape(f)
			if err != nil || strings.Contains(f, "/") {
				return rt, false
			}
			rt.file = name
		default:
			return rt, false
		}
		return rt, true
	}
	if proj, ok := strings.CutSuffix(raw, ".git/info/lfs/objects/batch"); ok {
		return route{endpoint: r.Method + " lfs batch", project: strings.TrimPrefix(proj, "/"), lfs: true}, true
	}
	if proj, obj, ok := strings.Cut(raw, ".git/gitlab-lfs/objects/"); ok {
		oid, size, _ := strings.Cut(obj, "/")
		return route{endpoint: r.Method + " lfs object", project: strings.TrimPrefix(proj, "/"), oid: oid, size: size, lfs: true}, true
	}
	return route{}, false
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request, rt route) {
	if rt.endpoint == "GET projects" {
		if s.authorize(w, r, readAPI) {
			s.listProjects(w, r)
		}
		return
	}
	if rt.lfs {
		s.mu.Lock()
		p := s.byPath[rt.project]
		s.mu.Unlock()
		if p == nil {
			lfsError(w, http.StatusNotFound, "Not found")
			return
		}
		switch rt.endpoint {
		case "POST lfs batch":
			s.handleBatch(w, r, p)
		case "PUT lfs object", "GET lfs object":
			s.handleObject(w, r, rt.oid, rt.size)
		default:
			lfsError(w, http.StatusNotFound, "Not found")
		}
		return
	}
	need := readAPI
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		need = writeAPI
	}
	if !s.authorize(w, r, need) {
		return
	}
	p := s.lookupProject(rt.project)
	if p == nil {
		writeMessage(w, http.StatusNotFound, "404 Project Not Found")
		return
	}
	switch rt.endpoint {
	case "GET project":
		s.mu.Lock()
		v := s.projectJSONLocked(p)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, v)
	case "GET files", "HEAD files", "GET raw":
		s.getFile(w, r, p, rt)
	case "POST files", "PUT files", "DELETE files":
		s.writeFile(w, r, p, rt)
	case "POST commits":
		s.createCommit(w, r, p)
	case "GET commits":
		s.listCommits(w, r, p)
	case "GET tree":
		s.listTree(w, r, p)
	default:
		writeMessage(w, http.StatusMethodNotAllowed, "405 Method Not Allowed")
	}
}

func (s *Server) lookupProject(escaped string) *Project {
	id, err := url.PathUnescape(escaped)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, err := strconv.Atoi(id); err == nil {
		if n >= 1 && n <= len(s.projects) {
			return s.projects[n-1]
		}
		return nil
	}
	return s.byPath[id]
}

func (s *Server) projectJSONLocked(p *Project) map[string]any {
	ns, name := path.Split(p.path)
	return map[string]any{
		"id":                  p.id,
		"name":                name,
		"path":                name,
		"path_with_namespace": p.path,
		"namespace":           map[string]any{"full_path": strings.TrimSuffix(ns, "/")},
		"default_branch":      p.defaultBranch,
		"http_url_to_repo":    s.URL() + "/" + p.path + ".git",
		"web_url":             s.URL() + "/" + p.path,
		"last_activity_at":    p.lastActivity.Format(time.RFC3339Nano),
	}
}

// paginate sets GitLab's pagination headers and returns the slice bounds.
func paginate(w http.ResponseWriter, r *http.Request, n int) (int, int) {
	q := r.URL.Query()
	per, _ := strconv.Atoi(q.Get("per_page"))
	if per < 1 {
		per = 20
	}
	per = min(per, 100)
	page, _ := strconv.Atoi(q.Get("page"))
	page = max(page, 1)
	pages := max((n+per-1)/per, 1)
	h := w.Header()
	h.Set("X-Page", strconv.Itoa(page))
	h.Set("X-Per-Page", strconv.Itoa(per))
	h.Set("X-Total", strconv.Itoa(n))
	h.Set("X-Total-Pages", strconv.Itoa(pages))
	h.Set("X-Next-Page", "")
	h.Set("X-Prev-Page", "")
	if page < pages {
		h.Set("X-Next-Page", strconv.Itoa(page+1))
	}
	if page > 1 {
		h.Set("X-Prev-Page", strconv.Itoa(page-1))
	}
	start := min((page-1)*per, n)
	return start, min(start+per, n)
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) {
	var after time.Time
	if v := r.URL.Query().Get("last_activity_after"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "last_activity_after is invalid"})
			return
		}
		after = t
	}
	s.mu.Lock()
	var all []map[string]any
	for _, p := range s.projects {
		if after.IsZero() || p.lastActivity.After(after) {
			all = append(all, s.projectJSONLocked(p))
		}
	}
	s.mu.Unlock()
	lo, hi := paginate(w, r, len(all))
	writeJSON(w, http.StatusOK, append([]map[string]any{}, all[lo:hi]...))
}

func (s *Server) refBranch(w http.ResponseWriter, p *Project, ref string) *branch {
	if ref == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "ref is missing"})
		return nil
	}
	if ref == "HEAD" {
		ref = p.defaultBranch
	}
	b := p.branches[ref]
	if b == nil {
		writeMessage(w, http.StatusNotFound, "404 Commit Not Found")
	}
	return b
}

func (s *Server) getFile(w http.ResponseWriter, r *http.Request, p *Project, rt route) {
	q := r.URL.Query()
	ref := q.Get("ref")
	if rt.endpoint == "GET raw" && ref == "" {
		ref = p.defaultBranch
	}
	s.mu.Lock()
	b := s.refBranch(w, p, ref)
	if b == nil {
		s.mu.Unlock()
		return
	}
	f, head := b.files[rt.file], b.head
	s.mu.Unlock()
	if f == nil {
		writeMessage(w, http.StatusNotFound, "404 File Not Found")
		return
	}
	sum := sha256.Sum256(f.content)
	h := w.Header()
	h.Set("X-Gitlab-Blob-Id", f.blobID)
	h.Set("X-Gitlab-Commit-Id", head)
	h.Set("X-Gitlab-Last-Commit-Id", f.lastCommit)
	h.Set("X-Gitlab-Content-Sha256", hex.EncodeToString(sum[:]))
	h.Set("X-Gitlab-Encoding", "base64")
	h.Set("X-Gitlab-File-Name", path.Base(rt.file))
	h.Set("X-Gitlab-File-Path", rt.file)
	h.Set("X-Gitlab-Ref", ref)
	h.Set("X-Gitlab-Size", strconv.Itoa(len(f.content)))
	h.Set("X-Gitlab-Execute-Filemode", strconv.FormatBool(f.executable))
	switch rt.endpoint {
	case "HEAD files":
		w.WriteHeader(http.StatusOK)
	case "GET raw":
		content := f.content
		if q.Get("lfs") == "true" {
			if ptr, err := project.ParsePointer(content); err == nil {
				if obj, ok := s.LFSObject(ptr.OID); ok {
					content = obj
				}
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(content)
	default:
		writeJSON(w, http.StatusOK, map[string]any{
			"file_name": path.Base(rt.file), "file_path": rt.file, "size": len(f.content),
			"encoding": "base64", "content": base64.StdEncoding.EncodeToString(f.content),
			"content_sha256": hex.EncodeToString(sum[:]), "ref": ref, "blob_id": f.blobID,
			"commit_id": head, "last_commit_id": f.lastCommit, "execute_filemode": f.executable,
		})
	}
}

// decodeBody reads a JSON or form body into v (GitLab accepts both).
func decodeBody(r *http.Request, v any) error {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return json.NewDecoder(r.Body).Decode(v)
	}
	if err := r.ParseForm(); err != nil {
		return err
	}
	m := map[string]string{}
	for k := range r.PostForm {
		m[k] = r.PostForm.Get(k)
	}
	b, _ := json.Marshal(m)
	return json.Unmarshal(b, v)
}

func (s *Server) writeFile(w http.ResponseWriter, r *http.Request, p *Project, rt route) {
	var req struct {
		actionReq
		Branch        string `json:"branch"`
		CommitMessage string `json:"commit_message"`
		AuthorName    string `json:"author_name"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body is invalid"})
		return
	}
	if req.Branch == "" || req.CommitMessage == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "branch is missing, commit_message is missing"})
		return
	}
	a := req.actionReq
	a.FilePath = rt.file
	a.Action = map[string]string{"POST": "create", "PUT": "update", "DELETE": "delete"}[r.Method]
	if err := a.decode(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "content is invalid"})
		return
	}
	if a.Action != "delete" && a.raw == nil {
		a.raw = []byte{}
	}
	s.mu.Lock()
	_, msg := s.applyLocked(p, req.Branch, req.CommitMessage, authorOr(req.AuthorName), []actionReq{a}, true)
	s.mu.Unlock()
	switch {
	case msg != "":
		writeMessage(w, http.StatusBadRequest, msg)
	case r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost:
		writeJSON(w, http.StatusCreated, map[string]string{"file_path": rt.file, "branch": req.Branch})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"file_path": rt.file, "branch": req.Branch})
	}
}

func authorOr(name string) string {
	if name == "" {
		return "api"
	}
	return name
}

func (s *Server) createCommit(w http.ResponseWriter, r *http.Request, p *Project) {
	var req struct {
		Branch        string      `json:"branch"`
		CommitMessage string      `json:"commit_message"`
		AuthorName    string      `json:"author_name"`
		Actions       []actionReq `json:"actions"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body is invalid"})
		return
	}
	switch {
	case req.Branch == "":
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "branch is missing"})
		return
	case req.CommitMessage == "":
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "commit_message is missing"})
		return
	case len(req.Actions) == 0:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "actions is empty"})
		return
	}
	for i := range req.Actions {
		if err := req.Actions[i].decode(); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "actions[" + strconv.Itoa(i) + "][encoding] does not have a valid value"})
			return
		}
		if a := &req.Actions[i]; a.raw == nil && (a.Action == "create" || a.Action == "update") {
			a.raw = []byte{}
		}
	}
	s.mu.Lock()
	id, msg := s.applyLocked(p, req.Branch, req.CommitMessage, authorOr(req.AuthorName), req.Actions, false)
	var c Commit
	if msg == "" {
		c = p.history[len(p.history)-1]
	}
	s.mu.Unlock()
	if msg != "" {
		writeMessage(w, http.StatusBadRequest, msg)
		return
	}
	writeJSON(w, http.StatusCreated, commitJSON(c, id))
}

func commitJSON(c Commit, id string) map[string]any {
	title, _, _ := strings.Cut(c.Message, "\n")
	return map[string]any{
		"id": id, "short_id": id[:8], "title": title, "message": c.Message,
		"author_name": c.Author, "committer_name": c.Author,
		"created_at": c.Created.Format(time.RFC3339Nano), "committed_date": c.Created.Format(time.RFC3339Nano),
	}
}

func (s *Server) listCommits(w http.ResponseWriter, r *http.Request, p *Project) {
	ref := r.URL.Query().Get("ref_name")
	s.mu.Lock()
	if ref == "" {
		ref = p.defaultBranch
	}
	var all []map[string]any
	for i := len(p.history) - 1; i >= 0; i-- {
		if c := p.history[i]; c.Branch == ref {
			all = append(all, commitJSON(c, c.ID))
		}
	}
	s.mu.Unlock()
	lo, hi := paginate(w, r, len(all))
	writeJSON(w, http.StatusOK, append([]map[string]any{}, all[lo:hi]...))
}

func (s *Server) listTree(w http.ResponseWriter, r *http.Request, p *Project) {
	q := r.URL.Query()
	ref := q.Get("ref")
	if ref == "" {
		ref = p.defaultBranch
	}
	s.mu.Lock()
	b := s.refBranch(w, p, ref)
	if b == nil {
		s.mu.Unlock()
		return
	}
	entries, found := treeLocked(b, q.Get("path"), q.Get("recursive") == "true")
	s.mu.Unlock()
	if !found {
		writeMessage(w, http.StatusNotFound, "404 Tree Not Found")
		return
	}
	lo, hi := paginate(w, r, len(entries))
	writeJSON(w, http.StatusOK, append([]treeEntry{}, entries[lo:hi]...))
}
