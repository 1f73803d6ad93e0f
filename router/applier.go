package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

// decider is the part of *host.Host the applier uses. The unit tests give
// it the native filters, so the applier's logic runs without wasm.
type decider interface {
	Decide(ctx context.Context, t abi.IndexType, hs []abi.Header, out []abi.Verdict) ([]abi.Verdict, error)
	ModeChange(ctx context.Context, mc abi.ModeChange) error
	Restore(ctx context.Context, t abi.IndexType, st abi.State) error
	State(ctx context.Context, t abi.IndexType) (abi.State, error)
}

// Errors the client acts on.
var (
	// errProtocol: a valid frame that is wrong at this point of the
	// session. The client answers Error{Protocol} and reconnects.
	errProtocol = errors.New("router: protocol violation")
	// errFullStateMismatch: a full state whose entity count or digest does
	// not match its FullStateEnd. It was discarded; the old model stays.
	errFullStateMismatch = errors.New("router: full state does not match its end frame")
)

// outcome tells the client what to do after the applier handled a frame.
type outcome struct {
	// ack: send an Ack with the committed positions.
	ack bool
	// resync: a filter said Resync; end the session and reconnect asking
	// for a full state.
	resync bool
}

// applier turns frames into store transactions and acks. It is
// deterministic and owns no connection. One goroutine (the session's
// reader) calls handle; snapshot may be called from any goroutine.
//
// Invariant: outside handle, every filter in the host is at the state in
// st.filters (the committed one), unless dirty is set, in which case the
// next handle or beginSession restores it before deciding anything. A
// filter ahead of the store would skip change sets the store never got.
type applier struct {
	store *model.Store
	dec   decider
	log   *slog.Logger
	met   *metrics
	// beforeCommit, a test hook, runs inside every transaction after its
	// writes; an error aborts the commit like a failed fsync, and a hook
	// that blocks until ctx ends stands for a crash at that instant.
	beforeCommit func(ctx context.Context, op string) error

	mu sync.Mutex
	st routerState // committed; guarded by mu for readers, written by handle
	fs *fullState  // transfer in progress; guarded by mu

	dirty          bool
	sessionApplied uint64
	hdrs           []abi.Header
	vs             []abi.Verdict
}

// fullState is a transfer between FullStateBegin and FullStateEnd.
type fullState struct {
	begin    wire.FullStateBegin
	received uint64
	started  time.Time
	// loggedAt and loggedQuarter pace the progress log lines.
	loggedAt      time.Time
	loggedQuarter uint64
}

// fullStateLogEvery is the longest a transfer goes without a progress log
// line; one is also logged at every quarter of the entities.
const fullStateLogEvery = 5 * time.Second

// newApplier loads the committed state, drops what an interrupted full
// state left in the staging area, and brings the filters to their
// committed states.
func newApplier(ctx context.Context, store *model.Store, dec decider, log *slog.Logger, met *metrics) (*applier, error) {
	a := &applier{store: store, dec: dec, log: log, met: met}
	var entities uint64
	err := store.Update(ctx, func(tx *model.Tx) error {
		st, err := loadState(tx)
		if err != nil {
			return err
		}
		a.st = st
		entities = tx.Count()
		return tx.StageDiscard()
	})
	if err != nil {
		return nil, fmt.Errorf("router: load state: %w", err)
	}
	if err := a.restoreFilters(ctx); err != nil {
		return nil, fmt.Errorf("router: restore filter states: %w", err)
	}
	a.publish(entities)
	return a, nil
}

// snapshot returns the committed state and the transfer in progress.
func (a *applier) snapshot() (routerState, *fullState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st
	if a.fs == nil {
		return st, nil
	}
	fs := *a.fs
	return st, &fs
}

// hello returns what the next Hello carries: no positions when the router
// wants a full state.
func (a *applier) hello() ([]wire.Position, abi.IndexType) {
	if a.st.wantFull {
		return nil, abi.IndexNone
	}
	ps := a.st.positionList()
	if len(ps) == 0 {
		return nil, abi.IndexNone
	}
	return ps, a.st.current
}

// ack is the Ack for the committed state.
func (a *applier) ack() *wire.Ack {
	return &wire.Ack{Positions: a.st.positionList(), Current: a.st.current, Applied: a.sessionApplied}
}

// heartbeatIndex is the router's position on its current type.
func (a *applier) heartbeatIndex() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, _ := a.st.position(a.st.current)
	return p.Index
}

// beginSession resets what belongs to one connection. A transfer the last
// connection left unfinished is abandoned: the next FullStateBegin resets
// the staging area.
func (a *applier) beginSession(ctx context.Context) error {
	a.sessionApplied = 0
	a.mu.Lock()
	a.fs = nil
	a.mu.Unlock()
	if a.dirty {
		return a.restoreFilters(ctx)
	}
	return nil
}

// handle applies one frame from the controller.
func (a *applier) handle(ctx context.Context, m wire.Message) (outcome, error) {
	if a.dirty {
		if err := a.restoreFilters(ctx); err != nil {
			return outcome{}, err
		}
	}
	began := time.Now()
	defer func() { a.met.commitSeconds.Observe(time.Since(began).Seconds()) }()
	switch m := m.(type) {
	case *wire.Batch:
		return a.batch(ctx, m.Sets)
	case *wire.ChangeSet:
		return a.batch(ctx, []wire.ChangeSet{*m})
	case *wire.ModeChange:
		return a.modeChange(ctx, &m.Change)
	case *wire.FullStateBegin:
		return a.fullStateBegin(ctx, m)
	case *wire.FullStateChunk:
		return a.fullStateChunk(ctx, m)
	case *wire.FullStateEnd:
		return a.fullStateEnd(ctx, m)
	}
	return outcome{}, fmt.Errorf("%w: unexpected %s frame", errProtocol, m.Type())
}

// batch decides the change sets group by group (consecutive sets of one
// index type go to that type's filter in one call) and commits the applied
// ones, the positions, the filter states and the counters in one
// transaction. A Resync verdict stops the batch there: the sets before it
// are committed and the session ends.
func (a *applier) batch(ctx context.Context, sets []wire.ChangeSet) (outcome, error) {
	if a.inFullState() {
		return outcome{}, fmt.Errorf("%w: change sets inside a full state transfer", errProtocol)
	}
	next := a.st
	var (
		apply   []int // indexes of the sets to commit, in order
		applied [numTypes]uint64
		skipped [numTypes]uint64
		touched [numTypes]bool
		stop    = -1 // index of the set that ended the batch
		verdict abi.Verdict
	)
	for i := 0; i < len(sets) && stop < 0; {
		t := sets[i].Header.Type
		j := i + 1
		for j < len(sets) && sets[j].Header.Type == t {
			j++
		}
		if !t.Valid() {
			stop, verdict = i, abi.Verdict{Action: abi.Resync, Reason: abi.ReasonInvalid}
			break
		}
		if t != next.current && next.current != abi.IndexNone {
			// The controller switched index type without a ModeChange. The
			// header's own filter decides: without a baseline on this
			// timeline it says Resync, so nothing is dropped silently.
			a.log.Warn("change set of another index type without a mode change; deciding with its own filter",
				"type", t.String(), "current", next.current.String(), "index", sets[i].Header.Index)
		}
		pre, err := a.dec.State(ctx, t)
		if err != nil {
			return outcome{}, a.abort(ctx, fmt.Errorf("router: %s filter state: %w", t, err))
		}
		a.hdrs = a.hdrs[:0]
		for k := i; k < j; k++ {
			a.hdrs = append(a.hdrs, sets[k].Header)
		}
		touched[t] = true
		a.vs, err = a.dec.Decide(ctx, t, a.hdrs, a.vs[:0])
		if err != nil {
			return outcome{}, a.abort(ctx, fmt.Errorf("router: decide %d %s change sets from index %d: %w",
				len(a.hdrs), t, a.hdrs[0].Index, err))
		}
		for k, v := range a.vs {
			h := &a.hdrs[k]
			if v.Action == abi.Apply {
				apply = append(apply, i+k)
				next.setPosition(wire.Position{Type: t, Index: h.Index, Timeline: h.Timeline})
				next.current = t
				applied[t]++
				continue
			}
			if v.Action == abi.Skip && v.Reason != abi.ReasonWrongType {
				skipped[t]++
				continue
			}
			// Resync, or a module calling a header of its own type
			// "wrong type": skipping that would drop a change set.
			stop, verdict = i+k, v
			if k < len(a.vs)-1 {
				// The filter decided past the stop. Bring it back to the
				// state after exactly the sets that will commit.
				if err := a.redecide(ctx, t, pre, a.hdrs[:k], a.vs[:k]); err != nil {
					return outcome{}, a.abort(ctx, err)
				}
			}
			break
		}
		i = j
	}

	for _, t := range abi.IndexTypes {
		if !touched[t] {
			continue
		}
		st, err := a.dec.State(ctx, t)
		if err != nil {
			return outcome{}, a.abort(ctx, fmt.Errorf("router: %s filter state: %w", t, err))
		}
		next.filters[t] = st
	}
	n := uint64(len(apply))
	next.counters.Applied += n
	for _, t := range abi.IndexTypes {
		next.counters.Skipped += skipped[t]
	}
	resync := stop >= 0
	if resync {
		next.wantFull = true
		if verdict.Reason == abi.ReasonGap {
			next.counters.Gaps++
		}
	}
	err := a.commit(ctx, "batch", &next, func(tx *model.Tx) error {
		for _, i := range apply {
			if err := tx.Apply(sets[i].Changes); err != nil {
				h := &sets[i].Header
				return fmt.Errorf("change set %s@%d: %w", h.Type, h.Index, err)
			}
		}
		return nil
	})
	if err != nil {
		return outcome{}, err
	}
	a.sessionApplied += n
	for _, t := range abi.IndexTypes {
		a.met.applied.WithLabelValues(t.String()).Add(float64(applied[t]))
		a.met.skipped.WithLabelValues(t.String()).Add(float64(skipped[t]))
	}
	if resync {
		h := &sets[stop].Header
		a.met.resyncs.WithLabelValues(h.Type.String(), verdict.Reason.String()).Inc()
		a.log.Warn("filter verdict requires a full state; reconnecting to fetch one",
			"verdict", verdict.String(), "type", h.Type.String(), "index", h.Index, "prevIndex", h.PrevIndex,
			"timeline", h.Timeline.String(), "committed_before_it", n)
	}
	return outcome{ack: true, resync: resync}, nil
}

// redecide restores type t's filter to pre and decides hs again, which must
// give want: filters are deterministic.
func (a *applier) redecide(ctx context.Context, t abi.IndexType, pre abi.State, hs []abi.Header, want []abi.Verdict) error {
	if err := a.dec.Restore(ctx, t, pre); err != nil {
		return fmt.Errorf("router: rewind %s filter: %w", t, err)
	}
	if len(hs) == 0 {
		return nil
	}
	got, err := a.dec.Decide(ctx, t, hs, nil)
	if err != nil {
		return fmt.Errorf("router: rewind %s filter: %w", t, err)
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("router: %s filter is not deterministic: the same %d headers decided %v, then %v", t, len(hs), want, got)
	}
	return nil
}

// modeChange tells the filters and commits their states, Current and the
// new type's baseline position.
func (a *applier) modeChange(ctx context.Context, mc *abi.ModeChange) (outcome, error) {
	if a.inFullState() {
		return outcome{}, fmt.Errorf("%w: mode change inside a full state transfer", errProtocol)
	}
	if err := mc.Validate(); err != nil {
		return outcome{}, fmt.Errorf("%w: %w", errProtocol, err)
	}
	// A repeat (the controller re-sends the mode change at the resume
	// point) is harmless. Otherwise the router must stand exactly where
	// the old type ended (docs/protocol.md §8): if not, its copy is not a
	// continuation and it needs a full state, as after a Resync verdict.
	to, repeat := a.st.position(mc.To)
	repeat = repeat && a.st.current == mc.To && to.Timeline == mc.Timeline && to.Index >= mc.BaseIndex
	if from, ok := a.st.position(mc.From); !repeat && (!ok || from.Index != mc.LastIndex || from.Timeline != mc.Timeline) {
		return a.modeChangeGap(ctx, mc, from, ok)
	}
	if err := a.dec.ModeChange(ctx, *mc); err != nil {
		return outcome{}, a.abort(ctx, fmt.Errorf("router: mode change %s -> %s: %w", mc.From, mc.To, err))
	}
	next := a.st
	for _, t := range abi.IndexTypes {
		st, err := a.dec.State(ctx, t)
		if err != nil {
			return outcome{}, a.abort(ctx, fmt.Errorf("router: %s filter state: %w", t, err))
		}
		next.filters[t] = st
	}
	next.current = mc.To
	// A repeated mode change (the controller re-sends the one at the
	// resume point) must not move a position back.
	if p, ok := next.position(mc.To); !ok || p.Timeline != mc.Timeline || p.Index < mc.BaseIndex {
		next.setPosition(wire.Position{Type: mc.To, Index: mc.BaseIndex, Timeline: mc.Timeline})
	}
	if err := a.commit(ctx, "mode change", &next, nil); err != nil {
		return outcome{}, err
	}
	a.log.Info("index type changed", "from", mc.From.String(), "to", mc.To.String(),
		"lastIndex", mc.LastIndex, "baseIndex", mc.BaseIndex, "timeline", mc.Timeline.String())
	return outcome{ack: true}, nil
}

// modeChangeGap handles a mode change that does not continue the router's
// position on the old type: commit the full state request, ack, resync.
func (a *applier) modeChangeGap(ctx context.Context, mc *abi.ModeChange, from wire.Position, ok bool) (outcome, error) {
	next := a.st
	next.wantFull = true
	if err := a.commit(ctx, "mode change", &next, nil); err != nil {
		return outcome{}, err
	}
	have := "no position"
	if ok {
		have = from.String()
	}
	a.met.resyncs.WithLabelValues(mc.From.String(), "mode-change").Inc()
	a.log.Warn("mode change does not continue the router's position; reconnecting to fetch a full state",
		"from", mc.From.String(), "to", mc.To.String(), "lastIndex", mc.LastIndex,
		"timeline", mc.Timeline.String(), "router_has", have)
	return outcome{ack: true, resync: true}, nil
}

func (a *applier) inFullState() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fs != nil
}

// fullStateBegin checks the announced positions and starts a new staged
// full state (discarding any earlier one).
func (a *applier) fullStateBegin(ctx context.Context, b *wire.FullStateBegin) (outcome, error) {
	ps, err := beginPositions(b)
	if err != nil {
		return outcome{}, err
	}
	if err := a.store.Update(ctx, func(tx *model.Tx) error { return tx.StageReset() }); err != nil {
		return outcome{}, fmt.Errorf("router: start full state: %w", err)
	}
	fs := &fullState{begin: *b, started: time.Now(), loggedAt: time.Now()}
	fs.begin.Positions = ps
	a.mu.Lock()
	a.fs = fs
	a.mu.Unlock()
	a.log.Info("receiving full state", "mode", b.Mode.String(), "index", b.Index,
		"timeline", b.Timeline.String(), "entities", b.Entities)
	return outcome{}, nil
}

// beginPositions validates b's positions: valid and distinct types, and
// {Mode, Index, Timeline} among them (added when the controller left it
// out, refused when it contradicts).
func beginPositions(b *wire.FullStateBegin) ([]wire.Position, error) {
	if !b.Mode.Valid() {
		return nil, fmt.Errorf("%w: full state of index type %s", errProtocol, b.Mode)
	}
	var seen [numTypes]bool
	ps := slices.Clone(b.Positions)
	for _, p := range ps {
		if !p.Type.Valid() || seen[p.Type] {
			return nil, fmt.Errorf("%w: full state positions %v: invalid or repeated type", errProtocol, ps)
		}
		seen[p.Type] = true
		if p.Type == b.Mode && (p.Index != b.Index || p.Timeline != b.Timeline) {
			return nil, fmt.Errorf("%w: full state at %s@%d/%s lists position %s", errProtocol, b.Mode, b.Index, b.Timeline, p)
		}
	}
	if !seen[b.Mode] {
		ps = append(ps, wire.Position{Type: b.Mode, Index: b.Index, Timeline: b.Timeline})
	}
	return ps, nil
}

func (a *applier) fullStateChunk(ctx context.Context, c *wire.FullStateChunk) (outcome, error) {
	a.mu.Lock()
	fs := a.fs
	a.mu.Unlock()
	if fs == nil {
		return outcome{}, fmt.Errorf("%w: full state chunk without a begin", errProtocol)
	}
	n := uint64(len(c.Entities))
	if fs.received+n > fs.begin.Entities {
		return outcome{}, a.abortFullState(ctx, fmt.Errorf("%w: more than the %d entities announced", errFullStateMismatch, fs.begin.Entities))
	}
	if err := a.store.Update(ctx, func(tx *model.Tx) error { return tx.StagePut(c.Entities) }); err != nil {
		return outcome{}, a.abortFullState(ctx, fmt.Errorf("router: stage full state chunk: %w", err))
	}
	now := time.Now()
	a.mu.Lock()
	fs.received += n
	received, total := fs.received, fs.begin.Entities
	q := 4 * received / max(total, 1)
	logNow := q > fs.loggedQuarter || now.Sub(fs.loggedAt) >= fullStateLogEvery
	if logNow {
		fs.loggedQuarter, fs.loggedAt = q, now
	}
	a.mu.Unlock()
	if logNow {
		a.log.Info("full state progress", "mode", fs.begin.Mode.String(), "index", fs.begin.Index,
			"received", received, "total", total, "percent", 100*received/max(total, 1),
			"elapsed", now.Sub(fs.started).Round(time.Millisecond))
	}
	return outcome{}, nil
}

// fullStateEnd checks the staged entities against e and, in one
// transaction, makes them live, adopts the announced positions and resets
// the filters to them.
func (a *applier) fullStateEnd(ctx context.Context, e *wire.FullStateEnd) (outcome, error) {
	a.mu.Lock()
	fs := a.fs
	a.mu.Unlock()
	if fs == nil {
		return outcome{}, fmt.Errorf("%w: full state end without a begin", errProtocol)
	}
	if e.Entities != fs.begin.Entities || fs.received != fs.begin.Entities {
		return outcome{}, a.abortFullState(ctx, fmt.Errorf("%w: %d entities announced, %d received, end says %d",
			errFullStateMismatch, fs.begin.Entities, fs.received, e.Entities))
	}
	next := a.st
	next.positions = [numTypes]wire.Position{}
	for _, p := range fs.begin.Positions {
		next.setPosition(p)
	}
	// A router that never had a position is bootstrapping, not resyncing.
	resync := len(a.st.positionList()) > 0
	if resync {
		next.counters.FullResyncs++
	} else {
		next.counters.InitialSyncs++
	}
	next.current = fs.begin.Mode
	next.wantFull = false
	err := a.commit(ctx, "full state", &next, func(tx *model.Tx) error {
		if n := tx.StageCount(); n != e.Entities {
			return fmt.Errorf("%w: %d distinct entities staged, end says %d", errFullStateMismatch, n, e.Entities)
		}
		d, err := tx.StageDigest()
		if err != nil {
			return err
		}
		if d != e.Digest {
			return fmt.Errorf("%w: staged digest %s, end says %s", errFullStateMismatch, d, e.Digest)
		}
		if err := tx.StageCommit(); err != nil {
			return err
		}
		// The filters take the positions inside the transaction: a filter
		// that refuses aborts the swap, and a failed commit restores them.
		for _, t := range abi.IndexTypes {
			st := abi.State{Version: abi.StateVersion, Type: t}
			if p, ok := next.position(t); ok {
				st.Initialized, st.LastIndex, st.Timeline = true, p.Index, p.Timeline
			}
			if err := a.dec.Restore(ctx, t, st); err != nil {
				return fmt.Errorf("reset %s filter: %w", t, err)
			}
			got, err := a.dec.State(ctx, t)
			if err != nil {
				return err
			}
			next.filters[t] = got
		}
		return nil
	})
	if err != nil {
		return outcome{}, a.abortFullState(ctx, err)
	}
	a.mu.Lock()
	a.fs = nil
	a.mu.Unlock()
	if resync {
		a.met.fullResyncs.Inc()
	} else {
		a.met.initialSyncs.Inc()
	}
	a.log.Info("full state committed", "resync", resync, "mode", fs.begin.Mode.String(), "index", fs.begin.Index,
		"entities", e.Entities, "digest", e.Digest, "took", time.Since(fs.started))
	return outcome{ack: true}, nil
}

// abortFullState drops the staged entities and the transfer and returns
// cause; the live model and positions are untouched.
func (a *applier) abortFullState(ctx context.Context, cause error) error {
	a.mu.Lock()
	a.fs = nil
	a.mu.Unlock()
	err := a.store.Update(context.WithoutCancel(ctx), func(tx *model.Tx) error { return tx.StageDiscard() })
	if err != nil {
		return errors.Join(cause, fmt.Errorf("router: discard staged full state: %w", err))
	}
	return cause
}

// commit writes fn's changes and next in one transaction and publishes
// next. On failure it brings the filters back to the last committed state,
// so that nothing decided in this frame counts as seen.
func (a *applier) commit(ctx context.Context, op string, next *routerState, fn func(*model.Tx) error) error {
	var entities uint64
	err := a.store.Update(ctx, func(tx *model.Tx) error {
		if fn != nil {
			if err := fn(tx); err != nil {
				return err
			}
		}
		if err := saveState(tx, next); err != nil {
			return err
		}
		if a.beforeCommit != nil {
			if err := a.beforeCommit(ctx, op); err != nil {
				return err
			}
		}
		entities = tx.Count()
		return nil
	})
	if err != nil {
		a.met.commitFailures.Inc()
		return a.abort(ctx, fmt.Errorf("router: commit %s: %w", op, err))
	}
	a.mu.Lock()
	a.st = *next
	a.mu.Unlock()
	a.publish(entities)
	return nil
}

// abort restores every filter to its committed state and returns cause
// (joined with the restore's error, if any; the filters then stay marked
// dirty and are restored before the next decision).
func (a *applier) abort(ctx context.Context, cause error) error {
	if err := a.restoreFilters(context.WithoutCancel(ctx)); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// restoreFilters sets every filter to its committed state (a reset when
// none is stored).
func (a *applier) restoreFilters(ctx context.Context) error {
	var errs []error
	for _, t := range abi.IndexTypes {
		st := a.st.filters[t]
		if st.Version == 0 {
			st = abi.State{Version: abi.StateVersion, Type: t}
		}
		if err := a.dec.Restore(ctx, t, st); err != nil {
			errs = append(errs, fmt.Errorf("router: restore %s filter: %w", t, err))
		}
	}
	err := errors.Join(errs...)
	a.dirty = err != nil
	if err != nil {
		a.log.Error("filters not restored to the committed state; no decisions until they are", "err", err)
	}
	return err
}

func (a *applier) publish(entities uint64) {
	a.met.entities.Set(float64(entities))
	for _, t := range abi.IndexTypes {
		p, _ := a.st.position(t)
		a.met.lastApplied.WithLabelValues(t.String()).Set(float64(p.Index))
	}
}
