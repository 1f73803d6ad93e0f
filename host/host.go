package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/indexgate/indexgate/abi"
)

// Host runs one filter module per index type. It is safe for concurrent
// use; see the package comment for what runs concurrently.
type Host struct {
	cfg       Config
	log       *slog.Logger
	cache     wazero.CompilationCache
	trusted   *engine
	untrusted *engine
	// slots is indexed by abi.IndexType and fixed after New; only the
	// valid types have a slot.
	slots [abi.IndexHA + 1]*slot

	// ops is read-locked by every call for its whole duration and
	// write-locked by Close, so Close waits for calls in flight and
	// nothing touches a closed runtime.
	ops    sync.RWMutex
	closed bool // guarded by ops
}

// slot is one index type: its lock, the module serving it and its counters.
type slot struct {
	t abi.IndexType
	n *counters
	// info mirrors cur.info so Modules never waits for a decision.
	info atomic.Pointer[ModuleInfo]

	// mu serializes every call into the type's module: filters are
	// stateful and an instance is not safe for concurrent calls.
	mu  sync.Mutex
	cur *active // guarded by mu; nil until Load
	// shadow is the candidate running beside cur (shadow.go); guarded by
	// mu and mirrored in shadowView so ShadowStats never waits.
	shadow     *shadow
	shadowView atomic.Pointer[shadow]
	// prev is the module cur replaced, for Rollback; guarded by mu.
	prev *Module
}

// active is a module serving a type.
type active struct {
	info ModuleInfo
	// mod is the module as loaded (bytes copied), kept so that a later
	// Rollback can bring it back.
	mod Module
	c   *compiled
	// inst is nil after a replacement failed; the next call retries.
	inst *instance
	cfg  abi.Config
	// state is the module's last known-good state: refreshed by a snapshot
	// after every successful call that can change it, restored into the
	// replacement when the instance fails, and carried over on a swap.
	state abi.State
}

func (a *active) close(ctx context.Context) {
	a.inst.close(ctx)
	a.inst = nil
	a.c.release(ctx)
}

func (s *slot) set(a *active) {
	s.cur = a
	info := a.info
	s.info.Store(&info)
}

// New returns a Host with no modules loaded.
func New(ctx context.Context, cfg Config) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cache, err := newCache(cfg.CacheDir)
	if err != nil {
		return nil, err
	}
	h := &Host{cfg: cfg, log: cfg.Logger, cache: cache}
	if h.trusted, err = newEngine(ctx, cache, &cfg, true); err == nil {
		h.untrusted, err = newEngine(ctx, cache, &cfg, false)
	}
	var m *metrics
	if err == nil {
		m, err = newMetrics(cfg.Registerer)
	}
	if err != nil {
		h.shutdown(ctx)
		return nil, err
	}
	for _, t := range abi.IndexTypes {
		h.slots[t] = &slot{t: t, n: m.counters(t)}
	}
	return h, nil
}

// Close unloads every module and releases the runtimes. It waits for calls
// in flight; later calls return ErrClosed.
func (h *Host) Close(ctx context.Context) error {
	h.ops.Lock()
	defer h.ops.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	for _, s := range h.slots {
		if s == nil {
			continue
		}
		s.mu.Lock()
		if s.cur != nil {
			s.cur.close(ctx)
			s.cur = nil
			s.info.Store(nil)
		}
		s.closeShadow(ctx)
		s.mu.Unlock()
	}
	return h.shutdown(ctx)
}

func (h *Host) shutdown(ctx context.Context) error {
	var errs []error
	for _, e := range []*engine{h.trusted, h.untrusted} {
		if e != nil {
			errs = append(errs, e.close(ctx))
		}
	}
	errs = append(errs, h.cache.Close(ctx))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("host: close: %w", err)
	}
	return nil
}

// enter starts a call; the caller must h.ops.RUnlock when it succeeds.
func (h *Host) enter() error {
	h.ops.RLock()
	if h.closed {
		h.ops.RUnlock()
		return ErrClosed
	}
	return nil
}

func (h *Host) slot(t abi.IndexType) (*slot, error) {
	if int(t) < len(h.slots) && h.slots[t] != nil {
		return h.slots[t], nil
	}
	return nil, fmt.Errorf("host: %w: %d", abi.ErrUnknownIndexType, uint8(t))
}

// Load makes m the module for index type t, starting from the fresh,
// uninitialized state its init leaves (a Restore or ModeChange gives it a
// position). Before the module may serve, the host compiles it (through
// the compilation cache), checks its imports and exports, instantiates it,
// checks its ABI version and Info, and runs the self-test on a separate
// instance. Load fails with ErrLoaded when t already has a module: Swap
// replaces one.
func (h *Host) Load(ctx context.Context, t abi.IndexType, m Module) (ModuleInfo, error) {
	s, err := h.slot(t)
	if err != nil {
		return ModuleInfo{}, err
	}
	if err := h.enter(); err != nil {
		return ModuleInfo{}, err
	}
	defer h.ops.RUnlock()
	if s.info.Load() != nil {
		return ModuleInfo{}, fmt.Errorf("%w: %s", ErrLoaded, t)
	}
	a, err := h.prepare(ctx, t, m, m.Name)
	if err != nil {
		return ModuleInfo{}, fmt.Errorf("host: load: %w", err)
	}
	s.mu.Lock()
	if s.cur != nil {
		s.mu.Unlock()
		a.close(ctx)
		return ModuleInfo{}, fmt.Errorf("%w: %s", ErrLoaded, t)
	}
	s.set(a)
	s.mu.Unlock()
	h.log.Info("filter module loaded", moduleAttrs(&a.info)...)
	return a.info, nil
}

// Swap replaces the module of index type t with m, carrying the state over.
// Everything that can be slow or fail (compile, instantiate, init,
// self-test) happens before the type's lock is taken, while the old module
// keeps deciding. Under the lock the host restores the old module's last
// state into the new instance, checks with a snapshot that it took, and
// switches; the old instance closes after the lock is released. On any
// error the old module keeps serving, unchanged.
func (h *Host) Swap(ctx context.Context, t abi.IndexType, m Module) (ModuleInfo, SwapReport, error) {
	s, err := h.slot(t)
	if err != nil {
		return ModuleInfo{}, SwapReport{}, err
	}
	if err := h.enter(); err != nil {
		return ModuleInfo{}, SwapReport{}, err
	}
	defer h.ops.RUnlock()
	if s.info.Load() == nil {
		return ModuleInfo{}, SwapReport{}, fmt.Errorf("%w: %s", ErrNotLoaded, t)
	}
	a, err := h.prepare(ctx, t, m, m.Name)
	if err != nil {
		s.n.swapFailed()
		return ModuleInfo{}, SwapReport{}, fmt.Errorf("host: swap: %w", err)
	}

	s.mu.Lock()
	began := time.Now()
	old := s.cur
	if old == nil {
		s.mu.Unlock()
		a.close(ctx)
		s.n.swapFailed()
		return ModuleInfo{}, SwapReport{}, fmt.Errorf("%w: %s", ErrNotLoaded, t)
	}
	return h.switchTo(ctx, s, old, a, began, "swap", "swapped")
}

// switchTo is the critical section every swap shares (Swap, Rollback):
// with s.mu held (it releases it) and the prepared instance a, carry old's
// state into a, make a serve, remember old's module for a rollback, then
// close old outside the lock. On failure old keeps serving.
func (h *Host) switchTo(ctx context.Context, s *slot, old, a *active, began time.Time, op, done string) (ModuleInfo, SwapReport, error) {
	if err := carry(ctx, old, a); err != nil {
		s.mu.Unlock()
		a.close(ctx)
		s.n.swapFailed()
		return ModuleInfo{}, SwapReport{}, fmt.Errorf("host: %s: %s module %q (sha256 %.12s): carry state over: %w",
			op, a.info.Type, a.mod.Name, a.info.SHA256, err)
	}
	s.set(a)
	s.prev = &old.mod
	rep := SwapReport{OldSHA256: old.info.SHA256, NewSHA256: a.info.SHA256, State: cloneState(&a.state)}
	rep.Pause = time.Since(began)
	s.mu.Unlock()

	old.close(ctx)
	s.n.swapped(rep.Pause)
	h.log.Info("filter module "+done, append(moduleAttrs(&a.info), "old_sha256", old.info.SHA256, "pause", rep.Pause)...)
	return a.info, rep, nil
}

// prepare builds a module ready to serve type t, in its fresh state,
// without touching the type's slot.
func (h *Host) prepare(ctx context.Context, t abi.IndexType, m Module, source string) (*active, error) {
	e := h.untrusted
	if m.Trust == Trusted {
		e = h.trusted
	}
	sum := sha256.Sum256(m.Bytes)
	c, err := e.acquire(ctx, sum, m.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s module %q: %w", t, m.Name, err)
	}
	a := &active{c: c, mod: cloneModule(m), cfg: abi.Config{Type: t, Options: bytes.Clone(m.Options)}}
	log := h.log.With("type", t.String(), "module", m.Name)

	// The self-test moves its instance's state around, so it runs on a
	// throwaway instance and the serving one starts fresh.
	var ck checker
	probe, _, _ := start(ctx, &ck, c, &a.cfg, log)
	selfTest(ctx, &ck, probe, t)
	probe.close(ctx)
	var version uint32
	var info abi.Info
	if ck.err == nil {
		a.inst, version, info = start(ctx, &ck, c, &a.cfg, log)
	}
	ck.run("snapshot", func() error { return moduleErr(a.inst.snapshot(ctx, &a.state)) })
	// Make the calls a swap makes under the lock once now: a fresh Go
	// guest runs its runtime's deferred start-up work (background sweeper,
	// scavenger) at its first scheduling points, and that belongs before
	// the pause, not in it.
	ck.run("restore", func() error { return moduleErr(a.inst.restore(ctx, &a.state)) })
	ck.run("snapshot after restore", func() error { return moduleErr(a.inst.snapshot(ctx, &a.state)) })
	if ck.err != nil {
		a.close(ctx)
		return nil, fmt.Errorf("%s module %q (sha256 %.12s): %w", t, m.Name, c.hash, ck.err)
	}
	a.info = ModuleInfo{
		Type: t, SHA256: c.hash, ABI: version, Name: info.Name, Version: info.Version,
		Trusted: m.Trust == Trusted, Source: source, LoadedAt: time.Now(),
	}
	return a, nil
}

// carry restores from's last state into to and checks with a snapshot that
// to took it.
func carry(ctx context.Context, from, to *active) error {
	if err := to.inst.restore(ctx, &from.state); err != nil {
		return moduleErr(err)
	}
	if err := to.inst.snapshot(ctx, &to.state); err != nil {
		return moduleErr(err)
	}
	if !samePosition(&to.state, &from.state, false) {
		return fmt.Errorf("%w: restored %s, module reports %s", ErrSelfTest, position(&from.state), position(&to.state))
	}
	return nil
}

// Decide returns one verdict per header, appended to out (whose capacity is
// reused). Within the batch, decisions are sequential: verdict i assumes
// every earlier Apply was applied. On error nothing of the batch may be
// applied; with ErrModuleFailed the filter is back at its state from
// before the call.
func (h *Host) Decide(ctx context.Context, t abi.IndexType, hs []abi.Header, out []abi.Verdict) ([]abi.Verdict, error) {
	s, err := h.slot(t)
	if err != nil {
		return out, err
	}
	if len(hs) > abi.MaxBatch {
		return out, fmt.Errorf("host: decide: %w: %d headers, at most %d", abi.ErrBatchTooLarge, len(hs), abi.MaxBatch)
	}
	if err := h.enter(); err != nil {
		return out, err
	}
	defer h.ops.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	a, in, err := h.ready(ctx, s)
	if err != nil || len(hs) == 0 {
		return out, err
	}
	began := time.Now()
	vs, err := in.decide(ctx, hs)
	if err == nil {
		err = in.snapshot(ctx, &a.state)
	}
	if err != nil {
		return out, h.fail(ctx, s, a, "decide", err)
	}
	s.n.decided(vs, time.Since(began))
	if s.shadow != nil {
		h.shadowDecide(ctx, s, a, hs, vs)
	}
	return append(out, vs...), nil
}

// ModeChange tells every loaded module about a change of index type, in
// the order of abi.IndexTypes. A module that fails is handled as in Decide
// (it is back at its state from before, so the caller repeats the mode
// change: filters ignore a repeated one); the others are still told. The
// error joins every module's error.
func (h *Host) ModeChange(ctx context.Context, mc abi.ModeChange) error {
	if err := mc.Validate(); err != nil {
		return fmt.Errorf("host: mode change: %w", err)
	}
	if err := h.enter(); err != nil {
		return err
	}
	defer h.ops.RUnlock()
	var errs []error
	for _, t := range abi.IndexTypes {
		s := h.slots[t]
		s.mu.Lock()
		if s.cur != nil {
			errs = append(errs, h.modeChange(ctx, s, &mc))
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

func (h *Host) modeChange(ctx context.Context, s *slot, mc *abi.ModeChange) error {
	a, in, err := h.ready(ctx, s)
	if err != nil {
		return err
	}
	err = in.modeChange(ctx, mc)
	if err == nil {
		err = in.snapshot(ctx, &a.state)
	}
	if err != nil {
		return h.fail(ctx, s, a, "mode change", err)
	}
	h.shadowModeChange(ctx, s, mc)
	return nil
}

// State returns the state of type t's module: what ig_snapshot returned
// after the module's last successful call, which is its current state (the
// host snapshots after every call that can change it). It does not call
// into the module.
func (h *Host) State(ctx context.Context, t abi.IndexType) (abi.State, error) {
	s, err := h.slot(t)
	if err != nil {
		return abi.State{}, err
	}
	if err := h.enter(); err != nil {
		return abi.State{}, err
	}
	defer h.ops.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return abi.State{}, fmt.Errorf("%w: %s", ErrNotLoaded, t)
	}
	return cloneState(&s.cur.state), nil
}

// Restore sets the state of type t's module, for example after a full
// resync or from the state the router persisted with its last applied
// change set. st must be for t (an uninitialized State of type IndexNone
// also resets). The host checks with a snapshot that the module took the
// position.
func (h *Host) Restore(ctx context.Context, t abi.IndexType, st abi.State) error {
	s, err := h.slot(t)
	if err != nil {
		return err
	}
	if st.Version != abi.StateVersion {
		return fmt.Errorf("host: restore: %w: state version %d, want %d", abi.ErrMalformed, st.Version, abi.StateVersion)
	}
	if st.Type != t && (st.Type != abi.IndexNone || st.Initialized) {
		return fmt.Errorf("host: restore: %w: %s state for the %s module", abi.ErrUnknownIndexType, st.Type, t)
	}
	if err := h.enter(); err != nil {
		return err
	}
	defer h.ops.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	a, in, err := h.ready(ctx, s)
	if err != nil {
		return err
	}
	var got abi.State
	err = in.restore(ctx, &st)
	if err == nil {
		err = in.snapshot(ctx, &got)
	}
	want := st
	want.Type = t
	if err == nil && !samePosition(&got, &want, false) {
		err = violationf("restored %s, module reports %s", position(&want), position(&got))
	}
	if err != nil {
		return h.fail(ctx, s, a, "restore", err)
	}
	a.state = got
	h.shadowRestore(ctx, s, &st)
	return nil
}

// Modules describes the loaded modules in the order of abi.IndexTypes.
func (h *Host) Modules() []ModuleInfo {
	var out []ModuleInfo
	for _, t := range abi.IndexTypes {
		if p := h.slots[t].info.Load(); p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// Stats returns the counters since New.
func (h *Host) Stats() Stats {
	st := Stats{ByType: make(map[abi.IndexType]TypeStats, len(abi.IndexTypes))}
	for _, t := range abi.IndexTypes {
		st.ByType[t] = h.slots[t].n.stats()
	}
	return st
}

// ready returns type s's module and a live instance, restarting the
// instance if an earlier replacement failed. s.mu must be held.
func (h *Host) ready(ctx context.Context, s *slot) (*active, *instance, error) {
	a := s.cur
	if a == nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotLoaded, s.t)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if a.inst == nil {
		if err := h.revive(ctx, s, a); err != nil {
			return nil, nil, fmt.Errorf("%w: %s module %q is down and did not restart: %w", ErrModuleFailed, s.t, a.info.Name, err)
		}
	}
	return a, a.inst, nil
}

// revive replaces a's instance with a fresh instance of the same compiled
// module, restored to a's last good state. It is not bound to the caller's
// cancellation: a caller giving up must not leave the type down.
func (h *Host) revive(ctx context.Context, s *slot, a *active) error {
	ctx = context.WithoutCancel(ctx)
	var ck checker
	in, _, _ := start(ctx, &ck, a.c, &a.cfg, h.log.With("type", s.t.String(), "module", a.info.Source))
	if ck.err != nil {
		return ck.err
	}
	if err := in.restore(ctx, &a.state); err != nil {
		in.close(ctx)
		return moduleErr(err)
	}
	a.inst = in
	s.n.replaced()
	return nil
}

// fail handles a failed call into a's instance: the instance is closed (it
// may be mid-way through changing its state, or already closed by wazero)
// and replaced according to the fail policy. s.mu must be held. The
// returned error is what the failed call returns.
func (h *Host) fail(ctx context.Context, s *slot, a *active, op string, cause error) error {
	a.inst.close(context.WithoutCancel(ctx))
	a.inst = nil
	// An untrusted module's call ends when the caller's context does; that
	// is not the module's fault. The next call restarts the instance.
	if ctx.Err() != nil && (errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded)) {
		return fmt.Errorf("host: %s %s: %w", s.t, op, ctx.Err())
	}
	s.n.trapped()
	err := fmt.Errorf("%w: %s module %q (sha256 %.12s): %s: %v", ErrModuleFailed, s.t, a.info.Name, a.info.SHA256, op, cause)
	h.log.Warn("filter module failed", append(moduleAttrs(&a.info), "op", op, "err", cause)...)
	if h.cfg.FailPolicy == FailFallback {
		ferr := h.fallback(ctx, s, a)
		if ferr == nil {
			return err
		}
		h.log.Warn("fallback module not swapped in; replacing the failed instance", "type", s.t.String(), "err", ferr)
	}
	if rerr := h.revive(ctx, s, a); rerr != nil {
		h.log.Error("filter module not restarted; its index type is down until a call restarts it",
			append(moduleAttrs(&a.info), "err", rerr)...)
	}
	return err
}

// fallback replaces the failed module a with Config.Fallback's module for
// its type, restored to a's last good state. s.mu must be held: the
// fallback's self-test runs under the lock, on a path that only a module
// failure takes.
func (h *Host) fallback(ctx context.Context, s *slot, a *active) error {
	bin, ok := h.cfg.Fallback(s.t)
	if !ok || len(bin) == 0 {
		return fmt.Errorf("no fallback module for %s", s.t)
	}
	sum := sha256.Sum256(bin)
	if hex.EncodeToString(sum[:]) == a.info.SHA256 && a.info.Trusted {
		return errors.New("the failed module is the fallback")
	}
	ctx = context.WithoutCancel(ctx)
	fb, err := h.prepare(ctx, s.t, Module{Name: "fallback", Bytes: bin, Trust: Trusted}, "fallback")
	if err != nil {
		return err
	}
	if err := carry(ctx, a, fb); err != nil {
		fb.close(ctx)
		return err
	}
	s.set(fb)
	a.close(ctx)
	s.n.fellBack()
	h.log.Warn("failed filter module replaced by the fallback",
		append(moduleAttrs(&fb.info), "failed_sha256", a.info.SHA256)...)
	return nil
}

func cloneState(s *abi.State) abi.State {
	c := *s
	c.Extra = bytes.Clone(s.Extra)
	return c
}

func moduleAttrs(i *ModuleInfo) []any {
	return []any{"type", i.Type.String(), "sha256", i.SHA256, "name", i.Name, "version", i.Version,
		"trusted", i.Trusted, "source", i.Source}
}
