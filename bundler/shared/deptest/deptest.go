// Package deptest checks which packages a program or package links, so the
// dependency rules of the layout are tests that fail when an import breaks
// them (in the spirit of tailscale's tstest/deptest): the agent links no
// template engine, renderer, diff library or KMS client; schema reaches no
// network, process or git code; the release side imports nothing of the
// agent's.
//
// Imported by tests only, on either side.
package deptest

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

// A Rule forbids a package path and everything under it, saying why.
type Rule struct {
	Path string // an import path; it and the packages under it are forbidden
	Why  string
	// Except lists paths under Path that stay allowed (and what is under
	// them).
	Except []string
}

func under(p, path string) bool {
	return p == path || strings.HasPrefix(p, strings.TrimSuffix(path, "/")+"/")
}

// Broken returns, sorted, one line per package of deps that a rule forbids:
// the package and the rule's reason.
func Broken(deps []string, rules []Rule) []string {
	var bad []string
	for _, p := range deps {
	rules:
		for _, r := range rules {
			if !under(p, r.Path) {
				continue
			}
			for _, e := range r.Except {
				if under(p, e) {
					continue rules
				}
			}
			bad = append(bad, p+": "+r.Why)
		}
	}
	sort.Strings(bad)
	return bad
}

// Deps returns what `go list -deps` lists for pkg: the package and
// everything it links, the standard library included.
func Deps(t testing.TB, pkg string) []string {
	t.Helper()
	return golist(t, "-deps", pkg)
}

func golist(t testing.TB, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, ee.Stderr)
		}
		t.Fatalf("go list %s: %v", strings.Join(args, " "), err)
	}
	return strings.Fields(string(out))
}

// Check fails t for every package pkg links that a rule forbids.
func Check(t testing.TB, pkg string, rules []Rule) {
	t.Helper()
	deps := Deps(t, pkg)
	if len(deps) == 0 {
		t.Fatalf("go list -deps %s listed nothing", pkg)
	}
	for _, b := range Broken(deps, rules) {
		t.Errorf("%s links %s", pkg, b)
	}
}

// Undocumented returns the packages matching pattern (such as "./...")
// that have no package doc comment, commands included (packages of test
// files only are left out).
func Undocumented(t testing.TB, pattern string) []string {
	t.Helper()
	var bad []string
	for _, line := range golist(t, "-f", "{{.ImportPath}}:{{if .Doc}}doc{{else if .GoFiles}}none{{else}}doc{{end}}", pattern) {
		p, doc, _ := strings.Cut(line, ":")
		if doc != "doc" {
			bad = append(bad, p)
		}
	}
	return bad
}
