package native

import (
	"encoding/binary"
	"errors"
	"strconv"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/abi/guest"
)

// ErrWrongType reports a Config or State for another index type than the
// filter's.
var ErrWrongType = errors.New("native: wrong index type for this filter")

// Names the filters report in abi.Info.
const (
	LegacyName = "indexgate-legacy"
	HAName     = "indexgate-ha"
	// FilterVersion is the version both built-in filters report.
	FilterVersion = "1.0.0"
)

// Filter is a built-in filter for one index type. The zero value is not
// usable; create one with New, NewLegacy or NewHA.
type Filter struct {
	s abi.State
}

var _ guest.Filter = (*Filter)(nil)

// New returns an uninitialised filter for index type t.
func New(t abi.IndexType) (*Filter, error) {
	if !t.Valid() {
		return nil, &wrapError{msg: "native: " + abi.ErrUnknownIndexType.Error() + ": " + strconv.Itoa(int(t)), err: abi.ErrUnknownIndexType}
	}
	return newFilter(t), nil
}

// NewLegacy returns an uninitialised filter for the legacy index.
func NewLegacy() *Filter { return newFilter(abi.IndexLegacy) }

// NewHA returns an uninitialised filter for the raft (HA) index.
func NewHA() *Filter { return newFilter(abi.IndexHA) }

func newFilter(t abi.IndexType) *Filter {
	return &Filter{s: abi.State{Version: abi.StateVersion, Type: t}}
}

// Init accepts only a Config for the filter's own type. Options are ignored.
func (f *Filter) Init(cfg abi.Config) (abi.Info, error) {
	if cfg.Type != f.s.Type {
		return abi.Info{}, wrapf(ErrWrongType, "config for "+cfg.Type.String()+", filter is "+f.s.Type.String())
	}
	name := LegacyName
	if f.s.Type == abi.IndexHA {
		name = HAName
	}
	return abi.Info{Name: name, Version: FilterVersion, Type: f.s.Type}, nil
}

// Evaluate applies the decision rules for a filter of type s.Type in state s
// to h and returns the verdict without changing s. On Apply the filter's
// next state is LastIndex = h.Index, Term = h.Term. The rules, first match
// wins:
//
//  1. h.Type != s.Type: Skip/WrongType.
//  2. index 0 or PrevIndex >= Index: Resync/Invalid.
//  3. not initialised: Resync/NoBase.
//  4. another timeline: Resync/Timeline.
//  5. Index == LastIndex: Skip/Duplicate; Index < LastIndex: Skip/Stale.
//  6. PrevIndex != LastIndex: Resync/Gap.
//  7. HA only, Term < s.Term: Resync/Term (raft terms never go backwards
//     along the log).
//  8. Apply/OK.
func Evaluate(s *abi.State, h *abi.Header) abi.Verdict {
	switch {
	case h.Type != s.Type:
		return abi.Verdict{Action: abi.Skip, Reason: abi.ReasonWrongType}
	// The same test as h.Validate once the type matched a valid one, without
	// building an error value on the per-header path.
	case h.Index == 0 || h.PrevIndex >= h.Index:
		return abi.Verdict{Action: abi.Resync, Reason: abi.ReasonInvalid}
	case !s.Initialized:
		return abi.Verdict{Action: abi.Resync, Reason: abi.ReasonNoBase}
	case h.Timeline != s.Timeline:
		return abi.Verdict{Action: abi.Resync, Reason: abi.ReasonTimeline}
	case h.Index == s.LastIndex:
		return abi.Verdict{Action: abi.Skip, Reason: abi.ReasonDuplicate}
	case h.Index < s.LastIndex:
		return abi.Verdict{Action: abi.Skip, Reason: abi.ReasonStale}
	case h.PrevIndex != s.LastIndex:
		return abi.Verdict{Action: abi.Resync, Reason: abi.ReasonGap}
	case s.Type == abi.IndexHA && h.Term < s.Term:
		return abi.Verdict{Action: abi.Resync, Reason: abi.ReasonTerm}
	}
	return abi.Verdict{Action: abi.Apply, Reason: abi.ReasonOK}
}

// Decide returns Evaluate's verdict and advances the position on Apply.
func (f *Filter) Decide(h *abi.Header) abi.Verdict {
	v := Evaluate(&f.s, h)
	if v.Action == abi.Apply {
		f.s.LastIndex, f.s.Term = h.Index, h.Term
	}
	return v
}

// Batched returns f with the batch path of guest.BatchFilter: the built-in
// modules register Batched(NewHA()) and Batched(NewLegacy()). It is not a
// method of Filter so that a custom filter that embeds *Filter and
// overrides Decide does not inherit a DecideBatch that bypasses its Decide.
func Batched(f *Filter) guest.BatchFilter { return batched{f} }

type batched struct{ *Filter }

// DecideBatch decides hs in order, as Decide on each header would.
//
// Hand-written for the measured hot path of the wasm modules
// (docs/benchmarks.md): the common header, one that applies, is tested
// inline with no call and one branch for the equalities, because Go's wasm
// code pays for every call and branch, and compiles a Timeline comparison
// into a call to runtime.memequal; the timeline is compared as two
// uint64s instead. Every other header goes through Decide, so Evaluate
// stays the one place that picks a reason.
func (b batched) DecideBatch(hs []abi.Header, out []abi.Verdict) {
	out = out[:len(hs)]
	s := &b.s
	if !s.Initialized {
		for i := range hs {
			out[i] = b.Decide(&hs[i])
		}
		return
	}
	t := s.Type
	tl0, tl1 := binary.LittleEndian.Uint64(s.Timeline[:8]), binary.LittleEndian.Uint64(s.Timeline[8:])
	// Rule 7 holds for every term when the filter is not HA.
	var termMask uint64
	if t == abi.IndexHA {
		termMask = ^uint64(0)
	}
	last, term := s.LastIndex, s.Term
	for i := range hs {
		h := &hs[i]
		// Evaluate's Apply: same type and timeline, PrevIndex == LastIndex
		// < Index (which rules out rules 2, 5 and 6), term not below.
		same := (h.PrevIndex ^ last) | uint64(h.Type^t) |
			(binary.LittleEndian.Uint64(h.Timeline[:8]) ^ tl0) | (binary.LittleEndian.Uint64(h.Timeline[8:]) ^ tl1)
		if same == 0 && h.Index > last && h.Term >= term&termMask {
			out[i] = abi.Verdict{Action: abi.Apply, Reason: abi.ReasonOK}
			last, term = h.Index, h.Term
			continue
		}
		s.LastIndex, s.Term = last, term
		out[i] = b.Decide(h)
		last, term = s.LastIndex, s.Term
	}
	s.LastIndex, s.Term = last, term
}

// ModeChange takes the baseline of a switch to the filter's type: the first
// change set of that type continues from mc.BaseIndex on mc.Timeline. A
// switch away from the type, or between other types, leaves the state alone.
func (f *Filter) ModeChange(mc abi.ModeChange) error {
	if err := mc.Validate(); err != nil {
		return &wrapError{msg: "native: " + err.Error(), err: err}
	}
	if mc.To != f.s.Type {
		return nil
	}
	// A controller repeats the mode change to a router that reconnects.
	// Moving the position back to BaseIndex then would make the filter
	// apply change sets it has already applied.
	if f.s.Initialized && f.s.Timeline == mc.Timeline && f.s.LastIndex >= mc.BaseIndex {
		return nil
	}
	f.s.Initialized = true
	f.s.LastIndex = mc.BaseIndex
	f.s.Term = 0
	f.s.Timeline = mc.Timeline
	return nil
}

// Snapshot returns the filter's position. The built-in filters write no
// Extra.
func (f *Filter) Snapshot() abi.State {
	s := f.s
	s.Version = abi.StateVersion
	return s
}

// Restore sets the filter's position from s, which must be for the filter's
// type or an uninitialised State of type IndexNone (both reset the filter
// when Initialized is false). Extra is ignored, whoever wrote it. The
// version is not checked here: abi.DecodeState already refuses other
// versions on the way in.
func (f *Filter) Restore(s abi.State) error {
	switch {
	case s.Type == f.s.Type:
	case s.Type == abi.IndexNone && !s.Initialized:
	default:
		return wrapf(ErrWrongType, "state for "+s.Type.String()+" (initialized "+strconv.FormatBool(s.Initialized)+"), filter is "+f.s.Type.String())
	}
	t := f.s.Type
	if !s.Initialized {
		f.s = abi.State{Version: abi.StateVersion, Type: t}
		return nil
	}
	f.s = abi.State{
		Version:     abi.StateVersion,
		Type:        t,
		Initialized: true,
		LastIndex:   s.LastIndex,
		Term:        s.Term,
		Timeline:    s.Timeline,
	}
	return nil
}
