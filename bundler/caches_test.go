package bundler_test

import (
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
	"github.com/pullship/pullship/schema"
)

// TestCachesFetchOnlyNewChunks: the caches of `pullship mirror` and
// `pullship verify`, and the mirror's directory destination, holding v1 of
// an image receive for v2 (one small file changed) its new chunks and no
// object they held (none of v1's chunks), from git daemon and git
// http-backend.
func TestCachesFetchOnlyNewChunks(t *testing.T) {
	for _, server := range []string{"git-daemon", "http-backend"} {
		t.Run(server, func(t *testing.T) {
			ctx := context.Background()
			e := bundlertest.NewEnv(t)
			fleet := fleetFor(t, filepath.Join(e.Dir, "fleet"), "a {{.Node}}\n")
			big := imagetest.File{Path: "big", Size: 12 << 20, Content: func() io.Reader { return imagetest.Random(3, 12<<20) }}
			img1, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "v1.tar"), big, imagetest.File{Path: "etc/version", Data: []byte("1\n")})
			img2, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "v2.tar"), big, imagetest.File{Path: "etc/version", Data: []byte("2\n")})
			url := gittest.Daemon(t, e.Dir).URL + "/releases.git"
			if server == "http-backend" {
				url = gittest.HTTP(t, e.Dir, nil) + "/releases.git"
			}
			mirrorCache, verifyCache, dst := filepath.Join(e.Dir, "cache-mirror"), filepath.Join(e.Dir, "cache-verify"), filepath.Join(e.Dir, "usb", "fleet.git")
			verify := func() {
				t.Helper()
				r, err := bundler.Open(ctx, url, verifyCache, repo.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if err := r.VerifyHistory(ctx, bundler.VerifyOptions{Pinned: e.Pinned}, func(l bundler.VerifyLine) {
					if l.Err != nil {
						t.Errorf("verify release %d: %v", l.Version, l.Err)
					}
				}); err != nil {
					t.Fatal(err)
				}
			}

			e.Cut(t, fleet, img1)
			if _, err := mirror(t, url, dst, mirrorCache, bundler.MirrorOptions{Images: 1}); err != nil {
				t.Fatal(err)
			}
			verify()
			v1 := originIndex(t, e.Repo)
			rel := e.Cut(t, fleet, img2)
			v2 := originIndex(t, e.Repo)
			if rel.NewChunks == 0 || rel.NewChunks == rel.Chunks {
				t.Fatalf("v2 has %d of %d chunks new: want some, not all", rel.NewChunks, rel.Chunks)
			}
			old := map[string]bool{}
			for _, c := range bundle.NewChunkSet(v1).List() {
				old[c.Blob] = true
			}
			fresh := map[string]bool{}
			for _, c := range bundle.NewChunkSet(v2).List() {
				if !old[c.Blob] {
					fresh[c.Blob] = true
				}
			}

			before := map[string]map[string]bool{}
			for _, d := range []string{mirrorCache, verifyCache, dst} {
				before[d] = gittest.Packs(t, d)
			}
			if _, err := mirror(t, url, dst, mirrorCache, bundler.MirrorOptions{Images: 1}); err != nil {
				t.Fatal(err)
			}
			verify()
			for name, d := range map[string]string{"mirror cache": mirrorCache, "verify cache": verifyCache, "mirror destination": dst} {
				got := gittest.NewObjects(t, d, before[d])
				for id := range fresh {
					if !got[id] {
						t.Errorf("%s: did not receive v2's new chunk blob %s", name, id)
					}
				}
				t.Logf("%s: %d objects for v2's %d new chunks of %d", name, len(got), len(fresh), bundle.NewChunkSet(v2).Len())
				// Nothing the store held comes again (chunks or not).
				held := gittest.NewObjects(t, d, nil)
				for id := range gittest.NewObjects(t, d, before[d]) {
					delete(held, id)
				}
				for id := range got {
					if held[id] {
						t.Errorf("%s: received %s, which it held", name, id)
					}
				}
			}
		})
	}
}

// originIndex reads the image index of the newest release of the bare
// repository dir.
func originIndex(t *testing.T, dir string) *schema.ImageIndex {
	t.Helper()
	st, err := repo.Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := st.Refs()
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Read(st, refs[bundle.ReleasesRef])
	if err != nil {
		t.Fatal(err)
	}
	rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := bundle.ReadImageIndex(st, b.Commit, rel.Images[0])
	if err != nil {
		t.Fatal(err)
	}
	return idx
}
