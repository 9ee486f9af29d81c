package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pullship/pullship/agent"
)

func init() { commands = append(commands, newOnceCmd) }

func newOnceCmd(env Env) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "once",
		Short: "Run one pass: poll, verify, apply, then exit",
		Long: `once polls the remotes, verifies the newest release and applies it to every node
of this host that is not on it yet, then exits. The exit code says what
happened: 0 converged on a new release, 10 nothing to do, 1 failed (rolled
back), 3 refused by verification (nothing applied).`,
		Example: `  pullship-agent once --config /etc/pullship/agent.toml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, _, closeAll, err := open(cmd.Context(), env, cfgPath, agent.Options{})
			if err != nil {
				return err
			}
			defer closeAll()
			out, err := a.Once(cmd.Context())
			if err != nil {
				return passCode(err)
			}
			fmt.Fprintln(env.Stdout, out)
			if out == agent.Nothing {
				return &ExitError{Code: ExitNothingToDo}
			}
			return nil
		},
	}
	configFlag(cmd, &cfgPath)
	return cmd
}
