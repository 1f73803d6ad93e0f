package router

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/host"
)

// ShadowStatus describes a shadow candidate (host.Shadow): a module that
// decides every batch of its index type beside the active module, whose
// verdicts are compared and never acted on.
type ShadowStatus struct {
	SHA256  string `json:"sha256"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Trusted bool   `json:"trusted"`
	// Trust is why the candidate may run: "pinned", "signed",
	// "allowed-unsigned" or "builtin".
	Trust  string    `json:"trust,omitempty"`
	Source string    `json:"source"`
	Since  time.Time `json:"since"`
	// Decisions counts the candidate's verdicts; Compared those compared
	// with the active module's (in a batch with a disagreement, the
	// verdicts after it are not compared); Disagreements the verdicts that
	// differed, at most one per batch; Resyncs the times the candidate was
	// set back to the active module's state after a disagreement.
	Decisions     uint64 `json:"decisions"`
	Compared      uint64 `json:"compared"`
	Disagreements uint64 `json:"disagreements"`
	Resyncs       uint64 `json:"resyncs"`
	// FirstDisagreements are the first ten.
	FirstDisagreements []DisagreementStatus `json:"firstDisagreements"`
	// Failed says why the candidate was dropped; it then decides nothing
	// and cannot be promoted.
	Failed string `json:"failed,omitempty"`
}

// DisagreementStatus is one header the candidate decided differently.
type DisagreementStatus struct {
	Header abi.Header `json:"header"`
	// Active and Candidate are the verdicts, "action/reason".
	Active    string    `json:"active"`
	Candidate string    `json:"candidate"`
	At        time.Time `json:"at"`
}

func shadowStatus(st host.ShadowStats, rec *moduleRecord) ShadowStatus {
	m := st.Module
	s := ShadowStatus{
		SHA256: m.SHA256, Name: m.Name, Version: m.Version, Trusted: m.Trusted, Source: m.Source, Since: st.Since,
		Decisions: st.Decisions, Compared: st.Compared, Disagreements: st.Disagreements, Resyncs: st.Resyncs,
		FirstDisagreements: []DisagreementStatus{}, Failed: st.Failed,
	}
	if rec != nil && rec.sha == m.SHA256 {
		s.Trust = rec.reason
	}
	for _, d := range st.FirstDisagreements {
		s.FirstDisagreements = append(s.FirstDisagreements, DisagreementStatus{
			Header: d.Header, Active: d.Active.String(), Candidate: d.Candidate.String(), At: d.At,
		})
	}
	return s
}

// shadowStatuses reports every type's candidate, by type name.
func (r *Router) shadowStatuses() map[string]ShadowStatus {
	out := map[string]ShadowStatus{}
	for _, t := range abi.IndexTypes {
		if st, ok := r.host.ShadowStats(t); ok {
			out[t.String()] = shadowStatus(st, r.fstore.candidate(t))
		}
	}
	return out
}

func (f *filterStore) candidate(t abi.IndexType) *moduleRecord {
	f.recMu.Lock()
	defer f.recMu.Unlock()
	return f.cand[t]
}

// shadow vets a module and starts it as type t's shadow candidate. The
// candidate is not persisted: a restart ends shadowing.
func (f *filterStore) shadow(ctx context.Context, t abi.IndexType, name string, bin, sig, options []byte) (host.ModuleInfo, error) {
	rec, err := f.vet(t, name, bin, sig, options)
	if err != nil {
		return host.ModuleInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	info, err := f.h.Shadow(ctx, t, rec.module())
	if err != nil {
		return info, err
	}
	f.setRecords(t, f.cur[t], f.prev[t], rec)
	f.log.Info("shadow candidate started", "type", t.String(), "sha256", info.SHA256, "name", info.Name,
		"version", info.Version, "trusted", info.Trusted, "trust", rec.reason)
	return info, nil
}

// stopShadow ends type t's shadow candidate.
func (f *filterStore) stopShadow(ctx context.Context, t abi.IndexType) (host.ShadowStats, *moduleRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.h.StopShadow(ctx, t)
	rec := f.cand[t]
	f.setRecords(t, f.cur[t], f.prev[t], nil)
	return st, rec, err
}

// promote makes type t's shadow candidate its active module and persists
// it, as a hot swap would.
func (f *filterStore) promote(ctx context.Context, t abi.IndexType) (host.ModuleInfo, host.SwapReport, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rec := f.cand[t]
	if rec == nil {
		return host.ModuleInfo{}, host.SwapReport{}, "", fmt.Errorf("%w: %s", host.ErrNoShadow, t)
	}
	return f.switchTo(t, rec, func() (host.ModuleInfo, host.SwapReport, error) { return f.h.Promote(ctx, t) },
		func() { f.setRecords(t, rec, f.cur[t], nil) })
}

// rollback swaps type t's previous module back in and persists it.
func (f *filterStore) rollback(ctx context.Context, t abi.IndexType) (host.ModuleInfo, host.SwapReport, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rec := f.prev[t]
	if rec == nil {
		return host.ModuleInfo{}, host.SwapReport{}, "", fmt.Errorf("%w: %s", host.ErrNoPrevious, t)
	}
	return f.switchTo(t, rec, func() (host.ModuleInfo, host.SwapReport, error) { return f.h.Rollback(ctx, t) },
		func() { f.setRecords(t, rec, f.cur[t], f.cand[t]) })
}

// switchTo stages rec's files, runs the host's switch and, when it
// succeeded, updates the records and persists rec. f.mu must be held.
func (f *filterStore) switchTo(t abi.IndexType, rec *moduleRecord, run func() (host.ModuleInfo, host.SwapReport, error), update func()) (host.ModuleInfo, host.SwapReport, string, error) {
	st, err := f.stage(t, rec)
	if err != nil {
		return host.ModuleInfo{}, host.SwapReport{}, "", fmt.Errorf("router: stage module file: %w", err)
	}
	info, rep, err := run()
	if err != nil {
		st.discard()
		return info, rep, "", err
	}
	if info.SHA256 != rec.sha {
		// The host and the records disagree about the module: serve, but
		// do not persist something else than what serves.
		st.discard()
		return info, rep, "", fmt.Errorf("%w: the module serving (sha256 %.12s) is not the one recorded (%.12s)", errNotPersisted, info.SHA256, rec.sha)
	}
	update()
	note := f.note(t)
	if err := st.commit(); err != nil {
		return info, rep, note, fmt.Errorf("%w: %w", errNotPersisted, err)
	}
	return info, rep, note, nil
}

func (r *Router) handleShadow(w http.ResponseWriter, req *http.Request) {
	t, up, ok := r.readUpload(w, req)
	if !ok {
		return
	}
	info, err := r.fstore.shadow(req.Context(), t, "shadow:"+t.String(), up.bin, up.sig, up.options)
	if err != nil {
		r.log.Warn("shadow candidate refused", "type", t.String(), "sha256", hexSHA256(up.bin), "err", err)
		writeError(w, moduleErrorStatus(err), err.Error())
		return
	}
	st, ok := r.host.ShadowStats(t)
	if !ok || st.Module.SHA256 != info.SHA256 {
		// Replaced or stopped by a concurrent request already.
		st = host.ShadowStats{Module: info}
	}
	writeJSON(w, http.StatusOK, shadowStatus(st, r.fstore.candidate(t)))
}

func (r *Router) handleStopShadow(w http.ResponseWriter, req *http.Request) {
	t, ok := pathType(w, req)
	if !ok {
		return
	}
	st, rec, err := r.fstore.stopShadow(req.Context(), t)
	switch {
	case errors.Is(err, host.ErrNoShadow):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no shadow candidate for %s", t))
		return
	case err != nil:
		writeError(w, moduleErrorStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, shadowStatus(st, rec))
}

func (r *Router) handlePromote(w http.ResponseWriter, req *http.Request) {
	t, ok := pathType(w, req)
	if !ok {
		return
	}
	info, rep, note, err := r.fstore.promote(req.Context(), t)
	if err != nil && !errors.Is(err, errNotPersisted) {
		code := moduleErrorStatus(err)
		if errors.Is(err, host.ErrNoShadow) {
			code = http.StatusConflict
		}
		r.log.Warn("promotion refused; the active module keeps serving", "type", t.String(), "err", err)
		writeError(w, code, err.Error()+"; the active module keeps serving")
		return
	}
	r.log.Info("shadow candidate promoted", "type", t.String(), "sha256", info.SHA256, "old_sha256", rep.OldSHA256, "pause", rep.Pause)
	r.writeSwapped(w, t, info, rep, note, err)
}

func (r *Router) handleRollback(w http.ResponseWriter, req *http.Request) {
	t, ok := pathType(w, req)
	if !ok {
		return
	}
	info, rep, note, err := r.fstore.rollback(req.Context(), t)
	if err != nil && !errors.Is(err, errNotPersisted) {
		code := moduleErrorStatus(err)
		if errors.Is(err, host.ErrNoPrevious) {
			code = http.StatusConflict
		}
		r.log.Warn("rollback refused; the active module keeps serving", "type", t.String(), "err", err)
		writeError(w, code, err.Error()+"; the active module keeps serving")
		return
	}
	r.log.Info("filter module rolled back", "type", t.String(), "sha256", info.SHA256, "old_sha256", rep.OldSHA256, "pause", rep.Pause)
	r.writeSwapped(w, t, info, rep, note, err)
}
