package bundler_test

// Attacks on a release repository that `pullship verify` must catch: what an
// operator runs to audit a server, a mirror or a USB disk. The agent's side
// of the same attacks is agent/adversarial_test.go; docs/security.md is the
// threat model.

import (
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// advEnv is a repository with two releases, and helpers to tamper with it.
type advEnv struct {
	*bundlertest.Env
	rel1, rel2 plumbing.Hash
	srv        *repo.Store
}

func newAdvEnv(t *testing.T) *advEnv {
	env := bundlertest.NewEnv(t)
	img, _ := bundlertest.WriteImage(t, filepath.Join(env.Dir, "img.tar"),
		imagetest.File{Path: "app", Mode: 0o755, Data: bytes.Repeat([]byte("pullship "), 50000)})
	fleet := func(conf string) string {
		return bundlertest.WriteFleet(t, filepath.Join(env.Dir, "fleet"), bundlertest.Fleet{
			Image: "pullship-test/app:1", Template: conf, Target: "/etc/app/app.conf",
			Nodes: []bundlertest.Node{{Name: "n1", Region: "r", Address: "10.0.0.1/24"}}})
	}
	e := &advEnv{Env: env}
	e.rel1 = env.Cut(t, fleet("version = 1\n"), img).Commit
	e.rel2 = env.Cut(t, fleet("version = 2\n"), img).Commit
	var err error
	if e.srv, err = repo.OpenStore(env.Repo); err != nil {
		t.Fatal(err)
	}
	return e
}

// verify runs verify --all with a fresh cache (or cache) and returns the
// error and the first failing line's error.
func (e *advEnv) verify(t *testing.T, cache string) (error, error) {
	t.Helper()
	if cache == "" {
		cache = t.TempDir()
	}
	r, err := bundler.Open(context.Background(), e.Repo, cache, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var lineErr error
	err = r.VerifyHistory(context.Background(), bundler.VerifyOptions{Pinned: e.Pinned, All: true}, func(l bundler.VerifyLine) {
		if l.Err != nil && lineErr == nil {
			lineErr = l.Err
		}
	})
	return err, lineErr
}

// rewrite points releases at a copy of commit with files replaced (nil:
// deleted), keeping its parents: an attacker editing a release in place.
func (e *advEnv) rewrite(t *testing.T, commit plumbing.Hash, files map[string][]byte) {
	t.Helper()
	c, err := e.srv.Log(commit, 1)
	if err != nil {
		t.Fatal(err)
	}
	objs := repo.NewObjectStream(nil)
	tb := repo.NewTreeBuilder()
	var walk func(dir string)
	walk = func(dir string) {
		ents, err := e.srv.ListTree(commit, dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range ents {
			p := strings.TrimPrefix(dir+"/"+en.Name, "/")
			if en.Mode == filemode.Dir {
				walk(p)
			} else if _, ok := files[p]; !ok {
				if err := tb.Add(p, en.Mode, en.ID); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	walk("")
	for p, b := range files {
		if b != nil {
			if err := tb.Add(p, filemode.Regular, objs.AddBytes(plumbing.BlobObject, b)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tree, err := tb.Build(objs)
	if err != nil {
		t.Fatal(err)
	}
	who := repo.Signature{Name: "mallory", Email: "mallory@localhost", When: time.Now()}
	data, id, err := repo.EncodeCommit(repo.Commit{Tree: tree, Parents: c[0].ParentHashes, Author: who, Committer: who, Message: "tampered\n"})
	if err != nil {
		t.Fatal(err)
	}
	objs.AddBytes(plumbing.CommitObject, data)
	if err := e.srv.Write(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
	e.point(t, id)
}

func (e *advEnv) point(t *testing.T, id plumbing.Hash) {
	t.Helper()
	old, _ := e.srv.Ref(bundle.ReleasesRef)
	if err := e.srv.SetRef(bundle.ReleasesRef, old, id); err != nil {
		t.Fatal(err)
	}
}

func (e *advEnv) release(t *testing.T, commit plumbing.Hash) *schema.Release {
	t.Helper()
	b, err := bundle.Read(e.srv, commit)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

func TestAdversarialVerifyHistory(t *testing.T) {
	e := newAdvEnv(t)
	if err, _ := e.verify(t, ""); err != nil {
		t.Fatalf("untampered repository: %v", err)
	}

	t.Run("force-push", func(t *testing.T) {
		cache := t.TempDir()
		if err, _ := e.verify(t, cache); err != nil {
			t.Fatal(err)
		}
		// History rewritten to a copy of release 1 (same signed manifest):
		// every remaining release verifies, but release 2 is gone.
		e.rewrite(t, e.rel1, nil)
		defer e.point(t, e.rel2)
		err, _ := e.verify(t, cache)
		t.Logf("error seen: %v", err)
		if !errors.Is(err, bundler.ErrHistoryRewritten) {
			t.Fatalf("verify after a force-push: %v, want ErrHistoryRewritten", err)
		}
	})

	t.Run("node file tampered", func(t *testing.T) {
		f := e.release(t, e.rel2).Nodes[0].Files[0]
		e.rewrite(t, e.rel2, map[string][]byte{"nodes/n1/" + f.Path: bytes.Repeat([]byte{'X'}, int(f.Length))})
		defer e.point(t, e.rel2)
		err, lineErr := e.verify(t, "")
		t.Logf("error seen: %v: %v", err, lineErr)
		var dm *bundle.DigestMismatchError
		if err == nil || !errors.As(lineErr, &dm) || !strings.Contains(lineErr.Error(), "nodes/n1/") {
			t.Fatalf("verify: %v (line: %v), want a digest mismatch naming the file", err, lineErr)
		}
	})

	t.Run("signature removed", func(t *testing.T) {
		e.rewrite(t, e.rel2, map[string][]byte{"release.toml.sig": nil})
		defer e.point(t, e.rel2)
		err, lineErr := e.verify(t, "")
		t.Logf("error seen: %v: %v", err, lineErr)
		if err == nil || lineErr == nil || !strings.Contains(lineErr.Error(), "unsigned") {
			t.Fatalf("verify: %v (line: %v), want unsigned", err, lineErr)
		}
	})

	t.Run("oversized pack", func(t *testing.T) {
		img := e.release(t, e.rel2).Images[0]
		r, err := repo.Open(context.Background(), e.Repo, repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		local, err := repo.Init(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		tag := bundle.ImageTag(img.Digest)
		_, err = r.Fetch(context.Background(), local, repo.FetchRequest{Refs: []string{tag}, MaxPackBytes: 1 << 10})
		t.Logf("error seen: %v", err)
		if !errors.Is(err, repo.ErrPackTooLarge) {
			t.Fatalf("fetch beyond the limit: %v, want ErrPackTooLarge", err)
		}
		id, _ := e.srv.Ref(tag)
		if local.HasObject(id) {
			t.Fatal("objects of a refused fetch were kept")
		}
	})

	// Last: it corrupts the repository for good.
	t.Run("chunk tampered", func(t *testing.T) {
		idx, err := bundle.ReadImageIndex(e.srv, e.rel2, e.release(t, e.rel2).Images[0])
		if err != nil {
			t.Fatal(err)
		}
		c := bundle.NewChunkSet(idx).List()[0]
		corruptBlob(t, e.Repo, plumbing.NewHash(c.Blob), c.Size)
		err, lineErr := e.verify(t, "")
		t.Logf("error seen: %v: %v", err, lineErr)
		if err == nil || lineErr == nil || !strings.Contains(lineErr.Error(), c.Blob[:12]) && !strings.Contains(lineErr.Error(), c.SHA256[:12]) {
			t.Fatalf("verify: %v (line: %v), want an error naming chunk %s (blob %s)", err, lineErr, c.SHA256[:12], c.Blob[:12])
		}
	})
}

// corruptBlob rewrites blob id in the bare repository dir as a loose object
// of the same size and other bytes, after exploding the packs so that it is
// the only copy: a bit flip on the server's disk, or a malicious admin.
func corruptBlob(t *testing.T, dir string, id plumbing.Hash, size int64) {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
	tmp := t.TempDir()
	for _, p := range packs {
		moved := filepath.Join(tmp, filepath.Base(p))
		if err := os.Rename(p, moved); err != nil {
			t.Fatal(err)
		}
		os.Remove(strings.TrimSuffix(p, ".pack") + ".idx")
		os.Remove(strings.TrimSuffix(p, ".pack") + ".rev")
		f, err := os.Open(moved)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("git", "unpack-objects", "-q")
		cmd.Dir, cmd.Stdin = dir, f
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git unpack-objects: %v: %s", err, out)
		}
		f.Close()
	}
	loose := filepath.Join(dir, "objects", id.String()[:2], id.String()[2:])
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	fmt.Fprintf(zw, "blob %d\x00", size)
	zw.Write(bytes.Repeat([]byte{'M'}, int(size)))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	os.Chmod(loose, 0o644)
	if err := os.WriteFile(loose, z.Bytes(), 0o444); err != nil {
		t.Fatal(err)
	}
}
