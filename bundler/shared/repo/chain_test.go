package repo

import (
	"bufio"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
)

// chainStore writes, as a hostile removable disk would hold it, a store
// whose one pack is a chain of depth ofs-deltas of 4-byte blobs, with a
// valid index; it returns the store and the id of the chain's last object.
func chainStore(t testing.TB, depth int) (*Store, plumbing.Hash) {
	t.Helper()
	dir := t.TempDir()
	st, err := Init(dir)
	must(t, err)
	p := filepath.Join(dir, "objects", "pack", "tmp.pack")
	f, err := os.Create(p)
	must(t, err)
	if _, _, err := countPackChain(f, depth+1, false, true, true); err != nil {
		t.Fatal(err)
	}
	must(t, f.Close())
	f, err = os.Open(p)
	must(t, err)
	sum, entries, err := indexPack(bufio.NewReader(f), bufio.NewWriter(discard{}), testLimits(1<<30), nil)
	f.Close()
	must(t, err)
	var last plumbing.Hash
	for i := range entries {
		var c [4]byte
		binary.BigEndian.PutUint32(c[:], uint32(i))
		entries[i].id = HashObject(plumbing.BlobObject, c[:])
		last = entries[i].id
	}
	base := filepath.Join(dir, "objects", "pack", "pack-"+sum.String())
	idx, err := os.Create(base + ".idx")
	must(t, err)
	must(t, writeIndex(idx, entries, sum))
	must(t, idx.Close())
	must(t, os.Rename(p, base+".pack"))
	st.reload()
	return st, last
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestStoreRefusesDeepChains: a store on a removable disk whose pack holds
// a delta chain deeper than the receiver ever accepts (500) is refused
// when read, with ErrDeltaLimit, instead of go-git's reader recursing down
// the chain (a stack frame and an object per level: 100,000 deep took the
// test to 243 MB of memory; a million would take gigabytes or the stack).
// A chain of 400 still reads.
func TestStoreRefusesDeepChains(t *testing.T) {
	st, last := chainStore(t, 100000)
	_, _, err := st.readObject(plumbing.AnyObject, last, 16)
	if !errors.Is(err, ErrDeltaLimit) {
		t.Fatalf("read at the end of a chain 100000 deep: %v, want ErrDeltaLimit", err)
	}
	shallow, id := chainStore(t, 400)
	b, _, err := shallow.readObject(plumbing.AnyObject, id, 16)
	if err != nil || binary.BigEndian.Uint32(b) != 400 {
		t.Fatalf("read at the end of a chain 400 deep: %x %v", b, err)
	}
}
