package repo

import (
	"bufio"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"hash/adler32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// countPack streams a pack of many tiny objects to w: the most objects an
// attacker fits in a pack (each entry 16 bytes on the wire). With
// reachable, n blobs are listed by trees of at most 1<<17 entries under a
// root tree and a commit (the pack then completes the commit: every
// object is wanted); otherwise the blobs hang from nothing. With deltas,
// every blob after the first is an ofs-delta against the first.
// It returns the commit id (zero without reachable) and the entry count.
func countPack(w io.Writer, n int, reachable, deltas bool) (plumbing.Hash, int, error) {
	return countPackChain(w, n, reachable, deltas, false)
}

// countPackChain is countPack; with chain, each delta is against the entry
// before it (one chain n deep) instead of against the first.
func countPackChain(w io.Writer, n int, reachable, deltas, chain bool) (plumbing.Hash, int, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	sum := sha1.New()
	out := io.MultiWriter(bw, sum)
	total := n
	var subtrees int
	if reachable {
		subtrees = (n + 1<<17 - 1) >> 17
		total += subtrees + 2
	}
	var hdr [12]byte
	copy(hdr[:], "PACK\x00\x00\x00\x02")
	binary.BigEndian.PutUint32(hdr[8:], uint32(total))
	out.Write(hdr[:])
	var off int64 = 12
	stored := func(typ byte, prefix, content []byte) int64 {
		at := off
		b := storedEntry(typ, prefix, content)
		out.Write(b)
		off += int64(len(b))
		return at
	}
	ids := make([]plumbing.Hash, 0, n)
	var first int64
	for i := range n {
		var content [4]byte
		binary.BigEndian.PutUint32(content[:], uint32(i))
		if deltas && i > 0 {
			// A delta of the first blob (4 bytes) to a 4-byte result:
			// insert 4 bytes.
			d := []byte{4, 4, 4, content[0], content[1], content[2], content[3]}
			rel := off - first
			var enc [10]byte
			k := len(enc) - 1
			enc[k] = byte(rel & 0x7f)
			for rel >>= 7; rel > 0; rel >>= 7 {
				rel--
				k--
				enc[k] = 0x80 | byte(rel&0x7f)
			}
			at := stored(packTypeOfsDelta, enc[k:], d)
			if chain {
				first = at
			}
		} else {
			first = stored(byte(plumbing.BlobObject), nil, content[:])
		}
		if reachable {
			ids = append(ids, HashObject(plumbing.BlobObject, content[:]))
		}
	}
	var commit plumbing.Hash
	if reachable {
		var top []TreeEntry
		for s := range subtrees {
			var entries []TreeEntry
			for i := s << 17; i < min(n, (s+1)<<17); i++ {
				entries = append(entries, TreeEntry{Name: fmt.Sprintf("%06x", i), Mode: filemode.Regular, ID: ids[i]})
			}
			data, id, err := EncodeTree(entries)
			if err != nil {
				return plumbing.ZeroHash, 0, err
			}
			stored(byte(plumbing.TreeObject), nil, data)
			top = append(top, TreeEntry{Name: fmt.Sprintf("t%03d", s), Mode: filemode.Dir, ID: id})
		}
		data, root, err := EncodeTree(top)
		if err != nil {
			return plumbing.ZeroHash, 0, err
		}
		stored(byte(plumbing.TreeObject), nil, data)
		who := Signature{Name: "x", Email: "x@x"}
		data, commit, err = EncodeCommit(Commit{Tree: root, Author: who, Committer: who, Message: "many\n"})
		if err != nil {
			return plumbing.ZeroHash, 0, err
		}
		stored(byte(plumbing.CommitObject), nil, data)
	}
	bw.Write(sum.Sum(nil))
	return commit, total, bw.Flush()
}

// storedEntry returns a pack entry of typ whose content is zlib stored
// blocks (no compression: the cheapest to make, still a valid entry),
// after prefix (a delta's base).
func storedEntry(typ byte, prefix, content []byte) []byte {
	var b []byte
	size := len(content)
	c := typ<<4 | byte(size&15)
	for size >>= 4; size > 0; size >>= 7 {
		b = append(b, c|0x80)
		c = byte(size & 0x7f)
	}
	b = append(b, c)
	b = append(b, prefix...)
	b = append(b, 0x78, 0x01)
	for rest := content; ; {
		k := min(len(rest), 0xffff)
		final := byte(0)
		if k == len(rest) {
			final = 1
		}
		b = append(b, final, byte(k), byte(k>>8), ^byte(k), ^byte(k>>8))
		b = append(b, rest[:k]...)
		rest = rest[k:]
		if final == 1 {
			break
		}
	}
	return binary.BigEndian.AppendUint32(b, adler32.Checksum(content))
}

// TestObjectCountMemory: a pack holding as many objects as the agent's
// largest fetch allows (the release history's: 256 MiB, one object per
// 256 bytes, 1,048,576 objects), each as small as an entry gets and each a
// delta, received, resolved, checked against the wanted commit, read and
// pruned, keeps the host under its 64 MiB heap budget; so does the same
// count hanging from nothing (refused as junk). Before the pack index
// entries went to a mapped file and the store's reads to mapped indexes,
// bit sets and caches that count each object, the junk pack took the
// heap to 192 MiB and a wanted one to 964 MiB.
func TestObjectCountMemory(t *testing.T) {
	const env = "PULLSHIP_TEST_COUNT_MEMORY"
	const limit = 256 << 20
	n := defaultMaxObjects(limit)
	if arg := os.Getenv(env); arg != "" {
		kind, p, _ := strings.Cut(arg, ":")
		commit := plumbing.NewHash(kind)
		childMemory(t, func() {
			st, err := Init(t.TempDir())
			must(t, err)
			f, err := os.Open(p)
			must(t, err)
			defer f.Close()
			wants := []plumbing.Hash{commit}
			if commit.IsZero() {
				wants = []plumbing.Hash{HashObject(plumbing.BlobObject, []byte{0, 0, 0, 0})}
			}
			err = st.receivePack(f, packLimits{inflate: 16 * limit, objects: n, wants: wants}, nil)
			t.Logf("receive: %v", err)
			if commit.IsZero() {
				if err == nil {
					t.Fatal("junk pack accepted")
				}
				return
			}
			must(t, err)
			b, err := st.ReadFile(commit, "t000/000001", 16)
			must(t, err)
			if string(b) != "\x00\x00\x00\x01" {
				t.Fatalf("read %q", b)
			}
			freed, err := st.Prune([]plumbing.Hash{commit})
			must(t, err)
			t.Logf("prune freed %d bytes", freed)
		})
		return
	}
	for _, c := range []struct {
		name              string
		reachable, deltas bool
	}{{"every object a delta", true, true}, {"no object wanted", false, false}} {
		p := filepath.Join(t.TempDir(), "p.pack")
		f, err := os.Create(p)
		must(t, err)
		blobs := n
		if c.reachable {
			blobs -= n>>17 + 1 + 2 // the trees and the commit
		}
		commit, total, err := countPack(f, blobs, c.reachable, c.deltas)
		must(t, err)
		must(t, f.Close())
		fi, err := os.Stat(p)
		must(t, err)
		t.Logf("%s: %d objects in %d bytes", c.name, total, fi.Size())
		hostileChild(t, "TestObjectCountMemory", env, c.name, commit.String()+":"+p, 64<<20)
	}
}
