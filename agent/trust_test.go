package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// A host that follows root 2 persists it, and every later chain walk
// starts from it: whoever still holds the keys of the retired root 1
// cannot write a root-2 of their own (nor a root-3 on top of it, which
// would also reset the version floor). The same holds for a release that
// names a previous manifest other than the one the host accepted.
func TestRetiredRootCannotForkTrustChain(t *testing.T) {
	h := newHost(t)
	ping := `["/pingsrv", "ping"]`
	h.release(h.image("a"), "version = 1\nnode = {{.Node}}\n", ping)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("release 1: %v %v", out, err)
	}
	k1 := h.env.Key
	k2 := bundlertest.NewKey(t, h.env.Dir, "release2")
	mallory := bundlertest.NewKey(t, h.env.Dir, "mallory")
	year := time.Now().Add(365 * 24 * time.Hour)

	// The genuine rotation: root 2 holds k2 alone; k1 is retired.
	r2 := rootFile(t, 2, 1, year, k2)
	h.forge(forgery{signers: []*bundlertest.Key{k2}, edit: func(r *schema.Release) { r.RootVersion = 2 },
		files: withRoot(nil, 2, r2, signFile(t, r2, k1, k2))})
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("rotation to root 2: %v %v", out, err)
	}
	kept, err := os.ReadFile(filepath.Join(h.cfg.StateDir, agent.TrustedRootsDir, "root-2.toml"))
	if err != nil || string(kept) != string(r2) {
		t.Fatalf("root 2 not persisted as accepted: %v", err)
	}
	good := h.head()

	forked2 := rootFile(t, 2, 1, year, mallory)
	forked2Sig := signFile(t, forked2, k1, mallory)
	h.run(t, good, []attack{
		{name: "retired key forks root 2", want: "trust chain forked", is: schema.ErrRefused,
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{mallory}, edit: func(r *schema.Release) { r.RootVersion = 2 },
					files: withRoot(nil, 2, forked2, forked2Sig)})
			}},
		{name: "retired key forks root 2 and adds root 3 to reset the floor", want: "trust chain forked", is: bundle.ErrRootFork,
			mount: func(t *testing.T) {
				r3 := rootFile(t, 3, 1, year, mallory)
				files := withRoot(nil, 2, forked2, forked2Sig)
				h.forge(forgery{signers: []*bundlertest.Key{mallory}, edit: func(r *schema.Release) { r.RootVersion = 3; r.Version = 1; r.Previous = "" },
					files: withRoot(files, 3, r3, signFile(t, r3, mallory))})
			}},
		{name: "root 3 signed by the retired root's keys only", want: "signatures by root 2's keys",
			mount: func(t *testing.T) {
				r3 := rootFile(t, 3, 1, year, mallory)
				h.forge(forgery{signers: []*bundlertest.Key{mallory}, edit: func(r *schema.Release) { r.RootVersion = 3 },
					files: withRoot(nil, 3, r3, signFile(t, r3, k1, mallory))})
			}},
		{name: "next release names another previous manifest", want: "history forked",
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k2}, edit: func(r *schema.Release) { r.Previous = r.Images[0].IndexSHA256 }})
			}},
	})
}

// The documented recovery from a runaway version, end to end: a new root
// published with a release numbered 1 again (release --reset-version); the
// host applies it under the new root, later releases count on from it, and
// verify --all accepts the whole history, the reset included.
func TestResetVersionRecovery(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	ping := `["/pingsrv", "ping"]`
	h.release(h.image("a"), "version = 1\n", ping)
	h.release(h.image("a"), "version = 2\n", ping)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("release 2: %v %v", out, err)
	}
	k2 := bundlertest.NewKey(t, h.env.Dir, "release2")
	root2 := bundlertest.WriteRoot(t, h.env.Dir, 2, 1, []*bundlertest.Key{k2}, h.env.Key, k2)
	h.fleet = bundlertest.WriteFleet(t, filepath.Join(h.env.Dir, "fleet"), bundlertest.Fleet{
		Image: "pullship-test/ping:1", Template: "version = reset\n", Target: filepath.Join(h.etc, "app", "app.conf"),
		Nodes:     []bundlertest.Node{{Name: h.node, Region: "test", Address: "10.0.0.1/24"}},
		StatusKey: h.key.PubPEM,
		Extra:     "entrypoint = [\"/pingsrv\"]\nhealth = { command = " + ping + ", expect = \"pong\", timeout = \"5s\", retries = 2, interval = \"200ms\" }\n",
	})
	res, err := h.env.Release.Release(ctx, bundler.ReleaseOptions{Fleet: h.fleet, Image: image.TarFile(h.image("a")),
		Signers: []signature.Signer{k2.Signer}, Roots: []string{root2}, ResetVersion: true})
	if err != nil {
		t.Fatalf("release --reset-version: %v", err)
	}
	if res.Version != 1 {
		t.Fatalf("reset release is version %d", res.Version)
	}
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("reset release: %v %v", out, err)
	}
	if got := h.conf(); got != "version = reset\n" {
		t.Fatalf("node file after the reset: %q", got)
	}
	st, err := os.ReadFile(h.statePath())
	must(t, err)
	if !strings.Contains(string(st), "version = 1\n") || !strings.Contains(string(st), "root_version = 2") {
		t.Fatalf("state after the reset:\n%s", st)
	}
	// The next release counts on from 1, and the floor holds again.
	h.fleet = bundlertest.WriteFleet(t, filepath.Join(h.env.Dir, "fleet"), bundlertest.Fleet{
		Image: "pullship-test/ping:1", Template: "version = after\n", Target: filepath.Join(h.etc, "app", "app.conf"),
		Nodes:     []bundlertest.Node{{Name: h.node, Region: "test", Address: "10.0.0.1/24"}},
		StatusKey: h.key.PubPEM,
		Extra:     "entrypoint = [\"/pingsrv\"]\nhealth = { command = " + ping + ", expect = \"pong\", timeout = \"5s\", retries = 2, interval = \"200ms\" }\n",
	})
	if res, err = h.env.Release.Release(ctx, bundler.ReleaseOptions{Fleet: h.fleet, Image: image.TarFile(h.image("a")),
		Signers: []signature.Signer{k2.Signer}}); err != nil || res.Version != 2 {
		t.Fatalf("release after the reset: %v %v", res, err)
	}
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("release 2 after the reset: %v %v", out, err)
	}
	r, err := bundler.Open(ctx, h.env.Repo, filepath.Join(h.env.Dir, "cache-verify"), repo.Options{})
	must(t, err)
	var lines []string
	if err := r.VerifyHistory(ctx, bundler.VerifyOptions{Pinned: h.env.Pinned, All: true}, func(l bundler.VerifyLine) {
		lines = append(lines, fmt.Sprintf("%d %v", l.Version, l.Err))
	}); err != nil {
		t.Fatalf("verify --all after the reset: %v\n%s", err, strings.Join(lines, "\n"))
	}
	if len(lines) != 4 {
		t.Fatalf("verify --all checked %d releases, want 4: %v", len(lines), lines)
	}
}
