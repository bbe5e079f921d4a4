package gitlab

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"

	"gpu-worker/project"
)

// ReadFile reads a file at the branch head.
func (p *Project) ReadFile(ctx context.Context, name string) (*project.File, error) {
	var f *gl.File
	err := p.c.retry(ctx, "read file", func(ctx context.Context) error {
		var err error
		f, _, err = p.c.api.RepositoryFiles.GetFile(p.pid(), name, &gl.GetFileOptions{Ref: gl.Ptr(p.branch)}, gl.WithContext(ctx))
		return err
	})
	if err != nil {
		return nil, p.fileErr("read", name, err)
	}
	content, err := base64.StdEncoding.DecodeString(f.Content)
	if err != nil {
		return nil, fmt.Errorf("read %s: content: %w", name, err)
	}
	return &project.File{
		FileInfo: project.FileInfo{Path: name, BlobID: f.BlobID, Guard: f.LastCommitID, Size: int64(len(content))},
		Content:  content,
	}, nil
}

// StatFile reads a file's version with a HEAD request.
func (p *Project) StatFile(ctx context.Context, name string) (*project.FileInfo, error) {
	var f *gl.File
	err := p.c.retry(ctx, "stat file", func(ctx context.Context) error {
		var err error
		f, _, err = p.c.api.RepositoryFiles.GetFileMetaData(p.pid(), name, &gl.GetFileMetaDataOptions{Ref: gl.Ptr(p.branch)}, gl.WithContext(ctx))
		return err
	})
	if err != nil {
		return nil, p.fileErr("stat", name, err)
	}
	return &project.FileInfo{Path: name, BlobID: f.BlobID, Guard: f.LastCommitID, Size: f.Size}, nil
}

func (p *Project) fileErr(op, name string, err error) error {
	if errors.Is(err, gl.ErrNotFound) {
		return fmt.Errorf("%s %s: %w", op, name, project.ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", op, name, p.c.clean(err))
}

// ListTree lists every file below dir, following all pages. A missing
// directory lists as empty.
func (p *Project) ListTree(ctx context.Context, dir string) ([]project.TreeEntry, error) {
	opts := &gl.ListTreeOptions{
		ListOptions: gl.ListOptions{PerPage: 100, Page: 1},
		Ref:         gl.Ptr(p.branch),
		Recursive:   gl.Ptr(true),
	}
	if dir = strings.Trim(dir, "/"); dir != "" {
		opts.Path = gl.Ptr(dir)
	}
	var out []project.TreeEntry
	for {
		var nodes []*gl.TreeNode
		var resp *gl.Response
		err := p.c.retry(ctx, "list tree", func(ctx context.Context) error {
			var err error
			nodes, resp, err = p.c.api.Repositories.ListTree(p.pid(), opts, gl.WithContext(ctx))
			return err
		})
		if errors.Is(err, gl.ErrNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list tree %s: %w", dir, p.c.clean(err))
		}
		for _, n := range nodes {
			if n.Type == "blob" {
				out = append(out, project.TreeEntry{Path: n.Path, BlobID: n.ID})
			}
		}
		if resp.NextPage == 0 {
			return out, nil
		}
		opts.Page = resp.NextPage
	}
}

// trailerKey marks each commit with a unique id so that after an ambiguous
// failure the branch history tells whether the commit landed.
const trailerKey = "Gpu-Worker-Commit: "

// Commit applies actions in one commit. Conflicts come back as
// *project.ConflictError; a commit whose answer was lost is looked up in
// the branch history before it is ever sent again.
func (p *Project) Commit(ctx context.Context, message string, actions []project.Action) (*project.CommitResult, error) {
	if len(actions) == 0 {
		return nil, errors.New("commit: no actions")
	}
	mark := randHex(8)
	opts := &gl.CreateCommitOptions{
		Branch:        gl.Ptr(p.branch),
		CommitMessage: gl.Ptr(strings.TrimRight(message, "\n") + "\n\n" + trailerKey + mark),
		Actions:       commitActions(actions, mark),
	}
	for attempt := 0; ; attempt++ {
		c, _, err := p.c.api.Commits.CreateCommit(p.pid(), opts, gl.WithContext(ctx))
		if err == nil {
			return result(c.ID, actions), nil
		}
		if conflict, notFound := p.refusal(err, actions); conflict != nil {
			// A moved branch means nothing was applied: safe to resend,
			// the server re-checks every guard.
			if conflict.Kind != project.BranchMoved || attempt >= p.c.cfg.MaxRetries {
				return nil, conflict
			}
			if serr := sleep(ctx, p.c.backoff(attempt, 0)); serr != nil {
				return nil, conflict
			}
			continue
		} else if notFound != nil {
			return nil, notFound
		}
		retry, wait := transient(err)
		if !retry {
			return nil, fmt.Errorf("commit: %w", p.c.clean(err))
		}
		// Ambiguous: the commit may have landed. Wait, then look for it.
		p.c.log.Warn("gitlab commit outcome unknown", "project", p.path, "attempt", attempt+1, "err", p.c.clean(err).Error())
		if ctx.Err() == nil {
			sleep(ctx, p.c.backoff(attempt, wait))
		}
		id, found, ferr := p.findCommit(ctx, mark)
		if found {
			return result(id, actions), nil
		}
		if ferr != nil {
			return nil, fmt.Errorf("%w: %w (check: %w)", project.ErrOutcomeUnknown, p.c.clean(err), p.c.clean(ferr))
		}
		if attempt >= p.c.cfg.MaxRetries || ctx.Err() != nil {
			// It may still land: GitLab can apply a request whose client left.
			return nil, fmt.Errorf("%w: %w", project.ErrOutcomeUnknown, p.c.clean(err))
		}
	}
}

// result is a landed commit: on GitLab the guard of every path it wrote is
// the commit itself (the path's last_commit_id).
func result(id string, actions []project.Action) *project.CommitResult {
	r := &project.CommitResult{ID: id, Guards: map[string]string{}}
	for _, a := range actions {
		if a.Kind != project.Delete {
			r.Guards[a.Path] = id
		}
	}
	return r
}

// commitActions turns actions into the API's form. Creating an LFS pointer
// goes through a temporary name and a move: GitLab's LFS transformer wraps
// the content of every create on a tracked path, pointers included.
func commitActions(actions []project.Action, mark string) []*gl.CommitActionOptions {
	var out []*gl.CommitActionOptions
	for i, a := range actions {
		o := &gl.CommitActionOptions{
			Action:   gl.Ptr(gl.FileActionValue(a.Kind)),
			FilePath: gl.Ptr(a.Path),
		}
		if a.Guard != "" {
			o.LastCommitID = gl.Ptr(a.Guard)
		}
		if a.PreviousPath != "" {
			o.PreviousPath = gl.Ptr(a.PreviousPath)
		}
		if a.Content != nil || a.Kind == project.Create || a.Kind == project.Update {
			o.Encoding = gl.Ptr("base64")
			o.Content = gl.Ptr(base64.StdEncoding.EncodeToString(a.Content))
		}
		if a.Kind == project.Create && project.IsPointer(a.Content) {
			dir, base := path.Split(a.Path)
			tmp := fmt.Sprintf("%s.%s.%s-%d.tmp", dir, base, mark, i)
			o.FilePath = gl.Ptr(tmp)
			out = append(out, o, &gl.CommitActionOptions{
				Action:       gl.Ptr(gl.FileMove),
				FilePath:     gl.Ptr(a.Path),
				PreviousPath: gl.Ptr(tmp),
			})
			continue
		}
		out = append(out, o)
	}
	return out
}

// refusal maps GitLab's 400 answers to a conflict, or a missing file to
// ErrNotFound. This is the only place that reads GitLab's messages.
func (p *Project) refusal(err error, actions []project.Action) (*project.ConflictError, error) {
	var er *gl.ErrorResponse
	if !errors.As(err, &er) || er.Response == nil || er.Response.StatusCode != http.StatusBadRequest {
		return nil, nil
	}
	var body struct {
		Message any `json:"message"`
	}
	json.Unmarshal(er.Body, &body)
	msg, _ := body.Message.(string)
	switch {
	case strings.Contains(msg, "A file with this name already exists"):
		return &project.ConflictError{Kind: project.AlreadyExists, Path: soleTarget(actions)}, nil
	case strings.HasPrefix(msg, "The file has changed since you started editing it"):
		_, path, _ := strings.Cut(msg, ": ")
		return &project.ConflictError{Kind: project.ChangedSince, Path: path}, nil
	case strings.Contains(msg, "has changed since you started editing it"):
		return &project.ConflictError{Kind: project.ChangedSince}, nil
	case strings.HasPrefix(msg, "Could not update refs/heads/") || strings.Contains(msg, "Please refresh and try again"):
		return &project.ConflictError{Kind: project.BranchMoved}, nil
	case strings.Contains(msg, "A file with this name doesn't exist"):
		return nil, fmt.Errorf("commit: %s: %w", msg, project.ErrNotFound)
	}
	return nil, nil
}

// soleTarget names the path a create/move conflict is about when only one
// action could have caused it.
func soleTarget(actions []project.Action) string {
	target := ""
	for _, a := range actions {
		if a.Kind == project.Create || a.Kind == project.Move {
			if target != "" {
				return ""
			}
			target = a.Path
		}
	}
	return target
}

// findCommit looks for the commit carrying mark among the branch's recent
// commits. It uses its own deadline so a cancelled caller still learns
// whether its commit landed.
func (p *Project) findCommit(ctx context.Context, mark string) (string, bool, error) {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	opts := &gl.ListCommitsOptions{ListOptions: gl.ListOptions{PerPage: 100, Page: 1}, RefName: gl.Ptr(p.branch)}
	var commits []*gl.Commit
	err := p.c.retry(ctx, "find commit", func(ctx context.Context) error {
		var err error
		commits, _, err = p.c.api.Commits.ListCommits(p.pid(), opts, gl.WithContext(ctx))
		return err
	})
	if err != nil {
		return "", false, err
	}
	for _, c := range commits {
		if strings.Contains(c.Message, trailerKey+mark) {
			return c.ID, true, nil
		}
	}
	return "", false, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
