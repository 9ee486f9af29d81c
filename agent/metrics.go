package agent

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pullship/pullship/bundler/shared/repo"
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
	// Resumes counts, per remote, the image fetch requests that continued
	// after a cut, keeping what arrived before it.
	Resumes *prometheus.CounterVec
	// StoreBytes is what the object store takes on disk after the last
	// pass; StoreBudget its bound (store_budget_mib).
	StoreBytes  prometheus.Gauge
	StoreBudget prometheus.Gauge
	// Wire counts what each remote moved over the network (read from the
	// remotes at each scrape).
	Wire *WireCollector
}

// WireCollector exports each remote's [repo.Counters]: bytes received and
// sent, requests, and operations abandoned by the stall timeout. Remotes
// are labelled by their redacted URL.
type WireCollector struct {
	mu      sync.Mutex
	remotes map[string]func() repo.Counters

	received, sent, requests, stalls *prometheus.Desc
}

func newWireCollector() *WireCollector {
	l := []string{"remote"}
	return &WireCollector{
		remotes: map[string]func() repo.Counters{},
		received: prometheus.NewDesc("pullship_remote_received_bytes_total",
			"Bytes received from a remote over the network (git://, ssh://: the connection's; HTTP: response bodies).", l, nil),
		sent: prometheus.NewDesc("pullship_remote_sent_bytes_total",
			"Bytes sent to a remote over the network (git://, ssh://: the connection's; HTTP: request bodies).", l, nil),
		requests: prometheus.NewDesc("pullship_remote_requests_total",
			"Connections to a remote (git://, ssh://) and HTTP requests.", l, nil),
		stalls: prometheus.NewDesc("pullship_remote_stalls_total",
			"Polls, fetches and pushes abandoned because the remote sent (or took) nothing for stall_timeout.", l, nil),
	}
}

// Watch exports the counters of the remote named name (its redacted URL);
// a later remote of the same name replaces it.
func (w *WireCollector) Watch(name string, counters func() repo.Counters) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.remotes[name] = counters
}

// Describe implements prometheus.Collector.
func (w *WireCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- w.received
	ch <- w.sent
	ch <- w.requests
	ch <- w.stalls
}

// Collect implements prometheus.Collector.
func (w *WireCollector) Collect(ch chan<- prometheus.Metric) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, counters := range w.remotes {
		c := counters()
		ch <- prometheus.MustNewConstMetric(w.received, prometheus.CounterValue, float64(c.BytesRead), name)
		ch <- prometheus.MustNewConstMetric(w.sent, prometheus.CounterValue, float64(c.BytesWritten), name)
		ch <- prometheus.MustNewConstMetric(w.requests, prometheus.CounterValue, float64(c.Requests), name)
		ch <- prometheus.MustNewConstMetric(w.stalls, prometheus.CounterValue, float64(c.Stalls), name)
	}
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
		Resumes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pullship_remote_resumes_total",
			Help: "Image fetch requests that continued after a cut connection, asking only for what had not arrived, per remote."}, []string{"remote"}),
		StoreBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pullship_object_store_bytes",
			Help: "Bytes the object store takes on disk, after the last pass."}),
		StoreBudget: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pullship_object_store_budget_bytes",
			Help: "The object store's budget on disk (store_budget_mib): a fetch beyond it is refused."}),
		Wire: newWireCollector(),
	}
	if reg != nil {
		reg.MustRegister(m.LastPoll, m.Applied, m.VerifyFailed, m.Rollbacks, m.ApplySeconds, m.RemoteErrors, m.Reattachments, m.Resumes,
			m.StoreBytes, m.StoreBudget, m.Wire)
	}
	return m
}
