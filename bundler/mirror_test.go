package bundler_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// testImage writes a one-layer image of size random bytes (seeded).
func testImage(t *testing.T, dir string, seed uint64, size int64) string {
	p, _ := bundlertest.WriteImage(t, filepath.Join(dir, fmt.Sprintf("img-%d.tar", seed)),
		imagetest.File{Path: "app", Size: size, Content: func() io.Reader { return imagetest.Random(seed, size) }})
	return p
}

// gitRefs lists a bare repository's refs with the git CLI: name → id.
func gitRefs(t *testing.T, bare string) map[string]string {
	t.Helper()
	out := git(t, bare, "for-each-ref", "--format=%(refname) %(objectname)")
	refs := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if name, id, ok := strings.Cut(l, " "); ok {
			refs[name] = id
		}
	}
	return refs
}

// statusCommit writes, with the git CLI, a status commit for node with
// sequence seq on top of parent ("" for none) in bare, moves the branch
// there and returns the commit id. The report is unsigned: a mirror only
// carries reports, status readers verify them.
func statusCommit(t *testing.T, key signature.Signer, bare, node string, seq int64, parent string) string {
	t.Helper()
	st := &schema.Status{Node: node, Region: "cn", Sequence: seq, Time: time.Date(2026, 1, 1, 0, 0, int(seq), 0, time.UTC),
		Container: schema.StatusContainer{State: "running"}, Network: schema.StatusNetwork{Driver: "none"}}
	data, err := st.Encode()
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "status.toml")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	blob := strings.TrimSpace(git(t, bare, "hash-object", "-w", f))
	tree := "100644 blob " + blob + "\tstatus.toml\n"
	if key != nil {
		sig, err := schema.SignWith(key, data)
		if err != nil {
			t.Fatal(err)
		}
		var sf schema.SignatureFile
		sf.Add(sig)
		must(t, os.WriteFile(f+".sig", sf.Encode(), 0o644))
		tree += "100644 blob " + strings.TrimSpace(git(t, bare, "hash-object", "-w", f+".sig")) + "\tstatus.toml.sig\n"
	}
	cmd := exec.Command("git", "-C", bare, "mktree")
	cmd.Stdin = strings.NewReader(tree)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git mktree: %v", err)
	}
	args := []string{"-c", "user.name=agent", "-c", "user.email=agent@test", "commit-tree", strings.TrimSpace(string(out)), "-m", fmt.Sprintf("report %d", seq)}
	if parent != "" {
		args = append(args, "-p", parent)
	}
	id := strings.TrimSpace(git(t, bare, args...))
	git(t, bare, "update-ref", bundle.StatusPrefix+node, id)
	return id
}

func mirror(t *testing.T, src, dst, cache string, o bundler.MirrorOptions) (*bundler.MirrorResult, error) {
	t.Helper()
	ctx := context.Background()
	r, err := bundler.Open(ctx, src, cache, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	to, err := bundler.OpenMirrorTarget(ctx, dst, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Mirror(ctx, to, o)
}

// TestMirrorRelayAndRemovableMedia mirrors a directory repository to a git
// daemon (a relay) and from there to a directory that does not exist yet
// (a USB disk), incrementally, carries status branches both ways, and
// refuses to move a release branch backwards. The git CLI checks every
// copy.
func TestMirrorRelayAndRemovableMedia(t *testing.T) {
	ctx := context.Background()
	e := bundlertest.NewEnv(t)
	base := filepath.Join(e.Dir, "relay-srv")
	relayBare := gittest.InitBare(t, base, "fleet.git")
	relay := gittest.Daemon(t, base).URL + "/fleet.git"
	usb := filepath.Join(e.Dir, "media", "fleet.git")
	stale := filepath.Join(e.Dir, "stale.git")

	var fleet string
	imgs := []string{testImage(t, e.Dir, 1, 512<<10), testImage(t, e.Dir, 2, 512<<10), testImage(t, e.Dir, 3, 512<<10)}
	var tags []string
	for i, img := range imgs {
		fleet = fleetFor(t, filepath.Join(e.Dir, "fleet"), fmt.Sprintf("v%d {{.Node}}\n", i+1))
		tags = append(tags, e.Cut(t, fleet, img).ImageTag)
	}
	// A copy frozen at release 3, for the rollback check at the end.
	if _, err := mirror(t, e.Repo, stale, filepath.Join(e.Dir, "cache-stale"), bundler.MirrorOptions{}); err != nil {
		t.Fatal(err)
	}

	// Origin → relay, images of the newest two releases only.
	cache := filepath.Join(e.Dir, "cache-relay")
	res, err := mirror(t, e.Repo, relay, cache, bundler.MirrorOptions{Images: 2, Pinned: e.Pinned})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 3 || res.DstBytes < 1<<20 {
		t.Fatalf("first mirror: %+v", res)
	}
	git(t, relayBare, "fsck", "--strict", "--no-dangling")
	got, want := gitRefs(t, relayBare), gitRefs(t, e.Repo)
	for _, ref := range []string{bundle.ReleasesRef, bundle.RootRef, tags[1], tags[2]} {
		if got[ref] == "" || got[ref] != want[ref] {
			t.Errorf("relay %s = %q, origin %q", ref, got[ref], want[ref])
		}
	}
	if got[tags[0]] != "" {
		t.Errorf("relay has %s, the image of release 1, with --images 2", tags[0])
	}

	// Nothing new: nothing sent.
	res, err = mirror(t, e.Repo, relay, cache, bundler.MirrorOptions{Images: 2})
	if err != nil || !res.Nothing() || res.DstBytes != 0 {
		t.Fatalf("second mirror: %+v %v", res, err)
	}

	// A config-only release: only the new commit, tree and files travel.
	fleet = fleetFor(t, filepath.Join(e.Dir, "fleet"), "v4 {{.Node}}\n")
	e.Cut(t, fleet, imgs[2])
	res, err = mirror(t, e.Repo, relay, cache, bundler.MirrorOptions{Images: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ToDst) != 1 || res.ToDst[0].Ref != bundle.ReleasesRef || res.DstBytes == 0 || res.DstBytes > 20<<10 {
		t.Fatalf("incremental mirror of a config-only release: %+v", res)
	}
	t.Logf("incremental mirror (config-only release 4): %d objects, %d bytes", res.DstObjects, res.DstBytes)
	git(t, relayBare, "fsck", "--strict", "--no-dangling")

	// Relay → a directory that does not exist yet (removable media).
	if _, err = mirror(t, relay, usb, filepath.Join(e.Dir, "cache-usb"), bundler.MirrorOptions{Images: 1}); err != nil {
		t.Fatal(err)
	}
	git(t, usb, "fsck", "--strict", "--no-dangling")
	if u := gitRefs(t, usb); u[bundle.ReleasesRef] != gitRefs(t, e.Repo)[bundle.ReleasesRef] || u[tags[2]] == "" || u[tags[1]] != "" {
		t.Fatalf("usb refs after mirror --images 1: %v", u)
	}
	// An agent-side reader can verify what arrived.
	fresh, err := bundler.Open(ctx, usb, filepath.Join(e.Dir, "cache-verify"), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.VerifyHistory(ctx, bundler.VerifyOptions{Pinned: e.Pinned}, func(bundler.VerifyLine) {}); err != nil {
		t.Fatalf("verify the newest release on the usb copy: %v", err)
	}

	// Status written on the far side travels back: usb → relay → origin.
	node := "cn"
	key := loadStatusKey(t, filepath.Join(e.Dir, "fleet", "status-cn.key"))
	// An unsigned report is never carried.
	statusCommit(t, nil, usb, "sg", 1, "")
	s1 := statusCommit(t, key, usb, node, 1, "")
	if res, err = mirror(t, relay, usb, filepath.Join(e.Dir, "cache-usb"), bundler.MirrorOptions{Images: 1}); err != nil {
		t.Fatal(err)
	}
	if len(res.ToSrc) != 1 || gitRefs(t, relayBare)[bundle.StatusPrefix+node] != s1 || gitRefs(t, relayBare)[bundle.StatusPrefix+"sg"] != "" {
		t.Fatalf("status to the relay: %+v", res)
	}
	if res, err = mirror(t, e.Repo, relay, cache, bundler.MirrorOptions{Images: 2}); err != nil {
		t.Fatal(err)
	}
	if gitRefs(t, e.Repo)[bundle.StatusPrefix+node] != s1 {
		t.Fatalf("status to the origin: %+v", res)
	}
	git(t, e.Repo, "fsck", "--strict", "--no-dangling")

	// Fast-forward towards the relay: the origin moved on (seq 2).
	s2 := statusCommit(t, key, e.Repo, node, 2, s1)
	if _, err = mirror(t, e.Repo, relay, cache, bundler.MirrorOptions{Images: 2}); err != nil {
		t.Fatal(err)
	}
	if gitRefs(t, relayBare)[bundle.StatusPrefix+node] != s2 {
		t.Fatal("status fast-forward to the relay")
	}
	// Diverged: the origin holds seq 3 on s2, the relay a replaced
	// heartbeat with seq 4 on s1. The newer report wins on both sides.
	s3 := statusCommit(t, key, e.Repo, node, 3, s2)
	s4 := statusCommit(t, key, relayBare, node, 4, s1)
	if res, err = mirror(t, e.Repo, relay, cache, bundler.MirrorOptions{Images: 2}); err != nil {
		t.Fatal(err)
	}
	if gitRefs(t, e.Repo)[bundle.StatusPrefix+node] != s4 || len(res.ToSrc) != 1 || !res.ToSrc[0].Forced {
		t.Fatalf("diverged status: origin %s, want %s (not %s): %+v", gitRefs(t, e.Repo)[bundle.StatusPrefix+node], s4, s3, res)
	}

	// A mirror never rolls a host back: the stale copy (release 3) into the
	// relay (release 4) is refused and changes nothing.
	before := gitRefs(t, relayBare)
	_, err = mirror(t, stale, relay, filepath.Join(e.Dir, "cache-back"), bundler.MirrorOptions{})
	if !errors.Is(err, bundler.ErrWouldRollBack) || !strings.Contains(err.Error(), "ahead") {
		t.Fatalf("mirror of an older repository onto a newer one: %v", err)
	}
	if after := gitRefs(t, relayBare); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("refused mirror changed the relay:\n%v\n%v", before, after)
	}
	// Nor onto a release history it does not continue.
	other := bundlertest.NewEnv(t)
	other.Cut(t, fleetFor(t, filepath.Join(other.Dir, "fleet"), "x {{.Node}}\n"), testImage(t, other.Dir, 9, 64<<10))
	_, err = mirror(t, other.Repo, relay, filepath.Join(e.Dir, "cache-other"), bundler.MirrorOptions{})
	if !errors.Is(err, bundler.ErrWouldRollBack) || !strings.Contains(err.Error(), "diverged") {
		t.Fatalf("mirror of an unrelated history: %v", err)
	}
}

// TestMirrorStatusRepositories: with a status repository on each side
// (the agents' status_remote at home and on the removable disk), a mirror
// copies the release to DST and carries the status branches between the
// two status repositories, both ways and by the same rules (signed
// reports only); the release repositories get none.
func TestMirrorStatusRepositories(t *testing.T) {
	ctx := context.Background()
	e := bundlertest.NewEnv(t)
	e.Cut(t, fleetFor(t, filepath.Join(e.Dir, "fleet"), "v1 {{.Node}}\n"), testImage(t, e.Dir, 1, 64<<10))
	usb := filepath.Join(e.Dir, "media", "fleet.git")
	homeStatus := filepath.Join(e.Dir, "fleet-status.git")
	usbStatus := filepath.Join(e.Dir, "media", "fleet-status.git")
	sides := map[string]*repo.Remote{}
	for _, dir := range []string{homeStatus, usbStatus} {
		r, err := bundler.OpenMirrorTarget(ctx, dir, repo.Options{})
		must(t, err)
		sides[dir] = r
	}
	o := bundler.MirrorOptions{StatusSrc: sides[homeStatus], StatusDst: sides[usbStatus]}
	cache := filepath.Join(e.Dir, "cache-usb")
	// The first trip: the release out, no status yet.
	if _, err := mirror(t, e.Repo, usb, cache, o); err != nil {
		t.Fatal(err)
	}
	key := loadStatusKey(t, filepath.Join(e.Dir, "fleet", "status-cn.key"))
	s1 := statusCommit(t, key, usbStatus, "cn", 1, "") // pushed by the far side's agent
	statusCommit(t, nil, usbStatus, "sg", 1, "")       // unsigned: never carried
	res, err := mirror(t, e.Repo, usb, cache, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ToSrc) != 1 || res.ToSrc[0].Ref != bundle.StatusPrefix+"cn" || gitRefs(t, homeStatus)[bundle.StatusPrefix+"cn"] != s1 ||
		gitRefs(t, homeStatus)[bundle.StatusPrefix+"sg"] != "" {
		t.Fatalf("status home: %+v; home status repository %v", res, gitRefs(t, homeStatus))
	}
	// A newer report at home (an agent there) goes out to the disk.
	s2 := statusCommit(t, key, homeStatus, "cn", 2, s1)
	if res, err = mirror(t, e.Repo, usb, cache, o); err != nil {
		t.Fatal(err)
	}
	if len(res.ToDst) != 1 || gitRefs(t, usbStatus)[bundle.StatusPrefix+"cn"] != s2 {
		t.Fatalf("status out: %+v; disk status repository %v", res, gitRefs(t, usbStatus))
	}
	for _, dir := range []string{e.Repo, usb} {
		for ref := range gitRefs(t, dir) {
			if strings.HasPrefix(ref, bundle.StatusPrefix) {
				t.Errorf("%s holds %s: a release repository gets no status branch", dir, ref)
			}
		}
	}
	if _, err := mirror(t, e.Repo, usb, cache, bundler.MirrorOptions{StatusSrc: sides[homeStatus]}); err == nil {
		t.Fatal("a status repository on one side only was accepted")
	}
}

// TestMirrorStoresChunkBlobs: a mirror copies the zstd chunk blobs as they
// are, in zlib stored blocks, as the release did, where deflating them again
// would cost CPU for nothing; the other objects are deflated. So does an
// agent's fetch from a directory remote. The git CLI locates each object.
func TestMirrorStoresChunkBlobs(t *testing.T) {
	e := bundlertest.NewEnv(t)
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"),
		imagetest.File{Path: "nibbles", Size: 3 << 20, Content: func() io.Reader { return imagetest.Nibbles(5, 3<<20) }})
	e.Cut(t, fleetFor(t, filepath.Join(e.Dir, "fleet"), "v1 {{.Node}}\n"), img)
	v := verifyHead(t, e)
	idx, err := bundle.ReadImageIndex(e.Release.Cache, v.Commit, v.Release.Images[0])
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(e.Dir, "copy.git")
	if _, err := mirror(t, e.Repo, dst, filepath.Join(e.Dir, "cache"), bundler.MirrorOptions{}); err != nil {
		t.Fatal(err)
	}
	git(t, dst, "fsck", "--strict", "--no-dangling")
	stored := gittest.StoredBlobs(t, dst)
	chunks := bundle.NewChunkSet(idx).List()
	if len(chunks) < 2 {
		t.Fatalf("%d chunks: too few to tell", len(chunks))
	}
	for _, c := range chunks {
		if ok, found := stored[c.Blob]; !found || !ok || !c.Encoded() {
			t.Errorf("chunk blob %s (encoded: %v): in a pack %v, stored blocks only %v", c.Blob, c.Encoded(), found, ok)
		}
	}
	deflated := 0
	for _, ok := range stored {
		if !ok {
			deflated++
		}
	}
	if deflated == 0 {
		t.Errorf("no blob of the copy is deflated (%d blobs): the release's files should be", len(stored))
	}

	// An agent's fetch of the image from the copy, a directory remote,
	// stores the chunk blobs as they are too.
	ctx := context.Background()
	from, err := repo.Open(ctx, dst, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	local, err := repo.Init(filepath.Join(e.Dir, "agent-store"))
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.FetchImage(ctx, from, local, idx, nil); err != nil {
		t.Fatal(err)
	}
	git(t, local.Dir(), "fsck", "--strict")
	stored = gittest.StoredBlobs(t, local.Dir())
	for _, c := range chunks {
		if !stored[c.Blob] {
			t.Errorf("fetched from a directory: chunk blob %s deflated again (or missing)", c.Blob)
		}
	}
}

// TestMirrorRootRefusesUnverifiable checks that --root verifies before
// copying: a release signed by keys the pinned root does not list is not
// mirrored, and the destination stays empty.
func TestMirrorRootRefusesUnverifiable(t *testing.T) {
	e := bundlertest.NewEnv(t)
	e.Cut(t, fleetFor(t, filepath.Join(e.Dir, "fleet"), "v1 {{.Node}}\n"), testImage(t, e.Dir, 1, 64<<10))
	stranger := bundlertest.NewEnv(t) // another root
	dst := filepath.Join(e.Dir, "out.git")
	_, err := mirror(t, e.Repo, dst, filepath.Join(e.Dir, "cache"), bundler.MirrorOptions{Pinned: stranger.Pinned})
	var te *schema.ThresholdError
	if err == nil || !errors.As(err, &te) && !strings.Contains(err.Error(), "signature") {
		t.Fatalf("mirror --root with the wrong root: %v", err)
	}
	if refs := gitRefs(t, dst); len(refs) != 0 {
		t.Fatalf("refused mirror wrote refs: %v", refs)
	}
}

// TestPruneOverGitDaemon removes the image tags older releases needed, with
// CAS deletes over git://, keeps the signed history verifiable, and lets
// git gc reclaim the space.
func TestPruneOverGitDaemon(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	base := filepath.Join(dir, "srv")
	bare := gittest.InitBare(t, base, "fleet.git")
	url := gittest.Daemon(t, base).URL + "/fleet.git"
	key := bundlertest.NewKey(t, dir, "release")
	rootPath := bundlertest.WriteRoot(t, dir, 1, 1, []*bundlertest.Key{key}, key)
	if err := bundler.InitRepo(ctx, url, rootPath, filepath.Join(dir, "cache-init"), repo.Options{}); err != nil {
		t.Fatal(err)
	}
	r, err := bundler.Open(ctx, url, filepath.Join(dir, "cache"), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for i := range 3 {
		fleet := fleetFor(t, filepath.Join(dir, "fleet"), fmt.Sprintf("v%d {{.Node}}\n", i))
		res, err := r.Release(ctx, bundler.ReleaseOptions{Fleet: fleet, Image: image.TarFile(testImage(t, dir, uint64(i+1), 1<<20)),
			Signers: []signature.Signer{key.Signer}})
		if err != nil {
			t.Fatal(err)
		}
		tags = append(tags, res.ImageTag)
	}
	before := gitRefs(t, bare)
	if _, err := r.Prune(ctx, 0, false); err == nil {
		t.Fatal("prune --keep 0 accepted")
	}
	res, err := r.Prune(ctx, 2, true)
	if err != nil || len(res.Removed) != 1 || res.Removed[0].Ref != tags[0] || res.Removed[0].Version != 1 {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	if fmt.Sprint(gitRefs(t, bare)) != fmt.Sprint(before) {
		t.Fatal("dry run changed refs")
	}
	res, err = r.Prune(ctx, 1, false)
	if err != nil || len(res.Removed) != 2 || res.Newest != 3 {
		t.Fatalf("prune --keep 1: %+v %v", res, err)
	}
	after := gitRefs(t, bare)
	if after[tags[0]] != "" || after[tags[1]] != "" || after[tags[2]] == "" ||
		after[bundle.ReleasesRef] != before[bundle.ReleasesRef] || after[bundle.RootRef] != before[bundle.RootRef] {
		t.Fatalf("refs after prune:\n%v\nbefore:\n%v", after, before)
	}
	if res, err := r.Prune(ctx, 1, false); err != nil || len(res.Removed) != 0 {
		t.Fatalf("second prune: %+v %v", res, err)
	}
	// The history still verifies; older releases note the pruned tags.
	fresh, err := bundler.Open(ctx, url, filepath.Join(dir, "cache-verify"), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	notes := 0
	err = fresh.VerifyHistory(ctx, bundler.VerifyOptions{Pinned: r0(t, rootPath), All: true}, func(l bundler.VerifyLine) {
		if l.Note != "" {
			notes++
		}
	})
	if err != nil || notes != 2 {
		t.Fatalf("verify after prune: %v (%d notes)", err, notes)
	}
	// git gc on the server reclaims the chunks.
	size := func() int {
		var kb int
		for _, l := range strings.Split(git(t, bare, "count-objects", "-v"), "\n") {
			// Small pushes are unpacked into loose objects (size).
			for _, k := range []string{"size: ", "size-pack: "} {
				if v, ok := strings.CutPrefix(l, k); ok {
					var n int
					fmt.Sscan(v, &n)
					kb += n
				}
			}
		}
		return kb
	}
	s0 := size()
	git(t, bare, "-c", "gc.reflogExpire=now", "-c", "gc.reflogExpireUnreachable=now", "gc", "--prune=now", "-q")
	git(t, bare, "fsck", "--strict", "--no-dangling")
	if s1 := size(); s1 > s0/2 {
		t.Fatalf("git gc --prune=now: pack size %d KiB → %d KiB, want about a third", s0, s1)
	}
}

func r0(t *testing.T, path string) *schema.Root {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	root, err := schema.ParseRoot(path, data)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func loadStatusKey(t *testing.T, path string) signature.Signer {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, _, err := schema.LoadPrivateKey(path, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
