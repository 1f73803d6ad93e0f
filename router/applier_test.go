package router

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

const (
	legacy = abi.IndexLegacy
	ha     = abi.IndexHA
)

var errInjected = errors.New("injected failure")

// step is one frame given to the applier and what it must answer.
type step struct {
	// before runs first: it injects failures.
	before  func(d *nativeDecider, a *applier)
	msg     wire.Message
	want    outcome
	wantErr error
}

func frames(ms ...wire.Message) []step {
	var out []step
	for _, m := range ms {
		out = append(out, step{msg: m, want: outcome{ack: m.Type() != wire.TypeFullStateBegin && m.Type() != wire.TypeFullStateChunk}})
	}
	return out
}

func steps(groups ...[]step) []step { return slices.Concat(groups...) }

func ackStep(m wire.Message) []step { return []step{{msg: m, want: outcome{ack: true}}} }

func resyncStep(m wire.Message) []step {
	return []step{{msg: m, want: outcome{ack: true, resync: true}}}
}

func errStep(m wire.Message, err error) []step { return []step{{msg: m, wantErr: err}} }

func failCommitOnce(_ *nativeDecider, a *applier) {
	a.beforeCommit = func(context.Context, string) error {
		a.beforeCommit = nil
		return errInjected
	}
}

func pos(t abi.IndexType, idx uint64) wire.Position {
	return wire.Position{Type: t, Index: idx, Timeline: testTimeline}
}

func mc(from, to abi.IndexType, last, base uint64) *wire.ModeChange {
	return &wire.ModeChange{Change: abi.ModeChange{From: from, To: to, LastIndex: last, BaseIndex: base, Timeline: testTimeline}}
}

// filterAt is a filter's expected position: initialized at lastIndex, or
// uninitialized when lastIndex is -1.
type filterAt map[abi.IndexType]int64

func TestApplier(t *testing.T) {
	base := frames(fullStateFrames(t, legacy, 10, 2, ent("svc", "a", "1"), ent("svc", "b", "2"), ent("svc", "c", "3"))...)
	baseModel := map[string]string{"svc/a": "1", "svc/b": "2", "svc/c": "3"}
	withKeys := func(m map[string]string, idx ...uint64) map[string]string {
		out := maps.Clone(m)
		for _, i := range idx {
			out["svc/k"+strconv.FormatUint(i, 10)] = "v" + strconv.FormatUint(i, 10)
		}
		return out
	}
	haState := fullStateFrames(t, ha, 50, 10, ent("x", "y", "z"))

	tests := []struct {
		name          string
		steps         []step
		wantPositions []wire.Position
		wantCurrent   abi.IndexType
		wantCounters  Counters
		wantModel     map[string]string
		wantFilters   filterAt
		wantFull      bool
		wantSession   uint64 // Ack.Applied after the last step
	}{
		{
			name:          "full state then apply",
			steps:         steps(base, ackStep(batch(run(legacy, 10, 3)...))),
			wantPositions: []wire.Position{pos(legacy, 13)},
			wantCurrent:   legacy,
			wantCounters:  Counters{Applied: 3, InitialSyncs: 1},
			wantModel:     withKeys(baseModel, 11, 12, 13),
			wantFilters:   filterAt{legacy: 13, ha: -1},
			wantSession:   3,
		},
		{
			name: "duplicates and stale change sets are skipped",
			steps: steps(base, ackStep(batch(run(legacy, 10, 3)...)),
				ackStep(batch(cs(legacy, 12, 11), cs(legacy, 13, 12), cs(legacy, 14, 13)))),
			wantPositions: []wire.Position{pos(legacy, 14)},
			wantCurrent:   legacy,
			wantCounters:  Counters{Applied: 4, Skipped: 2, InitialSyncs: 1},
			wantModel:     withKeys(baseModel, 11, 12, 13, 14),
			wantFilters:   filterAt{legacy: 14, ha: -1},
			wantSession:   4,
		},
		{
			name:          "a gap stops the batch and asks for a full state",
			steps:         steps(base, resyncStep(batch(cs(legacy, 11, 10), cs(legacy, 13, 12), cs(legacy, 14, 13)))),
			wantPositions: []wire.Position{pos(legacy, 11)},
			wantCurrent:   legacy,
			wantCounters:  Counters{Applied: 1, InitialSyncs: 1, Gaps: 1},
			wantModel:     withKeys(baseModel, 11),
			wantFilters:   filterAt{legacy: 11, ha: -1},
			wantFull:      true,
			wantSession:   1,
		},
		{
			// The filter applies 12 after refusing 13 in the same call; the
			// router commits only up to 11, so the filter must be at 11.
			name:          "a resync inside a group rewinds the filter to the committed prefix",
			steps:         steps(base, resyncStep(batch(cs(legacy, 11, 10), cs(legacy, 13, 12), cs(legacy, 12, 11)))),
			wantPositions: []wire.Position{pos(legacy, 11)},
			wantCurrent:   legacy,
			wantCounters:  Counters{Applied: 1, InitialSyncs: 1, Gaps: 1},
			wantModel:     withKeys(baseModel, 11),
			wantFilters:   filterAt{legacy: 11, ha: -1},
			wantFull:      true,
			wantSession:   1,
		},
		{
			name: "mode change gives the new type its baseline",
			steps: steps(base, ackStep(batch(run(legacy, 10, 2)...)), ackStep(mc(legacy, ha, 12, 12)),
				ackStep(batch(run(ha, 12, 2)...))),
			wantPositions: []wire.Position{pos(legacy, 12), pos(ha, 14)},
			wantCurrent:   ha,
			wantCounters:  Counters{Applied: 4, InitialSyncs: 1},
			wantModel:     withKeys(baseModel, 11, 12, 13, 14),
			wantFilters:   filterAt{legacy: 12, ha: 14},
			wantSession:   4,
		},
		{
			name: "a repeated mode change does not move the position back",
			steps: steps(base, ackStep(batch(run(legacy, 10, 2)...)), ackStep(mc(legacy, ha, 12, 12)),
				ackStep(batch(run(ha, 12, 2)...)), ackStep(mc(legacy, ha, 12, 12)),
				ackStep(batch(cs(ha, 14, 13), cs(ha, 15, 14)))),
			wantPositions: []wire.Position{pos(legacy, 12), pos(ha, 15)},
			wantCurrent:   ha,
			wantCounters:  Counters{Applied: 5, Skipped: 1, InitialSyncs: 1},
			wantModel:     withKeys(baseModel, 11, 12, 13, 14, 15),
			wantFilters:   filterAt{legacy: 12, ha: 15},
			wantSession:   5,
		},
		{
			name:          "a mode change that does not continue the position asks for a full state",
			steps:         steps(base, ackStep(batch(run(legacy, 10, 2)...)), resyncStep(mc(legacy, ha, 14, 14))),
			wantPositions: []wire.Position{pos(legacy, 12)},
			wantCurrent:   legacy,
			wantCounters:  Counters{Applied: 2, InitialSyncs: 1},
			wantModel:     withKeys(baseModel, 11, 12),
			wantFilters:   filterAt{legacy: 12, ha: -1},
			wantFull:      true,
			wantSession:   2,
		},
		{
			name:          "a mode change from a type the router has no position for asks for a full state",
			steps:         steps(base, resyncStep(mc(ha, legacy, 20, 20))),
			wantPositions: []wire.Position{pos(legacy, 10)},
			wantCurrent:   legacy,
			wantCounters:  Counters{InitialSyncs: 1},
			wantModel:     baseModel,
			wantFilters:   filterAt{legacy: 10, ha: -1},
			wantFull:      true,
		},
		{
			// A full state at ha@50 that names no legacy position, then the
			// replay re-sends the mode change recorded at 50: a repeat, not
			// a gap (else the router would loop through full states).
			name:          "a repeated mode change after a full state is not a gap",
			steps:         steps(base, frames(haState...), ackStep(mc(legacy, ha, 50, 50)), ackStep(batch(run(ha, 50, 1)...))),
			wantPositions: []wire.Position{pos(ha, 51)},
			wantCurrent:   ha,
			wantCounters:  Counters{Applied: 1, FullResyncs: 1, InitialSyncs: 1},
			wantModel:     map[string]string{"x/y": "z", "svc/k51": "v51"},
			wantFilters:   filterAt{legacy: -1, ha: 51},
			wantSession:   1,
		},
		{
			name: "rollback to legacy continues above the last ha index",
			steps: steps(base, ackStep(mc(legacy, ha, 10, 10)), ackStep(batch(run(ha, 10, 2)...)),
				ackStep(mc(ha, legacy, 12, 12)), ackStep(batch(run(legacy, 12, 1)...))),
			wantPositions: []wire.Position{pos(legacy, 13), pos(ha, 12)},
			wantCurrent:   legacy,
			wantCounters:  Counters{Applied: 3, InitialSyncs: 1},
			wantModel:     withKeys(baseModel, 11, 12, 13),
			wantFilters:   filterAt{legacy: 13, ha: 12},
			wantSession:   3,
		},
		{
			name:          "a type switch without a mode change is a resync, never a silent drop",
			steps:         steps(base, resyncStep(batch(cs(ha, 11, 10)))),
			wantPositions: []wire.Position{pos(legacy, 10)},
			wantCurrent:   legacy,
			wantCounters:  Counters{InitialSyncs: 1},
			wantModel:     baseModel,
			wantFilters:   filterAt{legacy: 10, ha: -1},
			wantFull:      true,
		},
		{
			name:          "mixed batch: the legacy group applies, the ha group has no baseline",
			steps:         steps(base, resyncStep(batch(cs(legacy, 11, 10), cs(ha, 12, 11), cs(legacy, 13, 12)))),
			wantPositions: []wire.Position{pos(legacy, 11)},
			wantCurrent:   legacy,
			wantCounters:  Counters{Applied: 1, InitialSyncs: 1},
			wantModel:     withKeys(baseModel, 11),
			wantFilters:   filterAt{legacy: 11, ha: -1},
			wantFull:      true,
			wantSession:   1,
		},
		{
			name: "a module skipping its own type as wrong-type is a resync",
			steps: steps(base, []step{{
				before: func(d *nativeDecider, _ *applier) { d.wrongType[legacy] = true },
				msg:    batch(run(legacy, 10, 2)...), want: outcome{ack: true, resync: true},
			}}),
			wantPositions: []wire.Position{pos(legacy, 10)},
			wantCurrent:   legacy,
			wantCounters:  Counters{InitialSyncs: 1},
			wantModel:     baseModel,
			wantFilters:   filterAt{legacy: 10, ha: -1},
			wantFull:      true,
		},
		{
			name: "a header of an unknown index type is a resync",
			steps: steps(base, resyncStep(batch(cs(legacy, 11, 10), wire.ChangeSet{
				Header: abi.Header{Index: 12, PrevIndex: 11, Type: 9, Timeline: testTimeline}, Changes: []model.Change{put("a", "b", "c")},
			}))),
			wantPositions: []wire.Position{pos(legacy, 11)},
			wantCurrent:   legacy,
			wantCounters:  Counters{Applied: 1, InitialSyncs: 1},
			wantModel:     withKeys(baseModel, 11),
			wantFilters:   filterAt{legacy: 11, ha: -1},
			wantFull:      true,
			wantSession:   1,
		},
		{
			name:          "a full state replaces the model, the positions and the filters",
			steps:         steps(base, ackStep(batch(run(legacy, 10, 2)...)), frames(haState...)),
			wantPositions: []wire.Position{pos(ha, 50)},
			wantCurrent:   ha,
			wantCounters:  Counters{Applied: 2, FullResyncs: 1, InitialSyncs: 1},
			wantModel:     map[string]string{"x/y": "z"},
			wantFilters:   filterAt{legacy: -1, ha: 50},
			wantSession:   2,
		},
		{
			name: "a full state after a resync clears the request",
			steps: steps(base, resyncStep(batch(cs(legacy, 12, 11))),
				frames(fullStateFrames(t, legacy, 20, 1, ent("svc", "a", "9"))...)),
			wantPositions: []wire.Position{pos(legacy, 20)},
			wantCurrent:   legacy,
			wantCounters:  Counters{FullResyncs: 1, InitialSyncs: 1, Gaps: 1},
			wantModel:     map[string]string{"svc/a": "9"},
			wantFilters:   filterAt{legacy: 20, ha: -1},
		},
		{
			name: "a full state with the wrong digest is discarded",
			steps: steps(base, ackStep(batch(run(legacy, 10, 1)...)), frames(haState[:2]...),
				errStep(&wire.FullStateEnd{Entities: 1, Digest: model.EmptyDigest}, errFullStateMismatch),
				ackStep(batch(run(legacy, 11, 1)...))),
			wantPositions: []wire.Position{pos(legacy, 12)},
			wantCurrent:   legacy,
			wantCounters:  Counters{Applied: 2, InitialSyncs: 1},
			wantModel:     withKeys(baseModel, 11, 12),
			wantFilters:   filterAt{legacy: 12, ha: -1},
			wantSession:   2,
		},
		{
			name: "a full state with more entities than announced is discarded",
			steps: steps(base, frames(&wire.FullStateBegin{Mode: ha, Index: 50, Timeline: testTimeline, Entities: 1}),
				errStep(&wire.FullStateChunk{Entities: []model.Entity{ent("x", "1", "1"), ent("x", "2", "2")}}, errFullStateMismatch),
				errStep(&wire.FullStateEnd{Entities: 1}, errProtocol)),
			wantPositions: []wire.Position{pos(legacy, 10)},
			wantCurrent:   legacy,
			wantCounters:  Counters{InitialSyncs: 1},
			wantModel:     baseModel,
			wantFilters:   filterAt{legacy: 10, ha: -1},
		},
		{
			name: "an end announcing another count is discarded",
			steps: steps(base, frames(haState[:2]...),
				errStep(&wire.FullStateEnd{Entities: 2, Digest: haState[2].(*wire.FullStateEnd).Digest}, errFullStateMismatch)),
			wantPositions: []wire.Position{pos(legacy, 10)},
			wantCurrent:   legacy,
			wantCounters:  Counters{InitialSyncs: 1},
			wantModel:     baseModel,
			wantFilters:   filterAt{legacy: 10, ha: -1},
		},
		{
			name:          "change sets inside a full state are a protocol error",
			steps:         steps(base, frames(haState[0]), errStep(batch(run(legacy, 10, 1)...), errProtocol)),
			wantPositions: []wire.Position{pos(legacy, 10)},
			wantCurrent:   legacy,
			wantCounters:  Counters{InitialSyncs: 1},
			wantModel:     baseModel,
			wantFilters:   filterAt{legacy: 10, ha: -1},
		},
		{
			name: "a begin contradicting its own positions is a protocol error",
			steps: steps(base, errStep(&wire.FullStateBegin{Mode: ha, Index: 50, Timeline: testTimeline,
				Positions: []wire.Position{pos(ha, 49)}}, errProtocol)),
			wantPositions: []wire.Position{pos(legacy, 10)},
			wantCurrent:   legacy,
			wantCounters:  Counters{InitialSyncs: 1},
			wantModel:     baseModel,
			wantFilters:   filterAt{legacy: 10, ha: -1},
		},
		{
			name:          "frames a router never expects are protocol errors",
			steps:         steps(errStep(&wire.FullStateChunk{}, errProtocol), errStep(&wire.Welcome{}, errProtocol)),
			wantPositions: nil,
			wantCurrent:   abi.IndexNone,
			wantModel:     map[string]string{},
			wantFilters:   filterAt{legacy: -1, ha: -1},
		},
		{
			name: "a failed commit restores the filters, so the resent batch applies",
			steps: steps(base, []step{{before: failCommitOnce, msg: batch(run(legacy, 10, 2)...), wantErr: errInjected}},
				ackStep(batch(run(legacy, 10, 2)...))),
			wantPositions: []wire.Position{pos(legacy, 12)},
			wantCurrent:   legacy,
			wantCounters:  Counters{Applied: 2, InitialSyncs: 1},
			wantModel:     withKeys(baseModel, 11, 12),
			wantFilters:   filterAt{legacy: 12, ha: -1},
			wantSession:   2,
		},
		{
			name: "a failed decide restores the filters of earlier groups",
			steps: steps(base, ackStep(mc(legacy, ha, 10, 10)), ackStep(mc(ha, legacy, 10, 10)), []step{{
				before: func(d *nativeDecider, _ *applier) { d.failDecide[ha] = errInjected },
				msg:    batch(cs(legacy, 11, 10), cs(ha, 12, 10)), wantErr: errInjected,
			}}, ackStep(batch(cs(legacy, 11, 10), cs(ha, 12, 10)))),
			wantPositions: []wire.Position{pos(legacy, 11), pos(ha, 12)},
			wantCurrent:   ha,
			wantCounters:  Counters{Applied: 2, InitialSyncs: 1},
			wantModel:     withKeys(baseModel, 11, 12),
			wantFilters:   filterAt{legacy: 11, ha: 12},
			wantSession:   2,
		},
		{
			name: "a failed mode change commit keeps the old type current",
			steps: steps(base, []step{{before: failCommitOnce, msg: mc(legacy, ha, 10, 10), wantErr: errInjected}},
				resyncStep(batch(cs(ha, 11, 10)))),
			wantPositions: []wire.Position{pos(legacy, 10)},
			wantCurrent:   legacy,
			wantCounters:  Counters{InitialSyncs: 1},
			wantModel:     baseModel,
			wantFilters:   filterAt{legacy: 10, ha: -1},
			wantFull:      true,
		},
		{
			name: "a failed full state commit keeps the old model and filters",
			steps: steps(base, ackStep(batch(run(legacy, 10, 1)...)), frames(haState[:2]...),
				[]step{{before: failCommitOnce, msg: haState[2], wantErr: errInjected}},
				ackStep(batch(run(legacy, 11, 1)...))),
			wantPositions: []wire.Position{pos(legacy, 12)},
			wantCurrent:   legacy,
			wantCounters:  Counters{Applied: 2, InitialSyncs: 1},
			wantModel:     withKeys(baseModel, 11, 12),
			wantFilters:   filterAt{legacy: 12, ha: -1},
			wantSession:   2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			s := openStore(t, dir)
			defer s.Close()
			d := newNativeDecider()
			a := newTestApplier(t, s, d)
			if err := a.beginSession(ctx); err != nil {
				t.Fatal(err)
			}
			for i, st := range tc.steps {
				if st.before != nil {
					st.before(d, a)
				}
				got, err := a.handle(ctx, st.msg)
				if st.wantErr != nil {
					if !errors.Is(err, st.wantErr) {
						t.Fatalf("step %d (%s): err %v, want %v", i, st.msg.Type(), err, st.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d (%s): %v", i, st.msg.Type(), err)
				}
				if got != st.want {
					t.Fatalf("step %d (%s): outcome %+v, want %+v", i, st.msg.Type(), got, st.want)
				}
			}
			if got := a.ack(); got.Applied != tc.wantSession || !slices.Equal(got.Positions, tc.wantPositions) || got.Current != tc.wantCurrent {
				t.Errorf("ack %+v, want positions %v current %s applied %d", got, tc.wantPositions, tc.wantCurrent, tc.wantSession)
			}
			// The session ends (as it does after any error); a transfer it
			// left unfinished is abandoned.
			if err := a.beginSession(ctx); err != nil {
				t.Fatal(err)
			}
			checkApplier(t, a, d, tc.wantPositions, tc.wantCurrent, tc.wantCounters, tc.wantFull, tc.wantFilters)
			if got := modelOf(t, s); !maps.Equal(got, tc.wantModel) {
				t.Errorf("model %v, want %v", got, tc.wantModel)
			}

			// Whatever the applier holds in memory is what a restart finds.
			s.Close()
			s2 := openStore(t, dir)
			defer s2.Close()
			d2 := newNativeDecider()
			a2 := newTestApplier(t, s2, d2)
			checkApplier(t, a2, d2, tc.wantPositions, tc.wantCurrent, tc.wantCounters, tc.wantFull, tc.wantFilters)
		})
	}
}

func checkApplier(t *testing.T, a *applier, d *nativeDecider, positions []wire.Position, current abi.IndexType, counters Counters, wantFull bool, filters filterAt) {
	t.Helper()
	st, fs := a.snapshot()
	if fs != nil {
		t.Errorf("full state still in progress: %+v", fs)
	}
	if got := st.positionList(); !slices.Equal(got, positions) {
		t.Errorf("positions %v, want %v", got, positions)
	}
	if st.current != current {
		t.Errorf("current %s, want %s", st.current, current)
	}
	if st.counters != counters {
		t.Errorf("counters %+v, want %+v", st.counters, counters)
	}
	if st.wantFull != wantFull {
		t.Errorf("wantFull %t, want %t", st.wantFull, wantFull)
	}
	hp, hc := a.hello()
	if wantFull || len(positions) == 0 {
		if hp != nil || hc != abi.IndexNone {
			t.Errorf("hello carries %v/%s, want no positions", hp, hc)
		}
	} else if !slices.Equal(hp, positions) || hc != current {
		t.Errorf("hello carries %v/%s, want %v/%s", hp, hc, positions, current)
	}
	for typ, want := range filters {
		got, _ := d.State(context.Background(), typ)
		if want < 0 {
			if got.Initialized {
				t.Errorf("%s filter at %d, want uninitialized", typ, got.LastIndex)
			}
			continue
		}
		if !got.Initialized || got.LastIndex != uint64(want) || got.Timeline != testTimeline {
			t.Errorf("%s filter %+v, want initialized at %d", typ, got, want)
		}
		// The committed filter state is the filter's state.
		if st.filters[typ].LastIndex != got.LastIndex || st.filters[typ].Initialized != got.Initialized {
			t.Errorf("%s committed filter state %+v, filter has %+v", typ, st.filters[typ], got)
		}
	}
}
