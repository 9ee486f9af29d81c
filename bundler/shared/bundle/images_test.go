package bundle_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
	"github.com/pullship/pullship/schema"
)

// TestFetchImageOnlyNewChunks: a store holding v1 of an image fetches v2
// from a stock git server, and the pack the server sends carries v2's new
// chunks, its tree and its commit: nothing of v1.
func TestFetchImageOnlyNewChunks(t *testing.T) {
	for _, server := range []string{"git-daemon", "http-backend"} {
		t.Run(server, func(t *testing.T) {
			ctx := context.Background()
			e := bundlertest.NewEnv(t)
			fleet := bundlertest.WriteFleet(t, filepath.Join(e.Dir, "fleet"), bundlertest.Fleet{Image: "pullship-test/app:1",
				Template: "a\n", Target: "/etc/app/app.conf", Nodes: []bundlertest.Node{{Name: "n1", Region: "r", Address: "10.0.0.1/24"}}})
			big := imagetest.File{Path: "big", Size: 12 << 20, Content: func() io.Reader { return imagetest.Random(1, 12<<20) }}
			img1, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "v1.tar"), big, imagetest.File{Path: "etc/version", Data: []byte("1\n")})
			img2, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "v2.tar"), big, imagetest.File{Path: "etc/version", Data: []byte("2\n")})
			url := gittest.HTTP(t, e.Dir, nil) + "/releases.git"
			if server == "git-daemon" {
				url = gittest.Daemon(t, e.Dir).URL + "/releases.git"
			}
			rem, err := repo.Open(ctx, url, repo.Options{})
			must(t, err)
			dir := t.TempDir()
			st, err := repo.Init(dir)
			must(t, err)

			e.Cut(t, fleet, img1)
			idx1 := newestImage(t, rem, st)
			must(t, bundle.FetchImage(ctx, rem, st, idx1, nil))
			r2 := e.Cut(t, fleet, img2)
			idx2 := newestImage(t, rem, st)
			before := packs(t, dir)
			must(t, bundle.FetchImage(ctx, rem, st, idx2, nil))
			if r2.NewChunks == 0 || r2.NewChunks == r2.Chunks {
				t.Fatalf("v2 has %d of %d chunks new: want some, not all", r2.NewChunks, r2.Chunks)
			}

			want := map[string]bool{}
			for _, c := range bundle.NewChunkSet(idx2).List() {
				want[c.Blob] = true
			}
			for _, c := range bundle.NewChunkSet(idx1).List() {
				delete(want, c.Blob)
			}
			tag := gitOut(t, dir, "rev-parse", bundle.ImageTag(idx2.Digest))
			want[tag] = true
			want[gitOut(t, dir, "rev-parse", tag+"^{tree}")] = true
			got := map[string]bool{}
			for p := range packs(t, dir) {
				if before[p] {
					continue
				}
				f, err := os.Open(strings.TrimSuffix(p, ".pack") + ".idx")
				must(t, err)
				cmd := exec.Command("git", "show-index")
				cmd.Stdin = f
				out, err := cmd.Output()
				f.Close()
				must(t, err)
				for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					if fs := strings.Fields(line); len(fs) >= 2 {
						got[fs[1]] = true
					}
				}
			}
			for id := range got {
				if !want[id] {
					t.Errorf("the server sent %s, which the store held already or v2 does not need", id)
				}
			}
			for id := range want {
				if !got[id] {
					t.Errorf("the server did not send %s, which v2 needs", id)
				}
			}
			t.Logf("%d objects fetched for %d new chunks of %d", len(got), r2.NewChunks, r2.Chunks)
			must(t, bundle.CheckChunks(ctx, st, idx2))
		})
	}
}

// newestImage fetches the release branch into st and returns the index of
// the newest release's image.
func newestImage(t *testing.T, rem *repo.Remote, st *repo.Store) *schema.ImageIndex {
	t.Helper()
	ctx := context.Background()
	got, err := rem.Fetch(ctx, st, repo.FetchRequest{Refs: []string{bundle.ReleasesRef}})
	must(t, err)
	b, err := bundle.Read(st, got[bundle.ReleasesRef])
	must(t, err)
	rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest)
	must(t, err)
	idx, err := bundle.ReadImageIndex(st, b.Commit, rel.Images[0])
	must(t, err)
	return idx
}

func packs(t *testing.T, dir string) map[string]bool {
	t.Helper()
	ms, err := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
	must(t, err)
	set := map[string]bool{}
	for _, m := range ms {
		set[m] = true
	}
	return set
}

func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"--git-dir", dir}, args...)...).Output()
	if err != nil {
		t.Fatalf("git %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
