package bundler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/bundler/shared/repo"
)

// Repository is a release repository on a remote, read through a local
// cache of fetched objects.
type Repository struct {
	Remote *repo.Remote
	Cache  *repo.Store
}

// Open opens the release repository at url (a git URL or a directory) with
// the local object cache in cacheDir (created if missing; "" picks one under
// the user cache directory, keyed by url).
func Open(ctx context.Context, url, cacheDir string, opts repo.Options) (*Repository, error) {
	if !strings.Contains(url, "://") {
		abs, err := filepath.Abs(url)
		if err != nil {
			return nil, err
		}
		url = abs
	}
	r, err := repo.Open(ctx, url, opts)
	if errors.Is(err, repo.ErrNotRepository) {
		return nil, fmt.Errorf("%w (create it with pullship init)", err)
	}
	if err != nil {
		return nil, err
	}
	if cacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("open cache: %w (set --cache)", err)
		}
		sum := sha256.Sum256([]byte(url))
		cacheDir = filepath.Join(base, "pullship", hex.EncodeToString(sum[:8]))
	}
	st, err := repo.Init(cacheDir)
	if err != nil {
		return nil, err
	}
	return &Repository{Remote: r, Cache: st}, nil
}

// Head is what the remote advertises of a release repository.
type Head struct {
	Releases plumbing.Hash // zero: no release yet
	Root     plumbing.Hash // zero: not initialised
	Refs     map[string]plumbing.Hash
}

// Sync fetches the release branch (and the root ref) into the cache and
// returns the advertised heads: every ref, or with prefixes only those
// under them (and the release and root refs).
func (r *Repository) Sync(ctx context.Context, prefixes ...string) (*Head, error) {
	if len(prefixes) > 0 {
		prefixes = append(prefixes, bundle.ReleasesRef, bundle.RootRef)
	}
	refs, err := r.Remote.Refs(ctx, prefixes...)
	if err != nil {
		return nil, err
	}
	h := &Head{Releases: refs[bundle.ReleasesRef], Root: refs[bundle.RootRef], Refs: refs}
	var want []string
	for _, ref := range []string{bundle.ReleasesRef, bundle.RootRef} {
		if id := refs[ref]; !id.IsZero() && !r.Cache.HasObject(id) {
			want = append(want, ref)
		}
	}
	if len(want) > 0 {
		if _, err := r.Remote.Fetch(ctx, r.Cache, repo.FetchRequest{Refs: want, MaxPackBytes: bundle.MaxHistoryPack}); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// short is a commit's abbreviated id, as git log prints it.
func short(h plumbing.Hash) string { return h.String()[:12] }

// shortHex abbreviates a hex digest to 12 digits.
func shortHex(s string) string { return s[:min(12, len(s))] }
