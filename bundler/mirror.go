package bundler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// A mirror copies a release repository to another place (a relay's git
// server, a directory on removable media) and carries the status branches
// back. It never signs anything and never rewrites the release branch
// backwards: what it copies, agents verify. docs/mirror.md is the user's
// guide; the rules are:
//
//   - refs/heads/releases: SRC's value is copied when DST has none or
//     DST's is an ancestor of it (fast-forward). DST ahead of or diverged
//     from SRC is an *ErrWouldRollBack error and nothing is copied.
//   - refs/pullship/root: copied when DST has none; a different value on
//     DST means DST is another repository (refused).
//   - image tags: those of the newest MirrorOptions.Images releases of SRC
//     (or every tag SRC advertises with AllImages), created on DST when
//     missing. Tags are never deleted by a mirror (that is prune's job).
//   - refs/heads/status/<node>, both ways: the side that is behind is
//     fast-forwarded; when the two diverged (an agent replaced a pushed
//     heartbeat, or reported through two remotes), the head whose
//     status.toml holds the higher sequence wins, then the later time; an
//     unreadable report loses to a readable one; a tie is left alone and
//     noted.

// DefaultMirrorImages is how many of the newest releases' images a mirror
// copies by default.
const DefaultMirrorImages = 3

// MirrorOptions choose what Mirror copies.
type MirrorOptions struct {
	// Images is how many of SRC's newest releases have their image tags
	// copied (0: DefaultMirrorImages).
	Images int
	// AllImages copies every image tag SRC advertises.
	AllImages bool
	// Pinned, when set, verifies SRC's newest release (signatures, expiry,
	// image indexes and every chunk of its images) before anything is
	// copied; an unverifiable release is not mirrored.
	Pinned *schema.Root
	// Now is the verification time (zero: time.Now()).
	Now time.Time
	// StatusSrc and StatusDst, set together, are status repositories of
	// their own (the agents' status_remote on either side): the status
	// branches are carried between them, by the same rules, instead of
	// between SRC and DST, whose status branches are left alone.
	StatusSrc, StatusDst *repo.Remote
}

// RefChange is one ref a mirror moved on one side.
type RefChange struct {
	Ref      string
	Old, New plumbing.Hash // Old zero: created
	Forced   bool          // not a fast-forward (a diverged status branch)
}

// MirrorResult says what a mirror copied.
type MirrorResult struct {
	Releases plumbing.Hash // SRC's release head (zero: none yet)
	Version  int64         // its version (0 when unreadable or none)
	ToDst    []RefChange   // refs moved on DST (status refs: on StatusDst, when set)
	ToSrc    []RefChange   // status refs moved on SRC (on StatusSrc, when set)
	// Objects and bytes pushed to each side (the pack as sent).
	DstObjects, SrcObjects int
	DstBytes, SrcBytes     int64
	// Notes are things worth telling the operator that did not stop the
	// mirror (a pruned image tag, a status tie).
	Notes []string
}

// Nothing reports whether the mirror found nothing new on either side.
func (m *MirrorResult) Nothing() bool { return len(m.ToDst) == 0 && len(m.ToSrc) == 0 }

// ErrWouldRollBack means DST's release branch is ahead of or diverged from
// SRC's: mirroring would move hosts that follow DST back.
var ErrWouldRollBack = errors.New("mirror would roll back the release branch")

// Cache refs: what was last fetched from each side, the "haves" of the
// next run, so a mirror run transfers only what is new.
const (
	mirrorSrcPrefix = "refs/pullship/mirror/src/"
	mirrorDstPrefix = "refs/pullship/mirror/dst/"
)

func cacheRef(prefix, ref string) string { return prefix + strings.TrimPrefix(ref, "refs/") }

// OpenMirrorTarget opens url as a mirror destination: a directory that
// does not exist or is empty is initialised as a bare repository first.
func OpenMirrorTarget(ctx context.Context, url string, opts repo.Options) (*repo.Remote, error) {
	if !strings.Contains(url, "://") {
		ents, err := os.ReadDir(url)
		if errors.Is(err, os.ErrNotExist) || (err == nil && len(ents) == 0) {
			if _, err := repo.Init(url); err != nil {
				return nil, err
			}
		} else if err != nil {
			return nil, fmt.Errorf("open mirror target %s: %w", url, err)
		}
	}
	return repo.Open(ctx, url, opts)
}

// Mirror copies r (SRC) to dst as the package comment above states, using
// r.Cache as the staging store, and returns what moved. Every ref update is
// compare-and-swap on the value the side advertised at the start: a
// concurrent writer makes the mirror fail (run it again) rather than lose
// that writer's update.
func (r *Repository) Mirror(ctx context.Context, dst *repo.Remote, o MirrorOptions) (*MirrorResult, error) {
	if o.Images <= 0 {
		o.Images = DefaultMirrorImages
	}
	if (o.StatusSrc == nil) != (o.StatusDst == nil) {
		return nil, errors.New("mirror: status repositories on one side only: name both or neither")
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	fail := func(err error) (*MirrorResult, error) {
		return nil, fmt.Errorf("mirror %s to %s: %w", r.Remote, dst, err)
	}
	srcRefs, err := r.Remote.Refs(ctx)
	if err != nil {
		return fail(err)
	}
	dstRefs, err := dst.Refs(ctx)
	if err != nil {
		return fail(err)
	}
	res := &MirrorResult{Releases: srcRefs[bundle.ReleasesRef]}
	if srcRefs[bundle.ReleasesRef].IsZero() && srcRefs[bundle.RootRef].IsZero() {
		return fail(fmt.Errorf("%s: %w", r.Remote, ErrNotInitialised))
	}

	// 1. Release history and root from SRC.
	var want []string
	for _, ref := range []string{bundle.ReleasesRef, bundle.RootRef} {
		if !srcRefs[ref].IsZero() {
			want = append(want, ref+":"+cacheRef(mirrorSrcPrefix, ref))
		}
	}
	if err := r.fetch(ctx, r.Remote, want, bundle.MaxHistoryPack); err != nil {
		return fail(err)
	}
	var updates []repo.RefUpdate // to DST
	srcHead, dstHead := srcRefs[bundle.ReleasesRef], dstRefs[bundle.ReleasesRef]
	if err := r.checkForward(ctx, dst, srcHead, dstHead); err != nil {
		return fail(err)
	}
	if srcRoot, dstRoot := srcRefs[bundle.RootRef], dstRefs[bundle.RootRef]; srcRoot != dstRoot {
		if !dstRoot.IsZero() {
			return fail(fmt.Errorf("%s holds another trust root commit (%s, %s here): a different release repository", bundle.RootRef, short(dstRoot), short(srcRoot)))
		}
		updates = append(updates, repo.RefUpdate{Name: bundle.RootRef, New: srcRoot})
	}

	// 2. Image tags of the kept releases.
	tags, idxs, err := r.mirrorTags(srcRefs, o, res)
	if err != nil {
		return fail(err)
	}
	for _, tag := range tags {
		if !dstRefs[tag].IsZero() && dstRefs[tag] == srcRefs[tag] {
			continue
		}
		limit := int64(0)
		if idx := idxs[tag]; idx != nil {
			limit = bundle.ImagePackLimit(idx)
		}
		if err := r.fetch(ctx, r.Remote, []string{tag + ":" + cacheRef(mirrorSrcPrefix, tag)}, limit); err != nil {
			return fail(err)
		}
		if dstRefs[tag].IsZero() {
			updates = append(updates, repo.RefUpdate{Name: tag, New: srcRefs[tag]})
		} else {
			res.Notes = append(res.Notes, fmt.Sprintf("%s differs on the destination (%s, %s here): left as it is", tag, short(dstRefs[tag]), short(srcRefs[tag])))
		}
	}

	// 3. Optional verification of what is about to be copied.
	if o.Pinned != nil && !srcHead.IsZero() {
		if err := r.verifyForMirror(ctx, srcHead, o.Pinned, now, idxs); err != nil {
			return fail(err)
		}
	}
	// 4. Status branches, both ways: between SRC and DST, or between the
	// status repositories.
	statusSrc, statusDst, statusSrcRefs, statusDstRefs := r.Remote, dst, srcRefs, dstRefs
	if o.StatusSrc != nil {
		statusSrc, statusDst = o.StatusSrc, o.StatusDst
		if statusSrcRefs, err = statusSrc.Refs(ctx, bundle.StatusPrefix); err != nil {
			return fail(fmt.Errorf("status source: %w", err))
		}
		if statusDstRefs, err = statusDst.Refs(ctx, bundle.StatusPrefix); err != nil {
			return fail(fmt.Errorf("status destination: %w", err))
		}
	}
	toSrc, statusToDst, err := r.mirrorStatus(ctx, statusSrc, statusDst, statusSrcRefs, statusDstRefs, res, r.statusNodes(srcHead))
	if err != nil {
		return fail(err)
	}
	if o.StatusSrc == nil {
		updates = append(updates, statusToDst...)
	}
	// Last: a directory destination moves refs in order, and a release must
	// not appear before its image tags.
	if !srcHead.IsZero() && srcHead != dstHead {
		updates = append(updates, repo.RefUpdate{Name: bundle.ReleasesRef, Old: dstHead, New: srcHead})
	}

	// 5. Push: DST first (releases, tags, status), then status to SRC.
	// The zstd chunk blobs of the indexes at hand go as they are: deflating
	// them again would cost CPU for nothing.
	encoded := map[plumbing.Hash]bool{}
	for _, idx := range idxs {
		maps.Copy(encoded, bundle.EncodedChunks(idx))
	}
	if res.DstObjects, res.DstBytes, err = r.pushUpdates(ctx, dst, dstRefs, updates, encoded); err != nil {
		return fail(err)
	}
	if o.StatusSrc != nil {
		n, size, err := r.pushUpdates(ctx, statusDst, statusDstRefs, statusToDst, nil)
		if err != nil {
			return fail(fmt.Errorf("status to the status destination: %w", err))
		}
		res.DstObjects, res.DstBytes = res.DstObjects+n, res.DstBytes+size
		updates = append(updates, statusToDst...)
	}
	for _, u := range updates {
		res.ToDst = append(res.ToDst, RefChange{Ref: u.Name, Old: u.Old, New: u.New, Forced: !u.Old.IsZero() && !r.isAncestor(u.Old, u.New)})
	}
	if res.SrcObjects, res.SrcBytes, err = r.pushUpdates(ctx, statusSrc, statusSrcRefs, toSrc, nil); err != nil {
		return fail(fmt.Errorf("status back to the source: %w", err))
	}
	for _, u := range toSrc {
		res.ToSrc = append(res.ToSrc, RefChange{Ref: u.Name, Old: u.Old, New: u.New, Forced: !u.Old.IsZero() && !r.isAncestor(u.Old, u.New)})
	}
	if !srcHead.IsZero() {
		if b, err := bundle.Read(r.Cache, srcHead); err == nil {
			if rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest); err == nil {
				res.Version = rel.Version
			}
		}
	}
	return res, nil
}

// fetch brings refs ("src:dst") from remote into the cache, telling the
// server every commit the cache holds a ref for, so it sends only what is
// new.
func (r *Repository) fetch(ctx context.Context, remote *repo.Remote, refs []string, limit int64) error {
	if len(refs) == 0 {
		return nil
	}
	var haves []plumbing.Hash
	if cached, err := r.Cache.Refs(); err == nil {
		for name, id := range cached {
			if name != "HEAD" {
				haves = append(haves, id)
			}
		}
	}
	_, err := remote.Fetch(ctx, r.Cache, repo.FetchRequest{Refs: refs, Haves: haves, MaxPackBytes: limit})
	return err
}

// checkForward refuses a release branch on dst that src's does not
// contain.
func (r *Repository) checkForward(ctx context.Context, dst *repo.Remote, srcHead, dstHead plumbing.Hash) error {
	if dstHead.IsZero() || dstHead == srcHead {
		return nil
	}
	if srcHead.IsZero() {
		return fmt.Errorf("%w: the destination has releases (%s), the source none", ErrWouldRollBack, r.describe(dstHead))
	}
	if r.isAncestor(dstHead, srcHead) {
		return nil
	}
	// Learn whether DST is ahead or diverged, to say which.
	if err := r.fetch(ctx, dst, []string{bundle.ReleasesRef + ":" + cacheRef(mirrorDstPrefix, bundle.ReleasesRef)}, bundle.MaxHistoryPack); err != nil {
		return fmt.Errorf("%w: the destination's releases (%s) are not in the source's history, and reading them failed: %w", ErrWouldRollBack, short(dstHead), err)
	}
	if r.isAncestor(srcHead, dstHead) {
		return fmt.Errorf("%w: the destination is ahead (%s) of the source (%s); a mirror must not roll a host back (mirror the other way, or from the newer repository)",
			ErrWouldRollBack, r.describe(dstHead), r.describe(srcHead))
	}
	return fmt.Errorf("%w: the destination's releases (%s) diverged from the source's (%s): someone released to both; a mirror must not roll a host back",
		ErrWouldRollBack, r.describe(dstHead), r.describe(srcHead))
}

// describe names a release commit by version when it can.
func (r *Repository) describe(commit plumbing.Hash) string {
	if b, err := bundle.Read(r.Cache, commit); err == nil {
		if rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest); err == nil {
			return fmt.Sprintf("release %d, commit %s", rel.Version, short(commit))
		}
	}
	return "commit " + short(commit)
}

// maxAncestry bounds the first-parent walks of ancestry checks.
const maxAncestry = 1 << 20

// isAncestor reports whether a is b or on b's first-parent history in the
// cache (pullship's branches are linear).
func (r *Repository) isAncestor(a, b plumbing.Hash) bool {
	if a == b {
		return true
	}
	if !r.Cache.HasObject(a) || !r.Cache.HasObject(b) {
		return false
	}
	log, _ := r.Cache.Log(b, maxAncestry)
	for _, c := range log {
		if c.Hash == a {
			return true
		}
	}
	return false
}

// mirrorTags returns the image tags to copy (sorted) and, for those a kept
// release describes, the image index (which bounds the fetch).
func (r *Repository) mirrorTags(srcRefs map[string]plumbing.Hash, o MirrorOptions, res *MirrorResult) ([]string, map[string]*schema.ImageIndex, error) {
	idxs := map[string]*schema.ImageIndex{}
	set := map[string]bool{}
	if head := srcRefs[bundle.ReleasesRef]; !head.IsZero() {
		limit := o.Images
		if o.AllImages {
			limit = MaxHistoryScan
		}
		commits, err := r.Cache.Log(head, limit)
		if err != nil {
			return nil, nil, err
		}
		for i, c := range commits {
			b, err := bundle.Read(r.Cache, c.Hash)
			if err != nil {
				return nil, nil, err
			}
			rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest)
			if err != nil {
				return nil, nil, fmt.Errorf("release commit %s: %w", short(c.Hash), err)
			}
			for _, img := range rel.Images {
				tag := bundle.ImageTag(img.Digest)
				if srcRefs[tag].IsZero() {
					if !set[tag] {
						res.Notes = append(res.Notes, fmt.Sprintf("release %d: image %s: tag %s missing on the source (pruned?): not copied", rel.Version, img.Name, tag))
					}
					if i == 0 {
						res.Notes = append(res.Notes, fmt.Sprintf("release %d is the newest: agents following the destination cannot load image %s", rel.Version, img.Name))
					}
					set[tag] = true
					continue
				}
				set[tag] = true
				if idxs[tag] == nil {
					idx, err := bundle.ReadImageIndex(r.Cache, c.Hash, img)
					if err != nil {
						return nil, nil, err
					}
					idxs[tag] = idx
				}
			}
		}
	}
	var tags []string
	if o.AllImages {
		for ref := range srcRefs {
			if strings.HasPrefix(ref, bundle.ImageTagPrefix) {
				tags = append(tags, ref)
			}
		}
	} else {
		for tag := range set {
			if !srcRefs[tag].IsZero() {
				tags = append(tags, tag)
			}
		}
	}
	sort.Strings(tags)
	return tags, idxs, nil
}

// verifyForMirror verifies the newest release against pinned, and every
// chunk of its images that is being copied.
func (r *Repository) verifyForMirror(ctx context.Context, head plumbing.Hash, pinned *schema.Root, now time.Time, idxs map[string]*schema.ImageIndex) error {
	b, err := bundle.Read(r.Cache, head)
	if err != nil {
		return err
	}
	trust, err := r.Trust(pinned)
	if err != nil {
		return err
	}
	v, err := trust.Verify(b, now)
	if err != nil {
		return err
	}
	if err := trust.Accept(v); err != nil {
		return err
	}
	for _, img := range v.Release.Images {
		idx, err := bundle.ReadImageIndex(r.Cache, head, img)
		if err != nil {
			return fmt.Errorf("verify release %d: %w", v.Release.Version, err)
		}
		if idxs[bundle.ImageTag(img.Digest)] == nil {
			continue // tag missing on the source: noted already
		}
		if err := bundle.CheckChunks(ctx, r.Cache, idx); err != nil {
			return fmt.Errorf("verify release %d: %w", v.Release.Version, err)
		}
	}
	return nil
}

// mirrorStatus decides, per status branch, which side moves: it returns the
// updates for src and for dst (SRC and DST, or their status repositories).
//
// Only reports signed by their node's status key (as the newest release
// lists it) are copied or win a divergence: a side's unsigned, forged or
// unreadable head is left where it is, with a note.
func (r *Repository) mirrorStatus(ctx context.Context, src, dst *repo.Remote, srcRefs, dstRefs map[string]plumbing.Hash, res *MirrorResult, nodes map[string]schema.ReleaseNode) (toSrc, toDst []repo.RefUpdate, err error) {
	names := map[string]bool{}
	for _, refs := range []map[string]plumbing.Hash{srcRefs, dstRefs} {
		for ref := range refs {
			if strings.HasPrefix(ref, bundle.StatusPrefix) {
				names[ref] = true
			}
		}
	}
	var fromSrc, fromDst []string
	for ref := range names {
		s, d := srcRefs[ref], dstRefs[ref]
		if s == d {
			continue
		}
		if !s.IsZero() {
			fromSrc = append(fromSrc, ref+":"+cacheRef(mirrorSrcPrefix, ref))
		}
		if !d.IsZero() {
			fromDst = append(fromDst, ref+":"+cacheRef(mirrorDstPrefix, ref))
		}
	}
	sort.Strings(fromSrc)
	sort.Strings(fromDst)
	if err := r.fetch(ctx, src, fromSrc, bundle.MaxStatusPack); err != nil {
		return nil, nil, fmt.Errorf("fetch status branches from the source: %w", err)
	}
	if err := r.fetch(ctx, dst, fromDst, bundle.MaxStatusPack); err != nil {
		return nil, nil, fmt.Errorf("fetch status branches from the destination: %w", err)
	}
	refs := make([]string, 0, len(names))
	for ref := range names {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	toSrc, toDst = r.mergeStatus(refs, srcRefs, dstRefs, res, nodes)
	return toSrc, toDst, nil
}

// mergeStatus decides, for each status branch of refs (fetched into the
// cache from both sides), which side's head the other side gets: the
// descendant, or of two diverged heads the newer report; only a report
// signed by the node's status key (nodes: the newest release's) is ever
// copied.
func (r *Repository) mergeStatus(refs []string, srcRefs, dstRefs map[string]plumbing.Hash, res *MirrorResult, nodes map[string]schema.ReleaseNode) (toSrc, toDst []repo.RefUpdate) {
	for _, ref := range refs {
		s, d := srcRefs[ref], dstRefs[ref]
		n, listed := nodes[strings.TrimPrefix(ref, bundle.StatusPrefix)]
		signed := func(id plumbing.Hash) bool {
			if listed && bundle.CheckReport(r.Cache, n, id).Status != nil {
				return true
			}
			res.Notes = append(res.Notes, fmt.Sprintf("%s: report %s is not signed by the node's status key (or the newest release lists no such node): not copied", Flatten(ref), short(id)))
			return false
		}
		switch {
		case s == d:
		case d.IsZero() || r.isAncestor(d, s):
			if signed(s) {
				toDst = append(toDst, repo.RefUpdate{Name: ref, Old: d, New: s})
			}
		case s.IsZero() || r.isAncestor(s, d):
			if signed(d) {
				toSrc = append(toSrc, repo.RefUpdate{Name: ref, Old: s, New: d})
			}
		default:
			switch c := r.compareReports(n, listed, s, d); {
			case c > 0:
				toDst = append(toDst, repo.RefUpdate{Name: ref, Old: d, New: s})
			case c < 0:
				toSrc = append(toSrc, repo.RefUpdate{Name: ref, Old: s, New: d})
			default:
				res.Notes = append(res.Notes, fmt.Sprintf("%s diverged and neither report is newer (%s on the source, %s on the destination): left as it is", Flatten(ref), short(s), short(d)))
			}
		}
	}
	return toSrc, toDst
}

// compareReports orders two status heads of node n by their reports
// (bundle.NewerReport); a node the newest release does not list has no key
// to check them by: a tie.
func (r *Repository) compareReports(n schema.ReleaseNode, listed bool, a, b plumbing.Hash) int {
	if !listed {
		return 0
	}
	return bundle.NewerReport(r.Cache, n, a, b)
}

// statusNodes is the node list (with status keys) of the release at head:
// what status reports are checked against. It is empty when head is zero or
// unreadable, and then no status report is copied.
func (r *Repository) statusNodes(head plumbing.Hash) map[string]schema.ReleaseNode {
	out := map[string]schema.ReleaseNode{}
	if head.IsZero() {
		return out
	}
	b, err := bundle.Read(r.Cache, head)
	if err != nil {
		return out
	}
	rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest)
	if err != nil {
		return out
	}
	for _, n := range rel.Nodes {
		out[n.Name] = n
	}
	return out
}

// pushUpdates sends what remote lacks of the updates' new values (everything
// not reachable from the refs it advertised) and moves the refs, CAS.
func (r *Repository) pushUpdates(ctx context.Context, remote *repo.Remote, advertised map[string]plumbing.Hash, updates []repo.RefUpdate, precompressed map[plumbing.Hash]bool) (int, int64, error) {
	if len(updates) == 0 {
		return 0, 0, nil
	}
	var wants, haves []plumbing.Hash
	for _, u := range updates {
		if !u.New.IsZero() {
			wants = append(wants, u.New)
		}
	}
	seen := map[plumbing.Hash]bool{}
	for name, id := range advertised {
		if name != "HEAD" && !seen[id] && r.Cache.HasObject(id) {
			seen[id] = true
			haves = append(haves, id)
		}
	}
	objs, err := r.Cache.Missing(wants, haves)
	if err != nil {
		return 0, 0, err
	}
	objs.MarkPrecompressed(precompressed)
	n := objs.Len()
	pr, err := remote.Push(ctx, updates, objs)
	if err != nil {
		return 0, 0, err
	}
	return n, pr.PackBytes, nil
}
