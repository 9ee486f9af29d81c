package bundler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pullship/pullship/bundler/render"
	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// ErrNothingChanged means a release would be identical to the current one.
var ErrNothingChanged = errors.New("nothing changed since the current release")

// ErrNotInitialised means the repository has neither a release nor a root.
var ErrNotInitialised = errors.New("not a pullship release repository (run pullship init)")

// ReleaseOptions is the input of one release.
type ReleaseOptions struct {
	Fleet string       // path of fleet.toml
	Image image.Source // the image to pack when the fleet's services use one
	// Images are the images to pack by service name, for fleets whose
	// services use several (one source per image: services sharing an
	// image share it). Image stands in for a fleet of one image.
	Images  map[string]image.Source
	Signers []signature.Signer // every --key
	Roots   []string           // newer root-N.toml files to publish (each with its .sig beside it)
	Now     []string           // nodes exempt from wave gating (emergency override)
	// Lifetime overrides the fleet's release lifetime when non-zero.
	Lifetime time.Duration
	// SourceCommit names the fleet repository commit when the fleet is not
	// read from a git work tree (e.g. in a server-side hook).
	SourceCommit string
	// AllowDirty publishes from a fleet work tree with uncommitted changes.
	AllowDirty bool
	// ResetVersion numbers this release 1 again: the recovery from a
	// release signed with a runaway version. Agents accept the reset only
	// under a newer root, so it needs Roots.
	ResetVersion bool
	// SecretsIdentity is the age identity file that decrypts the fleet's
	// node secrets (--secrets-identity); empty when no template uses one.
	SecretsIdentity string
	// Progress, when set, is told of bytes scanned and pushed.
	Progress func(stage string, done, total int64)
	// Clock returns the current time (tests); nil is time.Now.
	Clock func() time.Time
}

// ReleaseResult says what a release published.
type ReleaseResult struct {
	Version      int64
	Commit       plumbing.Hash
	Image        string // the first image's digest
	ImageTag     string // its tag
	NewImage     bool   // some image tag was created by this release
	Chunks       int    // distinct chunks of the release's images
	NewChunks    int    // chunks the remote lacked
	NewBytes     int64  // their size
	Images       []ReleasedImage
	PackBytes    int64 // bytes pushed
	NodesChanged []string
	Signatures   *schema.ThresholdResult
}

// ReleasedImage says what a release did with one of its images.
type ReleasedImage struct {
	Name, Digest, Tag string
	New               bool // its tag was created by this release
	Chunks, NewChunks int  // distinct chunks; those sent by this release
	NewBytes          int64
}

// Release renders the fleet, packs the image, signs the manifest with every
// signer and pushes the release commit (and the image tag when new) in one
// compare-and-swap push. Nothing is pushed when the signatures would not
// meet the root's threshold, when nothing changed, or on any bad input.
func (r *Repository) Release(ctx context.Context, o ReleaseOptions) (*ReleaseResult, error) {
	now := time.Now
	if o.Clock != nil {
		now = o.Clock
	}
	progress := o.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	head, err := r.Sync(ctx)
	if err != nil {
		return nil, err
	}

	// What the repository holds now.
	var prev *bundle.Bundle
	var prevRel *schema.Release
	var roots []schema.SignedFile
	switch {
	case !head.Releases.IsZero():
		if prev, err = bundle.Read(r.Cache, head.Releases); err != nil {
			return nil, err
		}
		if prevRel, err = schema.ParseRelease(bundle.ManifestPath, prev.Manifest); err != nil {
			return nil, fmt.Errorf("current release: %w", err)
		}
		if roots, err = bundle.ReadRoots(r.Cache, head.Releases); err != nil {
			return nil, err
		}
	case !head.Root.IsZero():
		if roots, err = bundle.ReadRoots(r.Cache, head.Root); err != nil {
			return nil, err
		}
	default:
		return nil, ErrNotInitialised
	}
	if roots, err = addRoots(roots, o.Roots); err != nil {
		return nil, err
	}
	root, err := newestRoot(roots, now())
	if err != nil {
		return nil, err
	}

	// The fleet, rendered.
	fleetData, err := os.ReadFile(o.Fleet)
	if err != nil {
		return nil, fmt.Errorf("read fleet: %w", err)
	}
	fleet, err := render.ParseFleet(o.Fleet, fleetData)
	if err != nil {
		return nil, err
	}
	rendered, err := r.RenderFleet(fleet, filepath.Dir(o.Fleet), o.SecretsIdentity, prev, prevRel)
	if err != nil {
		return nil, err
	}
	source, err := fleetSource(filepath.Dir(o.Fleet), o.SourceCommit, o.AllowDirty)
	if err != nil {
		return nil, err
	}

	// The images, scanned (pass 1).
	srcs, err := imageSources(fleet, rendered, o)
	if err != nil {
		return nil, err
	}
	type packed struct {
		img  *image.Reader
		idx  *schema.ImageIndex
		data []byte
	}
	images := make([]packed, 0, len(srcs))
	for _, src := range srcs {
		img, err := image.Open(ctx, src.src, image.WithProgress(func(done, total int64) { progress("scan", done, total) }))
		if err != nil {
			return nil, err
		}
		defer img.Close()
		idx, indexData, err := r.imageIndex(ctx, img, src.name, head, prev, prevRel)
		if err != nil {
			return nil, err
		}
		images = append(images, packed{img, idx, indexData})
	}
	idx := images[0].idx

	// The manifest.
	created := now().UTC().Truncate(time.Second)
	lifetime := fleet.Rollout.Expires.D()
	if o.Lifetime != 0 {
		lifetime = o.Lifetime
	}
	rel := &schema.Release{
		Version:     1,
		Created:     created,
		Expires:     created.Add(lifetime),
		RootVersion: root.Version,
		Source:      source,
		Nodes:       rendered.ReleaseNodes(),
		Rollout:     schema.Rollout{Soak: fleet.Rollout.Soak, Now: o.Now},
	}
	for _, p := range images {
		sum := sha256.Sum256(p.data)
		rel.Images = append(rel.Images, schema.ReleaseImage{
			Name: p.idx.Name, Digest: p.idx.Digest,
			IndexSHA256: hex.EncodeToString(sum[:]), IndexLength: int64(len(p.data)),
		})
	}
	if o.ResetVersion && len(o.Roots) == 0 {
		return nil, errors.New("a version reset needs a new root (--publish-root): agents accept it only under a newer root")
	}
	if prevRel != nil {
		rel.Version = prevRel.Version + 1
		if o.ResetVersion {
			rel.Version = 1
		}
		sum := sha256.Sum256(prev.Manifest)
		rel.Previous = hex.EncodeToString(sum[:])
		if sameContent(prevRel, rel) {
			return nil, fmt.Errorf("release %d: %w", prevRel.Version, ErrNothingChanged)
		}
	}
	manifest, err := rel.Encode()
	if err != nil {
		return nil, err
	}
	if _, err := schema.ParseRelease(bundle.ManifestPath, manifest); err != nil {
		return nil, fmt.Errorf("release %d: the manifest written does not read back: %w", rel.Version, err)
	}

	// Signatures, checked against the root before anything is sent.
	var sigs schema.SignatureFile
	for _, s := range o.Signers {
		sig, err := schema.SignWith(s, manifest)
		if err != nil {
			return nil, err
		}
		sigs.Add(sig)
	}
	sigData := sigs.Encode()
	res, err := schema.VerifySigned(root, bundle.ManifestPath, manifest, sigData, now())
	if err != nil {
		return nil, fmt.Errorf("release %d not published: %w", rel.Version, err)
	}

	// Objects: the chunks the remote lacks (pass 2, streamed), the image tag
	// and the release commit.
	out := &ReleaseResult{Version: rel.Version, Image: idx.Digest, ImageTag: bundle.ImageTag(idx.Digest), Signatures: res,
		NodesChanged: nodesChanged(prevRel, rel)}
	var pushed atomic.Int64
	var newBytes int64
	chunkImage := map[plumbing.Hash]*image.Reader{} // a new chunk's blob → an image holding it
	objs := repo.NewObjectStream(func(o repo.Object) (io.ReadCloser, error) {
		img := chunkImage[o.ID]
		if img == nil {
			return nil, fmt.Errorf("chunk %s: in no image of the release", o.ID)
		}
		rc, err := img.OpenChunk(o.ID.String())
		if err != nil {
			return nil, err
		}
		return &countingReader{ReadCloser: rc, add: func(n int64) { progress("push", pushed.Add(n), newBytes) }}, nil
	})
	var updates []repo.RefUpdate
	var have map[string]bool // chunks on the remote, read once when needed
	for _, p := range images {
		tag := bundle.ImageTag(p.idx.Digest)
		chunks := bundle.NewChunkSet(p.idx)
		ri := ReleasedImage{Name: p.idx.Name, Digest: p.idx.Digest, Tag: tag, Chunks: chunks.Len()}
		if head.Refs[tag].IsZero() {
			if have == nil {
				if have, err = r.remoteChunks(head); err != nil {
					return nil, err
				}
			}
			for _, c := range chunks.List() {
				// Chunks shared with an image listed earlier are sent once.
				if have[c.Blob] {
					continue
				}
				have[c.Blob] = true
				id := plumbing.NewHash(c.Blob)
				chunkImage[id] = p.img
				objs.Add(repo.Object{ID: id, Type: plumbing.BlobObject, Size: c.StoredSize(), Precompressed: c.Encoded()})
				ri.NewChunks++
				ri.NewBytes += c.Size
				newBytes += c.StoredSize()
			}
			tagCommit, err := imageTagCommit(objs, p.idx)
			if err != nil {
				return nil, err
			}
			updates = append(updates, repo.RefUpdate{Name: tag, New: tagCommit})
			ri.New = true
		}
		out.Images = append(out.Images, ri)
		out.NewImage = out.NewImage || ri.New
		out.Chunks += ri.Chunks
		out.NewChunks += ri.NewChunks
		out.NewBytes += ri.NewBytes
	}
	tb := repo.NewTreeBuilder()
	// Blobs the previous release holds are on the server already: name
	// them in the tree, send only the new ones.
	known, err := r.treeObjects(prev)
	if err != nil {
		return nil, err
	}
	add := func(path string, data []byte, mode filemode.FileMode) error {
		if id := repo.HashObject(plumbing.BlobObject, data); known[id] {
			return tb.Add(path, mode, id)
		}
		return tb.Add(path, mode, objs.AddBytes(plumbing.BlobObject, data))
	}
	if err := add(bundle.ManifestPath, manifest, filemode.Regular); err != nil {
		return nil, err
	}
	if err := add(schema.SigFileName(bundle.ManifestPath), sigData, filemode.Regular); err != nil {
		return nil, err
	}
	for _, f := range roots {
		if err := add(bundle.RootDir+"/"+f.Name, f.Data, filemode.Regular); err != nil {
			return nil, err
		}
		if f.Sig != nil {
			if err := add(bundle.RootDir+"/"+schema.SigFileName(f.Name), f.Sig, filemode.Regular); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range images {
		if err := add(bundle.ImagesDir+"/"+p.idx.Name+".toml", p.data, filemode.Regular); err != nil {
			return nil, err
		}
	}
	for _, n := range rendered.Nodes {
		for _, f := range n.Files {
			if err := add(bundle.NodesDir+"/"+n.Release.Name+"/"+f.Path, f.Data, filemode.Regular); err != nil {
				return nil, fmt.Errorf("node %s: %w", n.Release.Name, err)
			}
		}
	}
	tree, err := tb.Build(objs)
	if err != nil {
		return nil, err
	}
	var parents []plumbing.Hash
	if prev != nil {
		parents = []plumbing.Hash{prev.Commit}
	}
	who := repo.Signature{Name: "pullship", Email: "pullship@localhost", When: created}
	commitData, commit, err := repo.EncodeCommit(repo.Commit{Tree: tree, Parents: parents, Author: who, Committer: who,
		Message: releaseMessage(rel, out.NodesChanged)})
	if err != nil {
		return nil, err
	}
	objs.AddBytes(plumbing.CommitObject, commitData)
	updates = append([]repo.RefUpdate{{Name: bundle.ReleasesRef, Old: head.Releases, New: commit}}, updates...)

	pr, err := r.Remote.Push(ctx, updates, objs)
	if err != nil {
		return nil, fmt.Errorf("release %d not published: %w", rel.Version, err)
	}
	out.Commit = commit
	out.PackBytes = pr.PackBytes
	return out, nil
}

// imageIndex returns the image's index and its encoded bytes. When the
// image is the one the current release pins and the repository still holds
// its tag, the signed index is reused and the image is not scanned again
// (a config-only release then costs what its config does); otherwise the
// image is scanned (pass 1 of 2).
func (r *Repository) imageIndex(ctx context.Context, img *image.Reader, name string, head *Head, prev *bundle.Bundle, prevRel *schema.Release) (*schema.ImageIndex, []byte, error) {
	if prevRel != nil {
		if pi, ok := prevRel.ImageByName(name); ok && !head.Refs[bundle.ImageTag(pi.Digest)].IsZero() {
			if d, err := img.Digest(); err == nil && d == pi.Digest {
				idx, err := bundle.ReadImageIndex(r.Cache, prev.Commit, *pi)
				if err != nil {
					return nil, nil, err
				}
				data, err := r.Cache.ReadFile(prev.Commit, bundle.ImagesDir+"/"+name+".toml", pi.IndexLength)
				return idx, data, err
			}
		}
	}
	if prevRel != nil {
		// The previous release's chunks of this image are on the remote:
		// a changed image keeps their blobs.
		if pi, ok := prevRel.ImageByName(name); ok && !head.Refs[bundle.ImageTag(pi.Digest)].IsZero() {
			if pidx, err := bundle.ReadImageIndex(r.Cache, prev.Commit, *pi); err == nil {
				img.Know(bundle.NewChunkSet(pidx).List())
			}
		}
	}
	idx, err := img.Scan(ctx)
	if err != nil {
		return nil, nil, err
	}
	idx.Name = name
	data, err := idx.Encode()
	return idx, data, err
}

// treeObjects returns the ids of every blob and tree of b's commit.
func (r *Repository) treeObjects(b *bundle.Bundle) (map[plumbing.Hash]bool, error) {
	known := map[plumbing.Hash]bool{}
	if b == nil {
		return known, nil
	}
	var walk func(dir string) error
	walk = func(dir string) error {
		ents, err := r.Cache.ListTree(b.Commit, dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			known[e.ID] = true
			if e.Mode == filemode.Dir {
				if err := walk(strings.TrimPrefix(dir+"/"+e.Name, "/")); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return known, walk("")
}

// addRoots appends the root files at paths (each with FILE.sig beside it)
// to the chain; each must be the next version.
func addRoots(chain []schema.SignedFile, paths []string) ([]schema.SignedFile, error) {
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read root: %w", err)
		}
		sig, err := os.ReadFile(schema.SigFileName(p))
		if err != nil {
			return nil, fmt.Errorf("read root: %w (a new root needs its signatures)", err)
		}
		r, err := schema.ParseRoot(p, data)
		if err != nil {
			return nil, err
		}
		want := int64(1)
		if len(chain) > 0 {
			n, _ := bundle.RootNumber(chain[len(chain)-1].Name)
			want = n + 1
		}
		if r.Version != want {
			return nil, fmt.Errorf("root %s: version %d, the repository's next root is %d", p, r.Version, want)
		}
		chain = append(chain, schema.SignedFile{Name: schema.RootFileName(r.Version), Data: data, Sig: sig})
	}
	return chain, nil
}

// newestRoot walks the repository's own chain from its first root and
// returns the newest; the bundler trusts its repository's first root, an
// agent trusts only the root pinned in its config.
func newestRoot(chain []schema.SignedFile, now time.Time) (*schema.Root, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("repository has no root under %s/ (run pullship init)", bundle.RootDir)
	}
	first, err := schema.ParseRoot(chain[0].Name, chain[0].Data)
	if err != nil {
		return nil, err
	}
	return schema.VerifyRootChain(first, chain[1:], now)
}

// fleetSource records the fleet repository commit, refusing a dirty work
// tree unless allowed.
func fleetSource(dir, commit string, allowDirty bool) (*schema.Source, error) {
	if commit != "" {
		return &schema.Source{Commit: commit}, nil
	}
	// EnableDotGitCommonDir: a linked work tree (git worktree add) keeps
	// its refs and objects in the main checkout's git directory.
	g, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	if errors.Is(err, git.ErrRepositoryNotExists) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fleet repository %s: %w", dir, err)
	}
	h, err := g.Head()
	if err != nil {
		return nil, fmt.Errorf("fleet repository %s: %w", dir, err)
	}
	wt, err := g.Worktree()
	if err != nil {
		return nil, fmt.Errorf("fleet repository %s: %w", dir, err)
	}
	st, err := wt.Status()
	if err != nil {
		return nil, fmt.Errorf("fleet repository %s: %w", dir, err)
	}
	// Only changes to the fleet's own directory make it dirty (a fleet may
	// live in a larger repository).
	rel := ""
	if root, err := filepath.Abs(wt.Filesystem.Root()); err == nil {
		if abs, err := filepath.Abs(dir); err == nil {
			if r, err := filepath.Rel(root, abs); err == nil && r != "." {
				rel = filepath.ToSlash(r) + "/"
			}
		}
	}
	dirty := false
	for path, fs := range st {
		if strings.HasPrefix(path, rel) && (fs.Worktree != git.Unmodified || fs.Staging != git.Unmodified) {
			dirty = true
			break
		}
	}
	src := &schema.Source{Commit: h.Hash().String(), Dirty: dirty}
	if src.Dirty && !allowDirty {
		return nil, fmt.Errorf("fleet repository %s has uncommitted changes: commit them (a release names the commit it came from) or pass --allow-dirty", dir)
	}
	return src, nil
}

// sameContent reports whether two manifests would apply the same thing.
func sameContent(a, b *schema.Release) bool {
	return a.RootVersion == b.RootVersion && reflect.DeepEqual(a.Images, b.Images) &&
		reflect.DeepEqual(a.Nodes, b.Nodes) && reflect.DeepEqual(a.Rollout, b.Rollout)
}

// nodesChanged lists the nodes whose entry or any service's image differs
// from the previous release.
func nodesChanged(prev, cur *schema.Release) []string {
	var out []string
	for _, n := range cur.Nodes {
		if prev != nil {
			if p, ok := prev.Node(n.Name); ok && reflect.DeepEqual(*p, n) && sameImages(prev, cur, n.Units()) {
				continue
			}
		}
		out = append(out, n.Name)
	}
	return out
}

// sameImages reports whether every image the services use has the same
// digest in both releases.
func sameImages(prev, cur *schema.Release, units []schema.NodeService) bool {
	for _, u := range units {
		pi, _ := prev.ImageByName(u.Image)
		ci, _ := cur.ImageByName(u.Image)
		if pi == nil || ci == nil || pi.Digest != ci.Digest {
			return false
		}
	}
	return true
}

// imageSource is one image a release packs.
type imageSource struct {
	name string // release image name
	src  image.Source
}

// imageSources returns the images the rendered nodes' services use, in
// fleet order, each with its source: o.Images of a service using it, or
// o.Image when the release packs one image.
func imageSources(f *schema.Fleet, rendered *render.Rendered, o ReleaseOptions) ([]imageSource, error) {
	used := map[string]bool{}
	for _, n := range rendered.Nodes {
		for _, u := range n.Release.Units() {
			used[u.Image] = true
		}
	}
	var out []imageSource
	at := map[string]int{} // image name → index in out
	for _, s := range f.All() {
		name := s.ReleaseImageName()
		if !used[name] {
			continue
		}
		k, ok := at[name]
		if !ok {
			k = len(out)
			at[name] = k
			out = append(out, imageSource{name: name})
		}
		src := o.Images[s.Name]
		if src == nil {
			continue
		}
		if cur := out[k].src; cur != nil && cur.String() != src.String() {
			return nil, fmt.Errorf("service %q: image %s has a source already (%s), another service's: services sharing an image share its source", s.Name, name, cur)
		}
		out[k].src = src
	}
	if len(out) == 0 {
		return nil, errors.New("no node runs a service")
	}
	for k := range out {
		if out[k].src == nil && len(out) == 1 {
			out[k].src = o.Image
		}
		if out[k].src == nil {
			return nil, fmt.Errorf("image %s: no source (the release packs %d images: give each service's, --image SERVICE=SRC)", out[k].name, len(out))
		}
	}
	return out, nil
}

func releaseMessage(rel *schema.Release, changed []string) string {
	var b strings.Builder
	word := "image"
	if len(rel.Images) > 1 {
		word = "images"
	}
	fmt.Fprintf(&b, "release %d: %s", rel.Version, word)
	for i, im := range rel.Images {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s %s", im.Name, shortHex(strings.TrimPrefix(im.Digest, "sha256:")))
	}
	b.WriteString("\n\n")
	if len(changed) == 0 {
		b.WriteString("nodes changed: none\n")
	} else {
		fmt.Fprintf(&b, "nodes changed: %s\n", strings.Join(changed, ", "))
	}
	if rel.Source != nil {
		fmt.Fprintf(&b, "source: %s\n", rel.Source.Commit)
	}
	return b.String()
}

// imageTagCommit adds the image tag's chain (bundle.Segments: each
// segment's tree and commit, the tag pointing at the last) to objs and
// returns the tag's commit id. The commits depend on the signed index
// alone, so an agent can name each segment before it fetches any.
func imageTagCommit(objs *repo.ObjectStream, idx *schema.ImageIndex) (plumbing.Hash, error) {
	segs, err := bundle.Segments(idx)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	for _, s := range segs {
		objs.AddBytes(plumbing.TreeObject, s.TreeData)
		objs.AddBytes(plumbing.CommitObject, s.CommitData)
	}
	return bundle.TagCommit(segs), nil
}

// MaxHistoryScan is how many past releases the bundler reads to learn which
// chunks the remote already holds.
const MaxHistoryScan = 20

// remoteChunks returns the blob ids of chunks the remote holds: those of
// recent releases' images whose tags it still advertises.
func (r *Repository) remoteChunks(head *Head) (map[string]bool, error) {
	have := map[string]bool{}
	if head.Releases.IsZero() {
		return have, nil
	}
	commits, err := r.Cache.Log(head.Releases, MaxHistoryScan)
	if err != nil {
		return nil, err
	}
	for _, c := range commits {
		b, err := bundle.Read(r.Cache, c.Hash)
		if err != nil {
			return nil, err
		}
		rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest)
		if err != nil {
			return nil, fmt.Errorf("release commit %s: %w", short(c.Hash), err)
		}
		for _, img := range rel.Images {
			if head.Refs[bundle.ImageTag(img.Digest)].IsZero() {
				continue
			}
			idx, err := bundle.ReadImageIndex(r.Cache, c.Hash, img)
			if err != nil {
				return nil, err
			}
			for _, c := range bundle.NewChunkSet(idx).List() {
				have[c.Blob] = true
			}
		}
	}
	return have, nil
}

// countingReader reports the bytes read through it.
type countingReader struct {
	io.ReadCloser
	add func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.add(int64(n))
	return n, err
}
