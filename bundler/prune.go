package bundler

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// PrunedTag is one image tag Prune removed (or would remove).
type PrunedTag struct {
	Ref    string
	Commit plumbing.Hash
	// Image names the image by the newest release that used it ("" when no
	// release in the history does).
	Image   string
	Version int64 // that release
}

// PruneResult says what Prune did.
type PruneResult struct {
	Newest  int64 // version of the newest release
	Kept    []string
	Removed []PrunedTag
}

// Prune deletes the image tags that none of the newest keep releases needs
// (keep >= 1, so the newest release's images always stay), each with a
// compare-and-swap delete push, in one push. The signed history
// (refs/heads/releases, refs/pullship/root) and status branches are never
// touched. With dryRun nothing is pushed. The space the chunks took is
// reclaimed only when the server collects garbage (git gc --prune=now);
// docs/mirror.md says how.
func (r *Repository) Prune(ctx context.Context, keep int, dryRun bool) (*PruneResult, error) {
	if keep < 1 {
		return nil, fmt.Errorf("prune: keep %d: at least the newest release's images must stay (keep >= 1)", keep)
	}
	head, err := r.Sync(ctx)
	if err != nil {
		return nil, err
	}
	if head.Releases.IsZero() {
		return nil, fmt.Errorf("prune %s: no releases yet", r.Remote)
	}
	commits, err := r.Cache.Log(head.Releases, max(keep, MaxHistoryScan))
	if err != nil {
		return nil, err
	}
	res := &PruneResult{}
	needed := map[string]bool{}
	users := map[string]PrunedTag{}
	for i, c := range commits {
		b, err := bundle.Read(r.Cache, c.Hash)
		if err != nil {
			return nil, fmt.Errorf("prune: %w", err)
		}
		rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest)
		if err != nil {
			// Keeping too much is safe, deleting what an unreadable release
			// needs is not.
			return nil, fmt.Errorf("prune: release commit %s: %w", short(c.Hash), err)
		}
		if i == 0 {
			res.Newest = rel.Version
		}
		for _, img := range rel.Images {
			tag := bundle.ImageTag(img.Digest)
			if i < keep {
				needed[tag] = true
			}
			if _, ok := users[tag]; !ok {
				users[tag] = PrunedTag{Image: img.Name, Version: rel.Version}
			}
		}
	}
	var updates []repo.RefUpdate
	var names []string
	for ref := range head.Refs {
		if strings.HasPrefix(ref, bundle.ImageTagPrefix) {
			names = append(names, ref)
		}
	}
	sort.Strings(names)
	for _, ref := range names {
		if needed[ref] {
			res.Kept = append(res.Kept, ref)
			continue
		}
		p := users[ref]
		p.Ref, p.Commit = ref, head.Refs[ref]
		res.Removed = append(res.Removed, p)
		updates = append(updates, repo.RefUpdate{Name: ref, Old: p.Commit})
	}
	if dryRun || len(updates) == 0 {
		return res, nil
	}
	if _, err := r.Remote.Push(ctx, updates, nil); err != nil {
		var rc *repo.RefConflictError
		if errors.As(err, &rc) {
			return nil, fmt.Errorf("prune: %w (a release ran concurrently: run prune again)", err)
		}
		return nil, fmt.Errorf("prune: %w", err)
	}
	return res, nil
}
