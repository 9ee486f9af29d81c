package bundler

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A fleet checked out as a linked work tree (git worktree add) records the
// commit its work tree is at, and its changes make it dirty, as in the main
// checkout: the work tree's .git is a file that points at its own git
// directory, whose refs and objects live in the main one's.
func TestFleetSourceLinkedWorktree(t *testing.T) {
	dir := t.TempDir()
	run := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=ops", "GIT_AUTHOR_EMAIL=ops@example.com",
			"GIT_COMMITTER_NAME=ops", "GIT_COMMITTER_EMAIL=ops@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	main := filepath.Join(dir, "main")
	run(dir, "init", "-q", "-b", "main", main)
	if err := os.MkdirAll(filepath.Join(main, "fleet"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(main, "fleet", "fleet.toml"), []byte("# fleet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(main, "add", ".")
	run(main, "commit", "-q", "-m", "fleet")
	linked := filepath.Join(dir, "linked")
	run(main, "worktree", "add", "-q", "-b", "wave2", linked)
	if err := os.WriteFile(filepath.Join(linked, "fleet", "fleet.toml"), []byte("# fleet, wave 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(linked, "commit", "-q", "-am", "wave 2")
	want := run(linked, "rev-parse", "HEAD")

	src, err := fleetSource(filepath.Join(linked, "fleet"), "", false)
	if err != nil {
		t.Fatalf("fleet in a linked work tree: %v", err)
	}
	if src == nil || src.Commit != want || src.Dirty {
		t.Fatalf("source %+v, want commit %s, clean", src, want)
	}
	if err := os.WriteFile(filepath.Join(linked, "fleet", "fleet.toml"), []byte("# edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if src, err := fleetSource(filepath.Join(linked, "fleet"), "", true); err != nil || src == nil || !src.Dirty {
		t.Fatalf("edited fleet in a linked work tree: %+v, %v; want dirty", src, err)
	}
}
