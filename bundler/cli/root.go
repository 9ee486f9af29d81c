// Package cli is the pullship command line: one file per command
// (cmd_<verb>.go), each a thin layer that parses flags into an options
// struct and calls its runX function, which calls the bundler or schema
// package that does the work. The commands are listed in [NewRoot]; errors
// map to exit codes in exitcodes.go. main only runs [Main] and exits with
// its code.
package cli

import (
	"github.com/spf13/cobra"

	"github.com/pullship/pullship/bundler/shared/cliutil"
)

// Env is what a command reads and writes besides its flags; tests replace it.
type Env = cliutil.Env

// DefaultEnv is the process's own standard streams and environment.
func DefaultEnv() Env { return cliutil.DefaultEnv() }

// NewRoot builds the pullship command tree.
func NewRoot(env Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "pullship",
		Short: "Cut signed releases of a containerised service and watch a fleet converge on them",
		Long: `pullship is the release side of a GitOps pull agent. A release is one signed git
commit holding a container image (as content-addressed chunks) and the exact
rendered config of every node; pullship-agent on each host pulls, verifies and
applies it, and reports back to git.

` + exitCodes.Help(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return cliutil.Usage(err) })
	root.AddCommand(
		newKeygenCmd(env),
		newRootCmd(env),
		newSignCmd(env),
		newVerifyFileCmd(env),
		newInitCmd(env),
		newSecretCmd(env),
		newRenderCmd(env),
		newReleaseCmd(env),
		newVerifyCmd(env),
		newLogCmd(env),
		newDiffCmd(env),
		newStatusCmd(env),
		newPruneCmd(env),
		newMirrorCmd(env),
	)
	return root
}

// Main runs pullship with args and returns the process exit code.
func Main(env Env, args []string) int {
	root := NewRoot(env)
	root.SetArgs(args)
	return exitCodes.Exit(env, "pullship", root.Execute())
}
