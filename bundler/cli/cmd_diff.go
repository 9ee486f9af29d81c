package cli

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/pullship/pullship/bundler/shared/cliutil"
)

type diffOptions struct {
	repoFlags
	a, b int64
}

func newDiffCmd(env Env) *cobra.Command {
	var o diffOptions
	cmd := &cobra.Command{
		Use:   "diff --repo REPO A B",
		Short: "Show what changes between two releases",
		Long: `diff prints, for releases A and B (version numbers), each node's changed
container settings and files (as line diffs), and each image's changed tar
entries with the chunk bytes B adds. It reads the repository without
verifying signatures; use verify for that.`,
		Example: `  pullship diff --repo /srv/git/fleet.git 3 4`,
		Args:    exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v [2]int64
			for i, a := range args {
				n, err := strconv.ParseInt(a, 10, 64)
				if err != nil || n < 1 {
					return cliutil.Usage(fmt.Errorf("diff: %q is not a release version", a))
				}
				v[i] = n
			}
			o.a, o.b = v[0], v[1]
			return runDiff(cmd.Context(), env, o)
		},
	}
	o.repoFlags.register(cmd)
	return cmd
}

func runDiff(ctx context.Context, env Env, o diffOptions) error {
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	return r.Diff(ctx, o.a, o.b, env.Stdout)
}
