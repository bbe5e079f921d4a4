package worker

import (
	"go/build"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Data flows one way: the worker knows manifests, projects and its own
// interfaces; notebooks, engines, handlers and backends reach it through them.
func TestWorkerDependsOnlyOnManifestAndProject(t *testing.T) {
	allowed := map[string]bool{"gpu-worker/manifest": true, "gpu-worker/project": true, "gpu-worker/limits": true}
	deps := map[string]bool{}
	var walk func(dir string)
	walk = func(dir string) {
		pkg, err := build.ImportDir(dir, 0)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		for _, imp := range pkg.Imports {
			rest, ok := strings.CutPrefix(imp, "gpu-worker/")
			if !ok || deps[imp] {
				continue
			}
			deps[imp] = true
			walk(filepath.Join("..", filepath.FromSlash(rest)))
		}
	}
	walk(".")
	var bad []string
	for d := range deps {
		if !allowed[d] {
			bad = append(bad, d)
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Errorf("worker depends on %v; only manifest, project and limits are allowed", bad)
	}
	if !deps["gpu-worker/manifest"] || !deps["gpu-worker/project"] {
		t.Errorf("import walk found %v; it should see manifest and project", deps)
	}
}
