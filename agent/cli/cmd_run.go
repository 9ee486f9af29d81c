package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/bundler/shared/cliutil"
)

type runOptions struct{ config string }

func newRunCmd(a *app) *command {
	var o runOptions
	c := newCommand("run", "Run the agent: poll and converge until stopped",
		`run is the daemon: it polls every poll_interval, applies new releases, serves
Prometheus metrics on metrics_addr, and stops cleanly on SIGINT or SIGTERM:
a pass under way (an image load included) is finished, or rolled back when
its health check fails, before run exits 0; no new pass starts. It fails at
start (exit 1) when metrics_addr cannot be listened on.`,
		`  pullship-agent run --config /etc/pullship/agent.toml`)
	configFlag(c, &o.config)
	c.run = func(ctx context.Context, _ []string) error { return a.runRun(ctx, o) }
	return c
}

func (a *app) runRun(ctx context.Context, o runOptions) error {
	ctx, stop := cliutil.SignalContext(ctx)
	defer stop()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ag, cfg, closeAll, err := a.open(ctx, o.config, agent.Options{Metrics: agent.NewMetrics(reg)})
	if err != nil {
		return err
	}
	defer closeAll()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	metricsFailed := make(chan error, 1)
	if cfg.MetricsAddr != "" {
		// Listen before the first pass, so that a taken address fails the
		// start instead of a goroutine later.
		l, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics_addr %s: %w", cfg.MetricsAddr, err)
		}
		srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				metricsFailed <- fmt.Errorf("metrics on %s: %w", cfg.MetricsAddr, err)
				cancel()
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		}()
	}
	go ag.Watch(ctx)
	if err := ag.Run(ctx); err != nil {
		return err
	}
	select {
	case err := <-metricsFailed:
		return err
	default:
		return nil
	}
}
