package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Run polls every interval until ctx ends. While no remote answers it backs
// off with jitter (up to 10 intervals); the running service is never
// touched because a remote is unreachable. A pass under way when ctx ends
// is finished (or rolled back) before Run returns.
func (a *Agent) Run(ctx context.Context) error {
	failures := 0
	for {
		out, err := a.Once(context.WithoutCancel(ctx))
		if ctx.Err() != nil {
			return nil
		}
		wait := a.cfg.PollInterval.Duration
		switch {
		case errors.Is(err, ErrNoRemote):
			failures++
			wait = backoff(wait, failures)
			a.log.Warn("no remote reachable; backing off", "retry_in", wait.Round(time.Millisecond), "err", err)
		case err != nil:
			failures = 0
			a.log.Error("pass failed", "outcome", out.String(), "err", err)
		default:
			failures = 0
			if out != Nothing {
				a.log.Info("pass finished", "outcome", out.String())
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// backoff doubles base per failure up to 10×base, with ±20% jitter so that
// a fleet does not hammer a recovering server in lockstep.
func backoff(base time.Duration, failures int) time.Duration {
	d := base
	for i := 1; i < failures && d < 10*base; i++ {
		d *= 2
	}
	d = min(d, 10*base)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
