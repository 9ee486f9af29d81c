package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pullship/pullship/bundler/shared/cliutil"

	"github.com/spf13/cobra"
)

type pruneOptions struct {
	repoFlags
	keep   int
	dryRun bool
}

func newPruneCmd(env Env) *cobra.Command {
	var o pruneOptions
	cmd := &cobra.Command{
		Use:   "prune --repo REPO --keep N",
		Short: "Remove the image tags the newest N releases do not need",
		Long: `prune deletes the image tags (refs/tags/pullship/images/*) that none of the
newest N releases uses, with compare-and-swap deletes, and prints each one.
The signed release history, the trust root and the status branches are never
touched, and the newest release's images always stay (N >= 1). Agents that
are more than N releases behind can still verify the history but must move to
a kept release. The server reclaims the space at its next garbage collection
(git gc --prune=now in the bare repository; see docs/mirror.md).`,
		Example: `  pullship prune --repo /srv/git/fleet.git --keep 3
  pullship prune --repo https://git.example.com/fleet.git --keep 5 --dry-run`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPrune(cmd.Context(), env, o) },
	}
	o.repoFlags.register(cmd)
	cmd.Flags().IntVar(&o.keep, "keep", 0, "keep the images of the newest N releases")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what would be removed, remove nothing")
	return cmd
}

func runPrune(ctx context.Context, env Env, o pruneOptions) error {
	if o.keep < 1 {
		return cliutil.Usage(errors.New("prune: --keep N is required, N >= 1"))
	}
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	res, err := r.Prune(ctx, o.keep, o.dryRun)
	if err != nil {
		return err
	}
	verb := "removed"
	if o.dryRun {
		verb = "would remove"
	}
	for _, p := range res.Removed {
		used := "used by no release in the recent history"
		if p.Image != "" {
			used = fmt.Sprintf("image %s, last used by release %d", p.Image, p.Version)
		}
		fmt.Fprintf(env.Stdout, "%s %s (%s)\n", verb, strings.TrimPrefix(p.Ref, "refs/tags/"), used)
	}
	fmt.Fprintf(env.Stdout, "%s %d image tag(s); kept %d for the newest %d release(s) (newest: release %d)\n",
		verb, len(res.Removed), len(res.Kept), o.keep, res.Newest)
	return nil
}
