package repo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// imageStore fills a store at dir as the agent's fetches leave it after
// updates image updates: each image a tree of 64 chunk blobs of 32 KiB
// (random, as zstd chunks are) under a commit; each update replaces half
// of the chunks, its new chunks arriving 8 to a pack and its tree and
// commit in a pack of their own, and moves the image tag. A pack git made
// with deltas (a release history) is received under refs/heads/releases.
// The old images' packs stay while any of their chunks is still used. It
// returns the chunks of the newest image and one chunk no kept image uses.
func imageStore(t *testing.T, dir string, updates int) (*Store, map[plumbing.Hash][]byte, plumbing.Hash) {
	t.Helper()
	ctx := context.Background()
	st, err := Init(dir)
	must(t, err)
	pack, head := gitDeltaPack(t, "--window=10", "--depth=50")
	must(t, st.ReceivePack(bytes.NewReader(pack), 1<<30))
	must(t, st.SetRef("refs/heads/releases", plumbing.ZeroHash, head))
	rng := rand.New(rand.NewChaCha8([32]byte{7}))
	chunks := make([][]byte, 64)
	var dropped plumbing.Hash
	tag := plumbing.ZeroHash
	for u := range updates + 1 {
		var fresh []int
		for i := range chunks {
			if chunks[i] == nil || rng.IntN(2) == 0 {
				if chunks[i] != nil && dropped.IsZero() {
					dropped = HashObject(plumbing.BlobObject, chunks[i])
				}
				chunks[i] = make([]byte, 32<<10)
				for k := range chunks[i] {
					chunks[i][k] = byte(rng.Uint32())
				}
				fresh = append(fresh, i)
			}
		}
		for len(fresh) > 0 {
			n := min(8, len(fresh))
			s := NewObjectStream(nil)
			for _, i := range fresh[:n] {
				s.AddBytes(plumbing.BlobObject, chunks[i])
			}
			must(t, st.Write(ctx, s))
			fresh = fresh[n:]
		}
		var entries []TreeEntry
		for i, c := range chunks {
			entries = append(entries, TreeEntry{Name: fmt.Sprintf("%02d", i), Mode: filemode.Regular, ID: HashObject(plumbing.BlobObject, c)})
		}
		s := NewObjectStream(nil)
		data, tree, err := EncodeTree(entries)
		must(t, err)
		s.AddBytes(plumbing.TreeObject, data)
		who := Signature{Name: "x", Email: "x@x", When: time.Unix(1700000000, 0).UTC()}
		data, commit, err := EncodeCommit(Commit{Tree: tree, Author: who, Committer: who, Message: fmt.Sprintf("image %d\n", u)})
		must(t, err)
		s.AddBytes(plumbing.CommitObject, data)
		must(t, st.Write(ctx, s))
		must(t, st.SetRef("refs/tags/pullship/images/a", tag, commit))
		tag = commit
		// What the agent does after each converged pass.
		_, err = st.Prune(storeRefs(t, st))
		must(t, err)
	}
	blobs := map[plumbing.Hash][]byte{}
	for _, c := range chunks {
		blobs[HashObject(plumbing.BlobObject, c)] = c
	}
	return st, blobs, dropped
}

// storeRefs returns the values of st's refs.
func storeRefs(t testing.TB, st *Store) []plumbing.Hash {
	t.Helper()
	refs, err := st.Refs()
	must(t, err)
	var keep []plumbing.Hash
	for name, h := range refs {
		if name != "HEAD" {
			keep = append(keep, h)
		}
	}
	return keep
}

// checkNeeded reads every object keep reaches in st in full and checks
// its content against its id, and each chunk against its bytes.
func checkNeeded(t *testing.T, st *Store, keep []plumbing.Hash, blobs map[plumbing.Hash][]byte) {
	t.Helper()
	n := 0
	err := st.walk(keep, func(plumbing.Hash) bool { return false }, func(o Object) {
		obj, err := st.object(o.Type, o.ID)
		if err != nil {
			t.Errorf("object %s: %v", o.ID, err)
			return
		}
		r, err := obj.Reader()
		if err != nil {
			t.Errorf("object %s: %v", o.ID, err)
			return
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || HashObject(o.Type, b) != o.ID {
			t.Errorf("object %s: content does not hash to its id (%v)", o.ID, err)
		}
		if want, ok := blobs[o.ID]; ok && !bytes.Equal(b, want) {
			t.Errorf("chunk %s: wrong content", o.ID)
		}
		n++
	})
	if err != nil {
		t.Fatalf("walk after %d objects: %v", n, err)
	}
	for id := range blobs {
		if !st.HasObject(id) {
			t.Errorf("chunk %s missing", id)
		}
	}
}

// packDirBytes is the bytes of the files of st's pack directory and their
// names.
func packDirBytes(t *testing.T, st *Store) (int64, []string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(st.Dir(), "objects", "pack"))
	must(t, err)
	var n int64
	var names []string
	for _, e := range ents {
		fi, err := e.Info()
		must(t, err)
		n += fi.Size()
		names = append(names, e.Name())
	}
	return n, names
}

// TestRepack: a store after six image updates that share chunks, whose
// old packs stay while one of their chunks is used, shrinks to about the
// bytes of what its refs need, in one pack; every needed object (the
// release history's deltas, resolved, among them) is read back intact,
// and git reads the result (fsck, cat-file) as an independent reader. A
// second collection finds nothing to do. Before, the store was collected
// only pack by pack and kept every old image's packs.
func TestRepack(t *testing.T) {
	needGit(t)
	st, blobs, dropped := imageStore(t, t.TempDir(), 6)
	keep := storeRefs(t, st)
	before, names := packDirBytes(t, st)
	stats, err := st.Collect(context.Background(), keep)
	must(t, err)
	after, left := packDirBytes(t, st)
	t.Logf("before: %d bytes in %d files; live entries %d bytes, %d objects; after: %d bytes in %v; freed %d",
		before, len(names), stats.LiveBytes, stats.LiveObjects, after, left, stats.Freed)
	if !stats.Repacked || len(left) != 2 {
		t.Fatalf("not repacked into one pack: %+v, %v", stats, left)
	}
	if before < 2*after {
		t.Errorf("the store went from %d to %d bytes: a repack should drop the old images' chunks", before, after)
	}
	// The resolved deltas of the history grow it a little beyond its
	// entries as stored.
	if after > stats.LiveBytes+stats.LiveBytes/4+64<<10 {
		t.Errorf("after the repack the store holds %d bytes for %d bytes of live entries", after, stats.LiveBytes)
	}
	if st.HasObject(dropped) {
		t.Errorf("a chunk only an old image used survived the repack")
	}
	checkNeeded(t, st, keep, blobs)
	// A fresh reader of the directory, then git.
	again, err := OpenStore(st.Dir())
	must(t, err)
	checkNeeded(t, again, keep, blobs)
	git(t, st.Dir(), "fsck", "--strict", "--no-dangling")
	for id, want := range blobs {
		if got := git(t, st.Dir(), "cat-file", "blob", id.String()); got != string(want) {
			t.Fatalf("git cat-file blob %s: %d bytes, want %d", id, len(got), len(want))
		}
		break
	}
	if out := git(t, st.Dir(), "count-objects", "-v"); !strings.Contains(out, "packs: 1\n") || !strings.Contains(out, "garbage: 0\n") {
		t.Errorf("git count-objects -v:\n%s", out)
	}
	stats, err = st.Collect(context.Background(), keep)
	must(t, err)
	if stats.Repacked || stats.Freed != 0 {
		t.Errorf("a second collection did something: %+v", stats)
	}
}

// TestRepackCrash: a repack killed (SIGKILL) at each of its steps, before
// the new pack is written, between the new pack and its index, after
// both, and while the old packs go, leaves a store from which every
// needed object reads intact and that git fsck accepts; the next
// collection finishes the work (one pack) and removes what the crash left.
func TestRepackCrash(t *testing.T) {
	const env = "PULLSHIP_TEST_REPACK_CRASH"
	if arg := os.Getenv(env); arg != "" {
		dir, at, _ := strings.Cut(arg, "|")
		name, nth, _ := strings.Cut(at, "#")
		seen := 0
		repackStep = func(s string) {
			if s == name {
				if seen++; fmt.Sprint(seen) == nth {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
				}
			}
		}
		st, err := OpenStore(dir)
		must(t, err)
		_, err = st.Repack(context.Background(), storeRefs(t, st))
		t.Fatalf("the repack ran to its end (%v): no step %s", err, at)
	}
	needGit(t)
	template, blobs, _ := imageStore(t, t.TempDir(), 4)
	for _, at := range []string{"written#1", "pack in place#1", "installed#1", "index removed#1", "pack removed#1", "index removed#5"} {
		t.Run(at, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			must(t, os.CopyFS(dir, os.DirFS(template.Dir())))
			st, err := OpenStore(dir)
			must(t, err)
			keep := storeRefs(t, st)
			cmd := exec.Command(os.Args[0], "-test.run=^TestRepackCrash$")
			cmd.Env = append(os.Environ(), env+"="+st.Dir()+"|"+at)
			out, err := cmd.CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("the child was not killed at %s: %v\n%s", at, err, out)
			}
			_, names := packDirBytes(t, st)
			t.Logf("%d files left", len(names))
			crashed, err := OpenStore(st.Dir())
			must(t, err)
			checkNeeded(t, crashed, keep, blobs)
			git(t, st.Dir(), "fsck", "--strict", "--no-dangling")
			stats, err := crashed.Collect(context.Background(), keep)
			must(t, err)
			_, names = packDirBytes(t, crashed)
			if len(names) != 2 {
				t.Errorf("after the next collection (%+v): %v", stats, names)
			}
			checkNeeded(t, crashed, keep, blobs)
			git(t, st.Dir(), "fsck", "--strict", "--no-dangling")
		})
	}
}
