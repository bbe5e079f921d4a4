package handlers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An engine names the files the worker uploads: only its own regular
// files inside the job's folder pass, never one reached through a link
// or outside the folder (a token file would land in a project).
func TestEngineFilesStayInTheJobFolder(t *testing.T) {
	work := t.TempDir()
	secret := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secret, []byte("glpat-secret"), 0o600)
	os.MkdirAll(filepath.Join(work, "train"), 0o755)
	good := filepath.Join(work, "train", "best_model.pt")
	os.WriteFile(good, []byte("weights"), 0o644)
	os.Symlink(secret, filepath.Join(work, "train", "final_model.pt"))
	os.Symlink(filepath.Dir(secret), filepath.Join(work, "outside"))
	os.Link(good, filepath.Join(work, "train", "checkpoint_3.pt"))
	for _, c := range []struct {
		path, want string
	}{
		{good, ""},
		{filepath.Join(work, "train", "checkpoint_3.pt"), ""}, // a hard link of its own file
		{filepath.Join(work, "train", "final_model.pt"), "symbolic link"},
		{filepath.Join(work, "outside", "token"), "symbolic link"},
		{secret, "outside the job's folder"},
		{filepath.Join(work, "train", "..", "..", filepath.Base(filepath.Dir(secret)), "token"), "outside the job's folder"},
		{filepath.Join(work, "train"), "not a regular file"},
	} {
		err := engineFile(work, c.path)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: err %v, want %q", c.path, err, c.want)
		}
		dst := filepath.Join(t.TempDir(), "snap")
		serr := snapshot(work, c.path, dst)
		if b, _ := os.ReadFile(dst); strings.Contains(string(b), "glpat") {
			t.Errorf("%s: the snapshot copied the secret", c.path)
		}
		if (c.want == "") != (serr == nil) {
			t.Errorf("%s: snapshot err %v", c.path, serr)
		}
	}
}
