package bundler_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/bundler/shared/chunks"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
	"github.com/pullship/pullship/schema"
)

func fleetFor(t *testing.T, dir, tmpl string) string {
	return bundlertest.WriteFleet(t, dir, bundlertest.Fleet{
		Image: "pullship-test/app:1", Template: tmpl, Target: "/etc/app/app.conf",
		Nodes: []bundlertest.Node{
			{Name: "cn", Region: "cn", Address: "10.0.0.1/24", Vars: map[string]string{"greeting": "ni hao"}},
			{Name: "sg", Region: "sg", Address: "10.0.0.2/24", Wave: 2, Vars: map[string]string{"greeting": "hello"}},
		},
	})
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestReleaseEndToEnd(t *testing.T) {
	ctx := context.Background()
	e := bundlertest.NewEnv(t)
	fleet := fleetFor(t, filepath.Join(e.Dir, "fleet"), "node = {{.Node}}\ngreeting = {{.Vars.greeting}}\n")
	img, id := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"),
		imagetest.File{Path: "app", Size: 6 << 20, Content: func() io.Reader { return imagetest.Random(1, 6<<20) }})

	r1 := e.Cut(t, fleet, img)
	if r1.Version != 1 || !r1.NewImage || r1.NewChunks == 0 || r1.NewChunks != r1.Chunks || r1.Image != id {
		t.Fatalf("first release: %+v", r1)
	}

	// The git CLI reads what we wrote.
	git(t, e.Repo, "fsck", "--strict", "--no-dangling")
	if log := git(t, e.Repo, "log", "--format=%s", "releases"); !strings.Contains(log, "release 1: image app-1") {
		t.Fatalf("git log: %s", log)
	}
	if m := git(t, e.Repo, "show", "releases:release.toml"); !strings.Contains(m, "version = 1") {
		t.Fatalf("git show: %s", m)
	}
	if c := git(t, e.Repo, "show", "releases:nodes/sg/app.conf"); c != "node = sg\ngreeting = hello\n" {
		t.Fatalf("rendered file: %q", c)
	}
	git(t, e.Repo, "rev-parse", "--verify", bundle.ImageTag(id))

	// Verified the way an agent does.
	v := verifyHead(t, e)
	if v.Release.Version != 1 || len(v.Release.Nodes) != 2 || v.Signatures == nil {
		t.Fatalf("verified: %+v", v.Release)
	}

	// Same input: refused.
	_, err := e.Release.Release(ctx, bundler.ReleaseOptions{Fleet: fleet, Image: image.TarFile(img), Signers: []signature.Signer{e.Key.Signer}})
	if !errors.Is(err, bundler.ErrNothingChanged) {
		t.Fatalf("identical release: %v", err)
	}

	// Config-only release: no chunk sent, a small push.
	fleet = fleetFor(t, filepath.Join(e.Dir, "fleet"), "node = {{.Node}}\ngreeting = {{.Vars.greeting}}!\n")
	r2 := e.Cut(t, fleet, img)
	if r2.Version != 2 || r2.NewImage || r2.NewChunks != 0 || r2.PackBytes == 0 || r2.PackBytes > 20<<10 {
		t.Fatalf("config-only release: %+v", r2)
	}
	v2 := verifyHead(t, e)
	prevSum := v.ManifestSHA256
	if v2.Release.Previous != prevSum {
		t.Fatalf("hash chain: previous %s, want %s", v2.Release.Previous, prevSum)
	}
	git(t, e.Repo, "fsck", "--strict", "--no-dangling")

	// A key outside the root cannot publish; nothing moves.
	before := git(t, e.Repo, "rev-parse", "releases")
	stranger := bundlertest.NewKey(t, e.Dir, "stranger")
	fleet = fleetFor(t, filepath.Join(e.Dir, "fleet"), "changed again {{.Node}}\n")
	_, err = e.Release.Release(ctx, bundler.ReleaseOptions{Fleet: fleet, Image: image.TarFile(img), Signers: []signature.Signer{stranger.Signer}})
	var te *schema.ThresholdError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "unknown") {
		t.Fatalf("stranger's release: %v", err)
	}
	if after := git(t, e.Repo, "rev-parse", "releases"); after != before {
		t.Fatal("a refused release moved the branch")
	}
}

func verifyHead(t *testing.T, e *bundlertest.Env) *bundle.Verified {
	t.Helper()
	head, err := e.Release.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Read(e.Release.Cache, head.Releases)
	if err != nil {
		t.Fatal(err)
	}
	v, err := bundle.Verify(b, e.Pinned, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestReleaseOneChangedFileSendsLittle(t *testing.T) {
	e := bundlertest.NewEnv(t)
	fleet := fleetFor(t, filepath.Join(e.Dir, "fleet"), "x = {{.Node}}\n")
	big := func() io.Reader { return imagetest.Random(7, 24<<20) }
	img1, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "a.tar"),
		imagetest.File{Path: "big", Size: 24 << 20, Content: big},
		imagetest.File{Path: "etc/version", Data: []byte("1\n")})
	e.Cut(t, fleet, img1)
	img2, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "b.tar"),
		imagetest.File{Path: "big", Size: 24 << 20, Content: big},
		imagetest.File{Path: "etc/version", Data: []byte("2\n")})
	r := e.Cut(t, fleet, img2)
	if !r.NewImage {
		t.Fatal("second image not new")
	}
	if r.NewBytes*20 > 24<<20 {
		t.Fatalf("one changed file sent %d bytes of a 24 MiB layer (want < 5%%)", r.NewBytes)
	}
	git(t, e.Repo, "fsck", "--strict", "--no-dangling")
}

func TestReleaseRaceIsReported(t *testing.T) {
	e := bundlertest.NewEnv(t)
	ctx := context.Background()
	dir := filepath.Join(e.Dir, "fleet")
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"), imagetest.File{Path: "app", Data: []byte("app")})
	e.Cut(t, fleetFor(t, dir, "v1 {{.Node}}\n"), img)

	other, err := bundler.Open(ctx, e.Repo, filepath.Join(e.Dir, "cache-other"), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fleet := fleetFor(t, dir, "v2 {{.Node}}\n")
	// A new image, so that the release scans it (and reports progress,
	// where the race is staged).
	img2, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img2.tar"), imagetest.File{Path: "app", Data: []byte("app2")})
	raced := false
	_, err = e.Release.Release(ctx, bundler.ReleaseOptions{Fleet: fleet, Image: image.TarFile(img2), Signers: []signature.Signer{e.Key.Signer},
		Progress: func(stage string, done, total int64) {
			if raced {
				return
			}
			raced = true
			// Another release lands between our read of the branch and our push.
			otherFleet := fleetFor(t, filepath.Join(e.Dir, "fleet-other"), "other {{.Node}}\n")
			if _, err := other.Release(ctx, bundler.ReleaseOptions{Fleet: otherFleet, Image: image.TarFile(img), Signers: []signature.Signer{e.Key.Signer}}); err != nil {
				t.Errorf("competing release: %v", err)
			}
		}})
	var rc *repo.RefConflictError
	if !raced || !errors.As(err, &rc) {
		t.Fatalf("raced=%v err=%v", raced, err)
	}
	if log := git(t, e.Repo, "log", "--format=%s", "releases"); strings.Count(log, "\n") != 2 {
		t.Fatalf("want 2 releases, got:\n%s", log)
	}
}

func TestReleaseBadInputsCommitNothing(t *testing.T) {
	e := bundlertest.NewEnv(t)
	ctx := context.Background()
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"), imagetest.File{Path: "app", Data: []byte("app")})
	good := fleetFor(t, filepath.Join(e.Dir, "fleet"), "ok {{.Node}}\n")
	truncated := filepath.Join(e.Dir, "trunc.tar")
	data, _ := os.ReadFile(img)
	os.WriteFile(truncated, data[:len(data)/2], 0o644)
	unknownVar := fleetFor(t, filepath.Join(e.Dir, "fleet-var"), "x = {{.Vars.nope}}\n")
	dupDir := filepath.Join(e.Dir, "fleet-dup")
	dup := fleetFor(t, dupDir, "x\n")
	fd, _ := os.ReadFile(dup)
	os.WriteFile(dup, append(fd, []byte("[[node]]\nname = \"cn\"\nregion = \"cn\"\nwave = 1\naddress = \"10.0.0.9/24\"\nstatus_key = \"cn.pub\"\n")...), 0o644)

	for _, tc := range []struct {
		name, fleet, img, want string
	}{
		{"truncated tar", good, truncated, "trunc.tar"},
		{"missing image", good, filepath.Join(e.Dir, "nope.tar"), "nope.tar"},
		{"unknown variable", unknownVar, img, `variable "nope" is not defined`},
		{"duplicate node", dup, img, `"cn"`},
	} {
		_, err := e.Release.Release(ctx, bundler.ReleaseOptions{Fleet: tc.fleet, Image: image.TarFile(tc.img), Signers: []signature.Signer{e.Key.Signer}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
	if out, err := exec.Command("git", "-C", e.Repo, "rev-parse", "--verify", "-q", "releases").CombinedOutput(); err == nil {
		t.Fatalf("a bad input made a release: %s", out)
	}
}

// TestImageTagStreamOrder: a git server sends an image tag's chunks in the
// order the rebuilt stream needs them (agents load while they arrive).
// git pack-objects, as upload-pack runs it, is the independent judge.
func TestImageTagStreamOrder(t *testing.T) {
	e := bundlertest.NewEnv(t)
	fleet := fleetFor(t, filepath.Join(e.Dir, "fleet"), "node = {{.Node}}\n")
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"),
		imagetest.File{Path: "b-second", Size: 5 << 20, Content: func() io.Reader { return imagetest.Nibbles(2, 5<<20) }},
		imagetest.File{Path: "a-first", Size: 6 << 20, Content: func() io.Reader { return imagetest.Nibbles(3, 6<<20) }},
		imagetest.File{Path: "c-again", Size: 5 << 20, Content: func() io.Reader { return imagetest.Nibbles(2, 5<<20) }})
	e.Cut(t, fleet, img)
	v := verifyHead(t, e)
	ri := v.Release.Images[0]
	idx, err := bundle.ReadImageIndex(e.Release.Cache, v.Commit, ri)
	if err != nil {
		t.Fatal(err)
	}
	var want []string // blob ids in first-appearance order
	seen := map[string]bool{}
	for _, en := range idx.Entries {
		for _, c := range en.Chunks {
			if !seen[c.Blob] {
				seen[c.Blob] = true
				want = append(want, c.Blob)
			}
		}
	}
	if len(want) < 8 {
		t.Fatalf("only %d chunks: the order proves little", len(want))
	}

	// The git CLI reads each chunk blob: a zstd frame of the blob size the
	// index gives, decoding to the chunk. Git stores it as it is (zlib's
	// stored blocks): no second compression.
	stored := gittest.StoredBlobs(t, e.Repo)
	for _, en := range idx.Entries {
		for _, c := range en.Chunks {
			if !c.Encoded() {
				t.Fatalf("chunk %s not zstd-encoded", c.SHA256)
			}
			if size := strings.TrimSpace(git(t, e.Repo, "cat-file", "-s", c.Blob)); size != fmt.Sprint(c.BlobSize) {
				t.Fatalf("git cat-file -s %s: %s, the index says %d", c.Blob, size, c.BlobSize)
			}
			blob, err := exec.Command("git", "-C", e.Repo, "cat-file", "blob", c.Blob).Output()
			if err != nil {
				t.Fatal(err)
			}
			rc, err := chunks.Decode(io.NopCloser(bytes.NewReader(blob)), c)
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(rc)
			rc.Close()
			if sum := sha256.Sum256(data); err != nil || int64(len(data)) != c.Size || hex.EncodeToString(sum[:]) != c.SHA256 {
				t.Fatalf("chunk %s: decoded %d bytes (%v), sha256 %x", c.SHA256, len(data), err, sum)
			}
			if !stored[c.Blob] {
				t.Fatalf("chunk blob %s of %d bytes: deflated in the pack (or missing), not stored", c.Blob, c.BlobSize)
			}
		}
	}

	cmd := exec.Command("git", "-C", e.Repo, "pack-objects", "--revs", "--stdout")
	cmd.Stdin = strings.NewReader(bundle.ImageTag(idx.Digest) + "\n")
	pack, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	packPath := filepath.Join(e.Dir, "tag.pack")
	if err := os.WriteFile(packPath, pack, 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, e.Dir, "index-pack", packPath)
	show := exec.Command("git", "show-index")
	idxFile, err := os.Open(strings.TrimSuffix(packPath, ".pack") + ".idx")
	if err != nil {
		t.Fatal(err)
	}
	defer idxFile.Close()
	show.Stdin = idxFile
	out, err := show.Output()
	if err != nil {
		t.Fatal(err)
	}
	type ent struct {
		off int
		id  string
	}
	var ents []ent
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var en ent
		if _, err := fmt.Sscanf(line, "%d %s", &en.off, &en.id); err != nil {
			t.Fatalf("git show-index line %q: %v", line, err)
		}
		if seen[en.id] {
			ents = append(ents, en)
		}
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].off < ents[j].off })
	var got []string
	for _, en := range ents {
		got = append(got, en.id)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("git sends the chunks in the order\n%v\nthe stream needs\n%v", got, want)
	}
}
