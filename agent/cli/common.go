package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/bundler/shared/cliutil"
)

// DefaultConfig is where pullship-agent looks for agent.toml.
const DefaultConfig = "/etc/pullship/agent.toml"

// app is what every command shares: the streams, and how to reach the
// container engine (the local Docker engine; tests give another).
type app struct {
	env    Env
	engine func(ctx context.Context, cfg *config.Config, cfgPath string) (engine.Engine, func(), error)
}

func configFlag(c *command, p *string) {
	c.stringFlag(p, "config", "c", DefaultConfig, "agent.toml")
}

// dockerEngine connects to the engine agent.toml names (docker_host), else
// the one the environment names.
func dockerEngine(ctx context.Context, cfg *config.Config, cfgPath string) (engine.Engine, func(), error) {
	if cfg.DockerHost != "" {
		os.Setenv("DOCKER_HOST", cfg.DockerHost)
	}
	eng, err := engine.NewDocker()
	if err != nil {
		return nil, nil, err
	}
	if err := eng.Ping(ctx); err != nil {
		eng.Close()
		return nil, nil, fmt.Errorf("%w (is Docker running? set docker_host in %s)", err, cfgPath)
	}
	return eng, func() { eng.Close() }, nil
}

// open loads the config, connects to the engine and opens the agent.
func (a *app) open(ctx context.Context, path string, o agent.Options) (*agent.Agent, *config.Config, func(), error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, nil, cliutil.Usage(err)
	}
	eng, closeEng, err := a.engine(ctx, cfg, path)
	if err != nil {
		return nil, nil, nil, err
	}
	o.Engine = eng
	if o.Logger == nil {
		o.Logger = cliutil.NewLogger(a.env.Stderr, cfg.LogFormat)
	}
	ag, err := agent.New(cfg, o)
	if err != nil {
		closeEng()
		return nil, nil, nil, err
	}
	return ag, cfg, func() { ag.Close(); closeEng() }, nil
}
