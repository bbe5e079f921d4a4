package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gpu-worker/project"
)

// Child processes re-run this test binary with these variables set.
const (
	childDir  = "GPU_WORKER_LOCAL_CHILD_DIR"
	childMode = "GPU_WORKER_LOCAL_CHILD_MODE"
	childID   = "GPU_WORKER_LOCAL_CHILD_ID"
)

// TestHelperChild is the body of a child process; it does nothing when run
// as an ordinary test.
func TestHelperChild(t *testing.T) {
	dir := os.Getenv(childDir)
	if dir == "" {
		return
	}
	p, err := Open(dir)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := os.Getenv(childID)
	switch os.Getenv(childMode) {
	case "create":
		_, err := p.Commit(ctx, "claim "+id, []project.Action{{Kind: project.Create, Path: "gpu_jobs/job_1/response.yaml", Content: []byte("worker_id: " + id + "\n")}})
		switch {
		case err == nil:
			fmt.Println("won")
		case project.IsConflict(err, project.AlreadyExists):
			fmt.Println("lost")
		default:
			fmt.Println("error", err)
		}
	case "increment":
		n, _ := strconv.Atoi(os.Getenv("GPU_WORKER_LOCAL_CHILD_N"))
		conflicts, err := increment(ctx, p, n)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Println("conflicts", conflicts)
	}
	os.Exit(0)
}

// increment adds one to counter.txt n times with guarded read-modify-write,
// retrying on conflict, and returns how many conflicts it met.
func increment(ctx context.Context, p *Project, n int) (int, error) {
	conflicts := 0
	for i := 0; i < n; {
		f, err := p.ReadFile(ctx, "counter.txt")
		if err != nil {
			return conflicts, err
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(f.Content)))
		if err != nil {
			return conflicts, err
		}
		_, err = p.Commit(ctx, "increment", []project.Action{{Kind: project.Update, Path: "counter.txt",
			Content: []byte(strconv.Itoa(v+1) + "\n"), Guard: f.Guard}})
		if project.IsConflict(err, project.ChangedSince) {
			conflicts++
			continue
		}
		if err != nil {
			return conflicts, err
		}
		i++
	}
	return conflicts, nil
}

// runChildren starts n copies of this test binary in mode and returns
// their outputs.
func runChildren(t *testing.T, dir, mode string, n int, extra ...string) []string {
	t.Helper()
	outs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), childDir+"="+dir, childMode+"="+mode, childID+"="+strconv.Itoa(i))
			cmd.Env = append(cmd.Env, extra...)
			out, err := cmd.CombinedOutput()
			outs[i], errs[i] = strings.TrimSpace(string(out)), err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("child %d: %v: %s", i, err, outs[i])
		}
	}
	return outs
}

func TestCrossProcessCreateRace(t *testing.T) {
	dir := t.TempDir()
	outs := runChildren(t, dir, "create", 8)
	winner := -1
	for i, out := range outs {
		switch {
		case strings.HasPrefix(out, "won"):
			if winner >= 0 {
				t.Fatalf("children %d and %d both won", winner, i)
			}
			winner = i
		case strings.HasPrefix(out, "lost"):
		default:
			t.Fatalf("child %d: %s", i, out)
		}
	}
	if winner < 0 {
		t.Fatal("no child won")
	}
	p, _ := Open(dir)
	f, err := p.ReadFile(context.Background(), "gpu_jobs/job_1/response.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("worker_id: %d\n", winner); string(f.Content) != want {
		t.Fatalf("content %q, want %q", f.Content, want)
	}
	recs, err := p.Commits(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Actions[0].BlobID != f.Guard {
		t.Fatalf("history %+v, want the winner's commit only", recs)
	}
}

// Guarded read-modify-write from 8 processes loses no update: the
// compare-and-swap holds across processes, not only goroutines.
func TestCrossProcessCompareAndSwap(t *testing.T) {
	dir := t.TempDir()
	p, _ := Open(dir)
	ctx := context.Background()
	if _, err := p.Commit(ctx, "init", []project.Action{{Kind: project.Create, Path: "counter.txt", Content: []byte("0\n")}}); err != nil {
		t.Fatal(err)
	}
	const procs, each = 8, 6
	outs := runChildren(t, dir, "increment", procs, "GPU_WORKER_LOCAL_CHILD_N="+strconv.Itoa(each))
	total := 0
	for i, out := range outs {
		var c int
		if _, err := fmt.Sscanf(out, "conflicts %d", &c); err != nil {
			t.Fatalf("child %d: %s", i, out)
		}
		total += c
	}
	f, err := p.ReadFile(ctx, "counter.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(f.Content)); got != strconv.Itoa(procs*each) {
		t.Fatalf("counter %s, want %d", got, procs*each)
	}
	recs, _ := p.Commits(context.Background())
	if len(recs) != 1+procs*each {
		t.Fatalf("%d commits recorded, want %d", len(recs), 1+procs*each)
	}
	t.Logf("%d increments from %d processes, %d conflicts retried", procs*each, procs, total)
}

func TestLockHonoursContext(t *testing.T) {
	dir := t.TempDir()
	p, _ := Open(dir)
	if err := p.ensureMeta(); err != nil {
		t.Fatal(err)
	}
	unlock, err := fileLock(context.Background(), p.meta+"/lock")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	// Another instance (its own open file description) must wait for us.
	q, _ := Open(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = q.Commit(ctx, "blocked", []project.Action{{Kind: project.Create, Path: "x", Content: []byte("x")}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	if _, err := os.Stat(dir + "/x"); !os.IsNotExist(err) {
		t.Fatalf("blocked commit wrote its file: %v", err)
	}
}
