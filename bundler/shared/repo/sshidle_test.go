package repo

import (
	"context"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

// TestSSHIdleSessionNotStalled: an ssh:// session kept open between two
// fetches by id (as an image fetch keeps its connections between
// segments) may stay idle longer than the stall timeout: the timeout runs
// only while a reply is awaited. The SSH library reads the connection all
// the time, so before, the idle session was cut as stalled and the next
// fetch failed.
func TestSSHIdleSessionNotStalled(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	dir := gittest.InitBare(t, base, "r.git")
	git := func(args ...string) plumbing.Hash {
		t.Helper()
		return plumbing.NewHash(gittest.Git(t, dir, "", args...))
	}
	tree := git("hash-object", "-w", "-t", "tree", "--stdin")
	first := git("commit-tree", tree.String(), "-m", "first")
	second := git("commit-tree", tree.String(), "-p", first.String(), "-m", "second")
	git("update-ref", "refs/heads/releases", second.String())

	srv := gittest.SSHD(t, base)
	url := srv.RepoURL("r.git")
	opts, err := Credentials{SSHKey: srv.ClientKey, KnownHosts: srv.KnownHosts}.Options(url)
	must(t, err)
	const stall = 4 * time.Second
	opts.StallTimeout = stall
	ctx := context.Background()
	r, err := Open(ctx, url, opts)
	must(t, err)
	st, err := Init(t.TempDir())
	must(t, err)
	f := r.Objects(ctx)
	defer f.Close()
	must(t, f.Fetch(ctx, st, ObjectsRequest{Wants: []plumbing.Hash{first}, MaxPackBytes: 1 << 20}))
	// Idle for more than two stall timeouts, as a connection waiting for
	// its next segment may be: the idleness is what is tested, not a wait
	// for something to happen. (The timeout is long enough that a loaded
	// machine starting git-upload-pack over sshd does not stall the first
	// fetch.)
	time.Sleep(5 * stall / 2)
	if err := f.Fetch(ctx, st, ObjectsRequest{Wants: []plumbing.Hash{second}, Haves: []plumbing.Hash{first}, MaxPackBytes: 1 << 20}); err != nil {
		t.Fatalf("fetch after an idle time on the same session: %v", err)
	}
	if c := r.Counters(); c.Stalls != 0 || c.Requests != 1 {
		t.Fatalf("counters %+v: want no stall, one connection", c)
	}
	if !st.HasObject(second) {
		t.Fatal("second commit not fetched")
	}
}
