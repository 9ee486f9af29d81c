package cli

import (
	"context"
	"errors"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/pullship/pullship/agent"
)

func init() { commands = append(commands, newRunCmd) }

func newRunCmd(env Env) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent: poll and converge until stopped",
		Long: `run is the daemon: it polls every poll_interval, applies new releases, serves
Prometheus metrics on metrics_addr, and stops cleanly on SIGINT or SIGTERM
(an apply under way is finished or rolled back first).`,
		Example: `  pullship-agent run --config /etc/pullship/agent.toml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			a, cfg, closeAll, err := open(ctx, env, cfgPath, agent.Options{Metrics: agent.NewMetrics(reg)})
			if err != nil {
				return err
			}
			defer closeAll()
			if cfg.MetricsAddr != "" {
				srv := &http.Server{Addr: cfg.MetricsAddr, Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
				go func() {
					if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
						stop()
					}
				}()
				defer func() {
					sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					srv.Shutdown(sctx)
				}()
			}
			go a.Watch(ctx)
			return a.Run(ctx)
		},
	}
	configFlag(cmd, &cfgPath)
	return cmd
}
