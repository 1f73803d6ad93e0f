package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Reasons a router frame is rejected: the label values of
// indexgate_controller_frames_rejected_total.
const (
	rejectMalformed   = "malformed"
	rejectTooLarge    = "too_large"
	rejectUnexpected  = "unexpected"
	rejectVersion     = "version"
	rejectBadHello    = "bad_hello"
	rejectUnsupported = "unsupported"
	// rejectTLS: the TLS handshake failed (plaintext client, certificate
	// refused); no Error frame can be sent.
	rejectTLS = "tls"
	// rejectUnauthorized: the Hello's RouterID is not the certificate's.
	rejectUnauthorized = "unauthorized"
)

// metrics are the controller's Prometheus collectors, registered on the
// controller's own registry (served at /metrics).
type metrics struct {
	committed      prometheus.Counter
	batchSize      prometheus.Histogram
	commitDuration prometheus.Histogram
	commitFailures prometheus.Counter
	fullStates     prometheus.Counter
	replays        prometheus.Counter
	rejected       *prometheus.CounterVec
	// haRequestsPerEntry: write requests merged into one raft entry.
	haRequestsPerEntry prometheus.Histogram
	// migrationPause: how long the last migration paused writes.
	migrationPause prometheus.Gauge
	// migrationSnapshot: bytes of the store image the last migration to
	// HA seeded into raft.
	migrationSnapshot prometheus.Gauge
	// adminUnauthorized: admin requests refused for a missing or wrong
	// token.
	adminUnauthorized prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, c *Controller) (*metrics, error) {
	const ns, sub = "indexgate", "controller"
	m := &metrics{
		committed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "change_sets_committed_total",
			Help: "Change sets committed to the store.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "commit_batch_size",
			Help: "Change sets per store transaction (group commit).",
			// Powers of two up to DefaultMaxCommitBatch.
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "commit_duration_seconds",
			Help: "Duration of one group-commit store transaction, fsync included.",
			// 100 µs to about 3 s: a NoSync commit sits at the bottom, an
			// fsync on a busy disk at the top.
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 15),
		}),
		commitFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "commit_failures_total",
			Help: "Store transactions that failed; none of their change sets were committed.",
		}),
		fullStates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "full_states_sent_total",
			Help: "Full state transfers completed to routers.",
		}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "replays_total",
			Help: "Router sessions resumed by replaying the change log.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "frames_rejected_total",
			Help: "Router connections refused and frames answered with an Error frame and a closed connection, by reason.",
		}, []string{"reason"}),
		haRequestsPerEntry: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "ha_requests_per_entry",
			Help:    "Write requests merged into one raft entry (one change set) by the HA engine.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		migrationPause: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "migration_pause_seconds",
			Help: "How long the last migration on this node paused writes.",
		}),
		migrationSnapshot: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "migration_snapshot_bytes",
			Help: "Size of the store image the last migration to HA mode on this node seeded into raft.",
		}),
		adminUnauthorized: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "admin_unauthorized_total",
			Help: "Admin API requests to mutating endpoints refused (401) for a missing or wrong token.",
		}),
	}
	for _, r := range []string{rejectMalformed, rejectTooLarge, rejectUnexpected, rejectVersion, rejectBadHello, rejectUnsupported, rejectTLS, rejectUnauthorized} {
		m.rejected.WithLabelValues(r)
	}
	cs := []prometheus.Collector{
		m.committed, m.batchSize, m.commitDuration, m.commitFailures, m.fullStates, m.replays, m.rejected,
		m.haRequestsPerEntry, m.migrationPause, m.migrationSnapshot, m.adminUnauthorized,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "leader",
			Help: "1 while this node is the raft leader and accepts writes (HA mode), else 0.",
		}, func() float64 {
			if h := c.ha.Load(); h != nil && h.isReady() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "index",
			Help: "The controller's last committed index of its current mode.",
		}, func() float64 { return float64(c.hub.lastIndex()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "routers_connected",
			Help: "Routers with an established session.",
		}, func() float64 { return float64(c.routers.connected()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "serving",
			Help: "1 while this controller serves routers (else it redirects them), else 0.",
		}, func() float64 {
			if c.serving() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "tls",
			Help: "1 when routers and raft peers are served over mutual TLS, 0 when --insecure.",
		}, func() float64 {
			if c.cfg.Insecure {
				return 0
			}
			return 1
		}),
		&lagCollector{c: c, desc: prometheus.NewDesc(
			prometheus.BuildFQName(ns, sub, "router_lag"),
			"How many indexes a connected router's last ack trails the controller's index.",
			[]string{"router"}, nil)},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	for _, col := range cs {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// lagCollector reports each connected router's lag at scrape time, so the
// gauge follows the controller's index between acks and a disconnected
// router's series disappears instead of going stale.
type lagCollector struct {
	c    *Controller
	desc *prometheus.Desc
}

func (l *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

func (l *lagCollector) Collect(ch chan<- prometheus.Metric) {
	index := l.c.hub.lastIndex()
	for _, r := range l.c.routers.snapshot(index) {
		if r.Connected {
			ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(r.Lag), r.ID)
		}
	}
}
