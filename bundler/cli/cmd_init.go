package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/shared/cliutil"
)

type initOptions struct {
	repoFlags
	root string
}

func newInitCmd(env Env) *cobra.Command {
	var o initOptions
	cmd := &cobra.Command{
		Use:   "init --repo REPO --root root-1.toml",
		Short: "Create a release repository and publish its trust root",
		Long: `init prepares a release repository: when REPO is a directory that does not exist
(or is empty) it creates a bare git repository there; a git URL must name an
existing (empty) repository on a server. It then publishes the trust root as
refs/pullship/root, the root the first release is signed for.`,
		Example: `  pullship init --repo /srv/git/fleet-releases.git --root root-1.toml
  pullship init --repo http://git.example.com/fleet-releases.git --root root-1.toml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runInit(cmd.Context(), env, o) },
	}
	o.repoFlags.register(cmd)
	cmd.Flags().StringVar(&o.root, "root", "", "trust root file (root-N.toml, with root-N.toml.sig beside it)")
	return cmd
}

func runInit(ctx context.Context, env Env, o initOptions) error {
	if o.repo == "" || o.root == "" {
		return cliutil.Usage(errors.New("init: --repo and --root are required"))
	}
	opts, err := o.options(o.repo)
	if err != nil {
		return err
	}
	if err := bundler.InitRepo(ctx, o.repo, o.root, o.cache, opts); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	fmt.Fprintf(env.Stdout, "initialised %s with trust root %s\n", o.repo, o.root)
	return nil
}
