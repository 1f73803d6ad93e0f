package raftnode

import (
	"fmt"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus collectors. The gauges read raft at
// scrape time, so nothing is updated on the apply path but the histogram
// and the failure counter.
type metrics struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector

	applyDuration prometheus.Histogram
	applyFailures *prometheus.CounterVec
	leaderChanges prometheus.Counter
}

// Reasons for indexgate_raft_apply_failures_total.
const (
	failNotLeader = "not_leader"
	failLost      = "leadership_lost"
	failShutdown  = "shutdown"
	failCanceled  = "canceled"
	failOther     = "other"
)

func newMetrics(reg prometheus.Registerer, n *Node) (*metrics, error) {
	r := n.raft
	const ns, sub = "indexgate", "raft"
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: name, Help: help,
		}, f)
	}
	m := &metrics{
		reg: reg,
		// From 1 ms to about 16 s in powers of two: a commit costs one or
		// two fsyncs, and the top buckets catch elections and slow disks.
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "apply_duration_seconds",
			Help:    "Time from Apply on the leader until the entry was applied to the local state machine.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		applyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "apply_failures_total",
			Help: "Apply calls that failed, by reason (not_leader, leadership_lost, shutdown, canceled, other).",
		}, []string{"reason"}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "leadership_changes_total",
			Help: "Times this node gained or lost leadership.",
		}),
	}
	for _, reason := range []string{failNotLeader, failLost, failShutdown, failCanceled, failOther} {
		m.applyFailures.WithLabelValues(reason)
	}
	if reg == nil {
		return m, nil
	}
	m.collectors = []prometheus.Collector{
		m.applyDuration, m.applyFailures, m.leaderChanges,
		gauge("is_leader", "1 if this node is the raft leader, else 0.", func() float64 {
			if r.State() == raft.Leader {
				return 1
			}
			return 0
		}),
		gauge("term", "Current raft term.", func() float64 { return float64(r.CurrentTerm()) }),
		gauge("last_index", "Index of the last entry in the local raft log.", func() float64 { return float64(r.LastIndex()) }),
		gauge("commit_index", "Highest raft index known to be committed.", func() float64 { return float64(r.CommitIndex()) }),
		gauge("applied_index", "Raft index up to which the local state machine has applied every entry.", func() float64 { return float64(n.AppliedIndex()) }),
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("raftnode: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) unregister() {
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
