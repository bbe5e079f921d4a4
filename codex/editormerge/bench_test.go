package editormerge

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkEditorMerge times one sync of a notebook through the editor's
// merge (node, the bundled code), in batches as the scenario test runs
// them: b.N merges of the fixture with a copy of itself in one process.
func BenchmarkEditorMerge(b *testing.B) {
	m, err := Find(context.Background(), ".")
	if err != nil {
		b.Fatal(err)
	}
	for _, fx := range []struct{ name, file, path string }{
		{"GEN-16KB", "GEN1to20_user2.codex", "files/target/GEN.codex"},
		{"TheChosen-200KB", "TheChosen_101_en.codex", "files/target/TheChosen_101_en.codex"},
	} {
		b.Run(fx.name, func(b *testing.B) {
			data, err := os.ReadFile(filepath.Join("..", "testdata", "fixtures", fx.file))
			if err != nil {
				b.Fatal(err)
			}
			merges := make([]Merge, b.N)
			for i := range merges {
				merges[i] = Merge{Path: fx.path, Local: data, Server: data}
			}
			b.ResetTimer()
			if _, err := m.Run(context.Background(), merges); err != nil {
				b.Fatal(err)
			}
		})
	}
}
