package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pullship/pullship/bundler/shared/repo/gittest"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

func needGit(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("git")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("git CLI not found")
		}
		t.Skip("git CLI not found")
	}
	return p
}

func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newBare creates base/name as a bare repository that fsck-checks what it receives.
func newBare(t testing.TB, base, name string) string {
	dir := filepath.Join(base, name)
	git(t, base, "init", "--bare", "-q", dir)
	git(t, dir, "config", "receive.fsckObjects", "true")
	git(t, dir, "config", "http.receivepack", "true")
	return dir
}

// startDaemon runs git daemon on a free loopback port and returns its base URL.
func startDaemon(t testing.TB, base string) string { return gittest.Daemon(t, base).URL }

// startHTTP serves base through git http-backend (CGI) on loopback.
func startHTTP(t testing.TB, base string, conns *atomic.Int32) string {
	return gittest.HTTP(t, base, conns)
}

type fixture struct {
	blobs    map[plumbing.Hash][]byte
	stream   *ObjectStream
	release  plumbing.Hash // commit on refs/heads/releases
	image    plumbing.Hash // commit of the image tag
	imageRef string
	manifest []byte
	big      plumbing.Hash
}

var sig = Signature{Name: "pullship", Email: "bundler@pullship.invalid", When: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}

// makeFixture builds chunk blobs (random, some MiB), an image commit whose
// tree names them by sha256, and a release commit.
func makeFixture(t testing.TB, seed int64, parent plumbing.Hash) *fixture {
	rng := rand.New(rand.NewSource(seed))
	f := &fixture{blobs: map[plumbing.Hash][]byte{}}
	f.stream = NewObjectStream(func(o Object) (io.ReadCloser, error) {
		b, ok := f.blobs[o.ID]
		if !ok {
			return nil, fmt.Errorf("no blob %s", o.ID)
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	})
	img := NewTreeBuilder()
	for i, size := range []int{300 << 10, 1<<20 + 17, 5, 200<<10 + 1} {
		b := make([]byte, size)
		rng.Read(b)
		id, err := BlobID(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		f.blobs[id] = b
		f.stream.Add(Object{ID: id, Type: plumbing.BlobObject, Size: int64(len(b))})
		sum := sha256.Sum256(b)
		if err := img.Add(hex.EncodeToString(sum[:]), filemode.Regular, id); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			f.big = id
		}
	}
	imgTree, err := img.Build(f.stream)
	if err != nil {
		t.Fatal(err)
	}
	data, id, err := EncodeCommit(Commit{Tree: imgTree, Author: sig, Committer: sig, Message: "image\n"})
	if err != nil {
		t.Fatal(err)
	}
	f.stream.AddBytes(plumbing.CommitObject, data)
	f.image = id
	digest := sha256.Sum256(data)
	f.imageRef = "refs/tags/pullship/images/" + hex.EncodeToString(digest[:])

	f.manifest = []byte(fmt.Sprintf("version = %d\n", seed))
	rel := NewTreeBuilder()
	must(t, rel.Add("release.toml", filemode.Regular, f.stream.AddBytes(plumbing.BlobObject, f.manifest)))
	must(t, rel.Add("nodes/a/vernemq.conf", filemode.Regular, f.stream.AddBytes(plumbing.BlobObject, []byte("listener = 1\n"))))
	must(t, rel.Add("nodes/b/run.sh", filemode.Executable, f.stream.AddBytes(plumbing.BlobObject, []byte("#!/bin/sh\n"))))
	relTree, err := rel.Build(f.stream)
	if err != nil {
		t.Fatal(err)
	}
	c := Commit{Tree: relTree, Author: sig, Committer: sig, Message: fmt.Sprintf("release %d\n", seed)}
	if !parent.IsZero() {
		c.Parents = []plumbing.Hash{parent}
	}
	data, id, err = EncodeCommit(c)
	if err != nil {
		t.Fatal(err)
	}
	f.stream.AddBytes(plumbing.CommitObject, data)
	f.release = id
	return f
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestRemotes(t *testing.T) {
	needGit(t)
	for _, kind := range []string{"dir", "file", "git", "http"} {
		t.Run(kind, func(t *testing.T) {
			base := t.TempDir()
			bare := newBare(t, base, "r.git")
			var url string
			switch kind {
			case "dir":
				url = bare
			case "file":
				url = "file://" + bare
			case "git":
				url = startDaemon(t, base) + "/r.git"
			case "http":
				url = startHTTP(t, base, nil) + "/r.git"
			}
			testRemote(t, url, bare, Options{})
		})
	}
}

func testRemote(t *testing.T, url, bare string, opts Options) {
	ctx := context.Background()
	r, err := Open(ctx, url, opts)
	must(t, err)
	refs, err := r.Refs(ctx)
	must(t, err)
	if len(refs) != 0 {
		t.Fatalf("empty repository has refs %v", refs)
	}

	f := makeFixture(t, 1, plumbing.ZeroHash)
	res, err := r.Push(ctx, []RefUpdate{
		{Name: "refs/heads/releases", New: f.release},
		{Name: f.imageRef, New: f.image},
	}, f.stream)
	must(t, err)
	if res.Status["refs/heads/releases"] != "ok" || res.Status[f.imageRef] != "ok" {
		t.Fatalf("push status %v", res.Status)
	}

	// The git CLI is the independent reader.
	git(t, bare, "fsck", "--strict", "--no-dangling")
	if got := strings.TrimSpace(git(t, bare, "log", "--format=%H", "releases")); got != f.release.String() {
		t.Fatalf("git log releases = %q, want %s", got, f.release)
	}
	if got := git(t, bare, "show", "releases:release.toml"); got != string(f.manifest) {
		t.Fatalf("git show releases:release.toml = %q", got)
	}
	sum := sha256.Sum256(f.blobs[f.big])
	if got := git(t, bare, "cat-file", "blob", f.imageRef+":"+hex.EncodeToString(sum[:])); got != string(f.blobs[f.big]) {
		t.Fatal("git cat-file of a chunk differs from what was pushed")
	}
	refs, err = r.Refs(ctx)
	must(t, err)
	if refs["refs/heads/releases"] != f.release || refs[f.imageRef] != f.image {
		t.Fatalf("refs after push: %v", refs)
	}

	// Second release on top; then a stale old value loses.
	f2 := makeFixture(t, 2, f.release)
	_, err = r.Push(ctx, []RefUpdate{{Name: "refs/heads/releases", Old: f.release, New: f2.release}, {Name: f2.imageRef, New: f2.image}}, f2.stream)
	must(t, err)
	f3 := makeFixture(t, 3, f.release)
	_, err = r.Push(ctx, []RefUpdate{{Name: "refs/heads/releases", Old: f.release, New: f3.release}}, f3.stream)
	var conflict *RefConflictError
	if !errors.As(err, &conflict) || conflict.Actual != f2.release || conflict.Expected != f.release {
		t.Fatalf("stale push: got %v, want a RefConflictError at %s", err, f2.release)
	}

	// The race lost while the pack is on its way: the server's own check.
	f4 := makeFixture(t, 4, f2.release)
	var race sync.Once
	open := f4.stream.open
	f4.stream.open = func(o Object) (io.ReadCloser, error) {
		// Opens run concurrently (parallel compression): race once.
		race.Do(func() { git(t, bare, "update-ref", "refs/heads/releases", f.release.String()) })
		return open(o)
	}
	_, err = r.Push(ctx, []RefUpdate{{Name: "refs/heads/releases", Old: f2.release, New: f4.release}}, f4.stream)
	if !errors.As(err, &conflict) || conflict.Actual != f.release {
		t.Fatalf("raced push: got %v, want a RefConflictError at %s", err, f.release)
	}
	git(t, bare, "update-ref", "refs/heads/releases", f2.release.String())

	// A pack that lies about an object's size never lands.
	f5 := makeFixture(t, 5, f2.release)
	f5.stream.objects[0].Size--
	_, err = r.Push(ctx, []RefUpdate{{Name: "refs/heads/releases", Old: f2.release, New: f5.release}}, f5.stream)
	var sm *SizeMismatchError
	if !errors.As(err, &sm) {
		t.Fatalf("lying push: got %v, want a SizeMismatchError", err)
	}
	if got := strings.TrimSpace(git(t, bare, "rev-parse", "releases")); got != f2.release.String() {
		t.Fatalf("releases moved to %s after a failed push", got)
	}

	// Fetch back and read; first with a pack limit the server exceeds.
	local, err := Init(t.TempDir())
	must(t, err)
	if _, err := r.Fetch(ctx, local, FetchRequest{Refs: []string{f.imageRef}, MaxPackBytes: 64 << 10}); err == nil {
		t.Fatal("fetch beyond MaxPackBytes succeeded")
	} else if !errors.Is(err, ErrPackTooLarge) {
		t.Fatalf("fetch beyond MaxPackBytes: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(local.Dir(), "objects/pack/*")); len(left) != 0 {
		t.Fatalf("failed fetch left %v", left)
	}
	got, err := r.Fetch(ctx, local, FetchRequest{Refs: []string{"refs/heads/releases:refs/remotes/origin/releases", f.imageRef}})
	must(t, err)
	if got["refs/heads/releases"] != f2.release || got[f.imageRef] != f.image {
		t.Fatalf("fetched %v", got)
	}
	if h, err := local.Ref("refs/remotes/origin/releases"); err != nil || h != f2.release {
		t.Fatalf("local tracking ref = %s, %v", h, err)
	}
	if local.HasObject(f3.release) {
		t.Fatal("fetch brought an unrequested commit")
	}
	git(t, local.Dir(), "fsck", "--strict")
	log, err := local.Log(f2.release, 0)
	must(t, err)
	if len(log) != 2 || log[1].Hash != f.release {
		t.Fatalf("log has %d commits", len(log))
	}
	b, err := local.ReadFile(f2.release, "release.toml", 1024)
	must(t, err)
	if !bytes.Equal(b, f2.manifest) {
		t.Fatalf("ReadFile = %q", b)
	}
	if _, err := local.ReadFile(f2.release, "release.toml", 3); err == nil {
		t.Fatal("ReadFile beyond maxSize succeeded")
	}
	if _, err := local.ReadFile(f2.release, "nodes/zz", 100); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadFile of a missing path: %v", err)
	}
	ents, err := local.ListTree(f2.release, "nodes")
	must(t, err)
	if len(ents) != 2 || ents[0].Name != "a" || ents[1].Name != "b" {
		t.Fatalf("ListTree(nodes) = %v", ents)
	}
	big := f.blobs[f.big]
	rc, err := local.OpenBlob(f.big, int64(len(big)))
	must(t, err)
	data, err := io.ReadAll(rc)
	rc.Close()
	must(t, err)
	if !bytes.Equal(data, big) {
		t.Fatal("OpenBlob content differs")
	}
	for _, size := range []int64{int64(len(big)) - 1, int64(len(big)) + 1} {
		if rc, err := local.OpenBlob(f.big, size); err == nil {
			rc.Close()
			t.Fatalf("OpenBlob with declared size %d (actual %d) succeeded", size, len(big))
		}
	}

	// Incremental: the second image shares nothing, haves keep the first out.
	got, err = r.Fetch(ctx, local, FetchRequest{Refs: []string{f2.imageRef}, Haves: []plumbing.Hash{f.image, f2.release}})
	must(t, err)
	if !local.HasObject(got[f2.imageRef]) || !local.HasObject(f2.big) {
		t.Fatal("second image not fetched")
	}
	if _, err := r.Fetch(ctx, local, FetchRequest{Refs: []string{"refs/tags/nope"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fetch of a missing ref: %v", err)
	}

	// A status commit written locally, then pushed.
	st := NewObjectStream(nil)
	tb := NewTreeBuilder()
	must(t, tb.Add("status.toml", filemode.Regular, st.AddBytes(plumbing.BlobObject, []byte("node = \"a\"\n"))))
	tree, err := tb.Build(st)
	must(t, err)
	cdata, cid, err := EncodeCommit(Commit{Tree: tree, Author: sig, Committer: sig, Message: "status\n"})
	must(t, err)
	st.AddBytes(plumbing.CommitObject, cdata)
	must(t, local.Write(ctx, st))
	must(t, local.SetRef("refs/heads/status/a", plumbing.ZeroHash, cid))
	missing, err := local.Missing([]plumbing.Hash{cid}, nil)
	must(t, err)
	if missing.Len() != 3 {
		t.Fatalf("Missing = %d objects, want 3", missing.Len())
	}
	_, err = r.Push(ctx, []RefUpdate{{Name: "refs/heads/status/a", New: cid}}, missing)
	must(t, err)
	if got := git(t, bare, "show", "status/a:status.toml"); got != "node = \"a\"\n" {
		t.Fatalf("status pushed: %q", got)
	}
	git(t, bare, "fsck", "--strict", "--no-dangling")
}

func TestHTTPRefsReuseConnection(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	bare := newBare(t, base, "r.git")
	var conns atomic.Int32
	srv := startHTTP(t, base, &conns)
	ctx := context.Background()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
	r, err := Open(ctx, srv+"/r.git", Options{HTTPClient: client})
	must(t, err)
	f := makeFixture(t, 1, plumbing.ZeroHash)
	_, err = r.Push(ctx, []RefUpdate{{Name: "refs/heads/releases", New: f.release}}, f.stream)
	must(t, err)
	git(t, bare, "fsck", "--strict")
	before := conns.Load()
	for range 5 {
		refs, err := r.Refs(ctx)
		must(t, err)
		if refs["refs/heads/releases"] != f.release {
			t.Fatalf("refs %v", refs)
		}
	}
	if n := conns.Load() - before; n > 1 {
		t.Fatalf("5 polls opened %d connections, want at most 1", n)
	}
}

func TestEncodingMatchesGit(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	git(t, dir, "init", "-q", "--bare", ".")
	blob := HashObject(plumbing.BlobObject, []byte("x"))
	entries := []TreeEntry{
		{Name: "a.txt", Mode: filemode.Regular, ID: blob},
		{Name: "a", Mode: filemode.Dir, ID: plumbing.NewHash("4b825dc642cb6eb9a060e54bf8d69288fbee4904")},
		{Name: "a-b", Mode: filemode.Executable, ID: blob},
		{Name: "link", Mode: filemode.Symlink, ID: blob},
	}
	_, id, err := EncodeTree(entries)
	must(t, err)
	var in strings.Builder
	for _, e := range entries {
		typ := "blob"
		if e.Mode == filemode.Dir {
			typ = "tree"
		}
		fmt.Fprintf(&in, "%06o %s %s\t%s\n", uint32(e.Mode), typ, e.ID, e.Name)
	}
	cmd := exec.Command("git", "mktree", "--missing")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.Output()
	must(t, err)
	if strings.TrimSpace(string(out)) != id.String() {
		t.Fatalf("EncodeTree id %s, git mktree %s", id, out)
	}
	if _, _, err := EncodeTree([]TreeEntry{{Name: "x", Mode: filemode.Regular}, {Name: "x", Mode: filemode.Dir}}); err == nil {
		t.Fatal("file and directory of the same name accepted")
	}
	for _, bad := range []string{"", ".", "..", ".git", "a/b", "a\x00"} {
		if _, _, err := EncodeTree([]TreeEntry{{Name: bad, Mode: filemode.Regular}}); !errors.Is(err, ErrBadName) {
			t.Errorf("name %q: %v", bad, err)
		}
	}

	when := time.Date(2026, 5, 6, 7, 8, 9, 0, time.FixedZone("x", -(3*3600+30*60)))
	data, cid, err := EncodeCommit(Commit{Tree: id, Parents: []plumbing.Hash{blob},
		Author: Signature{"A U Thor", "a@example.com", when}, Committer: sig, Message: "m\n\nbody\n"})
	must(t, err)
	cmd = exec.Command("git", "hash-object", "-t", "commit", "--stdin", "--literally")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(data)
	out, err = cmd.Output()
	must(t, err)
	if strings.TrimSpace(string(out)) != cid.String() {
		t.Fatalf("EncodeCommit id %s, git %s", cid, out)
	}
	if !strings.Contains(string(data), " -0330\n") {
		t.Fatalf("timezone not encoded: %s", data)
	}
}

func TestPackWriterChecks(t *testing.T) {
	data := []byte("hello")
	id := HashObject(plumbing.BlobObject, data)
	cases := map[string]struct {
		count uint32
		objs  []Object
	}{
		"short":      {1, []Object{{ID: id, Type: plumbing.BlobObject, Size: 6}}},
		"long":       {1, []Object{{ID: id, Type: plumbing.BlobObject, Size: 4}}},
		"wrong id":   {1, []Object{{ID: HashObject(plumbing.BlobObject, []byte("x")), Type: plumbing.BlobObject, Size: 5}}},
		"wrong type": {1, []Object{{ID: id, Type: plumbing.TreeObject, Size: 5}}},
		"too many":   {0, []Object{{ID: id, Type: plumbing.BlobObject, Size: 5}}},
		"too few":    {2, []Object{{ID: id, Type: plumbing.BlobObject, Size: 5}}},
	}
	for name, c := range cases {
		pw, err := NewPackWriter(io.Discard, c.count, DefaultPackLevel)
		must(t, err)
		for _, o := range c.objs {
			err = errors.Join(err, pw.WriteObject(o, bytes.NewReader(data)))
		}
		if _, cerr := pw.Close(); cerr == nil || (err == nil && c.count >= 1 && name != "too few") {
			t.Errorf("%s: write err %v, close err %v: want failure", name, err, cerr)
		}
	}
}

func TestPackVerifiedByGit(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	f := makeFixture(t, 7, plumbing.ZeroHash)
	p := filepath.Join(dir, "x.pack")
	out, err := os.Create(p)
	must(t, err)
	_, _, err = WritePack(context.Background(), out, f.stream)
	must(t, err)
	must(t, out.Close())
	git(t, dir, "index-pack", "--strict", p)
	v := git(t, dir, "verify-pack", "-v", strings.TrimSuffix(p, ".pack")+".idx")
	if !strings.Contains(v, f.release.String()+" commit") || strings.Contains(v, "chain length") {
		t.Fatalf("verify-pack: %s", v)
	}
}

// TestPackWriterPrecompressed: a Precompressed object is stored (zlib stored
// blocks: about its own size in the pack, though it would deflate well),
// through the streaming writer and the parallel one, and git reads it.
func TestPackWriterPrecompressed(t *testing.T) {
	needGit(t)
	data := bytes.Repeat([]byte("pullship "), 20000) // 180 KB; deflates to a few KB
	plain := append([]byte("plain "), data...)
	objs := []Object{
		{ID: HashObject(plumbing.BlobObject, data), Type: plumbing.BlobObject, Size: int64(len(data)), Precompressed: true},
		{ID: HashObject(plumbing.BlobObject, plain), Type: plumbing.BlobObject, Size: int64(len(plain))},
	}
	content := map[plumbing.Hash][]byte{objs[0].ID: data, objs[1].ID: plain}
	packs := map[string]func(w io.Writer) error{
		"streaming": func(w io.Writer) error {
			pw, err := NewPackWriter(w, uint32(len(objs)), DefaultPackLevel)
			if err != nil {
				return err
			}
			for _, o := range objs {
				if err := pw.WriteObject(o, bytes.NewReader(content[o.ID])); err != nil {
					return err
				}
			}
			_, err = pw.Close()
			return err
		},
		"parallel": func(w io.Writer) error {
			s := NewObjectStream(func(o Object) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(content[o.ID])), nil })
			for _, o := range objs {
				s.Add(o)
			}
			_, _, err := WritePack(context.Background(), w, s)
			return err
		},
	}
	for name, write := range packs {
		dir := t.TempDir()
		must(t, os.MkdirAll(filepath.Join(dir, "objects", "pack"), 0o755))
		p := filepath.Join(dir, "objects", "pack", "x.pack")
		out, err := os.Create(p)
		must(t, err)
		must(t, write(out))
		must(t, out.Close())
		git(t, dir, "index-pack", "--strict", p)
		stored := gittest.StoredBlobs(t, dir)
		if ok, found := stored[objs[0].ID.String()]; !found || !ok {
			t.Errorf("%s: precompressed object deflated (in the pack: %v)", name, found)
		}
		if ok, found := stored[objs[1].ID.String()]; !found || ok {
			t.Errorf("%s: plain object not deflated (in the pack: %v)", name, found)
		}
	}
}

// TestStoreOpenBlobStreams: reading a chunk-sized blob from the store
// streams it from its pack, without holding it whole in memory (go-git's
// large-object threshold): an agent reads an image from its store (a
// directory remote, a rollback) chunk after chunk.
func TestStoreOpenBlobStreams(t *testing.T) {
	s, err := Init(t.TempDir())
	must(t, err)
	// Chunk-sized blobs (a chunk's zstd frame is ~0.5 MiB, a few MiB at
	// most): held whole, each read allocates more than its size; streamed, a
	// fixed ~0.1 MiB of decompressor state whatever the size.
	rng := rand.New(rand.NewSource(3))
	blobs := map[plumbing.Hash][]byte{}
	st := NewObjectStream(func(o Object) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(blobs[o.ID])), nil })
	for _, size := range []int{900 << 10, 600 << 10, 2 << 20} {
		b := make([]byte, size)
		rng.Read(b)
		id := HashObject(plumbing.BlobObject, b)
		blobs[id] = b
		st.Add(Object{ID: id, Type: plumbing.BlobObject, Size: int64(size)})
	}
	must(t, s.Write(context.Background(), st))
	read := func(id plumbing.Hash) uint64 {
		fresh, err := OpenStore(s.Dir()) // an empty object cache
		must(t, err)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rc, err := fresh.OpenBlob(id, int64(len(blobs[id])))
		must(t, err)
		h := sha256.New()
		_, err = io.CopyBuffer(h, rc, make([]byte, 32<<10))
		must(t, err)
		must(t, rc.Close())
		runtime.ReadMemStats(&after)
		if [32]byte(h.Sum(nil)) != sha256.Sum256(blobs[id]) {
			t.Fatalf("blob %s: content differs", id)
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	for id, b := range blobs {
		if got := read(id); got > uint64(len(b))/2 {
			t.Errorf("reading blob %s of %d KiB allocated %d KiB: held whole", id, len(b)>>10, got>>10)
		} else {
			t.Logf("blob of %d KiB: %d KiB allocated", len(b)>>10, got>>10)
		}
	}
}

func TestStoreRefs(t *testing.T) {
	needGit(t)
	s, err := Init(t.TempDir())
	must(t, err)
	f := makeFixture(t, 1, plumbing.ZeroHash)
	must(t, s.Write(context.Background(), f.stream))
	git(t, s.Dir(), "fsck", "--strict")
	must(t, s.SetRef("refs/heads/releases", plumbing.ZeroHash, f.release))
	if err := s.SetRef("refs/heads/releases", plumbing.ZeroHash, f.image); !errors.As(err, new(*RefConflictError)) {
		t.Fatalf("create over an existing ref: %v", err)
	}
	// A ref only in packed-refs is read, updated and deleted git's way.
	git(t, s.Dir(), "update-ref", "refs/tags/pullship/images/aa", f.image.String())
	git(t, s.Dir(), "pack-refs", "--all")
	if h, err := s.Ref("refs/tags/pullship/images/aa"); err != nil || h != f.image {
		t.Fatalf("packed ref = %s, %v", h, err)
	}
	must(t, s.SetRef("refs/tags/pullship/images/aa", f.image, plumbing.ZeroHash))
	if out := git(t, s.Dir(), "for-each-ref"); strings.Contains(out, "images/aa") {
		t.Fatalf("deleted ref still listed:\n%s", out)
	}
	// A lock held by git blocks us rather than being ignored.
	must(t, os.WriteFile(filepath.Join(s.Dir(), "refs/heads/releases.lock"), nil, 0o644))
	if err := s.SetRef("refs/heads/releases", f.release, f.image); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("update under a held lock: %v", err)
	}
	for _, bad := range []string{"HEAD", "refs/heads/a..b", "refs/heads/x.lock", "refs/heads/.x", "refs/heads/a b", "refs/heads/"} {
		if err := s.SetRef(bad, plumbing.ZeroHash, f.release); !errors.Is(err, ErrBadName) {
			t.Errorf("ref name %q: %v", bad, err)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Open(ctx, t.TempDir(), Options{}); !errors.Is(err, ErrNotRepository) {
		t.Fatalf("plain directory: %v", err)
	}
	if _, err := Open(ctx, "ftp://example.com/x", Options{}); err == nil {
		t.Fatal("ftp URL accepted")
	}
}

func FuzzRefParsers(f *testing.F) {
	real, err := os.ReadFile("testdata/packed-refs") // written by git pack-refs
	if err != nil {
		f.Fatal(err)
	}
	if h := parsePackedRef(real, "refs/heads/releases"); h.String() != "c2d158342c9594e63644337de311c9d2a13cec0f" {
		f.Fatalf("releases in testdata/packed-refs = %s", h)
	}
	if h := parsePackedRef(real, "refs/tags/v1"); h.String() != "9ce6e21c4e656960670f8553d37ee337b095cf34" {
		f.Fatalf("v1 in testdata/packed-refs = %s", h)
	}
	f.Add(real)
	f.Add([]byte("# pack-refs with: peeled fully-peeled sorted \n4b825dc642cb6eb9a060e54bf8d69288fbee4904 refs/heads/releases\n^4b825dc642cb6eb9a060e54bf8d69288fbee4904\n"))
	f.Add([]byte("4b825dc642cb6eb9a060e54bf8d69288fbee4904\n"))
	f.Add([]byte("ref: refs/heads/x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if h := parsePackedRef(data, "refs/heads/releases"); !h.IsZero() &&
			!bytes.Contains(bytes.ToLower(data), []byte(h.String()+" refs/heads/releases")) {
			t.Fatalf("value %s not in packed-refs", h)
		}
		if h, err := parseLooseRef(data); err == nil && !strings.EqualFold(h.String(), strings.TrimSpace(string(data))) {
			t.Fatalf("loose ref %q read as %s", data, h)
		}
	})
}
