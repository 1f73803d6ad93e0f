package router

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/indexgate/indexgate/abi"
)

// metrics are the router's Prometheus series (namespace "indexgate",
// subsystem "router"). The counters count since the process started; the
// persisted totals are in the status API.
type metrics struct {
	applied, skipped *prometheus.CounterVec
	resyncs          *prometheus.CounterVec
	fullResyncs      prometheus.Counter
	initialSyncs     prometheus.Counter
	commitFailures   prometheus.Counter
	lastApplied      *prometheus.GaugeVec
	entities         prometheus.Gauge
	connected        prometheus.Gauge
	connects         *prometheus.CounterVec
	controllerIndex  prometheus.Gauge
	commitSeconds    prometheus.Histogram
	// adminUnauthorized counts mutating admin requests refused with 401.
	adminUnauthorized prometheus.Counter
	// filterDirSwaps counts what the filter directory watcher did with a
	// module file, by type and result.
	filterDirSwaps *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "indexgate", "router"
	m := &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "changesets_applied_total",
			Help: "Change sets committed to the model, by index type.",
		}, []string{"type"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "changesets_skipped_total",
			Help: "Change sets a filter skipped as duplicate or stale, by index type.",
		}, []string{"type"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "resyncs_total",
			Help: "Resync verdicts that ended a session to fetch a full state, by index type and reason.",
		}, []string{"type", "reason"}),
		fullResyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "full_resyncs_total",
			Help: "Full states committed over a model that already had a position.",
		}),
		initialSyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "initial_syncs_total",
			Help: "Full states that bootstrapped a router with no position yet.",
		}),
		commitFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "commit_failures_total",
			Help: "Store transactions that failed; the filters were restored and the session restarted.",
		}),
		lastApplied: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "last_applied_index",
			Help: "The router's committed position, by index type.",
		}, []string{"type"}),
		entities: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "entities",
			Help: "Entities in the router's model.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "connected",
			Help: "1 while a session with a controller is established, else 0.",
		}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "connection_attempts_total",
			Help: "Connection attempts to controllers, by result (ok, dial_error, tls_error, handshake_error, redirect, refused).",
		}, []string{"result"}),
		controllerIndex: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "controller_index",
			Help: "The controller's last committed index, from its Welcome and heartbeats.",
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "commit_duration_seconds",
			Help:    "Time to decide and commit one frame (batch, mode change, full-state step).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}),
		adminUnauthorized: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "admin_unauthorized_total",
			Help: "Mutating admin API requests refused for a missing or wrong bearer token.",
		}),
		filterDirSwaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "filter_dir_swaps_total",
			Help: "Modules found in the filter directory, by index type and result (ok, unchanged, refused: trust policy, failed: did not load or swap).",
		}, []string{"type", "result"}),
	}
	for _, c := range []prometheus.Collector{
		m.applied, m.skipped, m.resyncs, m.fullResyncs, m.initialSyncs, m.commitFailures, m.lastApplied,
		m.entities, m.connected, m.connects, m.controllerIndex, m.commitSeconds, m.adminUnauthorized, m.filterDirSwaps,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Export every series from the start, so a dashboard sees zeros rather
	// than gaps before the first change set.
	for _, t := range abi.IndexTypes {
		m.applied.WithLabelValues(t.String())
		m.skipped.WithLabelValues(t.String())
		m.lastApplied.WithLabelValues(t.String())
		for _, res := range []string{"ok", "unchanged", "refused", "failed"} {
			m.filterDirSwaps.WithLabelValues(t.String(), res)
		}
	}
	return m, nil
}
