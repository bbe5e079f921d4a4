package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"gpu-worker/manifest"
	"gpu-worker/project"
)

// JobRow is one line of `gpu-worker jobs`.
type JobRow struct {
	Project     string    `json:"project"`
	ID          string    `json:"job_id"`
	Name        string    `json:"name,omitempty"`
	JobType     string    `json:"job_type"`
	Mode        string    `json:"mode"`
	State       string    `json:"state"` // pending, running, handed-back, completed, failed, canceled, invalid
	Worker      string    `json:"worker_id,omitempty"`
	Epoch       int       `json:"epochs_completed"` // -1 unknown
	Epochs      int       `json:"epochs,omitempty"`
	SubmittedAt time.Time `json:"submitted_at,omitzero"`
	Updated     time.Time `json:"timestamp,omitzero"`
	Message     string    `json:"message,omitempty"`
}

// handedBack shows a running job whose worker shut down and handed it back
// for the next worker to resume (response.yaml says running).
const handedBack = "handed-back"

// Pending is the state of a job no worker has claimed yet.
const Pending = "pending"

// ListJobs reads every project's manifest and job states. A project that
// cannot be read is reported in the error; the others are still listed.
func ListJobs(ctx context.Context, models manifest.Catalog, projects []project.Project) ([]JobRow, error) {
	var rows []JobRow
	var errs []error
	for _, p := range projects {
		r, err := projectJobs(ctx, models, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name(), err))
		}
		rows = append(rows, r...)
	}
	return rows, errors.Join(errs...)
}

func projectJobs(ctx context.Context, models manifest.Catalog, p project.Project) ([]JobRow, error) {
	f, err := p.ReadFile(ctx, manifest.Path)
	if errors.Is(err, project.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	m, err := parseWith(models, f.Content)
	if err != nil {
		return nil, err
	}
	tree, err := p.ListTree(ctx, "gpu_jobs")
	if err != nil && !errors.Is(err, project.ErrNotFound) {
		return nil, fmt.Errorf("list gpu_jobs: %w", err)
	}
	claimed := map[string]bool{}
	for _, e := range tree {
		claimed[e.Path] = true
	}
	var rows []JobRow
	for _, j := range m.Jobs {
		row := JobRow{Project: p.Name(), ID: j.ID, Name: j.Name, JobType: j.JobType, Mode: j.Mode,
			State: Pending, Epoch: -1, SubmittedAt: j.SubmittedAt}
		if j.Trains() && j.Knobs.Epochs != nil {
			row.Epochs = *j.Knobs.Epochs // else the engine's default: the progress says
		}
		switch {
		case claimed[manifest.ResponsePath(j.ID)]:
			rf, err := p.ReadFile(ctx, manifest.ResponsePath(j.ID))
			if err != nil {
				return rows, fmt.Errorf("read response of %s: %w", j.ID, err)
			}
			r, err := manifest.ParseResponse(rf.Content)
			if err != nil {
				row.State, row.Message = "unreadable", err.Error()
				break
			}
			row.State, row.Worker, row.Updated, row.Message = r.State, r.WorkerID, r.Timestamp, r.StatusMessage
			if r.HandedBack() {
				row.State = handedBack
			}
			if r.EpochsCompleted != nil {
				row.Epoch = *r.EpochsCompleted
			}
			if r.ErrorMessage != nil && *r.ErrorMessage != "" {
				row.Message = *r.ErrorMessage
			}
		case j.Canceled:
			row.State = manifest.StateCanceled
		case j.Invalid != nil:
			row.State, row.Message = "invalid", j.Invalid.Error()
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// WriteTable prints rows as an aligned table.
func WriteTable(w io.Writer, rows []JobRow, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECT\tJOB\tTYPE/MODE\tSTATE\tWORKER\tPROGRESS\tAGE\tMESSAGE")
	for _, r := range rows {
		progress := "-"
		switch {
		case r.Epochs > 0 && r.Epoch >= 0:
			progress = fmt.Sprintf("%d/%d", r.Epoch, r.Epochs)
		case r.Epochs > 0:
			progress = "0/" + strconv.Itoa(r.Epochs)
		}
		age := "-"
		if !r.SubmittedAt.IsZero() {
			age = Age(now.Sub(r.SubmittedAt))
		}
		worker := r.Worker
		if worker == "" {
			worker = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\n", r.Project, r.ID, r.JobType, r.Mode, r.State, worker,
			progress, age, oneLine(r.Message, 60))
	}
	return tw.Flush()
}

// Age formats a duration the way `kubectl get` does: 45s, 12m, 5h3m, 2d4h.
func Age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
