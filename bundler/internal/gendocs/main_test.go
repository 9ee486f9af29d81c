package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestDocsCurrent fails when docs/cli differs from what the commands say:
// run `make docs` after changing a command's flags or help.
func TestDocsCurrent(t *testing.T) {
	tmp := t.TempDir()
	if err := Generate(tmp); err != nil {
		t.Fatal(err)
	}
	committed := filepath.Join("..", "..", "..", "docs", "cli")
	gen, _ := filepath.Glob(filepath.Join(tmp, "*.md"))
	have, _ := filepath.Glob(filepath.Join(committed, "*.md"))
	if len(gen) != len(have) {
		t.Fatalf("docs/cli has %d pages, the commands make %d: run make docs", len(have), len(gen))
	}
	for _, g := range gen {
		want, _ := os.ReadFile(g)
		got, err := os.ReadFile(filepath.Join(committed, filepath.Base(g)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("docs/cli/%s is out of date: run make docs", filepath.Base(g))
		}
	}
}
