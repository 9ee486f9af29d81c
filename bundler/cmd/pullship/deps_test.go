package main

import (
	"strings"
	"testing"

	"github.com/pullship/pullship/bundler/shared/deptest"
)

// TestPullshipDeps: the release CLI imports nothing of the agent's; what
// both sides use lives in bundler/shared and schema.
func TestPullshipDeps(t *testing.T) {
	deptest.Check(t, ".", []deptest.Rule{
		{Path: "github.com/pullship/pullship/agent", Why: "the host side"},
		{Path: "github.com/pullship/pullship/bundler/shared/deptest", Why: "test code"},
	})
}

// TestSharedDeps: the read side imports neither side's own packages.
func TestSharedDeps(t *testing.T) {
	for _, p := range sharedPackages(t) {
		deptest.Check(t, p, []deptest.Rule{
			{Path: "github.com/pullship/pullship/agent", Why: "the host side"},
			{Path: "github.com/pullship/pullship/bundler", Why: "the release writer", Except: []string{"github.com/pullship/pullship/bundler/shared"}},
			{Path: "text/template", Why: "a template engine"},
		})
	}
}

func sharedPackages(t *testing.T) []string {
	t.Helper()
	var ps []string
	for _, p := range deptest.Deps(t, "github.com/pullship/pullship/bundler/shared/...") {
		if strings.HasPrefix(p, "github.com/pullship/pullship/bundler/shared/") {
			ps = append(ps, p)
		}
	}
	if len(ps) < 5 {
		t.Fatalf("found %d shared packages: %q", len(ps), ps)
	}
	return ps
}

// TestPackageDocs: every package says what it is for (and, for the shared
// ones, that both sides may import them).
func TestPackageDocs(t *testing.T) {
	for _, p := range deptest.Undocumented(t, "github.com/pullship/pullship/...") {
		t.Errorf("%s has no package doc", p)
	}
}
