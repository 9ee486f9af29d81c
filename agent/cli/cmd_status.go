package cli

import (
	"github.com/spf13/cobra"

	"github.com/pullship/pullship/agent"
)

func init() { commands = append(commands, newStatusCmd) }

func newStatusCmd(env Env) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what this host's nodes run, as their next status report would say",
		Long: `status observes each node of this host — the release applied and accepted, the
container, the network address, the health check and the cluster view — and
prints it as status.toml, without applying anything or contacting a remote.`,
		Example: `  pullship-agent status --config /etc/pullship/agent.toml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, _, closeAll, err := open(cmd.Context(), env, cfgPath, agent.Options{})
			if err != nil {
				return err
			}
			defer closeAll()
			return a.Status(cmd.Context(), env.Stdout)
		},
	}
	configFlag(cmd, &cfgPath)
	return cmd
}
