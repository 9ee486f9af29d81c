package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/agent/engine"
)

// DefaultConfig is where pullship-agent looks for agent.toml.
const DefaultConfig = "/etc/pullship/agent.toml"

func configFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "config", "c", DefaultConfig, "agent.toml")
}

// open loads the config, connects to the engine and opens the agent.
func open(ctx context.Context, env Env, path string, o agent.Options) (*agent.Agent, *config.Config, func(), error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, nil, withCode(ExitUsage, err)
	}
	if cfg.DockerHost != "" {
		os.Setenv("DOCKER_HOST", cfg.DockerHost)
	}
	eng, err := engine.NewDocker()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := eng.Ping(ctx); err != nil {
		eng.Close()
		return nil, nil, nil, fmt.Errorf("%w (is Docker running? set docker_host in %s)", err, path)
	}
	o.Engine = eng
	if o.Logger == nil {
		o.Logger = newLogger(env.Stderr, cfg.LogFormat)
	}
	a, err := agent.New(cfg, o)
	if err != nil {
		eng.Close()
		return nil, nil, nil, err
	}
	return a, cfg, func() { a.Close(); eng.Close() }, nil
}

func newLogger(w io.Writer, format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// passCode maps a pass's error to an exit code.
func passCode(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, agent.ErrVerify):
		return withCode(ExitVerify, err)
	case errors.Is(err, agent.ErrRolledBack):
		return withCode(ExitFailure, err)
	}
	return err
}
