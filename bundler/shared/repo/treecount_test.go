package repo

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// treePack streams to w a pack of about objects tiny trees below one
// commit, every object wanted: with chain, objects-2 trees nested one in
// the other (a blob at the bottom); otherwise a root of fan trees of fan
// trees (fan*fan+fan+3 objects at most), each of those naming one blob. It
// returns the commit and the object count.
func treePack(w io.Writer, chain bool, objects int) (plumbing.Hash, int, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	sum := sha1.New()
	out := io.MultiWriter(bw, sum)
	fan := 1
	for (fan+1)*(fan+1)+(fan+1)+3 <= objects {
		fan++
	}
	total := objects
	if !chain {
		total = fan*fan + fan + 3
	}
	var hdr [12]byte
	copy(hdr[:], "PACK\x00\x00\x00\x02")
	binary.BigEndian.PutUint32(hdr[8:], uint32(total))
	out.Write(hdr[:])
	n := 0
	put := func(t plumbing.ObjectType, content []byte) plumbing.Hash {
		out.Write(storedEntry(byte(t), nil, content))
		n++
		return HashObject(t, content)
	}
	blob := put(plumbing.BlobObject, []byte("leaf\n"))
	var root plumbing.Hash
	if chain {
		data, id, err := EncodeTree([]TreeEntry{{Name: "f", Mode: filemode.Regular, ID: blob}})
		if err != nil {
			return plumbing.ZeroHash, 0, err
		}
		put(plumbing.TreeObject, data)
		for n < total-1 {
			data, id, err = EncodeTree([]TreeEntry{{Name: "d", Mode: filemode.Dir, ID: id}})
			if err != nil {
				return plumbing.ZeroHash, 0, err
			}
			put(plumbing.TreeObject, data)
		}
		root = id
	} else {
		var top []TreeEntry
		for m := range fan {
			var mid []TreeEntry
			for l := range fan {
				data, id, err := EncodeTree([]TreeEntry{{Name: fmt.Sprintf("%03x%03x", m, l), Mode: filemode.Regular, ID: blob}})
				if err != nil {
					return plumbing.ZeroHash, 0, err
				}
				put(plumbing.TreeObject, data)
				mid = append(mid, TreeEntry{Name: fmt.Sprintf("%03x", l), Mode: filemode.Dir, ID: id})
			}
			data, id, err := EncodeTree(mid)
			if err != nil {
				return plumbing.ZeroHash, 0, err
			}
			put(plumbing.TreeObject, data)
			top = append(top, TreeEntry{Name: fmt.Sprintf("%03x", m), Mode: filemode.Dir, ID: id})
		}
		data, _, err := EncodeTree(top)
		if err != nil {
			return plumbing.ZeroHash, 0, err
		}
		root = put(plumbing.TreeObject, data)
	}
	who := Signature{Name: "x", Email: "x@x"}
	data, commit, err := EncodeCommit(Commit{Tree: root, Author: who, Committer: who, Message: "trees\n"})
	if err != nil {
		return plumbing.ZeroHash, 0, err
	}
	put(plumbing.CommitObject, data)
	if n != total {
		return plumbing.ZeroHash, 0, fmt.Errorf("wrote %d objects, declared %d", n, total)
	}
	bw.Write(sum.Sum(nil))
	return commit, total, bw.Flush()
}

// TestTreeCountMemory: a pack of about a million tiny trees, all wanted
// (as many objects as the agent's largest fetch allows), nested a million
// deep or a thousand wide under a thousand, is received, checked against
// the wanted commit (a walk of every tree), read, and repacked with the
// host's heap under its 64 MiB budget: walks keep a bit per object and a
// stack of the objects waiting, which a chain keeps at one. Peak heap
// 24-28 MiB either way. Under the race detector, whose reads of
// a million trees take six minutes, a sixteenth of the count.
func TestTreeCountMemory(t *testing.T) {
	const env = "PULLSHIP_TEST_TREE_MEMORY"
	const limit = 256 << 20
	if arg := os.Getenv(env); arg != "" {
		kind, rest, _ := strings.Cut(arg, ":")
		count, p, _ := strings.Cut(rest, ":")
		commit := plumbing.NewHash(kind)
		objects, err := strconv.Atoi(count)
		must(t, err)
		childMemory(t, func() {
			st, err := Init(t.TempDir())
			must(t, err)
			f, err := os.Open(p)
			must(t, err)
			defer f.Close()
			must(t, st.receivePack(f, packLimits{inflate: 16 * limit, objects: defaultMaxObjects(limit), wants: []plumbing.Hash{commit}}, nil))
			if _, err := st.ListTree(commit, ""); err != nil {
				t.Fatal(err)
			}
			stats, err := st.Repack(context.Background(), []plumbing.Hash{commit})
			must(t, err)
			t.Logf("repacked %d objects, %d bytes into %d", stats.LiveObjects, stats.PackBytes, stats.RepackBytes)
			if !st.HasObject(commit) || stats.LiveObjects != objects {
				t.Fatalf("after the repack: %+v, want %d objects", stats, objects)
			}
		})
		return
	}
	for _, c := range []struct {
		name  string
		chain bool
	}{{"trees nested one in the other", true}, {"a root of trees of trees", false}} {
		p := filepath.Join(t.TempDir(), "trees.pack")
		f, err := os.Create(p)
		must(t, err)
		objects := defaultMaxObjects(limit)
		if raceDetector {
			objects /= 16
		}
		commit, total, err := treePack(f, c.chain, objects)
		must(t, err)
		must(t, f.Close())
		fi, err := os.Stat(p)
		must(t, err)
		t.Logf("%s: %d objects, %d bytes", c.name, total, fi.Size())
		hostileChild(t, "TestTreeCountMemory", env, c.name, fmt.Sprintf("%s:%d:%s", commit, total, p), 64<<20)
	}
}
