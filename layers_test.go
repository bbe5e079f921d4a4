package deps

import (
	"errors"
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// layers says, for every Go package of the module (by folder), which of the
// module's packages its non-test files may import. Data flows one way:
// leaves know nothing of the project; the worker knows manifests and
// projects; what runs jobs (handlers) knows the worker, engines and GPUs;
// only the commands put everything together. A new package needs a line.
var layers = map[string][]string{
	// Leaves.
	".":                 nil, // the module's tool dependencies and this test
	"atomicfile":        nil,
	"audio":             nil,
	"codex/editormerge": nil,
	"config":            nil,
	"deploy":            nil, // tests of the packaged deployment files
	"e2e":               nil, // tests of the built binary
	"engine":            nil,
	"gpu":               nil, // devices, NVML, free memory by index: no jobs
	"limits":            nil,
	"contract":          nil, // the engines' schema and one struct per command
	"project":           nil,

	// Built on projects and limits.
	"codex":               {"project"},
	"dataset":             {"audio", "limits", "project"},
	"demoproject":         {"project"},
	"gitlab":              {"project"},
	"gitlab/gitlabtest":   {"project"},
	"local":               {"atomicfile", "project"},
	"manifest":            {"limits"},
	"project/projecttest": {"project"},

	// The worker: claims, leases and outcomes of jobs it cannot run itself.
	"worker": {"limits", "manifest", "project"},
	// What reads the host and the queue for operators.
	"ops":     {"gpu", "manifest", "project"},
	"metrics": {"gpu", "manifest", "worker"},
	// What runs jobs: slots' GPUs, engines, OOM retries, uploads.
	"handlers": {"atomicfile", "audio", "codex", "contract", "dataset", "engine", "gpu", "limits", "manifest", "project", "worker"},

	// Programs.
	"cmd/demo":       {"codex", "demoproject", "manifest"},
	"cmd/gpu-worker": {"config", "contract", "engine", "gitlab", "gpu", "handlers", "limits", "local", "manifest", "metrics", "ops", "project", "worker"},
}

const module = "gpu-worker"

// TestLayers checks every package's imports of the module against layers,
// whatever its build constraints (NVML's cgo file, other systems' files).
func TestLayers(t *testing.T) {
	ctx := build.Default
	ctx.UseAllFiles = true
	seen := map[string]bool{}
	err := filepath.WalkDir(".", func(dir string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if dir != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" ||
			name == "engines" || name == "third_party" || name == "node_modules") {
			return filepath.SkipDir
		}
		if dir != "." {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
		}
		pkg, err := ctx.ImportDir(dir, 0)
		var none *build.NoGoError
		if errors.As(err, &none) {
			return nil
		}
		if err != nil {
			t.Errorf("%s: %v", dir, err)
			return nil
		}
		rel := filepath.ToSlash(dir)
		seen[rel] = true
		allowed, listed := layers[rel]
		if !listed {
			t.Errorf("package %s is not in the layers table: add it with the packages it may import", rel)
			return nil
		}
		var bad []string
		for _, imp := range pkg.Imports {
			dep, ok := strings.CutPrefix(imp, module+"/")
			if ok && !slices.Contains(allowed, dep) {
				bad = append(bad, dep)
			}
		}
		if len(bad) > 0 {
			t.Errorf("%s imports %v; it may import only %v", rel, bad, allowed)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var gone []string
	for p := range layers {
		if !seen[p] {
			gone = append(gone, p)
		}
	}
	sort.Strings(gone)
	if len(gone) > 0 {
		t.Errorf("the layers table names packages that do not exist: %v", gone)
	}
	for _, leaf := range []string{"gpu", "worker", "handlers", "cmd/gpu-worker"} {
		if !seen[leaf] {
			t.Errorf("the walk missed %s", leaf)
		}
	}
}
