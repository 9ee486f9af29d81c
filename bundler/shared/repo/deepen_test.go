package repo

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

// TestFetchDeepen: from git http-backend speaking protocol v0 only, a ref's
// history of three commits (a blob each) arrives a commit at a time, as
// the client's shallow end moves down; a pack that brings more than the
// step asked for, or a ref at another commit than the one asked for, is
// refused and installs nothing.
func TestFetchDeepen(t *testing.T) {
	needGit(t)
	ctx := context.Background()
	base := t.TempDir()
	dir := gittest.InitBare(t, base, "r.git")
	gitIn := func(stdin string, args ...string) string { t.Helper(); return gittest.Git(t, dir, stdin, args...) }
	// commits[0] is the tip, commits[2] the root.
	var commits, blobs [3]plumbing.Hash
	parent := ""
	for k := 2; k >= 0; k-- {
		blob := gitIn(fmt.Sprintf("blob %d\n", k), "hash-object", "-w", "--stdin")
		tree := gitIn(fmt.Sprintf("100644 blob %s\tb\n", blob), "mktree")
		args := []string{"commit-tree", tree, "-m", fmt.Sprint("commit ", k)}
		if parent != "" {
			args = append(args, "-p", parent)
		}
		parent = gitIn("", args...)
		commits[k], blobs[k] = plumbing.NewHash(parent), plumbing.NewHash(blob)
	}
	gitIn("", "update-ref", "refs/tags/t", commits[0].String())

	r, err := Open(ctx, gittest.HTTPv0(t, base)+"/r.git", Options{})
	must(t, err)
	st, err := Init(t.TempDir())
	must(t, err)
	held := func(want ...bool) {
		t.Helper()
		for k, w := range want {
			if st.HasObject(commits[k]) != w || st.HasObject(blobs[k]) != w {
				t.Fatalf("commit %d held: %v, blob held: %v, want %v", k, st.HasObject(commits[k]), st.HasObject(blobs[k]), w)
			}
		}
	}
	req := func(depth int, top int) DeepenRequest {
		dr := DeepenRequest{Ref: "refs/tags/t", Tip: commits[0], Depth: depth, Top: commits[top], MaxPackBytes: 1 << 20}
		if depth < 3 {
			dr.Bottom = []plumbing.Hash{commits[depth]}
		}
		if top > 0 {
			dr.Shallow = []plumbing.Hash{commits[top-1]}
			dr.Haves = commits[:top]
		}
		return dr
	}

	must(t, r.FetchDeepen(ctx, st, req(1, 0)))
	held(true, false, false)

	// Depth 3 while the check expects the step to depth 2: the root
	// commit comes too, and the pack is refused.
	bad := req(3, 1)
	bad.Bottom = []plumbing.Hash{commits[2]}
	if err := r.FetchDeepen(ctx, st, bad); !errors.Is(err, ErrBadPack) {
		t.Fatalf("a pack beyond the step asked for: %v, want ErrBadPack", err)
	}
	held(true, false, false)

	moved := req(2, 1)
	moved.Tip = commits[1]
	if err := r.FetchDeepen(ctx, st, moved); !errors.Is(err, ErrRefMoved) {
		t.Fatalf("ref at another commit: %v, want ErrRefMoved", err)
	}
	held(true, false, false)

	must(t, r.FetchDeepen(ctx, st, req(2, 1)))
	held(true, true, false)
	must(t, r.FetchDeepen(ctx, st, req(3, 2)))
	held(true, true, true)

	dirRemote, err := Open(ctx, dir, Options{})
	must(t, err)
	if err := dirRemote.FetchDeepen(ctx, st, req(1, 0)); !errors.Is(err, ErrNoDeepen) {
		t.Fatalf("directory remote: %v, want ErrNoDeepen", err)
	}
}
