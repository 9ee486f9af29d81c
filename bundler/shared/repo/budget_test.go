package repo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// bigPack writes to w a pack of a commit whose tree holds one blob of
// size random bytes, and returns the commit.
func bigPack(t testing.TB, w io.Writer, size int) plumbing.Hash {
	t.Helper()
	s := NewObjectStream(nil)
	b := make([]byte, size)
	rng := rand.New(rand.NewChaCha8([32]byte{9}))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	blob := s.AddBytes(plumbing.BlobObject, b)
	data, tree, err := EncodeTree([]TreeEntry{{Name: "big", Mode: filemode.Regular, ID: blob}})
	must(t, err)
	s.AddBytes(plumbing.TreeObject, data)
	data, commit, err := EncodeCommit(Commit{Tree: tree, Author: sig, Committer: sig, Message: "big\n"})
	must(t, err)
	s.AddBytes(plumbing.CommitObject, data)
	_, _, err = WritePack(context.Background(), w, s)
	must(t, err)
	return commit
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestStoreBudget: a fetch into a store whose byte budget leaves less
// than the pack fails with ErrStoreBudget and stores nothing: the store's
// usage is what it was, and the pack was read no further than the budget
// leaves (so the spool on disk never held more). A store with no room
// left asks nothing of the remote. Without the budget the same fetch
// succeeds.
func TestStoreBudget(t *testing.T) {
	var pack bytes.Buffer
	head := bigPack(t, &pack, 4<<20)
	url := packServer(t, head, pack.Bytes())
	r, err := Open(context.Background(), url, Options{})
	must(t, err)
	st, err := Init(t.TempDir())
	must(t, err)
	before, err := st.Usage()
	must(t, err)
	st.SetBudget(before + 1<<20)
	fetch := func() error {
		_, err := r.Fetch(context.Background(), st, FetchRequest{Refs: []string{"refs/heads/releases"}, MaxPackBytes: 64 << 20})
		return err
	}
	err = fetch()
	t.Logf("fetch: %v", err)
	if !errors.Is(err, ErrStoreBudget) {
		t.Fatalf("fetch beyond the budget: %v, want ErrStoreBudget", err)
	}
	if after, err := st.Usage(); err != nil || after != before {
		t.Fatalf("the store went from %d to %d bytes (%v)", before, after, err)
	}
	if left, _ := filepath.Glob(filepath.Join(st.Dir(), "objects", "pack", "*")); len(left) != 0 {
		t.Fatalf("left in the store: %v", left)
	}
	if st.HasObject(head) {
		t.Fatal("the commit is in the store")
	}

	// The pack is read no further than the room.
	room, err := st.Room()
	must(t, err)
	c := &countReader{r: bytes.NewReader(pack.Bytes())}
	if err := st.ReceivePack(c, 1<<30); !errors.Is(err, ErrStoreBudget) {
		t.Fatalf("receive beyond the budget: %v", err)
	}
	t.Logf("read %d bytes of the %d-byte pack with %d bytes of room", c.n, pack.Len(), room)
	if c.n > room+1 {
		t.Errorf("read %d bytes of the pack, the budget leaves %d", c.n, room)
	}

	// No room: nothing is asked.
	st.SetBudget(before)
	if err := fetch(); !errors.Is(err, ErrStoreBudget) {
		t.Fatalf("fetch with no room: %v", err)
	}

	st.SetBudget(0)
	must(t, fetch())
	if !st.HasObject(head) {
		t.Fatal("the commit is not in the store")
	}
}

// TestStoreBudgetReservations: packs received at once each get room of
// their own, the sum within what the budget leaves; the room comes back
// when they are done.
func TestStoreBudgetReservations(t *testing.T) {
	st, err := Init(t.TempDir())
	must(t, err)
	used, err := st.Usage()
	must(t, err)
	st.SetBudget(used + 10<<20)
	a, err := st.reserve(6<<20, 16)
	must(t, err)
	b, err := st.reserve(6<<20, 16)
	must(t, err)
	if a.bytes+b.bytes > 10<<20 || b.bytes >= 6<<20 {
		t.Errorf("reserved %d and %d bytes of 10 MiB", a.bytes, b.bytes)
	}
	if _, err := st.reserve(6<<20, 16); !errors.Is(err, ErrStoreBudget) {
		t.Errorf("a third pack: %v", err)
	}
	a.release()
	b.release()
	if room, err := st.Room(); err != nil || room != 10<<20 {
		t.Errorf("room after release: %d (%v)", room, err)
	}
}

// TestStoreBudgetMemory: a 32 MiB pack received into a store whose
// budget leaves 8 MiB is refused with the host's heap under 64 MiB, and
// the store's usage on disk unchanged.
func TestStoreBudgetMemory(t *testing.T) {
	const env = "PULLSHIP_TEST_BUDGET_MEMORY"
	if p := os.Getenv(env); p != "" {
		childMemory(t, func() {
			st, err := Init(t.TempDir())
			must(t, err)
			before, err := st.Usage()
			must(t, err)
			st.SetBudget(before + 8<<20)
			f, err := os.Open(p)
			must(t, err)
			defer f.Close()
			c := &countReader{r: f}
			err = st.ReceivePack(c, 1<<30)
			if !errors.Is(err, ErrStoreBudget) {
				t.Fatalf("receive: %v, want ErrStoreBudget", err)
			}
			after, err := st.Usage()
			must(t, err)
			t.Logf("read %d bytes; store %d bytes before, %d after", c.n, before, after)
			if after != before || c.n > 8<<20 {
				t.Fatalf("store %d bytes before, %d after; %d bytes read", before, after, c.n)
			}
		})
		return
	}
	p := filepath.Join(t.TempDir(), "big.pack")
	f, err := os.Create(p)
	must(t, err)
	bigPack(t, f, 32<<20)
	must(t, f.Close())
	hostileChild(t, "TestStoreBudgetMemory", env, "32 MiB pack, 8 MiB of room", p, 64<<20)
}
