package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestNoFaultInjection builds pullship-agent as `make build` does and checks
// that the shipped binary carries none of the crash tests' fault injection:
// no environment knob that makes it kill itself (the tests install their
// hook from their own binary, see agent/main_test.go), and no link to
// package testing.
func TestNoFaultInjection(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	bin := filepath.Join(t.TempDir(), "pullship-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"PULLSHIP_AGENT_CRASH_AT", "CRASH_AT", "PULLSHIP_TEST_"} {
		if bytes.Contains(data, []byte(s)) {
			t.Errorf("the shipped agent contains %q: fault injection belongs in test builds only", s)
		}
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, p := range bytes.Fields(out) {
		if string(p) == "testing" {
			t.Error("pullship-agent links package testing")
		}
	}
}
