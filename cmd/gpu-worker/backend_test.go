package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
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

// The warning about a token on the command line is for --token only, not
// for a token from GITLAB_TOKEN or the config file.
func TestTokenFromCommandLineOnly(t *testing.T) {
	file := filepath.Join(t.TempDir(), "worker.yaml")
	if err := os.WriteFile(file, []byte("token: from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		env  string
		args []string
		want bool
	}{
		{"flag", "", []string{"--token", "t"}, true},
		{"environment", "from-env", nil, false},
		{"config file", "", []string{"--config", file}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("GITLAB_TOKEN", c.env)
			s, f := newRunFlags("run", io.Discard)
			if err := s.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			if err := f.loadToken(); err != nil {
				t.Fatal(err)
			}
			if *f.token == "" || f.tokenFromFlag != c.want {
				t.Errorf("token %q: from the command line %v, want %v", *f.token, f.tokenFromFlag, c.want)
			}
		})
	}
}
