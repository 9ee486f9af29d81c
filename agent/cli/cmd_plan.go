package cli

import (
	"github.com/spf13/cobra"

	"github.com/pullship/pullship/agent"
)

func init() { commands = append(commands, newPlanCmd) }

func newPlanCmd(env Env) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what the next pass would change, touching nothing",
		Long: `plan polls and verifies like once, then prints for each node what it would do
(load the image, create or replace files, recreate or reload the container)
without changing anything on the host.`,
		Example: `  pullship-agent plan --config /etc/pullship/agent.toml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, _, closeAll, err := open(cmd.Context(), env, cfgPath, agent.Options{})
			if err != nil {
				return err
			}
			defer closeAll()
			return passCode(a.Plan(cmd.Context(), env.Stdout))
		},
	}
	configFlag(cmd, &cfgPath)
	return cmd
}
