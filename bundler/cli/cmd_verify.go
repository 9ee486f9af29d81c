package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/shared/cliutil"
)

type verifyOptions struct {
	repoFlags
	root       string
	version    int64
	all        bool
	skipChunks bool
}

func newVerifyCmd(env Env) *cobra.Command {
	var o verifyOptions
	cmd := &cobra.Command{
		Use:   "verify --repo REPO --root ROOT [--version N | --all]",
		Short: "Verify one release or the whole signed history",
		Long: `verify checks releases the way an agent does, against the trust root you pin:
the root chain, the signature threshold, the hash chain and consecutive
versions, every node file and image index against the manifest, and every
chunk of every image (fetched for the purpose). It prints one line per release
and exits 3 when a check refuses one, 1 when a remote or the cache failed (the
line says which), 1 when --version names no release. With --all it also
remembers the newest release in its cache, so a later run notices a history
rewritten by force-push.`,
		Example: `  pullship verify --repo /srv/git/fleet.git --root root-1.toml
  pullship verify --repo http://git.example.com/fleet.git --root root-1.toml --all`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runVerify(cmd.Context(), env, o) },
	}
	o.repoFlags.register(cmd)
	cmd.Flags().StringVar(&o.root, "root", "", "the trust root you pin (root-N.toml)")
	cmd.Flags().Int64Var(&o.version, "version", 0, "verify this release (default: the newest)")
	cmd.Flags().BoolVar(&o.all, "all", false, "verify every release, oldest first")
	cmd.Flags().BoolVar(&o.skipChunks, "skip-chunks", false, "do not fetch and check image chunks")
	cmd.MarkFlagsMutuallyExclusive("version", "all")
	return cmd
}

func runVerify(ctx context.Context, env Env, o verifyOptions) error {
	if o.version < 0 {
		return cliutil.Usage(fmt.Errorf("--version %d: a release version is 1 or more", o.version))
	}
	pinned, err := loadRoot(o.root)
	if err != nil {
		return err
	}
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	err = r.VerifyHistory(ctx, bundler.VerifyOptions{Pinned: pinned, Version: o.version, All: o.all, SkipChunks: o.skipChunks},
		func(l bundler.VerifyLine) {
			if l.Err != nil {
				v := "release ?"
				if l.Version != 0 {
					v = fmt.Sprintf("release %d", l.Version)
				}
				fmt.Fprintf(env.Stdout, "FAIL %s %s: %v\n", v, shortID(l.Commit.String()), l.Err)
				return
			}
			note := ""
			if l.Note != "" {
				note = " (" + l.Note + ")"
			}
			fmt.Fprintf(env.Stdout, "ok   release %d %s %s signed by %s%s\n", l.Version, shortID(l.Commit.String()),
				l.Created.Format(time.RFC3339), strings.Join(shortIDs(l.Signers), ", "), note)
		})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	return nil
}
