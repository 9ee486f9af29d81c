package bundler_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/bundle"
)

// servicesFleetDir copies testdata/golden/multi (a broker and a webhook
// service) into dir and returns its fleet.toml.
func servicesFleetDir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("testdata", "golden", "multi"))); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "fleet.toml")
}

// Two images sharing a large file: the release sends the shared chunks
// once, pins both images, and prune keeps the tag of every image a kept
// release pins.
func TestReleaseServicesShareChunksAndPrune(t *testing.T) {
	ctx := context.Background()
	e := bundlertest.NewEnv(t)
	fleet := servicesFleetDir(t, filepath.Join(e.Dir, "fleet"))
	shared := func() io.Reader { return imagetest.Random(11, 8<<20) }
	mk := func(name, extra string) image.Source {
		p, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, name+".tar"),
			imagetest.File{Path: "shared", Size: 8 << 20, Content: shared},
			imagetest.File{Path: "etc/" + name, Data: []byte(extra)})
		return image.TarFile(p)
	}
	cut := func(images map[string]image.Source) *bundler.ReleaseResult {
		t.Helper()
		res, err := e.Release.Release(ctx, bundler.ReleaseOptions{Fleet: fleet, Images: images, Signers: []signature.Signer{e.Key.Signer}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	r1 := cut(map[string]image.Source{"broker": mk("broker", "1"), "webhook": mk("hook", "1")})
	if len(r1.Images) != 2 || !r1.Images[0].New || !r1.Images[1].New {
		t.Fatalf("images %+v", r1.Images)
	}
	a, b := r1.Images[0], r1.Images[1]
	if b.NewChunks*2 > b.Chunks {
		t.Errorf("second image sent %d of its %d chunks; most are the first image's", b.NewChunks, b.Chunks)
	}
	v := verifyHead(t, e)
	seen := map[string]bool{}
	for _, im := range v.Release.Images {
		idx, err := bundle.ReadImageIndex(e.Release.Cache, v.Commit, im)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range bundle.NewChunkSet(idx).List() {
			seen[c.Blob] = true
		}
	}
	if r1.NewChunks != len(seen) || r1.NewChunks != a.NewChunks+b.NewChunks {
		t.Errorf("sent %d chunks (%d + %d), the release's images hold %d distinct", r1.NewChunks, a.NewChunks, b.NewChunks, len(seen))
	}
	git(t, e.Repo, "fsck", "--strict", "--no-dangling")
	for _, im := range r1.Images {
		if out := git(t, e.Repo, "for-each-ref", im.Tag); !strings.Contains(out, im.Tag) {
			t.Errorf("image tag %s missing: %q", im.Tag, out)
		}
	}

	// Only the webhook's image changes: the broker's is reused.
	r2 := cut(map[string]image.Source{"broker": mk("broker", "1"), "webhook": mk("hook2", "2")})
	if r2.Images[0].New || !r2.Images[1].New || r2.Images[0].Digest != a.Digest {
		t.Fatalf("second release images %+v", r2.Images)
	}
	if strings.Join(r2.NodesChanged, ",") != "cn,sg" {
		t.Errorf("nodes changed %v: both run the webhook", r2.NodesChanged)
	}
	var diff strings.Builder
	if err := e.Release.Diff(ctx, 1, 2, &diff); err != nil {
		t.Fatal(err)
	}
	t.Logf("diff 1 2:\n%s", diff.String())
	// The image names stay; what differs is the digest behind hook-1.
	if !strings.Contains(diff.String(), "image hook-1") || strings.Contains(diff.String(), "service broker:") {
		t.Errorf("diff 1 2:\n%s", diff.String())
	}
	res, err := e.Release.Prune(ctx, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 1 || res.Removed[0].Ref != b.Tag {
		t.Fatalf("prune removed %+v, want only the first webhook image %s", res.Removed, b.Tag)
	}
	if out := git(t, e.Repo, "for-each-ref", "refs/tags/"); !strings.Contains(out, a.Tag) || !strings.Contains(out, r2.Images[1].Tag) {
		t.Errorf("a kept release's image tag was removed:\n%s", out)
	}
}

// A fleet whose services use several images needs a source for each.
func TestReleaseServicesNeedEveryImage(t *testing.T) {
	e := bundlertest.NewEnv(t)
	fleet := servicesFleetDir(t, filepath.Join(e.Dir, "fleet"))
	p, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"), imagetest.File{Path: "app", Data: []byte("app")})
	_, err := e.Release.Release(context.Background(), bundler.ReleaseOptions{Fleet: fleet, Image: image.TarFile(p), Signers: []signature.Signer{e.Key.Signer}})
	if err == nil || !strings.Contains(err.Error(), "no source (the release packs 2 images") {
		t.Fatalf("got %v", err)
	}
}
