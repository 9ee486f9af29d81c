//go:build unix

package repo

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

// refusedAtOnce runs f, which must fail rather than block: on a FIFO with
// no writer an open blocks forever, so a minute is no bound on the
// answer, only on the wait for a hung test.
func refusedAtOnce(t *testing.T, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("%s: read", what)
		} else {
			t.Logf("%s: %v", what, err)
		}
	case <-time.After(time.Minute):
		t.Errorf("%s: blocked", what)
	}
}

// TestStoreSpecialFilesSwappedIn: a FIFO put where a pack, a pack index,
// a loose object or a ref was, after the store looked at it (a removable
// disk's store changing under the agent), is refused when it is opened:
// every open of the store's files is without following a link, does not
// block, and checks the file it opened. Before, the check was by name
// before the open, and the open of the FIFO blocked forever.
func TestStoreSpecialFilesSwappedIn(t *testing.T) {
	dir := t.TempDir()
	st, err := Init(dir)
	must(t, err)
	s := NewObjectStream(nil)
	id := s.AddBytes(plumbing.BlobObject, []byte("swapped\n"))
	must(t, st.Write(context.Background(), s))
	must(t, st.SetRef("refs/heads/releases", plumbing.ZeroHash, id))
	fifo := func(path string) {
		t.Helper()
		tmp := path + ".fifo"
		must(t, syscall.Mkfifo(tmp, 0o644))
		must(t, os.Rename(tmp, path))
	}
	if !st.HasObject(id) {
		t.Fatal("blob not in the store")
	}
	packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*.pack"))
	if len(packs) != 1 {
		t.Fatalf("packs: %v", packs)
	}
	// The store has seen the pack (regular then); it opens it at the
	// first read.
	fifo(packs[0])
	refusedAtOnce(t, "pack", func() error { _, _, err := st.readObject(plumbing.AnyObject, id, 64); return err })
	idx := strings.TrimSuffix(packs[0], ".pack") + ".idx"
	fifo(idx)
	refusedAtOnce(t, "pack index", func() error { _, err := openPackIndex(idx, 1<<20); return err })
	loose := HashObject(plumbing.BlobObject, []byte("loose\n"))
	h := loose.String()
	must(t, os.MkdirAll(filepath.Join(dir, "objects", h[:2]), 0o755))
	fifo(filepath.Join(dir, "objects", h[:2], h[2:]))
	refusedAtOnce(t, "loose object", func() error { _, err := st.objects().loose.EncodedObject(plumbing.AnyObject, loose); return err })
	fifo(filepath.Join(dir, "refs", "heads", "releases"))
	refusedAtOnce(t, "ref", func() error { _, err := st.Ref("refs/heads/releases"); return err })
	fifo(filepath.Join(dir, "packed-refs"))
	refusedAtOnce(t, "packed-refs", func() error { _, err := st.Ref("refs/heads/other"); return err })
}
