package cli

import (
	"context"

	"github.com/pullship/pullship/agent"
)

type planOptions struct{ config string }

func newPlanCmd(a *app) *command {
	var o planOptions
	c := newCommand("plan", "Show what the next pass would change, touching nothing",
		`plan polls and verifies like once, then prints for each node what it would do
(load the image, create or replace files, recreate or reload the container)
without changing anything on the host. It exits like once: 1 when no remote
could be read, 3 when verification refused the release.`,
		`  pullship-agent plan --config /etc/pullship/agent.toml`)
	configFlag(c, &o.config)
	c.run = func(ctx context.Context, _ []string) error { return a.runPlan(ctx, o) }
	return c
}

func (a *app) runPlan(ctx context.Context, o planOptions) error {
	ag, _, closeAll, err := a.open(ctx, o.config, agent.Options{})
	if err != nil {
		return err
	}
	defer closeAll()
	return ag.Plan(ctx, a.env.Stdout)
}
