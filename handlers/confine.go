package handlers

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gpu-worker/atomicfile"
)

// Code may run in an engine; it must not make the worker read the host's
// files (a token) into a project. Every read of a file an engine wrote or
// named goes through openEngineFile, and code that needs a path (an
// upload, ffmpeg) reads a copy the worker made with copyEngineFile.

// openEngineFile opens a file an engine wrote or named: inside the job's
// folder, reached without a symbolic link, a regular file. The open
// itself resolves inside the folder only (os.Root), so a link swapped in
// after the check still cannot lead out of it.
func openEngineFile(workDir, path string) (*os.File, error) {
	rel, err := filepath.Rel(workDir, path)
	if err != nil || !filepath.IsLocal(rel) {
		return nil, fmt.Errorf("engine output %s is outside the job's folder", path)
	}
	root, err := os.OpenRoot(workDir)
	if err != nil {
		return nil, fmt.Errorf("engine output: %w", err)
	}
	defer root.Close()
	cur := ""
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, part)
		st, err := root.Lstat(cur)
		if err != nil {
			return nil, fmt.Errorf("engine output: %w", err)
		}
		if st.Mode()&os.ModeSymlink != 0 {
			return nil, fmt.Errorf("engine output %s goes through a symbolic link", path)
		}
	}
	f, err := root.Open(rel)
	if err != nil {
		return nil, fmt.Errorf("engine output: %w", err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("engine output %s is not a regular file", path)
	}
	return f, nil
}

// readEngineFile reads a small file an engine wrote (a report, a table).
func readEngineFile(workDir, path string) ([]byte, error) {
	f, err := openEngineFile(workDir, path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("engine output: %w", err)
	}
	return b, nil
}

// copyEngineFile copies an engine's file to dst, a path the worker owns,
// while the engine may still be running or rotating its files.
func copyEngineFile(workDir, path, dst string) error {
	f, err := openEngineFile(workDir, path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("copy engine output: %w", err)
	}
	if _, err := atomicfile.WriteFrom(dst, io.Reader(f), 0o644); err != nil {
		return fmt.Errorf("copy engine output: %w", err)
	}
	return nil
}
