package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoDiffLibrary: the agent links no diff library. go-git's
// plumbing/object imports utils/diff and github.com/sergi/go-diff, so the
// git layer decodes trees, commits and tags itself (bundler/shared/repo).
func TestNoDiffLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.Contains(p, "sergi/go-diff") || strings.HasSuffix(p, "go-git/v5/utils/diff") || strings.HasSuffix(p, "go-git/v5/plumbing/object") {
			t.Errorf("pullship-agent links %s", p)
		}
	}
}
