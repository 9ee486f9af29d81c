package bundle_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
	"github.com/pullship/pullship/schema"
)

// TestFetchImageOnlyNewChunks: a store holding v1 of an image fetches v2
// (one small file changed), then v3 (the same files, every mtime new), from
// stock git servers and from a directory remote; each time the objects the
// store receives are the new image's new chunks and its tag's chain
// (segment commits, the trees the store lacks): nothing it held. v3's new chunks are its layer's header stream and the
// image's small files: no content chunk.
func TestFetchImageOnlyNewChunks(t *testing.T) {
	for _, server := range []string{"git-daemon", "http-backend", "directory"} {
		t.Run(server, func(t *testing.T) {
			ctx := context.Background()
			e := bundlertest.NewEnv(t)
			fleet := bundlertest.WriteFleet(t, filepath.Join(e.Dir, "fleet"), bundlertest.Fleet{Image: "pullship-test/app:1",
				Template: "a\n", Target: "/etc/app/app.conf", Nodes: []bundlertest.Node{{Name: "n1", Region: "r", Address: "10.0.0.1/24"}}})
			big := imagetest.File{Path: "big", Size: 12 << 20, Content: func() io.Reader { return imagetest.Random(1, 12<<20) }}
			img1, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "v1.tar"), big, imagetest.File{Path: "etc/version", Data: []byte("1\n")})
			img2, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "v2.tar"), big, imagetest.File{Path: "etc/version", Data: []byte("2\n")})
			img3 := filepath.Join(e.Dir, "v3.tar")
			if _, err := imagetest.WriteFile(img3, imagetest.Image{Layers: [][]imagetest.File{{big, {Path: "etc/version", Data: []byte("2\n")}}},
				Cmd: []string{"/app"}, RepoTags: []string{"pullship-test/app:1"}, ModTime: time.Date(2026, 12, 6, 22, 0, 0, 0, time.UTC)}); err != nil {
				t.Fatal(err)
			}
			var url string
			switch server {
			case "git-daemon":
				url = gittest.Daemon(t, e.Dir).URL + "/releases.git"
			case "http-backend":
				url = gittest.HTTP(t, e.Dir, nil) + "/releases.git"
			default:
				url = e.Repo
			}
			rem, err := repo.Open(ctx, url, repo.Options{})
			must(t, err)
			dir := t.TempDir()
			st, err := repo.Init(dir)
			must(t, err)

			e.Cut(t, fleet, img1)
			prev := newestImage(t, rem, st)
			must(t, bundle.FetchImage(ctx, rem, st, prev, nil))
			for i, img := range []string{img2, img3} {
				rel := e.Cut(t, fleet, img)
				idx := newestImage(t, rem, st)
				before := gittest.Packs(t, dir)
				must(t, bundle.FetchImage(ctx, rem, st, idx, nil))
				if rel.NewChunks == 0 || rel.NewChunks == rel.Chunks {
					t.Fatalf("v%d has %d of %d chunks new: want some, not all", i+2, rel.NewChunks, rel.Chunks)
				}
				want := map[string]bool{}
				for _, c := range bundle.NewChunkSet(idx).List() {
					want[c.Blob] = true
				}
				for _, c := range bundle.NewChunkSet(prev).List() {
					delete(want, c.Blob)
				}
				var newBytes int64
				for _, e := range idx.Entries {
					for _, c := range e.Chunks {
						if want[c.Blob] && e.Split() && i == 1 {
							t.Errorf("v3 (new mtimes only): content chunk %s of %s is new", c.SHA256[:12], e.Path)
						}
					}
					for _, c := range e.StreamChunks() {
						if want[c.Blob] {
							newBytes += c.StoredSize()
						}
					}
				}
				// The tag's chain: every segment's commit, and the trees the
				// previous image does not share.
				segs, err := bundle.Segments(idx)
				must(t, err)
				prevSegs, err := bundle.Segments(prev)
				must(t, err)
				for _, s := range segs {
					want[s.Commit.String()] = true
					want[s.Tree.String()] = true
				}
				for _, s := range prevSegs {
					delete(want, s.Tree.String())
				}
				if tag := gitOut(t, dir, "rev-parse", bundle.ImageTag(idx.Digest)); tag != bundle.TagCommit(segs).String() {
					t.Fatalf("image tag at %s, its first segment is %s", tag, bundle.TagCommit(segs))
				}
				got := gittest.NewObjects(t, dir, before)
				for id := range got {
					if !want[id] {
						t.Errorf("v%d: the server sent %s, which the store held already or the image does not need", i+2, id)
					}
				}
				for id := range want {
					if !got[id] {
						t.Errorf("v%d: the server did not send %s, which the image needs", i+2, id)
					}
				}
				t.Logf("v%d: %d objects fetched for %d new chunks of %d (%d bytes stored)", i+2, len(got), rel.NewChunks, rel.Chunks, newBytes)
				must(t, bundle.CheckChunks(ctx, st, idx))
				prev = idx
			}
		})
	}
}

// newestImage fetches the release branch into st and returns the index of
// the newest release's image.
func newestImage(t testing.TB, rem *repo.Remote, st *repo.Store) *schema.ImageIndex {
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

func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"--git-dir", dir}, args...)...).Output()
	if err != nil {
		t.Fatalf("git %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestLiveChunksHeld: a chunk the store held before the fetch is read
// through LiveChunks.Held at once, however long the fetch runs; without
// Held it waits for the fetch (here: until its context ends).
func TestLiveChunksHeld(t *testing.T) {
	st, err := repo.Init(t.TempDir())
	must(t, err)
	data := []byte("a chunk of an earlier image\n")
	objs := repo.NewObjectStream(nil)
	id := objs.AddBytes(plumbing.BlobObject, data)
	must(t, st.Write(context.Background(), objs))
	sum := sha256.Sum256(data)
	c := schema.Chunk{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Blob: id.String()}
	live := repo.NewLivePack(st) // a fetch that has brought nothing yet
	defer live.Close()
	held, err := repo.Init(st.Dir())
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rc, err := bundle.LiveChunks{Ctx: ctx, Pack: live, Held: held}.Open(c)
	must(t, err)
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("held chunk read %q, %v", got, err)
	}
	if _, err := (bundle.LiveChunks{Ctx: ctx, Pack: live}).Open(c); !errors.Is(err, context.Canceled) {
		t.Fatalf("without Held: %v, want to wait for the fetch until the context ends", err)
	}
}
