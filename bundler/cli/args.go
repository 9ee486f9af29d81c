package cli

import (
	"github.com/pullship/pullship/bundler/shared/cliutil"
	"github.com/spf13/cobra"
)

// exactArgs is cobra.ExactArgs with the usage exit code, which cobra's own
// argument errors do not carry.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		return cliutil.Usage(cobra.ExactArgs(n)(cmd, args))
	}
}

// noArgs is cobra.NoArgs with the usage exit code.
func noArgs(cmd *cobra.Command, args []string) error {
	return cliutil.Usage(cobra.NoArgs(cmd, args))
}
