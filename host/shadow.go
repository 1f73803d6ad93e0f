package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/indexgate/indexgate/abi"
)

// Errors of shadow mode and rollback.
var (
	// ErrNoShadow reports Promote or StopShadow for an index type without
	// a shadow candidate, or whose candidate was dropped after a failure.
	ErrNoShadow = errors.New("host: no shadow candidate for this index type")
	// ErrNoPrevious reports Rollback for an index type whose module was
	// never replaced since Load.
	ErrNoPrevious = errors.New("host: no previous module to roll back to")
)

// MaxRecordedDisagreements bounds ShadowStats.FirstDisagreements.
const MaxRecordedDisagreements = 10

// ShadowStats describe a shadow candidate: a module deciding every batch
// of its index type beside the active module, whose verdicts are compared
// and never acted on.
type ShadowStats struct {
	// Module is the candidate.
	Module ModuleInfo
	// Since is when the candidate started shadowing.
	Since time.Time
	// Decisions counts the candidate's verdicts.
	Decisions uint64
	// Compared counts the verdicts compared with the active module's. In
	// a batch with a disagreement, the verdicts after the first one are
	// not compared: they follow from a state the active module does not
	// have, so they would count one difference many times.
	Compared uint64
	// Disagreements counts verdicts (action or reason) that differed from
	// the active module's: at most one per decide call.
	Disagreements uint64
	// Resyncs counts the times the candidate was set back to the active
	// module's state: after every batch with a disagreement, so one
	// difference does not cascade into later batches.
	Resyncs uint64
	// FirstDisagreements are the first MaxRecordedDisagreements.
	FirstDisagreements []Disagreement
	// Failed says why the candidate was dropped (a trap, a timeout, a
	// state it would not take); empty while it runs. A dropped candidate
	// stays reported until StopShadow or the next Shadow.
	Failed string
}

// Disagreement is one header on which the candidate's verdict differed.
type Disagreement struct {
	Header            abi.Header
	Active, Candidate abi.Verdict
	At                time.Time
}

// shadow is a candidate module running beside a type's active module.
// Everything but the statistics is guarded by the slot's lock; a.inst is
// nil after a failure (failed set) or an interrupted call (the next batch
// restarts it from the active module's state).
type shadow struct {
	a      *active
	hdrs   []abi.Header // the candidate's copy of each batch
	failed bool

	mu    sync.Mutex // guards stats
	stats ShadowStats
}

func (sh *shadow) snapshot() ShadowStats {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.stats
	st.FirstDisagreements = append([]Disagreement(nil), st.FirstDisagreements...)
	return st
}

// Shadow starts m as the shadow candidate of index type t, replacing any
// earlier candidate. The candidate is prepared and checked like a Swap's
// module (without the type's lock), then starts from the active module's
// state. From then on every Decide of t also runs on the candidate, on a
// copy of the same headers, after the active module decided; ModeChange
// and Restore reach it too. Its verdicts are compared and counted
// (ShadowStats) and never returned. A candidate that fails a call is
// dropped and reported; the active module never notices.
//
// The candidate's calls run under the type's lock and add to its decision
// time; an Untrusted candidate is bounded by Config.CallTimeout.
func (h *Host) Shadow(ctx context.Context, t abi.IndexType, m Module) (ModuleInfo, error) {
	s, err := h.slot(t)
	if err != nil {
		return ModuleInfo{}, err
	}
	if err := h.enter(); err != nil {
		return ModuleInfo{}, err
	}
	defer h.ops.RUnlock()
	if s.info.Load() == nil {
		return ModuleInfo{}, fmt.Errorf("%w: %s", ErrNotLoaded, t)
	}
	a, err := h.prepare(ctx, t, m, m.Name)
	if err != nil {
		return ModuleInfo{}, fmt.Errorf("host: shadow: %w", err)
	}
	s.mu.Lock()
	if s.cur == nil {
		s.mu.Unlock()
		a.close(ctx)
		return ModuleInfo{}, fmt.Errorf("%w: %s", ErrNotLoaded, t)
	}
	if err := carry(ctx, s.cur, a); err != nil {
		s.mu.Unlock()
		a.close(ctx)
		return ModuleInfo{}, fmt.Errorf("host: shadow: %s module %q (sha256 %.12s): take the active module's state: %w", t, m.Name, a.info.SHA256, err)
	}
	old := s.shadow
	sh := &shadow{a: a, stats: ShadowStats{Module: a.info, Since: time.Now()}}
	s.shadow = sh
	s.shadowView.Store(sh)
	s.mu.Unlock()
	if old != nil {
		old.a.close(ctx)
	}
	h.log.Info("shadow candidate started", append(moduleAttrs(&a.info), "active_sha256", s.info.Load().SHA256)...)
	return a.info, nil
}

// StopShadow drops the shadow candidate of t (running or dropped after a
// failure) and returns its final statistics.
func (h *Host) StopShadow(ctx context.Context, t abi.IndexType) (ShadowStats, error) {
	s, err := h.slot(t)
	if err != nil {
		return ShadowStats{}, err
	}
	if err := h.enter(); err != nil {
		return ShadowStats{}, err
	}
	defer h.ops.RUnlock()
	s.mu.Lock()
	sh := s.shadow
	s.shadow = nil
	s.shadowView.Store(nil)
	s.mu.Unlock()
	if sh == nil {
		return ShadowStats{}, fmt.Errorf("%w: %s", ErrNoShadow, t)
	}
	sh.a.close(ctx)
	st := sh.snapshot()
	h.log.Info("shadow candidate stopped", "type", t.String(), "sha256", st.Module.SHA256,
		"decisions", st.Decisions, "disagreements", st.Disagreements)
	return st, nil
}

// ShadowStats returns the statistics of t's shadow candidate, and false
// when there is none. It does not wait for decisions in flight.
func (h *Host) ShadowStats(t abi.IndexType) (ShadowStats, bool) {
	s, err := h.slot(t)
	if err != nil {
		return ShadowStats{}, false
	}
	sh := s.shadowView.Load()
	if sh == nil {
		return ShadowStats{}, false
	}
	return sh.snapshot(), true
}

// Promote makes t's shadow candidate its active module. Under the type's
// lock, as in Swap, the active module's last state is restored into the
// candidate and checked, and the candidate takes over: no decision is lost
// or made twice, whatever the candidate's own state had become. The
// replaced module becomes the target of Rollback.
func (h *Host) Promote(ctx context.Context, t abi.IndexType) (ModuleInfo, SwapReport, error) {
	s, err := h.slot(t)
	if err != nil {
		return ModuleInfo{}, SwapReport{}, err
	}
	if err := h.enter(); err != nil {
		return ModuleInfo{}, SwapReport{}, err
	}
	defer h.ops.RUnlock()
	s.mu.Lock()
	began := time.Now()
	sh, old := s.shadow, s.cur
	switch {
	case sh == nil:
		s.mu.Unlock()
		return ModuleInfo{}, SwapReport{}, fmt.Errorf("%w: %s", ErrNoShadow, t)
	case sh.failed:
		s.mu.Unlock()
		return ModuleInfo{}, SwapReport{}, fmt.Errorf("%w: the %s candidate was dropped: %s", ErrNoShadow, t, sh.snapshot().Failed)
	case old == nil:
		s.mu.Unlock()
		return ModuleInfo{}, SwapReport{}, fmt.Errorf("%w: %s", ErrNotLoaded, t)
	}
	if sh.a.inst == nil {
		if err := h.restartShadow(ctx, s, sh); err != nil {
			s.mu.Unlock()
			return ModuleInfo{}, SwapReport{}, fmt.Errorf("host: promote: %w", err)
		}
	}
	a := sh.a
	if err := carry(ctx, old, a); err != nil {
		h.dropShadow(ctx, s, sh, "promote", err)
		s.mu.Unlock()
		s.n.swapFailed()
		return ModuleInfo{}, SwapReport{}, fmt.Errorf("host: promote: %s candidate (sha256 %.12s): carry state over: %w", t, a.info.SHA256, err)
	}
	a.info.LoadedAt = time.Now()
	s.set(a)
	s.prev = &old.mod
	s.shadow = nil
	s.shadowView.Store(nil)
	rep := SwapReport{OldSHA256: old.info.SHA256, NewSHA256: a.info.SHA256, State: cloneState(&a.state)}
	rep.Pause = time.Since(began)
	s.mu.Unlock()

	old.close(ctx)
	s.n.swapped(rep.Pause)
	st := sh.snapshot()
	h.log.Info("shadow candidate promoted", append(moduleAttrs(&a.info), "old_sha256", old.info.SHA256, "pause", rep.Pause,
		"decisions", st.Decisions, "disagreements", st.Disagreements)...)
	return a.info, rep, nil
}

// Rollback swaps t's previous module back in (the one the last Swap,
// Promote or Rollback replaced), with the state carried over as in Swap,
// and remembers the module it replaces: a second Rollback rolls forward.
// The previous module is prepared and checked again before the lock is
// taken, so its pause is a Swap's.
func (h *Host) Rollback(ctx context.Context, t abi.IndexType) (ModuleInfo, SwapReport, error) {
	s, err := h.slot(t)
	if err != nil {
		return ModuleInfo{}, SwapReport{}, err
	}
	if err := h.enter(); err != nil {
		return ModuleInfo{}, SwapReport{}, err
	}
	defer h.ops.RUnlock()
	s.mu.Lock()
	prev := s.prev
	s.mu.Unlock()
	if prev == nil {
		return ModuleInfo{}, SwapReport{}, fmt.Errorf("%w: %s", ErrNoPrevious, t)
	}
	a, err := h.prepare(ctx, t, *prev, prev.Name)
	if err != nil {
		s.n.swapFailed()
		return ModuleInfo{}, SwapReport{}, fmt.Errorf("host: rollback: %w", err)
	}
	s.mu.Lock()
	began := time.Now()
	old := s.cur
	if s.prev != prev || old == nil {
		// A swap or promotion got in between: the operator's "previous"
		// is no longer the one prepared.
		s.mu.Unlock()
		a.close(ctx)
		s.n.swapFailed()
		return ModuleInfo{}, SwapReport{}, fmt.Errorf("host: rollback: the %s module changed meanwhile; try again", t)
	}
	return h.switchTo(ctx, s, old, a, began, "rollback", "rolled back")
}

// shadowDecide runs s's candidate on the batch the active module a just
// decided (verdicts vs) and compares. s.mu must be held. Nothing the
// candidate does changes vs or the active module.
func (h *Host) shadowDecide(ctx context.Context, s *slot, a *active, hs []abi.Header, vs []abi.Verdict) {
	sh := s.shadow
	if sh == nil || sh.failed {
		return
	}
	if sh.a.inst == nil {
		// Interrupted earlier: restart at the active module's state, which
		// already includes this batch.
		if err := h.restartShadow(ctx, s, sh); err != nil && ctx.Err() == nil {
			h.dropShadow(ctx, s, sh, "restart", err)
		}
		return
	}
	// The candidate gets its own copy: nothing it does can reach the
	// active module's input.
	sh.hdrs = append(sh.hdrs[:0], hs...)
	cvs, err := sh.a.inst.decide(ctx, sh.hdrs)
	if err != nil {
		h.shadowFailed(ctx, s, sh, "decide", err)
		return
	}
	compared, at := len(cvs), -1
	for i := range cvs {
		if cvs[i] != vs[i] {
			compared, at = i+1, i
			break
		}
	}
	s.n.shadow.decisions.Add(float64(len(cvs)))
	sh.mu.Lock()
	sh.stats.Decisions += uint64(len(cvs))
	sh.stats.Compared += uint64(compared)
	if at >= 0 {
		sh.stats.Disagreements++
		if len(sh.stats.FirstDisagreements) < MaxRecordedDisagreements {
			sh.stats.FirstDisagreements = append(sh.stats.FirstDisagreements,
				Disagreement{Header: hs[at], Active: vs[at], Candidate: cvs[at], At: time.Now()})
		}
	}
	sh.mu.Unlock()
	if at < 0 {
		return
	}
	s.n.shadow.disagreements.Inc()
	h.log.Debug("shadow candidate disagrees", "type", s.t.String(), "sha256", sh.a.info.SHA256,
		"index", hs[at].Index, "active", vs[at].String(), "candidate", cvs[at].String())
	// Re-sync: the candidate continues from the state the router commits.
	err = sh.a.inst.restore(ctx, &a.state)
	if err == nil {
		err = sh.a.inst.snapshot(ctx, &sh.a.state)
	}
	if err == nil && !samePosition(&sh.a.state, &a.state, false) {
		err = violationf("restored %s, module reports %s", position(&a.state), position(&sh.a.state))
	}
	if err != nil {
		h.shadowFailed(ctx, s, sh, "re-sync", err)
		return
	}
	sh.mu.Lock()
	sh.stats.Resyncs++
	sh.mu.Unlock()
}

// shadowModeChange tells s's candidate about a mode change the active
// module took. s.mu must be held.
func (h *Host) shadowModeChange(ctx context.Context, s *slot, mc *abi.ModeChange) {
	if sh := s.shadow; sh != nil && !sh.failed && sh.a.inst != nil {
		if err := sh.a.inst.modeChange(ctx, mc); err != nil {
			h.shadowFailed(ctx, s, sh, "mode change", err)
		}
	}
}

// shadowRestore gives s's candidate the state the active module was just
// restored to. s.mu must be held.
func (h *Host) shadowRestore(ctx context.Context, s *slot, st *abi.State) {
	if sh := s.shadow; sh != nil && !sh.failed && sh.a.inst != nil {
		if err := sh.a.inst.restore(ctx, st); err != nil {
			h.shadowFailed(ctx, s, sh, "restore", err)
		}
	}
}

// restartShadow gives sh a fresh instance at the active module's state.
// s.mu must be held.
func (h *Host) restartShadow(ctx context.Context, s *slot, sh *shadow) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var ck checker
	in, _, _ := start(ctx, &ck, sh.a.c, &sh.a.cfg, h.log.With("type", s.t.String(), "module", sh.a.info.Source))
	if ck.err != nil {
		return ck.err
	}
	sh.a.inst = in
	if err := carry(ctx, s.cur, sh.a); err != nil {
		in.close(ctx)
		sh.a.inst = nil
		return err
	}
	return nil
}

// shadowFailed handles a failed call into the candidate: its instance is
// closed; the candidate is dropped unless the caller's context ended the
// call (not the candidate's fault: it restarts at the next batch).
func (h *Host) shadowFailed(ctx context.Context, s *slot, sh *shadow, op string, cause error) {
	sh.a.inst.close(context.WithoutCancel(ctx))
	sh.a.inst = nil
	if ctx.Err() != nil && (errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded)) {
		return
	}
	h.dropShadow(ctx, s, sh, op, cause)
}

// dropShadow marks sh failed; it stays reported until replaced or stopped.
func (h *Host) dropShadow(ctx context.Context, s *slot, sh *shadow, op string, cause error) {
	sh.a.inst.close(context.WithoutCancel(ctx))
	sh.a.inst = nil
	sh.failed = true
	msg := fmt.Sprintf("%s: %v", op, cause)
	sh.mu.Lock()
	sh.stats.Failed = msg
	sh.mu.Unlock()
	s.n.shadow.failures.Inc()
	h.log.Warn("shadow candidate dropped; the active module is unaffected", append(moduleAttrs(&sh.a.info), "op", op, "err", cause)...)
}

// closeShadow releases s's candidate, if any. s.mu must be held.
func (s *slot) closeShadow(ctx context.Context) {
	if s.shadow != nil {
		s.shadow.a.close(ctx)
		s.shadow = nil
		s.shadowView.Store(nil)
	}
}

// cloneModule copies m's byte slices: the host keeps a module's bytes as
// long as it may roll back to it, and the caller's slices are the
// caller's.
func cloneModule(m Module) Module {
	m.Bytes = bytes.Clone(m.Bytes)
	m.Options = bytes.Clone(m.Options)
	return m
}

// shadowMetrics are the Prometheus series of shadow candidates.
type shadowMetrics struct {
	decisions, disagreements, failures *prometheus.CounterVec
}

func newShadowMetrics(ns, sub string) *shadowMetrics {
	return &shadowMetrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "shadow_decisions_total",
			Help: "Verdicts of shadow candidates, by index type.",
		}, []string{"type"}),
		disagreements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "shadow_disagreements_total",
			Help: "Verdicts of shadow candidates that differed from the active module's (at most one per batch), by index type.",
		}, []string{"type"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "shadow_failures_total",
			Help: "Shadow candidates dropped because they failed a call, by index type.",
		}, []string{"type"}),
	}
}

func (m *shadowMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.decisions, m.disagreements, m.failures}
}

// shadowCounters are one type's shadow series, resolved once.
type shadowCounters struct {
	decisions, disagreements, failures prometheus.Counter
}

func (m *shadowMetrics) counters(t string) shadowCounters {
	return shadowCounters{
		decisions:     m.decisions.WithLabelValues(t),
		disagreements: m.disagreements.WithLabelValues(t),
		failures:      m.failures.WithLabelValues(t),
	}
}
