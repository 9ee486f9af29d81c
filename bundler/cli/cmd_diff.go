package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newDiffCmd) }

func newDiffCmd(env Env) *cobra.Command {
	var rf repoFlags
	cmd := &cobra.Command{
		Use:   "diff --repo REPO A B",
		Short: "Show what changes between two releases",
		Long: `diff prints, for releases A and B (version numbers), each node's changed
container settings and files (as line diffs), and each image's changed tar
entries with the chunk bytes B adds. It reads the repository without
verifying signatures; use verify for that.`,
		Example: `  pullship diff --repo /srv/git/fleet.git 3 4`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v [2]int64
			for i, a := range args {
				n, err := strconv.ParseInt(a, 10, 64)
				if err != nil || n < 1 {
					return withCode(ExitUsage, fmt.Errorf("diff: %q is not a release version", a))
				}
				v[i] = n
			}
			r, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			return r.Diff(cmd.Context(), v[0], v[1], env.Stdout)
		},
	}
	rf.register(cmd)
	return cmd
}
