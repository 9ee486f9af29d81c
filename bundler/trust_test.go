package bundler_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// verify, status and mirror keep the roots they accepted in their cache,
// as an agent does: once a cache followed the genuine root 2, a root 2
// written with the retired root 1's key is a fork, refused.
func TestCacheKeepsTrustedRoots(t *testing.T) {
	e := newAdvEnv(t)
	ctx := context.Background()
	k2 := bundlertest.NewKey(t, e.Dir, "release2")
	root2 := bundlertest.WriteRoot(t, e.Dir, 2, 1, []*bundlertest.Key{k2}, e.Key, k2)
	fleet := bundlertest.WriteFleet(t, filepath.Join(e.Dir, "fleet"), bundlertest.Fleet{
		Image: "pullship-test/app:1", Template: "version = 3\n", Target: "/etc/app/app.conf",
		Nodes: []bundlertest.Node{{Name: "n1", Region: "r", Address: "10.0.0.1/24"}}})
	res, err := e.Release.Release(ctx, bundler.ReleaseOptions{Fleet: fleet, Image: image.TarFile(filepath.Join(e.Dir, "img.tar")),
		Signers: []signature.Signer{k2.Signer}, Roots: []string{root2}})
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	if err, _ := e.verify(t, cache); err != nil {
		t.Fatalf("verify --all after the rotation: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cache, bundler.TrustDir, "root-2.toml")); err != nil {
		t.Fatalf("root 2 not kept in the cache: %v", err)
	}

	// The holder of the retired key forks root 2 and re-signs release 3.
	mallory := bundlertest.NewKey(t, e.Dir, "mallory")
	forgedDir := filepath.Join(e.Dir, "forged")
	must(t, os.MkdirAll(forgedDir, 0o755))
	forged := bundlertest.WriteRoot(t, forgedDir, 2, 1, []*bundlertest.Key{mallory}, e.Key, mallory)
	forgedData, err := os.ReadFile(forged)
	must(t, err)
	forgedSig, err := os.ReadFile(forged + ".sig")
	must(t, err)
	b, err := bundle.Read(e.srv, res.Commit)
	must(t, err)
	sig, err := schema.SignWith(mallory.Signer, b.Manifest)
	must(t, err)
	var sf schema.SignatureFile
	sf.Add(sig)
	e.rewrite(t, res.Commit, map[string][]byte{"root/root-2.toml": forgedData, "root/root-2.toml.sig": forgedSig,
		"release.toml.sig": sf.Encode()})

	r, err := bundler.Open(ctx, e.Repo, cache, repo.Options{})
	must(t, err)
	_, err = r.FleetStatus(ctx, e.Pinned, time.Now(), bundler.FleetOptions{})
	if !errors.Is(err, bundle.ErrRootFork) || !errors.Is(err, schema.ErrRefused) {
		t.Fatalf("status with a cache that follows root 2, on a forked root 2: %v", err)
	}
}
