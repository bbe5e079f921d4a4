package gitlabtest

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gpu-worker/project"
)

// Project is one emulated repository.
type Project struct {
	s             *Server
	id            int
	path          string
	defaultBranch string
	lastActivity  time.Time
	branches      map[string]*branch
	history       []Commit
}

type branch struct {
	head  string
	files map[string]*fileEntry
}

type fileEntry struct {
	content    []byte
	blobID     string
	lastCommit string
	executable bool
}

// Commit is one commit of a project's history.
type Commit struct {
	ID      string
	Branch  string
	Message string
	Author  string
	Created time.Time
	Actions []CommitAction
}

// CommitAction is one change of a Commit.
type CommitAction struct {
	Kind         string
	Path         string
	PreviousPath string
}

// ID is the numeric project id.
func (p *Project) ID() int { return p.id }

// Path is the full path, "group/name".
func (p *Project) Path() string { return p.path }

// CreateProject adds an empty project with default branch "main".
func (s *Server) CreateProject(path string) *Project {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byPath[path]; ok {
		panic("gitlabtest: project exists: " + path)
	}
	p := &Project{
		s:             s,
		id:            len(s.projects) + 1,
		path:          path,
		defaultBranch: "main",
		lastActivity:  s.nowLocked(),
		branches:      map[string]*branch{"main": {files: map[string]*fileEntry{}}},
	}
	s.projects = append(s.projects, p)
	s.byPath[path] = p
	return p
}

// SetLastActivity backdates (or forwards) a project's last activity.
func (p *Project) SetLastActivity(t time.Time) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	p.lastActivity = t.UTC()
}

// LastActivity is the project's last_activity_at.
func (s *Server) LastActivity(path string) time.Time {
	p := s.project(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	return p.lastActivity
}

// Project returns an existing project; it panics on an unknown path.
func (s *Server) Project(path string) *Project { return s.project(path) }

func (s *Server) project(path string) *Project {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.byPath[path]
	if p == nil {
		panic("gitlabtest: no project " + path)
	}
	return p
}

// UserCommit commits files to the default branch as a user would (nil
// content deletes) and returns the commit id.
func (s *Server) UserCommit(t testing.TB, projectPath, message string, files map[string][]byte) string {
	t.Helper()
	p := s.project(projectPath)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := p.branches[p.defaultBranch]
	var acts []actionReq
	for _, name := range slices.Sorted(maps.Keys(files)) {
		content := files[name]
		_, exists := b.files[name]
		switch {
		case content == nil && exists:
			acts = append(acts, actionReq{Action: "delete", FilePath: name})
		case content == nil:
		case exists:
			acts = append(acts, actionReq{Action: "update", FilePath: name, raw: content})
		default:
			acts = append(acts, actionReq{Action: "create", FilePath: name, raw: content})
		}
	}
	id, msg := s.applyLocked(p, p.defaultBranch, message, "user", acts, false)
	if msg != "" {
		t.Fatalf("user commit: %s", msg)
	}
	return id
}

// ReadFile returns a file at the head of the default branch.
func (s *Server) ReadFile(projectPath, name string) ([]byte, bool) {
	p := s.project(projectPath)
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := p.branches[p.defaultBranch].files[name]
	if !ok {
		return nil, false
	}
	return append([]byte(nil), f.content...), true
}

// Commits is the project's history, oldest first.
func (s *Server) Commits(projectPath string) []Commit {
	p := s.project(projectPath)
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Commit, len(p.history))
	for i, c := range p.history {
		c.Actions = append([]CommitAction(nil), c.Actions...)
		out[i] = c
	}
	return out
}

func blobID(content []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(content))
	h.Write(content)
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Server) nextCommitIDLocked(p *Project) string {
	s.commitSeq++
	sum := sha1.Sum([]byte(fmt.Sprintf("%s\x00%d\x00%d", p.path, s.commitSeq, time.Now().UnixNano())))
	return hex.EncodeToString(sum[:])
}

// actionReq is one commits-API action as sent over the wire.
type actionReq struct {
	Action          string  `json:"action"`
	FilePath        string  `json:"file_path"`
	PreviousPath    string  `json:"previous_path"`
	Content         *string `json:"content"`
	Encoding        string  `json:"encoding"`
	LastCommitID    string  `json:"last_commit_id"`
	ExecuteFilemode *bool   `json:"execute_filemode"`
	raw             []byte  // decoded content; nil when none was sent
}

func (a *actionReq) decode() error {
	if a.Content == nil {
		return nil
	}
	switch a.Encoding {
	case "", "text":
		a.raw = []byte(*a.Content)
	case "base64":
		b, err := base64.StdEncoding.DecodeString(*a.Content)
		if err != nil {
			return err
		}
		a.raw = b
	default:
		return fmt.Errorf("encoding does not have a valid value")
	}
	return nil
}

const (
	msgExists      = "A file with this name already exists"
	msgMissing     = "A file with this name doesn't exist"
	msgChanged     = "The file has changed since you started editing it: %s"
	msgSingleStale = "You are attempting to update a file that has changed since you started editing it."
)

// applyLocked validates and applies actions atomically. It returns the new
// commit id, or GitLab's 400 message. singleFile selects the single-file
// API's behaviour (its own stale message; LFS transform on update too).
func (s *Server) applyLocked(p *Project, branchName, message, author string, acts []actionReq, singleFile bool) (string, string) {
	b, ok := p.branches[branchName]
	if !ok {
		return "", "You can only create or edit files when you are on a branch"
	}
	lfsRules := parseAttributes(b.files[".gitattributes"])
	files := maps.Clone(b.files)
	id := s.nextCommitIDLocked(p)
	var record []CommitAction
	stale := func(path, last string) string {
		if last == "" || b.files[path] == nil || b.files[path].lastCommit == last {
			return ""
		}
		if singleFile {
			return msgSingleStale
		}
		return fmt.Sprintf(msgChanged, path)
	}
	put := func(path string, content []byte, exec bool, transform bool) {
		if transform && lfsRules.tracked(path) {
			content = []byte(s.storeObject(content).String())
		}
		files[path] = &fileEntry{content: content, blobID: blobID(content), lastCommit: id, executable: exec}
	}
	for _, a := range acts {
		a.FilePath = strings.TrimPrefix(a.FilePath, "/")
		a.PreviousPath = strings.TrimPrefix(a.PreviousPath, "/")
		if a.FilePath == "" || strings.Contains(a.FilePath, "..") {
			return "", "Your changes could not be committed, because the file path is invalid"
		}
		cur := files[a.FilePath]
		switch a.Action {
		case "create":
			if cur != nil {
				return "", msgExists
			}
			put(a.FilePath, a.raw, a.ExecuteFilemode != nil && *a.ExecuteFilemode, true)
		case "update":
			if cur == nil {
				return "", msgMissing
			}
			if m := stale(a.FilePath, a.LastCommitID); m != "" {
				return "", m
			}
			put(a.FilePath, a.raw, cur.executable, singleFile)
		case "delete":
			if cur == nil {
				return "", msgMissing
			}
			if m := stale(a.FilePath, a.LastCommitID); m != "" {
				return "", m
			}
			delete(files, a.FilePath)
		case "move":
			prev := files[a.PreviousPath]
			if a.PreviousPath == "" || prev == nil {
				return "", msgMissing
			}
			if cur != nil {
				return "", msgExists
			}
			if m := stale(a.PreviousPath, a.LastCommitID); m != "" {
				return "", m
			}
			content := prev.content
			if a.raw != nil {
				content = a.raw
			}
			delete(files, a.PreviousPath)
			put(a.FilePath, content, prev.executable, false)
		case "chmod":
			if cur == nil {
				return "", msgMissing
			}
			e := *cur
			e.executable = a.ExecuteFilemode != nil && *a.ExecuteFilemode
			e.lastCommit = id
			files[a.FilePath] = &e
		default:
			return "", "action does not have a valid value"
		}
		record = append(record, CommitAction{Kind: a.Action, Path: a.FilePath, PreviousPath: a.PreviousPath})
	}
	b.files = files
	b.head = id
	now := s.nowLocked()
	// GitLab moves last_activity_at at most once an hour.
	if now.Sub(p.lastActivity) >= time.Hour {
		p.lastActivity = now
	}
	p.history = append(p.history, Commit{ID: id, Branch: branchName, Message: message, Author: author, Created: now, Actions: record})
	return id, ""
}

// attrRules are the .gitattributes patterns that set filter=lfs.
type attrRules []string

func parseAttributes(f *fileEntry) attrRules {
	if f == nil {
		return nil
	}
	var rules attrRules
	for _, line := range strings.Split(string(f.content), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		for _, attr := range fields[1:] {
			if attr == "filter=lfs" {
				rules = append(rules, fields[0])
			}
		}
	}
	return rules
}

// tracked follows gitattributes matching: a pattern without a slash
// matches the base name at any depth; otherwise the full path from the root.
func (r attrRules) tracked(name string) bool {
	for _, pat := range r {
		if !strings.Contains(strings.TrimSuffix(pat, "/"), "/") {
			if ok, _ := path.Match(pat, path.Base(name)); ok {
				return true
			}
			continue
		}
		pat = strings.TrimPrefix(pat, "/")
		if dir, ok := strings.CutSuffix(pat, "/**"); ok {
			if strings.HasPrefix(name, dir+"/") {
				return true
			}
			continue
		}
		if ok, _ := path.Match(pat, name); ok {
			return true
		}
	}
	return false
}

// treeEntry is one row of the tree API.
type treeEntry struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path"`
	Mode string `json:"mode"`
}

// treeLocked lists dir's entries (directories included, as GitLab does).
func treeLocked(b *branch, dir string, recursive bool) ([]treeEntry, bool) {
	dir = strings.Trim(dir, "/")
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	seenDirs := map[string]bool{}
	var out []treeEntry
	found := dir == ""
	for name, f := range b.files {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		found = true
		parts := strings.Split(rest, "/")
		for i := 1; i < len(parts); i++ {
			if !recursive && i > 1 {
				break
			}
			d := prefix + strings.Join(parts[:i], "/")
			if !seenDirs[d] {
				seenDirs[d] = true
				sum := sha1.Sum([]byte("tree " + d))
				out = append(out, treeEntry{ID: hex.EncodeToString(sum[:]), Name: path.Base(d), Type: "tree", Path: d, Mode: "040000"})
			}
		}
		if !recursive && len(parts) > 1 {
			continue
		}
		mode := "100644"
		if f.executable {
			mode = "100755"
		}
		out = append(out, treeEntry{ID: f.blobID, Name: path.Base(name), Type: "blob", Path: name, Mode: mode})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, found
}

// PutLFSObject stores content as an LFS object directly.
func (s *Server) PutLFSObject(content []byte) project.Pointer {
	return s.storeObject(content)
}
