package atomicfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullship/pullship/bundler/shared/atomicfile"
)

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("old"), 0o644)
	if err := atomicfile.WriteFile(p, strings.NewReader("new"), 0o640); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if read(t, p) != "new" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("got %q %v", read(t, p), fi.Mode())
	}
	if n := names(t, dir); len(n) != 1 {
		t.Fatalf("temporary file left behind: %v", n)
	}
	// The mode is the one asked for, whatever the umask.
	if err := atomicfile.WriteFile(p, strings.NewReader("x"), 0o666); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o666 {
		t.Fatalf("mode %v, want 0666", fi.Mode())
	}
}

func TestAbortLeavesTarget(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("old"), 0o644)
	f, err := atomicfile.Create(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("half"))
	f.Abort()
	if read(t, p) != "old" || len(names(t, dir)) != 1 {
		t.Fatalf("after abort: %q %v", read(t, p), names(t, dir))
	}
}

func TestWriteNewRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := atomicfile.WriteNew(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.WriteNew(p, []byte("two"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second WriteNew: %v", err)
	}
	if fi, _ := os.Stat(p); read(t, p) != "one" || fi.Mode().Perm() != 0o600 || len(names(t, dir)) != 1 {
		t.Fatalf("key %q %v, dir %v", read(t, p), fi.Mode(), names(t, dir))
	}
}

func TestLockIsExclusive(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ref")
	l, err := atomicfile.Lock(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := atomicfile.Lock(p, 0o644); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second lock: %v", err)
	}
	l.Write([]byte("v\n"))
	if err := l.Commit(); err != nil {
		t.Fatal(err)
	}
	if read(t, p) != "v\n" || len(names(t, dir)) != 1 {
		t.Fatalf("after commit: %q %v", read(t, p), names(t, dir))
	}
}

// TestInRootNeverFollowsLinks: a link at the name is replaced or removed
// itself; what it points at is untouched.
func TestInRootNeverFollowsLinks(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	victim := filepath.Join(other, "victim")
	os.WriteFile(victim, []byte("victim"), 0o600)
	os.Symlink(victim, filepath.Join(dir, "f"))
	os.Symlink(victim, filepath.Join(dir, "g"))
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := atomicfile.WriteFileIn(root, "f", strings.NewReader("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.RemoveIn(root, "g"); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "f")); !fi.Mode().IsRegular() || read(t, filepath.Join(dir, "f")) != "new" {
		t.Fatalf("f: %v", fi.Mode())
	}
	if _, err := os.Lstat(filepath.Join(dir, "g")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("g: %v", err)
	}
	if read(t, victim) != "victim" {
		t.Fatal("written through a link")
	}
	for _, bad := range []string{"a/b", "..", ".", ""} {
		if err := atomicfile.WriteFileIn(root, bad, strings.NewReader("x"), 0o644); !errors.Is(err, atomicfile.ErrName) {
			t.Errorf("name %q: %v", bad, err)
		}
	}
}
