package bundler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/schema"
)

// VerifiedRef is where the cache remembers the newest release it verified,
// so that a later verify notices a history rewritten under it.
const VerifiedRef = "refs/pullship/verified"

// VerifyOptions choose what VerifyHistory checks.
type VerifyOptions struct {
	Pinned  *schema.Root
	Version int64 // one release (0: the newest), unless All
	All     bool  // every release, oldest first
	// SkipChunks leaves image chunks unchecked (they are fetched otherwise).
	SkipChunks bool
	Now        time.Time // zero: time.Now()
}

// VerifyLine is the outcome for one release.
type VerifyLine struct {
	Version int64
	Commit  plumbing.Hash
	Created time.Time
	Signers []string // key ids whose signatures counted
	Note    string   // e.g. "image tag pruned: chunks not checked"
	Err     error
}

// ErrHistoryRewritten means the release branch no longer holds a release
// this cache verified before: a force-push. It is a refusal
// (schema.ErrRefused).
var ErrHistoryRewritten = schema.Refused(errors.New("release history rewritten"))

// ErrNoSuchRelease means the release asked for is not in the history.
var ErrNoSuchRelease = errors.New("no such release")

// HistoryError is VerifyHistory's failure: how many releases failed, and
// their errors (reported one by one already), which errors.Is and
// errors.As see through: it is a refusal when one of them is.
type HistoryError struct {
	Failed int
	Errs   []error
}

func (e *HistoryError) Error() string {
	return fmt.Sprintf("%d release(s) failed verification", e.Failed)
}

func (e *HistoryError) Unwrap() []error { return e.Errs }

// VerifyHistory verifies releases as an agent would and more: signatures
// against the pinned root (following the root chain), the hash chain and
// consecutive versions, every node file and image index against the
// manifest, and every chunk of every image whose tag is still advertised.
// Older releases are checked at the time they were created (they may have
// expired since); the newest at now. report is called once per release
// checked; the error says whether everything passed.
func (r *Repository) VerifyHistory(ctx context.Context, o VerifyOptions, report func(VerifyLine)) error {
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	head, err := r.Sync(ctx)
	if err != nil {
		return err
	}
	if head.Releases.IsZero() {
		return fmt.Errorf("%s has no releases yet", r.Remote)
	}
	commits, err := r.Cache.Log(head.Releases, 0)
	if err != nil {
		return err
	}
	// Oldest first.
	for i, j := 0, len(commits)-1; i < j; i, j = i+1, j-1 {
		commits[i], commits[j] = commits[j], commits[i]
	}
	if seen, err := r.Cache.Ref(VerifiedRef); err == nil && !seen.IsZero() {
		found := false
		for _, c := range commits {
			if c.Hash == seen {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("%w: the releases branch no longer contains commit %s, verified before (force-push?)", ErrHistoryRewritten, short(seen))
		}
	}
	trust, err := r.Trust(o.Pinned)
	if err != nil {
		return err
	}
	var failed []error
	var prevSum string
	var prevVersion, prevRoot int64
	for i, c := range commits {
		last := i == len(commits)-1
		line := VerifyLine{Commit: c.Hash}
		err := func() error {
			if i == 0 && len(c.ParentHashes) != 0 || i > 0 && (len(c.ParentHashes) != 1 || c.ParentHashes[0] != commits[i-1].Hash) {
				return schema.Refused(fmt.Errorf("commit %s: release history must be linear", short(c.Hash)))
			}
			b, err := bundle.Read(r.Cache, c.Hash)
			if err != nil {
				return err
			}
			at := now
			if !last {
				if rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest); err == nil {
					at = rel.Created
				}
			}
			v, err := trust.Verify(b, at)
			if err != nil {
				return err
			}
			if err := trust.Accept(v); err != nil {
				return err
			}
			rel := v.Release
			line.Version, line.Created = rel.Version, rel.Created
			line.Signers = v.Signatures.Valid
			reset := rel.Version == 1 && prevVersion > 0 && rel.RootVersion > prevRoot
			if rel.Version != prevVersion+1 && !reset {
				return schema.Refused(fmt.Errorf("release %d follows release %d: versions must be consecutive", rel.Version, prevVersion))
			}
			if rel.Previous != prevSum {
				return schema.Refused(fmt.Errorf("release %d: previous is %q, the sha256 of release %d's manifest is %q", rel.Version, shortHex(rel.Previous), prevVersion, shortHex(prevSum)))
			}
			sum := sha256.Sum256(b.Manifest)
			prevSum, prevVersion, prevRoot = hex.EncodeToString(sum[:]), rel.Version, rel.RootVersion
			if !o.All && (o.Version == 0 && !last || o.Version != 0 && rel.Version != o.Version) {
				return errSkip
			}
			for _, n := range rel.Nodes {
				for _, f := range n.Files {
					if _, err := bundle.ReadNodeFile(r.Cache, c.Hash, n.Name, f); err != nil {
						return err
					}
				}
			}
			for _, img := range rel.Images {
				idx, err := bundle.ReadImageIndex(r.Cache, c.Hash, img)
				if err != nil {
					return err
				}
				if o.SkipChunks {
					continue
				}
				if head.Refs[bundle.ImageTag(img.Digest)].IsZero() {
					line.Note = "image tag pruned: chunks not checked"
					if last {
						return fmt.Errorf("image %s: tag %s missing: agents cannot load the newest release", img.Name, bundle.ImageTag(img.Digest))
					}
					continue
				}
				if err := bundle.FetchImage(ctx, r.Remote, r.Cache, idx, nil); err != nil {
					return err
				}
				if err := bundle.CheckChunks(ctx, r.Cache, idx); err != nil {
					return err
				}
			}
			return nil
		}()
		if errors.Is(err, errSkip) {
			continue
		}
		line.Err = err
		if err != nil {
			failed = append(failed, err)
		}
		report(line)
		if err != nil && line.Version == 0 {
			// Nothing after an unreadable release can be checked.
			break
		}
	}
	if o.Version != 0 && o.Version > prevVersion {
		return fmt.Errorf("%w %d (the newest is %d)", ErrNoSuchRelease, o.Version, prevVersion)
	}
	if len(failed) > 0 {
		return &HistoryError{Failed: len(failed), Errs: failed}
	}
	if o.All {
		old, _ := r.Cache.Ref(VerifiedRef)
		if err := r.Cache.SetRef(VerifiedRef, old, head.Releases); err != nil {
			return err
		}
	}
	return nil
}

var errSkip = errors.New("not selected")

// TrustDir is the directory of the cache that holds every root verify,
// status and mirror accepted beyond the pinned one, as an agent's state
// does: later runs start their chain walks from the newest and refuse a
// repository whose roots differ from them.
const TrustDir = "pullship-roots"

// Trust is the roots this cache trusts, from pinned on.
func (r *Repository) Trust(pinned *schema.Root) (*bundle.Trust, error) {
	return bundle.OpenTrust(filepath.Join(r.Cache.Dir(), TrustDir), pinned)
}
