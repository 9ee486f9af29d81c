package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/shared/repo"
)

func init() { commands = append(commands, newInitCmd) }

func newInitCmd(env Env) *cobra.Command {
	var rf repoFlags
	var rootPath string
	cmd := &cobra.Command{
		Use:   "init --repo REPO --root root-1.toml",
		Short: "Create a release repository and publish its trust root",
		Long: `init prepares a release repository: when REPO is a directory that does not exist
(or is empty) it creates a bare git repository there; a git URL must name an
existing (empty) repository on a server. It then publishes the trust root as
refs/pullship/root, the root the first release is signed for.`,
		Example: `  pullship init --repo /srv/git/fleet-releases.git --root root-1.toml
  pullship init --repo http://git.example.com/fleet-releases.git --root root-1.toml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rf.repo == "" || rootPath == "" {
				return withCode(ExitUsage, errors.New("init: --repo and --root are required"))
			}
			if err := bundler.InitRepo(cmd.Context(), rf.repo, rootPath, rf.cache, repo.Options{}); err != nil {
				return verifyCode(fmt.Errorf("init: %w", err))
			}
			fmt.Fprintf(env.Stdout, "initialised %s with trust root %s\n", rf.repo, rootPath)
			return nil
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&rootPath, "root", "", "trust root file (root-N.toml, with root-N.toml.sig beside it)")
	return cmd
}
