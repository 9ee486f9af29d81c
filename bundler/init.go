package bundler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// ErrAlreadyInitialised means init found a release or a root already there.
var ErrAlreadyInitialised = errors.New("repository already holds a pullship root or releases")

// InitRepo creates a bare repository at url when it is a directory path that
// does not exist yet (or is empty), then publishes the trust root rootFile
// (with rootFile.sig when present) as refs/pullship/root, the root the first
// release is signed for.
func InitRepo(ctx context.Context, url, rootFile, cacheDir string, opts repo.Options) error {
	if !strings.Contains(url, "://") {
		ents, err := os.ReadDir(url)
		if errors.Is(err, os.ErrNotExist) || (err == nil && len(ents) == 0) {
			if _, err := repo.Init(url); err != nil {
				return err
			}
		} else if err != nil {
			return fmt.Errorf("init %s: %w", url, err)
		}
	}
	data, err := os.ReadFile(rootFile)
	if err != nil {
		return fmt.Errorf("read root: %w", err)
	}
	root, err := schema.ParseRoot(rootFile, data)
	if err != nil {
		return err
	}
	if err := root.CheckExpiry(time.Now()); err != nil {
		return fmt.Errorf("root %s: %w", rootFile, err)
	}
	sig, err := os.ReadFile(schema.SigFileName(rootFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read root signatures: %w", err)
	}
	if sig != nil {
		if _, err := schema.VerifySigned(root, rootFile, data, sig, time.Now()); err != nil {
			return err
		}
	}
	r, err := Open(ctx, url, cacheDir, opts)
	if err != nil {
		return err
	}
	refs, err := r.Remote.Refs(ctx)
	if err != nil {
		return err
	}
	if !refs[bundle.RootRef].IsZero() || !refs[bundle.ReleasesRef].IsZero() {
		return fmt.Errorf("init %s: %w", r.Remote, ErrAlreadyInitialised)
	}
	objs := repo.NewObjectStream(nil)
	tb := repo.NewTreeBuilder()
	name := schema.RootFileName(root.Version)
	if err := tb.Add(bundle.RootDir+"/"+name, filemode.Regular, objs.AddBytes(plumbing.BlobObject, data)); err != nil {
		return err
	}
	if sig != nil {
		if err := tb.Add(bundle.RootDir+"/"+schema.SigFileName(name), filemode.Regular, objs.AddBytes(plumbing.BlobObject, sig)); err != nil {
			return err
		}
	}
	tree, err := tb.Build(objs)
	if err != nil {
		return err
	}
	who := repo.Signature{Name: "pullship", Email: "pullship@localhost", When: time.Now().UTC().Truncate(time.Second)}
	cdata, commit, err := repo.EncodeCommit(repo.Commit{Tree: tree, Author: who, Committer: who,
		Message: fmt.Sprintf("pullship root %d: %d keys, threshold %d\n", root.Version, len(root.Keys), root.Threshold)})
	if err != nil {
		return err
	}
	objs.AddBytes(plumbing.CommitObject, cdata)
	_, err = r.Remote.Push(ctx, []repo.RefUpdate{{Name: bundle.RootRef, New: commit}}, objs)
	return err
}
