package host

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/indexgate/indexgate/abi"
)

// A step is one call of a self-test vector and what must come of it. Exactly
// one of restore, modeChange, decide, snapshot or roundTrip is set.
type step struct {
	restore    *abi.State
	modeChange *abi.ModeChange
	decide     []abi.Header
	want       []abi.Verdict // for decide
	// snapshot: the position ig_snapshot must report. Term is compared
	// unless anyTerm (a mode change sets no term the contract fixes).
	snapshot *abi.State
	anyTerm  bool
	// roundTrip: snapshot, decide roundTrip (must apply), restore the
	// snapshot, and require ig_snapshot to return the first snapshot's
	// bytes exactly.
	roundTrip []abi.Header
}

// vector is a named sequence of steps checking one rule.
type vector struct {
	name  string
	steps []step
}

// Timelines of the self-test. Fixed, so a failure reads the same each run.
var (
	tl1 = abi.Timeline{0x1e, 0x57, 1}
	tl2 = abi.Timeline{0x1e, 0x57, 2}
	tl3 = abi.Timeline{0x1e, 0x57, 3}
)

func verdict(a abi.Action, r abi.Reason) abi.Verdict { return abi.Verdict{Action: a, Reason: r} }

var (
	vApply     = verdict(abi.Apply, abi.ReasonOK)
	vDuplicate = verdict(abi.Skip, abi.ReasonDuplicate)
	vStale     = verdict(abi.Skip, abi.ReasonStale)
	vWrongType = verdict(abi.Skip, abi.ReasonWrongType)
	vGap       = verdict(abi.Resync, abi.ReasonGap)
	vTimeline  = verdict(abi.Resync, abi.ReasonTimeline)
	vNoBase    = verdict(abi.Resync, abi.ReasonNoBase)
	vInvalid   = verdict(abi.Resync, abi.ReasonInvalid)
	vTerm      = verdict(abi.Resync, abi.ReasonTerm)
)

// vectors returns the self-test for a filter of type t: the decision rules
// of docs/abi.md, one vector each, run in order on one fresh instance. They
// are the rules every filter of the type must keep, built-in or custom:
// never apply a duplicate, a stale change set, one after a gap, from
// another timeline or of another type, and carry state across
// snapshot/restore and mode changes.
func vectors(t abi.IndexType) []vector {
	other := abi.IndexHA
	if t == abi.IndexHA {
		other = abi.IndexLegacy
	}
	// Legacy headers carry no term; HA ones do, and the HA rules check it.
	var term uint64
	if t == abi.IndexHA {
		term = 3
	}
	h := func(index, prev uint64) abi.Header {
		return abi.Header{Index: index, PrevIndex: prev, Type: t, Term: term, Timeline: tl1}
	}
	pos := func(last uint64, tl abi.Timeline) *abi.State {
		return &abi.State{Version: abi.StateVersion, Type: t, Initialized: true, LastIndex: last, Term: term, Timeline: tl}
	}
	fresh := &abi.State{Version: abi.StateVersion, Type: t}
	base := pos(100, tl1)
	foreign := *base
	foreign.Extra = []byte("state written by another module")
	one := func(hd abi.Header, v abi.Verdict) step { return step{decide: []abi.Header{hd}, want: []abi.Verdict{v}} }
	with := func(hd abi.Header, f func(*abi.Header)) abi.Header { f(&hd); return hd }

	vs := []vector{
		{"fresh state has no baseline", []step{
			{snapshot: fresh},
			one(h(5, 4), vNoBase),
		}},
		{"restore sets the baseline", []step{
			{restore: base},
			{snapshot: base},
		}},
		{"apply the next change set", []step{
			one(h(101, 100), vApply),
			{snapshot: pos(101, tl1)},
		}},
		{"skip a duplicate", []step{one(h(101, 100), vDuplicate)}},
		{"skip a stale change set", []step{one(h(50, 49), vStale)}},
		{"resync on a gap", []step{one(h(105, 103), vGap)}},
		{"resync on another timeline", []step{
			one(with(h(102, 101), func(x *abi.Header) { x.Timeline = tl2 }), vTimeline),
		}},
		{"skip another index type", []step{
			one(with(h(102, 101), func(x *abi.Header) { x.Type = other }), vWrongType),
		}},
		{"resync on index 0 or prevIndex >= index", []step{
			one(h(0, 0), vInvalid),
			one(h(110, 110), vInvalid),
		}},
		{"decide a batch sequentially", []step{
			{
				decide: []abi.Header{h(102, 101), h(103, 102), h(103, 102), h(104, 103)},
				want:   []abi.Verdict{vApply, vApply, vDuplicate, vApply},
			},
			{snapshot: pos(104, tl1)},
		}},
	}
	if t == abi.IndexHA {
		vs = append(vs, vector{"resync when the raft term goes back", []step{
			one(with(h(105, 104), func(x *abi.Header) { x.Term = term - 1 }), vTerm),
			{snapshot: pos(104, tl1)},
		}})
	}
	mc := &abi.ModeChange{From: other, To: t, LastIndex: 500, BaseIndex: 500, Timeline: tl3}
	again := *mc
	again.LastIndex, again.BaseIndex = 200, 200
	away := &abi.ModeChange{From: t, To: other, LastIndex: 501, BaseIndex: 501, Timeline: tl3}
	h3 := func(index, prev uint64) abi.Header {
		return with(h(index, prev), func(x *abi.Header) { x.Timeline = tl3 })
	}
	vs = append(vs,
		vector{"a mode change to the type sets the baseline", []step{
			{modeChange: mc},
			{snapshot: pos(500, tl3), anyTerm: true},
			one(h3(501, 500), vApply),
		}},
		vector{"a repeated mode change does not move the position back", []step{
			{modeChange: &again},
			{snapshot: pos(501, tl3)},
		}},
		vector{"a mode change away from the type keeps the position", []step{
			{modeChange: away},
			{snapshot: pos(501, tl3)},
		}},
		vector{"snapshot/restore round trip", []step{
			{roundTrip: []abi.Header{h3(502, 501)}},
			one(h3(502, 501), vApply),
		}},
		vector{"accept a state with foreign extra bytes", []step{
			{restore: &foreign},
			{snapshot: base},
			one(h(101, 100), vApply),
		}},
		vector{"restoring an uninitialized state resets the filter", []step{
			{restore: fresh},
			{snapshot: fresh},
			one(h(101, 100), vNoBase),
		}},
	)
	return vs
}

// CheckResult is the outcome of one conformance check.
type CheckResult struct {
	Name string `json:"name"`
	Pass bool   `json:"pass"`
	// Skipped marks a check not run because an earlier one failed.
	Skipped bool   `json:"skipped,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// checker runs checks in order and records their results; after the first
// failure the remaining checks are recorded as not run, since they build on
// state the failed one should have left.
type checker struct {
	results []CheckResult
	err     error // the first failure
}

// run records check name; f's error fails it.
func (c *checker) run(name string, f func() error) {
	if c.err != nil {
		c.results = append(c.results, CheckResult{Name: name, Skipped: true, Detail: "not run: an earlier check failed"})
		return
	}
	if err := f(); err != nil {
		c.err = fmt.Errorf("%s: %w", name, err)
		c.results = append(c.results, CheckResult{Name: name, Detail: err.Error()})
		return
	}
	c.results = append(c.results, CheckResult{Name: name, Pass: true})
}

// selfTest runs the vectors of type t on in, which must be freshly
// initialised and is left in an arbitrary state.
func selfTest(ctx context.Context, c *checker, in *instance, t abi.IndexType) {
	for _, v := range vectors(t) {
		c.run("vector: "+v.name, func() error {
			for i := range v.steps {
				if err := runStep(ctx, in, &v.steps[i]); err != nil {
					return err
				}
			}
			return nil
		})
	}
}

func runStep(ctx context.Context, in *instance, s *step) error {
	switch {
	case s.restore != nil:
		return moduleErr(in.restore(ctx, s.restore))
	case s.modeChange != nil:
		return moduleErr(in.modeChange(ctx, s.modeChange))
	case s.decide != nil:
		got, err := in.decide(ctx, s.decide)
		if err != nil {
			return moduleErr(err)
		}
		if !slices.Equal(got, s.want) {
			return fmt.Errorf("%w: headers %s: got %s, want %s", ErrSelfTest,
				headers(s.decide), verdicts(got), verdicts(s.want))
		}
	case s.snapshot != nil:
		var got abi.State
		if err := in.snapshot(ctx, &got); err != nil {
			return moduleErr(err)
		}
		if !samePosition(&got, s.snapshot, s.anyTerm) {
			return fmt.Errorf("%w: snapshot %s, want %s", ErrSelfTest, position(&got), position(s.snapshot))
		}
	case s.roundTrip != nil:
		var first abi.State
		if err := in.snapshot(ctx, &first); err != nil {
			return moduleErr(err)
		}
		raw := abi.AppendState(nil, &first)
		if _, err := in.decide(ctx, s.roundTrip); err != nil {
			return moduleErr(err)
		}
		if err := in.restore(ctx, &first); err != nil {
			return moduleErr(err)
		}
		var again abi.State
		if err := in.snapshot(ctx, &again); err != nil {
			return moduleErr(err)
		}
		if got := abi.AppendState(nil, &again); !bytes.Equal(got, raw) {
			return fmt.Errorf("%w: state after restore %s (%d extra bytes), want %s (%d extra bytes)",
				ErrSelfTest, position(&again), len(again.Extra), position(&first), len(first.Extra))
		}
	}
	return nil
}

// moduleErr marks an error from a call as a module failure.
func moduleErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrModuleFailed, err)
}

// samePosition compares the part of two States every module understands.
// An uninitialized state has no position to compare.
func samePosition(a, b *abi.State, anyTerm bool) bool {
	if a.Type != b.Type || a.Initialized != b.Initialized {
		return false
	}
	if !a.Initialized {
		return true
	}
	return a.LastIndex == b.LastIndex && a.Timeline == b.Timeline && (anyTerm || a.Term == b.Term)
}

func position(s *abi.State) string {
	if !s.Initialized {
		return fmt.Sprintf("{%s uninitialized}", s.Type)
	}
	return fmt.Sprintf("{%s last=%d term=%d timeline=%s}", s.Type, s.LastIndex, s.Term, s.Timeline)
}

func headers(hs []abi.Header) string {
	parts := make([]string, len(hs))
	for i, h := range hs {
		parts[i] = fmt.Sprintf("{%s %d<-%d term=%d timeline=%.6s}", h.Type, h.Index, h.PrevIndex, h.Term, h.Timeline)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func verdicts(vs []abi.Verdict) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.String()
	}
	return "[" + strings.Join(parts, " ") + "]"
}
