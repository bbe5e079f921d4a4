package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// The backend is chosen in one place: only backend.go opens a folder or a
// GitLab client, whatever the command.
func TestBackendChosenInOnePlace(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "backend.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); ok {
				if call := pkg.Name + "." + sel.Sel.Name; call == "local.Open" || call == "gitlab.New" || call == "gitlab.NewSource" {
					t.Errorf("%s: %s outside backend.go", fset.Position(sel.Pos()), call)
				}
			}
			return true
		})
	}
}
