package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus metrics.
type Metrics struct {
	LastPoll      prometheus.Gauge
	Applied       *prometheus.GaugeVec
	VerifyFailed  *prometheus.CounterVec
	Rollbacks     *prometheus.CounterVec
	ApplySeconds  prometheus.Histogram
	RemoteErrors  *prometheus.CounterVec
	Reattachments *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		LastPoll: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pullship_last_successful_poll_timestamp_seconds",
			Help: "Unix time of the last poll that reached a remote and verified its release."}),
		Applied: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pullship_applied_version",
			Help: "Release version applied and healthy on each node."}, []string{"node"}),
		VerifyFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pullship_verification_failures_total",
			Help: "Releases refused by verification, per remote."}, []string{"remote"}),
		Rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pullship_rollbacks_total",
			Help: "Applies rolled back after a failed health check, per node."}, []string{"node"}),
		ApplySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pullship_apply_duration_seconds",
			Help: "Time from the start of an apply to healthy or rolled back.", Buckets: prometheus.ExponentialBuckets(0.5, 2, 12)}),
		RemoteErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pullship_remote_errors_total",
			Help: "Polls that could not reach or read a remote."}, []string{"remote"}),
		Reattachments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pullship_reattachments_total",
			Help: "Network addresses re-attached after they were found missing."}, []string{"node"}),
	}
	if reg != nil {
		reg.MustRegister(m.LastPoll, m.Applied, m.VerifyFailed, m.Rollbacks, m.ApplySeconds, m.RemoteErrors, m.Reattachments)
	}
	return m
}
