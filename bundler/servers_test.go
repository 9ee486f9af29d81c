package bundler_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
	"github.com/pullship/pullship/schema"
)

// TestReleaseOverGitServers publishes releases to a real git daemon and to
// git http-backend, verifies them back through the same server, and lets
// the git CLI check the server's repository.
func TestReleaseOverGitServers(t *testing.T) {
	for _, server := range []string{"git-daemon", "http-backend"} {
		t.Run(server, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			base := filepath.Join(dir, "srv")
			bare := gittest.InitBare(t, base, "fleet.git")
			var url string
			if server == "git-daemon" {
				url = gittest.Daemon(t, base).URL + "/fleet.git"
			} else {
				url = gittest.HTTP(t, base, nil) + "/fleet.git"
			}
			key := bundlertest.NewKey(t, dir, "release")
			rootPath := bundlertest.WriteRoot(t, dir, 1, 1, []*bundlertest.Key{key}, key)
			if err := bundler.InitRepo(ctx, url, rootPath, filepath.Join(dir, "cache-init"), repo.Options{}); err != nil {
				t.Fatal(err)
			}
			r, err := bundler.Open(ctx, url, filepath.Join(dir, "cache"), repo.Options{})
			if err != nil {
				t.Fatal(err)
			}
			img, _ := bundlertest.WriteImage(t, filepath.Join(dir, "img.tar"),
				imagetest.File{Path: "app", Size: 3 << 20, Content: func() io.Reader { return imagetest.Random(3, 3<<20) }})
			for i, tmpl := range []string{"v1 {{.Node}}\n", "v2 {{.Node}}\n"} {
				fleet := fleetFor(t, filepath.Join(dir, "fleet"), tmpl)
				res, err := r.Release(ctx, bundler.ReleaseOptions{Fleet: fleet, Image: image.TarFile(img), Signers: []signature.Signer{key.Signer}})
				if err != nil {
					t.Fatal(err)
				}
				if res.Version != int64(i+1) || res.PackBytes == 0 {
					t.Fatalf("release %d: %+v", i+1, res)
				}
			}
			git(t, bare, "fsck", "--strict", "--no-dangling")
			if m := git(t, bare, "show", "releases:nodes/cn/app.conf"); m != "v2 cn\n" {
				t.Fatalf("git show: %q", m)
			}
			data, _ := os.ReadFile(rootPath)
			pinned, err := schema.ParseRoot(rootPath, data)
			if err != nil {
				t.Fatal(err)
			}
			fresh, err := bundler.Open(ctx, url, filepath.Join(dir, "cache-verify"), repo.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			err = fresh.VerifyHistory(ctx, bundler.VerifyOptions{Pinned: pinned, All: true, Now: time.Now()}, func(l bundler.VerifyLine) {
				lines = append(lines, l.Commit.String())
				if l.Err != nil {
					t.Errorf("release %d: %v", l.Version, l.Err)
				}
			})
			if err != nil || len(lines) != 2 {
				t.Fatalf("verify --all over %s: %v (%d lines)", server, err, len(lines))
			}
		})
	}
}
