package hostfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// setup makes an allowed dir with app/ in it, and a directory outside.
func setup(t *testing.T) (d Dirs, allowed, outside string) {
	base := t.TempDir()
	allowed, outside = filepath.Join(base, "etc"), filepath.Join(base, "outside")
	for _, p := range []string{filepath.Join(allowed, "app"), outside} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Dirs{allowed}, allowed, outside
}

func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(allowed, outside string) error
		want  error
	}{
		{"file link", func(a, o string) error { return os.Symlink(filepath.Join(o, "secret"), filepath.Join(a, "app", "f")) }, ErrNotRegular},
		{"relative file link", func(a, o string) error { return os.Symlink("../../outside/secret", filepath.Join(a, "app", "f")) }, ErrNotRegular},
		{"link inside the allowed dir", func(a, o string) error {
			os.WriteFile(filepath.Join(a, "other"), []byte("x"), 0o644)
			return os.Symlink("../other", filepath.Join(a, "app", "f"))
		}, ErrNotRegular},
		{"dir link", func(a, o string) error {
			os.Rename(filepath.Join(o, "secret"), filepath.Join(o, "f"))
			os.Remove(filepath.Join(a, "app"))
			return os.Symlink(o, filepath.Join(a, "app"))
		}, ErrSymlink},
		{"dangling dir link", func(a, o string) error {
			os.Remove(filepath.Join(a, "app"))
			return os.Symlink(filepath.Join(o, "none"), filepath.Join(a, "app"))
		}, ErrSymlink},
		{"hard link", func(a, o string) error { return os.Link(filepath.Join(o, "secret"), filepath.Join(a, "app", "f")) }, ErrNotRegular},
		{"FIFO", func(a, o string) error { return syscall.Mkfifo(filepath.Join(a, "app", "f"), 0o644) }, ErrNotRegular},
		{"directory", func(a, o string) error { return os.Mkdir(filepath.Join(a, "app", "f"), 0o755) }, ErrNotRegular},
		{"too large", func(a, o string) error {
			f, err := os.Create(filepath.Join(a, "app", "f"))
			if err != nil {
				return err
			}
			defer f.Close()
			return f.Truncate(maxRead + 1) // sparse: no disk used
		}, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, allowed, outside := setup(t)
			if err := tc.plant(allowed, outside); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(allowed, "app", "f")
			if _, err := d.SHA256(p); !errors.Is(err, tc.want) {
				t.Fatalf("SHA256: %v, want %v", err, tc.want)
			}
			if f, _, err := d.Open(p); !errors.Is(err, tc.want) {
				if f != nil {
					f.Close()
				}
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
			// Writing replaces a planted file; through a planted directory
			// link it is refused. Nothing outside changes.
			err := d.Write(p, strings.NewReader("new"), 0o644)
			if errors.Is(tc.want, ErrSymlink) != errors.Is(err, ErrSymlink) {
				t.Fatalf("Write: %v", err)
			}
			ents, _ := os.ReadDir(outside)
			for _, e := range ents {
				if b, _ := os.ReadFile(filepath.Join(outside, e.Name())); string(b) != "secret" {
					t.Fatalf("outside %s now holds %q", e.Name(), b)
				}
			}
			if err := d.Remove(p); errors.Is(tc.want, ErrSymlink) != errors.Is(err, ErrSymlink) {
				t.Fatalf("Remove: %v", err)
			}
			if len(ents) != 1 {
				if _, err := os.Stat(filepath.Join(outside, "secret")); err != nil {
					t.Fatalf("outside file removed: %v", err)
				}
			}
		})
	}
}

func TestWriteReadRemove(t *testing.T) {
	d, allowed, _ := setup(t)
	p := filepath.Join(allowed, "new", "deeper", "f")
	if err := d.Write(p, strings.NewReader("data"), 0o640); err != nil {
		t.Fatal(err)
	}
	f, fi, err := d.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "data" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("read %q mode %v", b, fi.Mode())
	}
	if err := d.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after Remove: %v", err)
	}
	if err := d.Remove(filepath.Join(allowed, "none", "f")); err != nil {
		t.Fatalf("Remove of a missing file: %v", err)
	}
	for _, bad := range []string{"/elsewhere/f", allowed, allowed + "x/f", "relative/f", allowed + "/a/../../x"} {
		if err := d.Write(bad, strings.NewReader("x"), 0o644); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("Write %s: %v", bad, err)
		}
	}
}

// TestGrowingFileCut: a file that grows past the limit while it is read
// is cut with ErrTooLarge.
func TestGrowingFileCut(t *testing.T) {
	d, allowed, _ := setup(t)
	old := maxRead
	maxRead = 10
	t.Cleanup(func() { maxRead = old })
	p := filepath.Join(allowed, "app", "f")
	os.WriteFile(p, []byte("12345"), 0o644)
	f, _, err := d.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	os.WriteFile(p, []byte("123456789012345"), 0o644) // same inode, now 15 bytes
	if _, err := io.ReadAll(f); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("read of a grown file: %v", err)
	}
}
