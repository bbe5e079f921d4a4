package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"gpu-worker/manifest"
	"gpu-worker/project"
)

// maxLogUpload caps the logs.txt committed to the project (its tail is kept).
const maxLogUpload = 4 << 20

// jobLog is <job dir>/logs.txt: everything the job and its engine print,
// with secrets redacted before they reach the disk.
type jobLog struct {
	path    string
	file    *os.File
	raw     io.Writer // redacting writer into the file
	logger  *slog.Logger
	secrets []string
	names   *pathNames
	jobID   string
}

func openJobLog(dir, jobID string, secrets []string, parent slog.Handler) (*jobLog, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "logs.txt")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	jl := &jobLog{path: path, file: f, secrets: nonEmpty(secrets), jobID: jobID, names: newPathNames(dir)}
	jl.raw = &redactor{w: f, secrets: jl.secrets, names: jl.names}
	fileHandler := slog.NewTextHandler(jl.raw, &slog.HandlerOptions{Level: slog.LevelDebug})
	jl.logger = slog.New(fanout{fileHandler, redactHandler{parent, jl.secrets}})
	return jl, nil
}

func discardJobLog(jobID string, secrets []string, parent slog.Handler) *jobLog {
	return &jobLog{jobID: jobID, raw: io.Discard, logger: slog.New(redactHandler{parent, nonEmpty(secrets)}), secrets: nonEmpty(secrets),
		names: newPathNames("")}
}

func (j *jobLog) Close() error {
	if j.file == nil {
		return nil
	}
	return j.file.Close()
}

// redact is what a team may see of s: no secret, and project paths where
// the worker's host paths were.
func (j *jobLog) redact(s string) string {
	for _, sec := range j.secrets {
		s = strings.ReplaceAll(s, sec, "[REDACTED]")
	}
	return j.names.rewrite(s)
}

// action is the commit action uploading the log's current tail.
func (j *jobLog) action(ctx context.Context, p project.Project) project.Action {
	return logAction(ctx, p, j.jobID, j.tail())
}

// tail is the log as it is uploaded: its last maxLogUpload bytes.
func (j *jobLog) tail() []byte {
	var data []byte
	if j.path != "" {
		data, _ = os.ReadFile(j.path)
	}
	if len(data) > maxLogUpload {
		data = data[len(data)-maxLogUpload:]
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
		data = append([]byte("[earlier lines omitted]\n"), data...)
	}
	return data
}

// logAction writes data as the job's logs.txt.
func logAction(ctx context.Context, p project.Project, jobID string, data []byte) project.Action {
	// A create of an existing path and an update of a missing one both
	// fail, so look first (a previous worker may have uploaded a log).
	path := manifest.JobDir(jobID) + "/logs.txt"
	kind := project.Update
	if _, err := p.StatFile(ctx, path); errors.Is(err, project.ErrNotFound) {
		kind = project.Create
	}
	return project.Action{Kind: kind, Path: path, Content: data}
}

type redactor struct {
	mu      sync.Mutex
	w       io.Writer
	secrets []string
	names   *pathNames
}

func (r *redactor) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := p
	for _, s := range r.secrets {
		if bytes.Contains(out, []byte(s)) {
			out = bytes.ReplaceAll(out, []byte(s), []byte("[REDACTED]"))
		}
	}
	if r.names != nil {
		out = []byte(r.names.rewrite(string(out)))
	}
	if _, err := r.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if len(s) >= 4 { // shorter "secrets" would shred ordinary words
			out = append(out, s)
		}
	}
	return out
}

// fanout sends each record to several handlers.
type fanout []slog.Handler

func (f fanout) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range f {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (f fanout) Handle(ctx context.Context, r slog.Record) error {
	for _, h := range f {
		if h.Enabled(ctx, r.Level) {
			_ = h.Handle(ctx, r.Clone())
		}
	}
	return nil
}

func (f fanout) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (f fanout) WithGroup(name string) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithGroup(name)
	}
	return out
}

// redactHandler scrubs secrets from messages and string attributes.
type redactHandler struct {
	h       slog.Handler
	secrets []string
}

func (r redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	if len(r.secrets) == 0 {
		return r.h.Handle(ctx, rec)
	}
	scrub := func(s string) string {
		for _, sec := range r.secrets {
			s = strings.ReplaceAll(s, sec, "[REDACTED]")
		}
		return s
	}
	out := slog.NewRecord(rec.Time, rec.Level, scrub(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(slog.String(a.Key, scrub(a.Value.String())))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return redactHandler{r.h.WithAttrs(as), r.secrets}
}

func (r redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{r.h.WithGroup(name), r.secrets}
}

// RedactHandler wraps h so that secrets never reach its output.
func RedactHandler(h slog.Handler, secrets []string) slog.Handler {
	return redactHandler{h, nonEmpty(secrets)}
}

// continueFrom starts the log of a job taken over with the log earlier
// workers uploaded, so that uploading ours keeps theirs.
func (j *jobLog) continueFrom(ctx context.Context, p project.Project) {
	if j.file == nil {
		return
	}
	f, err := p.ReadFile(ctx, manifest.JobDir(j.jobID)+"/logs.txt")
	if err != nil || len(f.Content) == 0 {
		return
	}
	content := f.Content
	if !bytes.HasSuffix(content, []byte("\n")) {
		content = append(content, '\n')
	}
	_, _ = j.file.Write(append(content, "--- taken over ---\n"...))
}

// pathNames turn the worker's host paths into what a team knows: a file
// fetched from the project is named by its project path, anything else in
// the job's work folder by "[work]/…". A team never learns the host's
// layout, and reads gpu_jobs/job_x/checkpoints/resume.pt where that is
// the file meant.
type pathNames struct {
	mu    sync.Mutex
	pairs []pathName // longest host path first
}

type pathName struct{ host, shown string }

// workName stands for the job's work folder in what a team sees.
const workName = "[work]"

func newPathNames(workDir string) *pathNames {
	n := &pathNames{}
	if workDir != "" {
		n.add(workDir, workName)
	}
	return n
}

func (n *pathNames) add(host, shown string) {
	if host == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, p := range n.pairs {
		if p.host == host {
			n.pairs[i].shown = shown
			return
		}
	}
	n.pairs = append(n.pairs, pathName{host, shown})
	sort.SliceStable(n.pairs, func(a, b int) bool { return len(n.pairs[a].host) > len(n.pairs[b].host) })
}

func (n *pathNames) rewrite(s string) string {
	if n == nil {
		return s
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.pairs {
		if strings.Contains(s, p.host) {
			s = strings.ReplaceAll(s, p.host, p.shown)
		}
	}
	return s
}
