package codex

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/project"
)

const guardPath = "gpu_jobs/job_1/response.yaml"

// chainGuard is a lease over guardPath: each commit updates it, guarded by
// the commit that last wrote it for us.
type chainGuard struct {
	last   string // our last commit of guardPath
	steps  int
	plans  []*CommitReport
	landed []string
}

func (g *chainGuard) Step() []project.Action {
	g.steps++
	return []project.Action{{Kind: project.Update, Path: guardPath, Content: []byte(fmt.Sprintf("state: running\nstep: %d\n", g.steps)), Guard: g.last}}
}

func (g *chainGuard) Final(plan *CommitReport) []project.Action {
	g.plans = append(g.plans, plan)
	n := 0
	for _, v := range plan.Applied {
		n += v
	}
	return []project.Action{{Kind: project.Update, Path: guardPath, Content: []byte(fmt.Sprintf("state: completed\nwritten: %d\nkept: %d\n", n, len(plan.Skipped))), Guard: g.last}}
}

func (g *chainGuard) Landed(res *project.CommitResult) {
	g.last = res.GuardOf(guardPath)
	g.landed = append(g.landed, res.ID)
}

// fourBooks puts four 40-verse notebooks in p and patches every verse.
func fourBooks(t *testing.T, put func(map[string][]byte)) (map[string][]Patch, int) {
	patches := map[string][]Patch{}
	var size int
	for _, book := range []string{"MAT", "MRK", "LUK", "JHN"} {
		path := "files/target/" + book + ".codex"
		b := bookNotebook(t, book, 40)
		size = len(b)
		put(map[string][]byte{path: b})
		for i := 1; i <= 40; i++ {
			patches[path] = append(patches[path], textPatch(uuidOf(fmt.Sprintf("%s 1:%d", book, i)), "ours"))
		}
	}
	return patches, size
}

// Every commit of a split carries the guard, chained on the commit before.
func TestCommitSplitGuardsEveryCommit(t *testing.T) {
	p := newMemProject()
	patches, size := fourBooks(t, func(f map[string][]byte) { p.put(f) })
	g := &chainGuard{last: p.put(map[string][]byte{guardPath: []byte("state: running\n")})}
	rep, err := Commit(context.Background(), p, "results", patches, nil, CommitOptions{MaxCommitBytes: int64(size)*4 + stepReserve, Guard: g})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.commits) < 2 || len(g.landed) != len(p.commits) {
		t.Fatalf("%d commits, guard saw %d landed", len(p.commits), len(g.landed))
	}
	for i, actions := range p.commits {
		guarded := 0
		for _, a := range actions {
			if a.Path == guardPath {
				guarded++
			}
		}
		if guarded != 1 {
			t.Errorf("commit %d carries the guard %d times", i, guarded)
		}
	}
	if f, _ := p.ReadFile(context.Background(), guardPath); string(f.Content) != "state: completed\nwritten: 160\nkept: 0\n" {
		t.Errorf("final status %q", f.Content)
	}
	if len(rep.Commits) != len(p.commits) {
		t.Errorf("report %v", rep.Commits)
	}
}

// On GitLab: another worker takes the job over between two commits of a
// split; the conflict ends the write and nothing more of ours lands.
func TestCommitSplitStopsWhenLeaseLostOnEmulator(t *testing.T) {
	const repo = "team/bible"
	ctx := context.Background()
	s := gitlabtest.New(t)
	s.CreateProject(repo)
	patches, size := fourBooks(t, func(f map[string][]byte) { s.UserCommit(t, repo, "import", f) })
	s.UserCommit(t, repo, "claim", map[string][]byte{guardPath: []byte("state: running\nworker_id: us\n")})
	c, err := gitlab.New(gitlab.Config{BaseURL: s.URL(), Token: gitlabtest.DefaultToken})
	if err != nil {
		t.Fatal(err)
	}
	gp, err := c.Project(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	f, err := gp.ReadFile(ctx, guardPath)
	if err != nil {
		t.Fatal(err)
	}
	g := &chainGuard{last: f.Guard}
	// After our first commit lands, another worker takes the job over.
	p := &afterFirst{Project: gp, then: func() {
		s.UserCommit(t, repo, "take over", map[string][]byte{guardPath: []byte("state: running\nworker_id: other\n")})
	}}
	before := len(s.Commits(repo))
	_, err = Commit(ctx, p, "results", patches, nil, CommitOptions{MaxCommitBytes: int64(size)*2 + stepReserve, Guard: g})
	if cf := project.ConflictOf(err); cf == nil || cf.Path != guardPath {
		t.Fatalf("err = %v, want the guard's conflict", err)
	}
	var ours []string
	for _, cm := range s.Commits(repo)[before:] {
		if strings.HasPrefix(cm.Message, "results") {
			ours = append(ours, cm.ID)
		}
	}
	if len(ours) != 1 || len(g.landed) != 1 {
		t.Fatalf("our commits after the takeover: %v (guard saw %v)", ours, g.landed)
	}
	if b, _ := s.ReadFile(repo, guardPath); !strings.Contains(string(b), "worker_id: other") {
		t.Errorf("status after takeover %q", b)
	}
	untouched := 0
	for path := range patches {
		b, _ := s.ReadFile(repo, path)
		if !strings.Contains(PlainText(mustParse(t, path, b).Cells()[0].Value()), "ours") {
			untouched++
		}
	}
	if untouched < 2 {
		t.Errorf("%d notebooks untouched; the commits after the takeover must not land", untouched)
	}
}

// afterFirst runs then once, after the first commit landed.
type afterFirst struct {
	project.Project
	then func()
	done bool
}

func (a *afterFirst) Commit(ctx context.Context, message string, actions []project.Action) (*project.CommitResult, error) {
	res, err := a.Project.Commit(ctx, message, actions)
	if err == nil && !a.done {
		a.done = true
		a.then()
	}
	return res, err
}

// The final actions are rebuilt for each attempt from the plan against the
// notebook as re-read: a user edit that wins one cell is counted.
func TestCommitFinalBuiltFromCurrentPlan(t *testing.T) {
	p, patches := raceProject(t,
		func(i int, id string) Patch { return textPatch(id, fmt.Sprintf("ours %d", i)) },
		func(c *Cell, i int) { userEdit(c, fmt.Sprintf("user %d", i), 1770000000000+int64(i)) },
	)
	f, _ := p.ReadFile(context.Background(), guardPath)
	g := &chainGuard{last: f.Guard}
	if _, err := Commit(context.Background(), p, "results", patches, nil, CommitOptions{Guard: g}); err != nil {
		t.Fatal(err)
	}
	last := g.plans[len(g.plans)-1]
	if last.Applied["files/target/JHN.codex"] != 49 || len(last.Skipped) != 1 || last.Skipped[0].Reason != ReasonTextUnder {
		t.Errorf("final plan %+v", last)
	}
	if f, _ := p.ReadFile(context.Background(), guardPath); string(f.Content) != "state: completed\nwritten: 49\nkept: 1\n" {
		t.Errorf("final status %q", f.Content)
	}
}

func TestCommitBacksOffWhenBranchMoved(t *testing.T) {
	p, patches := raceProject(t, func(i int, id string) Patch { return textPatch(id, "ours") }, func(c *Cell, i int) {})
	p.before = func(call int) error {
		if call < 3 {
			return &project.ConflictError{Kind: project.BranchMoved}
		}
		return nil
	}
	var waits []int
	_, err := Commit(context.Background(), p, "results", patches, nil, CommitOptions{Backoff: func(attempt int) time.Duration {
		waits = append(waits, attempt)
		return time.Millisecond
	}})
	if err != nil || fmt.Sprint(waits) != "[0 1 2]" {
		t.Fatalf("err %v, backoffs %v", err, waits)
	}
	if d := defaultBackoff(3); d <= defaultBackoff(0) {
		t.Errorf("default backoff does not grow: %v", d)
	}
}
