//go:build unix

package repo

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
)

// TestStoreIgnoresSpecialFiles: a removable disk's store whose loose
// object or pack is a FIFO (a read would block the agent's poll forever)
// or a link: the object is not found, at once.
func TestStoreIgnoresSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	st, err := Init(dir)
	must(t, err)
	fifo := HashObject(plumbing.BlobObject, []byte("fifo"))
	h := fifo.String()
	must(t, os.MkdirAll(filepath.Join(dir, "objects", h[:2]), 0o755))
	must(t, syscall.Mkfifo(filepath.Join(dir, "objects", h[:2], h[2:]), 0o644))
	link := HashObject(plumbing.BlobObject, []byte("link"))
	h = link.String()
	must(t, os.MkdirAll(filepath.Join(dir, "objects", h[:2]), 0o755))
	must(t, os.Symlink("/dev/zero", filepath.Join(dir, "objects", h[:2], h[2:])))
	// A pack whose .pack is a FIFO next to a genuine index.
	chain, id := chainStore(t, 3)
	packs, _ := filepath.Glob(filepath.Join(chain.Dir(), "objects", "pack", "pack-*"))
	for _, p := range packs {
		must(t, os.Rename(p, filepath.Join(dir, "objects", "pack", filepath.Base(p))))
	}
	for _, p := range packs {
		if filepath.Ext(p) == ".pack" {
			q := filepath.Join(dir, "objects", "pack", filepath.Base(p))
			must(t, os.Remove(q))
			must(t, syscall.Mkfifo(q, 0o644))
		}
	}
	st.reload()
	for _, o := range []plumbing.Hash{fifo, link, id} {
		if st.HasObject(o) {
			t.Errorf("%s: found", o)
		}
		if _, _, err := st.readObject(plumbing.AnyObject, o, 16); err == nil {
			t.Errorf("%s: read", o)
		}
	}
}
