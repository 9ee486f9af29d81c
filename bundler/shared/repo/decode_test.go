package repo

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
)

func TestDecodeObjects(t *testing.T) {
	id := plumbing.NewHash("0123456789012345678901234567890123456789")
	tree, _, err := EncodeTree([]TreeEntry{{Name: "a", Mode: filemode.Regular, ID: id}, {Name: "d", Mode: filemode.Dir, ID: id}, {Name: "x", Mode: filemode.Executable, ID: id}})
	must(t, err)
	got, err := decodeTree(tree)
	must(t, err)
	if fmt.Sprint(got) != fmt.Sprint([]TreeEntry{{"a", filemode.Regular, id}, {"d", filemode.Dir, id}, {"x", filemode.Executable, id}}) {
		t.Fatalf("tree decoded as %v", got)
	}
	commit, cid, err := EncodeCommit(Commit{Tree: id, Parents: []plumbing.Hash{cid0, id}, Author: sig, Committer: sig, Message: "m\n"})
	must(t, err)
	c, err := decodeCommit(cid, commit)
	must(t, err)
	if c.Tree != id || fmt.Sprint(c.ParentHashes) != fmt.Sprint([]plumbing.Hash{cid0, id}) || c.Hash != cid {
		t.Fatalf("commit decoded as %+v", c)
	}
	many := bytes.Repeat(append([]byte("100644 n\x00"), id[:]...), maxTreeEntries+1)
	for name, c := range map[string]struct {
		data []byte
		tree bool
		want string
	}{
		"too many entries": {many, true, "more than"},
		"long name":        {append(append([]byte("100644 "), bytes.Repeat([]byte("n"), maxTreeName+1)...), 0), true, "longer than"},
		"bad mode":         {append([]byte("100666 n\x00"), id[:]...), true, "mode 100666"},
		"no mode":          {[]byte("n\x00"), true, "no mode"},
		"id cut":           {[]byte("100644 n\x00abc"), true, "id cut"},
		"empty name":       {append([]byte("100644 \x00"), id[:]...), true, "name empty"},
		"commit no tree":   {[]byte("parent " + id.String() + "\n"), false, "no tree"},
		"commit bad hex":   {[]byte("tree " + strings.Repeat("z", 40) + "\n"), false, "no tree"},
	} {
		var err error
		if c.tree {
			_, err = decodeTree(c.data)
		} else {
			_, err = decodeCommit(id, c.data)
		}
		if !errors.Is(err, ErrBadObject) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

var cid0 = plumbing.NewHash("89abcdef0123456789abcdef0123456789abcdef")

// FuzzDecodeObjects: pullship's tree and commit decoders agree with
// go-git's on what both accept, and allocate within a budget of a few
// times the input.
func FuzzDecodeObjects(f *testing.F) {
	id := plumbing.NewHash("0123456789012345678901234567890123456789")
	tree, _, _ := EncodeTree([]TreeEntry{{Name: "a", Mode: filemode.Regular, ID: id}, {Name: "d", Mode: filemode.Dir, ID: id}})
	commit, _, _ := EncodeCommit(Commit{Tree: id, Parents: []plumbing.Hash{id}, Author: sig, Committer: sig, Message: "m\n"})
	f.Add(tree)
	f.Add(commit)
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		entries, terr := decodeTree(data)
		c, cerr := decodeCommit(id, data)
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > uint64(8*len(data))+64<<10 {
			t.Fatalf("decoding %d bytes allocated %d", len(data), got)
		}
		if terr == nil {
			o := memoryObject(plumbing.TreeObject, data)
			var gt object.Tree
			if err := gt.Decode(o); err != nil {
				t.Fatalf("accepted tree, go-git refuses: %v", err)
			}
			if len(gt.Entries) != len(entries) {
				t.Fatalf("%d entries, go-git %d", len(entries), len(gt.Entries))
			}
			for i, e := range gt.Entries {
				if e.Name != entries[i].Name || e.Hash != entries[i].ID || e.Mode != entries[i].Mode {
					t.Fatalf("entry %d: %v, go-git %v", i, entries[i], e)
				}
			}
		}
		if cerr == nil {
			o := memoryObject(plumbing.CommitObject, data)
			var gc object.Commit
			if err := gc.Decode(o); err == nil && (gc.TreeHash != c.Tree || len(gc.ParentHashes) != len(c.ParentHashes)) {
				t.Fatalf("commit read as %+v, go-git tree %s parents %v", c, gc.TreeHash, gc.ParentHashes)
			}
		}
	})
}

// memoryObject is data as a go-git object of type t.
func memoryObject(t plumbing.ObjectType, data []byte) plumbing.EncodedObject {
	o := memory.NewStorage().NewEncodedObject()
	o.SetType(t)
	w, _ := o.Writer()
	w.Write(data)
	w.Close()
	return o
}
