package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/spf13/cobra"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/schema"
)

type logOptions struct {
	repoFlags
	root  string
	limit int
}

func newLogCmd(env Env) *cobra.Command {
	var o logOptions
	cmd := &cobra.Command{
		Use:   "log --repo REPO [--root ROOT]",
		Short: "Show the signed release history, one line per release",
		Long: `log prints the releases, newest first: version, commit, time, image, nodes and
the keys that signed. With --root the signatures are verified against that
root (a release that fails is marked FAIL, and log exits 3); without it the
key ids are the ones the signature file claims.`,
		Example: `  pullship log --repo /srv/git/fleet.git --root root-1.toml
  pullship log --repo /srv/git/fleet.git -n 5`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runLog(cmd.Context(), env, o) },
	}
	o.repoFlags.register(cmd)
	cmd.Flags().StringVar(&o.root, "root", "", "verify signatures against this pinned root")
	cmd.Flags().IntVarP(&o.limit, "max-count", "n", 0, "show at most this many releases")
	return cmd
}

func runLog(ctx context.Context, env Env, o logOptions) error {
	var pinned *schema.Root
	if o.root != "" {
		var err error
		if pinned, err = loadRoot(o.root); err != nil {
			return err
		}
	}
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	head, err := r.Sync(ctx)
	if err != nil {
		return err
	}
	if head.Releases.IsZero() {
		fmt.Fprintln(env.Stdout, "no releases yet")
		return nil
	}
	commits, err := r.Cache.Log(head.Releases, o.limit)
	if err != nil {
		return err
	}
	var bad []error
	for _, c := range commits {
		line, err := logLine(r, c.Hash, pinned)
		if err != nil {
			bad = append(bad, err)
		}
		fmt.Fprintln(env.Stdout, line)
	}
	if len(bad) > 0 {
		return fmt.Errorf("log: %w", &bundler.HistoryError{Failed: len(bad), Errs: bad})
	}
	return nil
}

// logLine is the line of one release, and the error that made it a FAIL
// line.
func logLine(r *bundler.Repository, commit plumbing.Hash, pinned *schema.Root) (string, error) {
	id := shortID(commit.String())
	b, err := bundle.Read(r.Cache, commit)
	if err != nil {
		return fmt.Sprintf("FAIL %s: %v", id, err), err
	}
	rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest)
	if err != nil {
		return fmt.Sprintf("FAIL %s: %v", id, err), err
	}
	var signers []string
	status := "    "
	if pinned != nil {
		v, err := bundle.Verify(b, pinned, rel.Created)
		if err != nil {
			return fmt.Sprintf("FAIL %d %s: %v", rel.Version, id, err), err
		}
		signers = v.Signatures.Valid
		status = "ok  "
	} else if sigs, err := schema.ParseSignatures(schema.SigFileName(bundle.ManifestPath), b.Sig); err == nil {
		for _, s := range sigs.Signatures {
			signers = append(signers, s.KeyID)
		}
		status = "?   "
	}
	var imgs []string
	for _, im := range rel.Images {
		imgs = append(imgs, im.Name+"@"+shortID(strings.TrimPrefix(im.Digest, "sha256:")))
	}
	return fmt.Sprintf("%s%-4d %s %s %s nodes=%d signed-by=%s", status, rel.Version, id, rel.Created.Format(time.RFC3339),
		strings.Join(imgs, ","), len(rel.Nodes), strings.Join(shortIDs(signers), ",")), nil
}
