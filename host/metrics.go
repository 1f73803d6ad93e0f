package host

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/indexgate/indexgate/abi"
)

// TypeStats are the counters of one index type since New.
type TypeStats struct {
	// Decisions by action.
	Apply, Skip, Resync uint64
	// Traps counts module failures of every kind: traps, timeouts, exits,
	// ABI violations, error results where none is allowed.
	Traps uint64
	// Replacements counts failed instances replaced by a fresh instance of
	// the same module.
	Replacements uint64
	// Fallbacks counts failed modules replaced by the fallback module.
	Fallbacks uint64
	// Swaps and SwapFailures count Swap calls that switched modules and
	// those that left the old one serving.
	Swaps, SwapFailures uint64
}

// Stats are the host's counters by index type.
type Stats struct {
	ByType map[abi.IndexType]TypeStats
}

// Total sums the counters of every type.
func (s Stats) Total() TypeStats {
	var t TypeStats
	for _, x := range s.ByType {
		t.Apply += x.Apply
		t.Skip += x.Skip
		t.Resync += x.Resync
		t.Traps += x.Traps
		t.Replacements += x.Replacements
		t.Fallbacks += x.Fallbacks
		t.Swaps += x.Swaps
		t.SwapFailures += x.SwapFailures
	}
	return t
}

// counters are one type's Stats and the Prometheus series they mirror,
// resolved once so that counting on the decision path is a few atomic adds.
type counters struct {
	apply, skip, resync           atomic.Uint64
	traps, replacements, fallback atomic.Uint64
	swaps, swapFailures           atomic.Uint64

	pApply, pSkip, pResync   prometheus.Counter
	pTraps, pReplacements    prometheus.Counter
	pFallbacks               prometheus.Counter
	pSwapOK, pSwapFailed     prometheus.Counter
	pSwapPause, pDecideBatch prometheus.Observer
	shadow                   shadowCounters
}

// metrics are the host's Prometheus collectors.
type metrics struct {
	decisions    *prometheus.CounterVec
	traps        *prometheus.CounterVec
	replacements *prometheus.CounterVec
	fallbacks    *prometheus.CounterVec
	swaps        *prometheus.CounterVec
	swapPause    *prometheus.HistogramVec
	decide       *prometheus.HistogramVec
	shadow       *shadowMetrics
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "indexgate", "filter"
	// From 1 µs to about a quarter of a second in powers of four: a decide
	// batch and a swap pause both live at the low end, and the top buckets
	// catch the pathological cases.
	buckets := prometheus.ExponentialBuckets(1e-6, 4, 10)
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "decisions_total",
			Help: "Filter verdicts by index type and action.",
		}, []string{"type", "action"}),
		traps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "traps_total",
			Help: "Module failures (trap, timeout, exit, ABI violation) by index type.",
		}, []string{"type"}),
		replacements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "replacements_total",
			Help: "Failed module instances replaced by a fresh instance of the same module.",
		}, []string{"type"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "fallbacks_total",
			Help: "Failed modules replaced by the fallback module.",
		}, []string{"type"}),
		swaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "swaps_total",
			Help: "Hot swaps by index type and result (ok, failed).",
		}, []string{"type", "result"}),
		swapPause: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "swap_pause_seconds",
			Help: "Time decisions of the index type waited during a hot swap.", Buckets: buckets,
		}, []string{"type"}),
		decide: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "decide_duration_seconds",
			Help: "Duration of one decide call (a batch of headers).", Buckets: buckets,
		}, []string{"type"}),
		shadow: newShadowMetrics(ns, sub),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range append([]prometheus.Collector{m.decisions, m.traps, m.replacements, m.fallbacks, m.swaps, m.swapPause, m.decide}, m.shadow.collectors()...) {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("host: register metrics: %w", err)
	}
	return m, nil
}

func (m *metrics) counters(t abi.IndexType) *counters {
	ts := t.String()
	return &counters{
		pApply:        m.decisions.WithLabelValues(ts, abi.Apply.String()),
		pSkip:         m.decisions.WithLabelValues(ts, abi.Skip.String()),
		pResync:       m.decisions.WithLabelValues(ts, abi.Resync.String()),
		pTraps:        m.traps.WithLabelValues(ts),
		pReplacements: m.replacements.WithLabelValues(ts),
		pFallbacks:    m.fallbacks.WithLabelValues(ts),
		pSwapOK:       m.swaps.WithLabelValues(ts, "ok"),
		pSwapFailed:   m.swaps.WithLabelValues(ts, "failed"),
		pSwapPause:    m.swapPause.WithLabelValues(ts),
		pDecideBatch:  m.decide.WithLabelValues(ts),
		shadow:        m.shadow.counters(ts),
	}
}

func (c *counters) decided(vs []abi.Verdict, took time.Duration) {
	var a, s, r uint64
	for _, v := range vs {
		switch v.Action {
		case abi.Apply:
			a++
		case abi.Skip:
			s++
		default:
			r++
		}
	}
	if a > 0 {
		c.apply.Add(a)
		c.pApply.Add(float64(a))
	}
	if s > 0 {
		c.skip.Add(s)
		c.pSkip.Add(float64(s))
	}
	if r > 0 {
		c.resync.Add(r)
		c.pResync.Add(float64(r))
	}
	c.pDecideBatch.Observe(took.Seconds())
}

func (c *counters) trapped() {
	c.traps.Add(1)
	c.pTraps.Inc()
}

func (c *counters) replaced() {
	c.replacements.Add(1)
	c.pReplacements.Inc()
}

func (c *counters) fellBack() {
	c.fallback.Add(1)
	c.pFallbacks.Inc()
}

func (c *counters) swapped(pause time.Duration) {
	c.swaps.Add(1)
	c.pSwapOK.Inc()
	c.pSwapPause.Observe(pause.Seconds())
}

func (c *counters) swapFailed() {
	c.swapFailures.Add(1)
	c.pSwapFailed.Inc()
}

func (c *counters) stats() TypeStats {
	return TypeStats{
		Apply: c.apply.Load(), Skip: c.skip.Load(), Resync: c.resync.Load(),
		Traps: c.traps.Load(), Replacements: c.replacements.Load(), Fallbacks: c.fallback.Load(),
		Swaps: c.swaps.Load(), SwapFailures: c.swapFailures.Load(),
	}
}
