package atomicfile_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// forbidden are the calls a hand-made durable write is built from: outside
// this package, production code writes files through atomicfile instead.
// forbidden are the calls a hand-made durable write is built from: outside
// this package, production code writes files through atomicfile instead.
var forbidden = map[string]bool{
	"os.WriteFile": true, // no fsync, no rename: a crash leaves half a file
	"os.Rename":    true, // a rename without the directory's fsync is not durable
	"os.Link":      true,
	"os.O_EXCL":    true, // a new-file writer by hand
	"os.Create":    true,
	"os.O_TRUNC":   true, // a file rewritten in place
	"os.O_APPEND":  true,
}

// forbiddenMethods are the same for methods (of *os.File and *os.Root),
// by their number of arguments.
var forbiddenMethods = map[string]int{
	"Sync":      0, // an fsync by hand means a writer by hand
	"Rename":    2,
	"WriteFile": 3,
}

// TestDurableWritesUseAtomicfile scans the module's production code (not
// tests, test helpers or the internal tools) for hand-made durable writes.
func TestDurableWritesUseAtomicfile(t *testing.T) {
	module, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	self, _ := filepath.Abs(".")
	fset := token.NewFileSet()
	checked := 0
	err = filepath.WalkDir(module, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			n := d.Name()
			if path == self || n == "testdata" || n == "internal" || strings.HasSuffix(n, "test") || strings.HasPrefix(n, ".") && path != module {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		checked++
		rel, _ := filepath.Rel(module, path)
		for _, bad := range forbiddenUses(f) {
			t.Errorf("%s:%d: %s: write durable files with bundler/shared/atomicfile", rel, fset.Position(bad.Pos()).Line, bad.what)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("checked only %d files: is the module root right?", checked)
	}
}

type use struct {
	ast.Node
	what string
}

func forbiddenUses(f *ast.File) []use {
	var out []use
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			if x, ok := n.X.(*ast.Ident); ok && x.Name == "os" && forbidden["os."+n.Sel.Name] {
				out = append(out, use{n, "os." + n.Sel.Name})
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && (x.Name == "os" || x.Name == "atomicfile") {
				return true
			}
			if args, ok := forbiddenMethods[sel.Sel.Name]; ok && args == len(n.Args) {
				out = append(out, use{n, "." + sel.Sel.Name})
			}
		}
		return true
	})
	return out
}
