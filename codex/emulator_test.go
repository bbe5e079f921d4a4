package codex

import (
	"context"
	"fmt"
	"testing"

	"gpu-worker/gitlab"
	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/project"
)

// userFirst is a Project whose first Commit is preceded by a user's commit,
// the race the conflict handling exists for.
type userFirst struct {
	project.Project
	user func()
	done bool
}

func (u *userFirst) Commit(ctx context.Context, message string, actions []project.Action) (*project.CommitResult, error) {
	if !u.done {
		u.done = true
		u.user()
	}
	return u.Project.Commit(ctx, message, actions)
}

// The job writes 50 cells; just before its commit a user edits 5 other
// cells and one of the 50. Against the GitLab emulator: all user edits
// survive, the shared cell keeps the user's text, the other 49 get ours.
func TestCommitRaceAgainstEmulator(t *testing.T) {
	const repo, path, resp = "team/jhn", "files/target/JHN.codex", "gpu_jobs/job_1/response.yaml"
	ctx := context.Background()
	s := gitlabtest.New(t)
	s.CreateProject(repo)
	s.UserCommit(t, repo, "import", map[string][]byte{path: bookNotebook(t, "JHN", 60), resp: []byte("state: running\n")})

	c, err := gitlab.New(gitlab.Config{BaseURL: s.URL(), Token: gitlabtest.DefaultToken})
	if err != nil {
		t.Fatal(err)
	}
	gp, err := c.Project(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	respFile, err := gp.ReadFile(ctx, resp)
	if err != nil {
		t.Fatal(err)
	}
	p := &userFirst{Project: gp, user: func() {
		cur, _ := s.ReadFile(repo, path)
		nb := mustParse(t, path, cur)
		for _, i := range []int{51, 52, 53, 54, 55, 1} {
			userEdit(nb.Cell(uuidOf(fmt.Sprintf("JHN 1:%d", i))), fmt.Sprintf("user %d", i), 1770000000000+int64(i))
		}
		s.UserCommit(t, repo, "translator sync", map[string][]byte{path: nb.Marshal()})
	}}

	var patches []Patch
	for i := 1; i <= 50; i++ {
		patches = append(patches, textPatch(uuidOf(fmt.Sprintf("JHN 1:%d", i)), fmt.Sprintf("ours %d", i)))
	}
	extra := []project.Action{{Kind: project.Update, Path: resp, Content: []byte("state: completed\n"), Guard: respFile.Guard}}
	rep, err := Commit(ctx, p, "results [skip ci]", map[string][]Patch{path: patches}, extra, CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Applied[path] != 49 || rep.Conflicts != 1 || len(rep.Commits) != 1 || len(rep.Skipped) != 1 || rep.Skipped[0].Reason != ReasonTextUnder {
		t.Errorf("report %+v", rep)
	}
	final, _ := s.ReadFile(repo, path)
	nb := mustParse(t, path, final)
	checkRaceOutcome(t, nb)
	if b, _ := s.ReadFile(repo, resp); string(b) != "state: completed\n" {
		t.Errorf("response.yaml %q", b)
	}
}
