package deptest

import (
	"slices"
	"testing"
)

func TestBroken(t *testing.T) {
	rules := []Rule{
		{Path: "text/template", Why: "no templates"},
		{Path: "example.com/m/bundler", Why: "writer", Except: []string{"example.com/m/bundler/shared"}},
	}
	deps := []string{
		"fmt",
		"text/template",
		"text/template/parse",
		"text/templatex", // a sibling name, not under text/template
		"example.com/m/bundler",
		"example.com/m/bundler/render",
		"example.com/m/bundler/shared/repo",
		"example.com/m/bundlerx",
	}
	got := Broken(deps, rules)
	want := []string{
		"example.com/m/bundler/render: writer",
		"example.com/m/bundler: writer",
		"text/template/parse: no templates",
		"text/template: no templates",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Broken = %q, want %q", got, want)
	}
	if got := Broken([]string{"fmt", "os"}, rules); len(got) != 0 {
		t.Fatalf("Broken of allowed deps = %q", got)
	}
}

// Deps lists the package itself and what it links, so a rule on a package
// the tested one imports can match.
func TestDeps(t *testing.T) {
	deps := Deps(t, ".")
	for _, p := range []string{"github.com/pullship/pullship/bundler/shared/deptest", "os/exec", "testing"} {
		if !slices.Contains(deps, p) {
			t.Errorf("go list -deps of deptest lacks %s: %q", p, deps)
		}
	}
	if b := Broken(deps, []Rule{{Path: "os/exec", Why: "no processes"}}); len(b) != 1 {
		t.Errorf("a rule against os/exec matched %q in deptest's deps", b)
	}
}
