// Package editormerge runs the Codex editor's own notebook merge — its
// unmodified code in third_party/codex-editor, bundled with the driver in
// this folder by scripts/editor-merge-env.sh — so that tests judge what the
// codex package writes by the code translators' editors run when they sync.
package editormerge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// BundleEnv names the bundled merge to use instead of building one with
// scripts/editor-merge-env.sh.
const BundleEnv = "GPU_WORKER_EDITOR_MERGE"

// Merger runs the bundled merge with node.
type Merger struct {
	node, bundle string
}

// Find locates node and the bundled merge: $GPU_WORKER_EDITOR_MERGE, else
// what scripts/editor-merge-env.sh of the checkout holding dir builds (and
// caches) from npm.
func Find(ctx context.Context, dir string) (*Merger, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("find node: %w", err)
	}
	bundle := os.Getenv(BundleEnv)
	if bundle == "" {
		root, err := checkoutRoot(dir)
		if err != nil {
			return nil, err
		}
		cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "editor-merge-env.sh"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("build the editor's merge (scripts/editor-merge-env.sh): %w: %s", err, stderr.Bytes())
		}
		bundle = strings.TrimSpace(string(out))
	}
	if _, err := os.Stat(bundle); err != nil {
		return nil, fmt.Errorf("editor merge bundle: %w", err)
	}
	return &Merger{node: node, bundle: bundle}, nil
}

// checkoutRoot is the nearest folder at or above dir holding go.mod.
func checkoutRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Merge is one sync of a notebook as the editor does it.
type Merge struct {
	// Path is the notebook's path in the project, e.g. files/target/GEN.codex;
	// the editor picks its merge strategy by it.
	Path string
	// Local is the copy on the translator's machine (the editor's "ours"),
	// Server what the sync fetched ("theirs"), Base their common ancestor.
	Local, Server, Base []byte
}

type request struct {
	Path   string `json:"path"`
	Local  string `json:"local"`
	Server string `json:"server"`
	Base   string `json:"base,omitempty"`
	Out    string `json:"out"`
}

type reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// Run merges each of merges in one node process and returns the merged
// notebooks in order.
func (m *Merger) Run(ctx context.Context, merges []Merge) ([][]byte, error) {
	dir, err := os.MkdirTemp("", "editormerge-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var in bytes.Buffer
	enc := json.NewEncoder(&in)
	reqs := make([]request, len(merges))
	for i, mg := range merges {
		name := func(part string) string { return filepath.Join(dir, strconv.Itoa(i)+"."+part) }
		reqs[i] = request{Path: mg.Path, Local: name("local"), Server: name("server"), Out: name("out")}
		files := map[string][]byte{reqs[i].Local: mg.Local, reqs[i].Server: mg.Server}
		if mg.Base != nil {
			reqs[i].Base = name("base")
			files[reqs[i].Base] = mg.Base
		}
		for p, b := range files {
			if err := os.WriteFile(p, b, 0o644); err != nil {
				return nil, err
			}
		}
		if err := enc.Encode(reqs[i]); err != nil {
			return nil, err
		}
	}
	cmd := exec.CommandContext(ctx, m.node, m.bundle)
	cmd.Stdin = &in
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var replies []reply
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var r reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("editor merge output %q: %w", sc.Text(), err)
		}
		replies = append(replies, r)
	}
	if len(replies) != len(merges) {
		return nil, fmt.Errorf("editor merge: %d results for %d merges: %v: %s", len(replies), len(merges), runErr, tail(stderr.Bytes()))
	}
	out := make([][]byte, len(merges))
	for i, r := range replies {
		if !r.OK {
			return nil, fmt.Errorf("editor merge of %s: %s", merges[i].Path, r.Error)
		}
		if out[i], err = os.ReadFile(reqs[i].Out); err != nil {
			return nil, err
		}
	}
	if runErr != nil {
		return nil, fmt.Errorf("editor merge: %w: %s", runErr, tail(stderr.Bytes()))
	}
	return out, nil
}

func tail(b []byte) []byte {
	if len(b) > 2000 {
		return b[len(b)-2000:]
	}
	return b
}
