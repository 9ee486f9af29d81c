package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
)

// pktLine frames s as a git pkt-line.
func pktLine(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

// packServer is a smart HTTP server that advertises refs/heads/releases at
// head and answers every fetch with pack.
func packServer(t *testing.T, head plumbing.Hash, pack []byte) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/r.git/info/refs":
			w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
			fmt.Fprint(w, pktLine("# service=git-upload-pack\n")+"0000"+pktLine(head.String()+" refs/heads/releases\x00ofs-delta\n")+"0000")
		case "/r.git/git-upload-pack":
			w.Header().Set("Content-Type", "application/x-git-upload-pack-result")
			fmt.Fprint(w, pktLine("NAK\n"))
			w.Write(pack)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/r.git"
}

// TestFetchInstallsOnlyWanted: a pack that lacks what was asked for, or
// carries objects nothing asked for, is not installed (junk would pile up
// in the agent's store at every poll).
func TestFetchInstallsOnlyWanted(t *testing.T) {
	f := makeFixture(t, 21, plumbing.ZeroHash)
	full := fixturePack(t, f) // the release and its image: the image is junk to a releases fetch
	rel := makeFixture(t, 22, plumbing.ZeroHash)
	withJunk := fixturePack(t, rel)
	pb := newPackBuilder()
	pb.object(plumbing.BlobObject, []byte("not the release\n"))
	lacking := pb.bytes()
	for name, c := range map[string]struct {
		head plumbing.Hash
		pack []byte
	}{
		"lacks the wanted commit": {f.release, lacking},
		"carries junk":            {rel.release, withJunk},
		"image blobs as junk":     {f.release, full},
	} {
		st, err := Init(t.TempDir())
		must(t, err)
		r, err := Open(context.Background(), packServer(t, c.head, c.pack), Options{})
		must(t, err)
		_, err = r.Fetch(context.Background(), st, FetchRequest{Refs: []string{"refs/heads/releases"}, MaxPackBytes: 64 << 20})
		if !errors.Is(err, ErrBadPack) {
			t.Errorf("%s: %v, want a bad pack", name, err)
		}
		if left, _ := filepath.Glob(filepath.Join(st.Dir(), "objects", "pack", "*")); len(left) != 0 {
			t.Errorf("%s: left in the store: %v", name, left)
		}
	}
	// The release alone is installed.
	src, err := Init(t.TempDir())
	must(t, err)
	must(t, src.Write(context.Background(), rel.stream))
	objs, err := src.Missing([]plumbing.Hash{rel.release}, nil)
	must(t, err)
	var relPack bytes.Buffer
	_, _, err = WritePack(context.Background(), &relPack, objs)
	must(t, err)
	st, err := Init(t.TempDir())
	must(t, err)
	r, err := Open(context.Background(), packServer(t, rel.release, relPack.Bytes()), Options{})
	must(t, err)
	if _, err := r.Fetch(context.Background(), st, FetchRequest{Refs: []string{"refs/heads/releases"}, MaxPackBytes: 64 << 20}); err != nil {
		t.Fatalf("the release alone: %v", err)
	}
	if !st.HasObject(rel.release) {
		t.Fatal("release missing")
	}
}

// TestPrune: packs nothing kept reaches are removed; the rest stays whole
// and git fsck agrees.
func TestPrune(t *testing.T) {
	needGit(t)
	st, err := Init(t.TempDir())
	must(t, err)
	kept, gone := makeFixture(t, 31, plumbing.ZeroHash), makeFixture(t, 32, plumbing.ZeroHash)
	must(t, st.Write(context.Background(), kept.stream))
	junk := NewObjectStream(gone.stream.open) // only its chunks: nothing kept shares them
	for _, o := range gone.stream.Objects() {
		if gone.blobs[o.ID] != nil {
			junk.Add(o)
		}
	}
	must(t, st.Write(context.Background(), junk))
	must(t, st.SetRef("refs/heads/releases", plumbing.ZeroHash, kept.release))
	must(t, st.SetRef("refs/tags/pullship/images/a", plumbing.ZeroHash, kept.image))
	freed, err := st.Prune([]plumbing.Hash{kept.release, kept.image})
	must(t, err)
	if freed < 1<<20 || st.HasObject(gone.big) {
		t.Fatalf("freed %d bytes; the unkept chunks are still there: %v", freed, st.HasObject(gone.big))
	}
	if !st.HasObject(kept.big) {
		t.Fatal("a kept chunk was removed")
	}
	git(t, st.Dir(), "fsck", "--strict", "--no-dangling")
}
