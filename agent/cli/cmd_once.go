package cli

import (
	"context"
	"fmt"

	"github.com/pullship/pullship/agent"
)

type onceOptions struct{ config string }

func newOnceCmd(a *app) *command {
	var o onceOptions
	c := newCommand("once", "Run one pass: poll, verify, apply, then exit",
		`once polls the remotes, verifies the newest release and applies it to every node
of this host that is not on it yet, then exits. The exit code says what
happened: 0 converged on a new release, 10 nothing to do, 1 failed (rolled
back, or no remote reachable), 3 refused by verification (nothing applied).`,
		`  pullship-agent once --config /etc/pullship/agent.toml`)
	configFlag(c, &o.config)
	c.run = func(ctx context.Context, _ []string) error { return a.runOnce(ctx, o) }
	return c
}

func (a *app) runOnce(ctx context.Context, o onceOptions) error {
	ag, _, closeAll, err := a.open(ctx, o.config, agent.Options{})
	if err != nil {
		return err
	}
	defer closeAll()
	out, err := ag.Once(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.env.Stdout, out)
	return passError(out, nil)
}
