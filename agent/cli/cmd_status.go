package cli

import (
	"context"

	"github.com/pullship/pullship/agent"
)

type statusOptions struct{ config string }

func newStatusCmd(a *app) *command {
	var o statusOptions
	c := newCommand("status", "Show what this host's nodes run, as their next status report would say",
		`status observes each node of this host — the release applied and accepted, the
container, the network address, the health check and the cluster view — and
prints it as status.toml, without applying anything or contacting a remote.`,
		`  pullship-agent status --config /etc/pullship/agent.toml`)
	configFlag(c, &o.config)
	c.run = func(ctx context.Context, _ []string) error { return a.runStatus(ctx, o) }
	return c
}

func (a *app) runStatus(ctx context.Context, o statusOptions) error {
	ag, _, closeAll, err := a.open(ctx, o.config, agent.Options{})
	if err != nil {
		return err
	}
	defer closeAll()
	return ag.Status(ctx, a.env.Stdout)
}
