package handlers

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gpu-worker/atomicfile"
)

// engineFile checks a path an engine reported before the worker reads or
// uploads it: inside the job's folder, reached without a symbolic link, a
// regular file. Code may run in an engine; it must not make the worker
// read the host's files (a token) into a project.
func engineFile(workDir, path string) error {
	rel, err := filepath.Rel(workDir, path)
	if err != nil || !filepath.IsLocal(rel) {
		return fmt.Errorf("engine output %s is outside the job's folder", path)
	}
	cur := workDir
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, part)
		st, err := os.Lstat(cur)
		if err != nil {
			return fmt.Errorf("engine output: %w", err)
		}
		if st.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("engine output %s goes through a symbolic link", path)
		}
	}
	if st, _ := os.Lstat(cur); !st.Mode().IsRegular() {
		return fmt.Errorf("engine output %s is not a regular file", path)
	}
	return nil
}

// snapshot copies an engine's file to dst while the engine may still be
// running, resolving the path inside the job's folder only (a link an
// engine made cannot lead out of it).
func snapshot(workDir, path, dst string) error {
	rel, err := filepath.Rel(workDir, path)
	if err != nil || !filepath.IsLocal(rel) {
		return fmt.Errorf("engine output %s is outside the job's folder", path)
	}
	in, err := os.OpenInRoot(workDir, rel)
	if err != nil {
		return fmt.Errorf("engine output: %w", err)
	}
	defer in.Close()
	if st, err := in.Stat(); err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("engine output %s is not a regular file", path)
	}
	_, err = atomicfile.WriteFrom(dst, io.Reader(in), 0o644)
	return err
}
