package bundler_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
	"github.com/pullship/pullship/schema"
)

// TestImageTagSegments: the git CLI, given only the signed index and the
// rules of docs/format.md ("Chunk storage"), makes the same chain of
// segment commits the release wrote, and `git fsck` finds it sound.
func TestImageTagSegments(t *testing.T) {
	e := bundlertest.NewEnv(t)
	fleet := fleetFor(t, filepath.Join(e.Dir, "fleet"), "node = {{.Node}}\n")
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"),
		imagetest.File{Path: "a", Size: 5 << 20, Content: func() io.Reader { return imagetest.Random(1, 5<<20) }},
		imagetest.File{Path: "b", Size: 6 << 20, Content: func() io.Reader { return imagetest.Random(2, 6<<20) }})
	e.Cut(t, fleet, img)
	idx := headIndex(t, e)
	segs, err := bundle.Segments(idx)
	must(t, err)
	if len(segs) < 3 {
		t.Fatalf("%d segments: the test needs several", len(segs))
	}
	tag := bundle.ImageTag(idx.Digest)
	revs := strings.Fields(git(t, e.Repo, "rev-list", tag))
	if len(revs) != len(segs) {
		t.Fatalf("git rev-list %s: %d commits, the index makes %d segments", tag, len(revs), len(segs))
	}

	// The segments by the written rules, straight from the index's chunks.
	var distinct []schema.Chunk
	seen := map[string]bool{}
	for _, en := range idx.Entries {
		for _, c := range en.StreamChunks() {
			if !seen[c.Blob] {
				seen[c.Blob] = true
				distinct = append(distinct, c)
			}
		}
	}
	type seg struct{ first, last int }
	var want []seg
	var size int64
	for i, c := range distinct {
		if len(want) == 0 || size+c.StoredSize() > bundle.SegmentBytes {
			want = append(want, seg{i, i})
			size = 0
		}
		want[len(want)-1].last = i
		size += c.StoredSize()
	}
	if len(want) != len(segs) {
		t.Fatalf("the rules make %d segments, bundle.Segments %d", len(want), len(segs))
	}
	env := append(os.Environ(), "GIT_AUTHOR_NAME=pullship", "GIT_AUTHOR_EMAIL=pullship@localhost", "GIT_AUTHOR_DATE=@0 +0000",
		"GIT_COMMITTER_NAME=pullship", "GIT_COMMITTER_EMAIL=pullship@localhost", "GIT_COMMITTER_DATE=@0 +0000")
	parent := ""
	for k := len(want) - 1; k >= 0; k-- {
		var tree strings.Builder
		for i := want[k].first; i <= want[k].last; i++ {
			fmt.Fprintf(&tree, "100644 blob %s\t%06d-%s\n", distinct[i].Blob, i, distinct[i].SHA256)
		}
		mk := exec.Command("git", "-C", e.Repo, "mktree")
		mk.Stdin = strings.NewReader(tree.String())
		out, err := mk.Output()
		must(t, err)
		args := []string{"-C", e.Repo, "commit-tree", strings.TrimSpace(string(out)),
			"-m", fmt.Sprintf("image %s: segment %d of %d, chunks %d to %d", idx.Digest, k+1, len(want), want[k].first, want[k].last)}
		if parent != "" {
			args = append(args, "-p", parent)
		}
		ct := exec.Command("git", args...)
		ct.Env = env
		out, err = ct.Output()
		must(t, err)
		commit := strings.TrimSpace(string(out))
		if commit != revs[k] || commit != segs[k].Commit.String() {
			t.Fatalf("segment %d: git makes commit %s, the tag's chain has %s, bundle.Segments %s", k+1, commit, revs[k], segs[k].Commit)
		}
		parent = commit
	}
	git(t, e.Repo, "fsck", "--strict", "--no-dangling")
}

// TestOldFormatImageTag: a repository whose first release's image tag is
// of the single-commit format (every chunk in one parentless commit) and
// whose second release's is a chain of segments. `pullship verify --all`
// passes; an agent's store fetches both segment by segment (their chunks
// by id) from git daemon and git http-backend, and each tag whole, in one
// request, from a server that answers only in protocol v0 (sshd without
// AcceptEnv GIT_PROTOCOL); over ssh with it, segment by segment again.
func TestOldFormatImageTag(t *testing.T) {
	ctx := context.Background()
	e := bundlertest.NewEnv(t)
	fleet := fleetFor(t, filepath.Join(e.Dir, "fleet"), "node = {{.Node}}\n")
	big := imagetest.File{Path: "big", Size: 9 << 20, Content: func() io.Reader { return imagetest.Random(3, 9<<20) }}
	img1, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "v1.tar"), big, imagetest.File{Path: "v", Data: []byte("1\n")})
	img2, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "v2.tar"), big, imagetest.File{Path: "v", Data: []byte("2\n")},
		imagetest.File{Path: "more", Size: 6 << 20, Content: func() io.Reader { return imagetest.Random(4, 6<<20) }})
	e.Cut(t, fleet, img1)
	idx1 := headIndex(t, e)
	writeOldFormatTag(t, e.Repo, idx1)
	e.Cut(t, fleet, img2)
	idx2 := headIndex(t, e)

	var lines []bundler.VerifyLine
	must(t, e.Release.VerifyHistory(ctx, bundler.VerifyOptions{Pinned: e.Pinned, All: true}, func(l bundler.VerifyLine) { lines = append(lines, l) }))
	for _, l := range lines {
		if l.Err != nil || l.Note != "" {
			t.Fatalf("verify --all: release %d: %v %q", l.Version, l.Err, l.Note)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("verify --all: %d releases", len(lines))
	}

	segs1, err := bundle.Segments(idx1)
	must(t, err)
	segs2, err := bundle.Segments(idx2)
	must(t, err)
	// Segments of image 2 whose chunks image 1 holds cost no request.
	held := map[string]bool{}
	for _, c := range bundle.NewChunkSet(idx1).List() {
		held[c.Blob] = true
	}
	newSegs2 := 0
	lastHeld := false // the last segment of image 2 is all image 1's
	for _, s := range segs2 {
		lastHeld = true
		for _, c := range s.Chunks {
			if !held[c.Blob] {
				newSegs2++
				lastHeld = false
				break
			}
		}
	}
	if newSegs2 == len(segs2) {
		t.Fatalf("image 2 shares no segment with image 1")
	}
	sshd, sshdV0 := gittest.SSHD(t, e.Dir), gittest.SSHDv0(t, e.Dir)
	for _, server := range []string{"git-daemon", "http-backend", "ssh", "ssh-v0"} {
		t.Run(server, func(t *testing.T) {
			var url string
			opts := repo.Options{}
			switch server {
			case "git-daemon":
				url = gittest.Daemon(t, e.Dir).URL + "/releases.git"
			case "http-backend":
				url = gittest.HTTP(t, e.Dir, nil) + "/releases.git"
			default:
				// sshd passes GIT_PROTOCOL on only with AcceptEnv: without
				// it the server answers in v0, and the agent asks for the
				// tag's history a segment at a time ("deepen"), or for the
				// whole tag when it is of the old format.
				srv := sshd
				if server == "ssh-v0" {
					srv = sshdV0
				}
				url = srv.RepoURL("releases.git")
				auth, err := repo.Credentials{SSHKey: srv.ClientKey, KnownHosts: srv.KnownHosts}.Options(url)
				must(t, err)
				opts = auth
			}
			rem, err := repo.Open(ctx, url, opts)
			must(t, err)
			dir := t.TempDir()
			st, err := repo.Init(dir)
			must(t, err)
			_, err = rem.Fetch(ctx, st, repo.FetchRequest{Refs: []string{bundle.ReleasesRef}})
			must(t, err)
			for i, idx := range []*schema.ImageIndex{idx1, idx2} {
				before := len(packFiles(t, dir))
				must(t, bundle.FetchImage(ctx, rem, st, idx, nil))
				must(t, bundle.CheckChunks(ctx, st, idx))
				n := len(packFiles(t, dir)) - before
				want := []int{len(segs1), newSegs2}[i] + 1 // a segment a pack, then the chain written
				if server == "ssh-v0" {
					// The old-format tag in one pack; image 2 a pack a new
					// segment (with the held segments before it), then the
					// chain written after the last new one, if any.
					want = 1
					if i == 1 {
						want = newSegs2
						if lastHeld {
							want++
						}
					}
				}
				if n != want {
					t.Errorf("image %d: %d packs, want %d", i+1, n, want)
				}
			}
			tags := []struct {
				idx  *schema.ImageIndex
				segs []bundle.Segment
			}{{idx1, segs1}, {idx2, segs2}}
			if server == "ssh-v0" {
				tags = tags[1:] // image 1's is the server's old-format tag
			}
			for _, c := range tags {
				if tag, err := st.Ref(bundle.ImageTag(c.idx.Digest)); err != nil || tag != bundle.TagCommit(c.segs) {
					t.Fatalf("image tag %s (%v), want %s", tag, err, bundle.TagCommit(c.segs))
				}
			}
		})
	}
}

// headIndex returns the image index of the repository's newest release.
func headIndex(t *testing.T, e *bundlertest.Env) *schema.ImageIndex {
	t.Helper()
	v := verifyHead(t, e)
	idx, err := bundle.ReadImageIndex(e.Release.Cache, v.Commit, v.Release.Images[0])
	must(t, err)
	return idx
}

// writeOldFormatTag rewrites idx's image tag in the bare repository dir
// as bundlers before segments wrote it (one parentless commit, every
// distinct chunk in its tree), with the git CLI, and drops the segment
// objects no ref reaches any more.
func writeOldFormatTag(t *testing.T, dir string, idx *schema.ImageIndex) {
	t.Helper()
	var tree strings.Builder
	for i, c := range bundle.NewChunkSet(idx).List() {
		fmt.Fprintf(&tree, "100644 blob %s\t%s\n", c.Blob, bundle.ChunkEntryName(i, c.SHA256))
	}
	mk := exec.Command("git", "-C", dir, "mktree")
	mk.Stdin = strings.NewReader(tree.String())
	out, err := mk.Output()
	must(t, err)
	commit := strings.TrimSpace(git(t, dir, "-c", "user.name=pullship", "-c", "user.email=pullship@localhost",
		"commit-tree", strings.TrimSpace(string(out)), "-m", "image "+idx.Digest))
	git(t, dir, "update-ref", bundle.ImageTag(idx.Digest), commit)
	git(t, dir, "-c", "gc.reflogExpire=now", "-c", "gc.reflogExpireUnreachable=now", "gc", "-q", "--prune=now")
	if n := strings.Fields(git(t, dir, "rev-list", bundle.ImageTag(idx.Digest))); len(n) != 1 {
		t.Fatalf("old-format tag: %d commits", len(n))
	}
}

func packFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
	must(t, err)
	return m
}
