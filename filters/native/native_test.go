package native_test

import (
	"errors"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/native"
)

var (
	tl    = abi.Timeline{1}
	other = abi.Timeline{2}
)

func verdict(a abi.Action, r abi.Reason) abi.Verdict { return abi.Verdict{Action: a, Reason: r} }

var (
	apply     = verdict(abi.Apply, abi.ReasonOK)
	wrongType = verdict(abi.Skip, abi.ReasonWrongType)
	duplicate = verdict(abi.Skip, abi.ReasonDuplicate)
	stale     = verdict(abi.Skip, abi.ReasonStale)
	invalid   = verdict(abi.Resync, abi.ReasonInvalid)
	noBase    = verdict(abi.Resync, abi.ReasonNoBase)
	timeline  = verdict(abi.Resync, abi.ReasonTimeline)
	gap       = verdict(abi.Resync, abi.ReasonGap)
	term      = verdict(abi.Resync, abi.ReasonTerm)
)

func otherType(t abi.IndexType) abi.IndexType {
	if t == abi.IndexLegacy {
		return abi.IndexHA
	}
	return abi.IndexLegacy
}

// at returns an initialised state of type t at index last, term tm.
func at(t abi.IndexType, last, tm uint64) abi.State {
	return abi.State{Version: abi.StateVersion, Type: t, Initialized: true, LastIndex: last, Term: tm, Timeline: tl}
}

// TestDecide covers every decision rule for both types. A case with haOnly
// set gives legacy an Apply instead.
func TestDecide(t *testing.T) {
	tests := []struct {
		name   string
		start  func(t abi.IndexType) abi.State
		h      func(t abi.IndexType) abi.Header
		want   abi.Verdict
		haOnly bool // legacy applies instead
	}{
		{
			name:  "1 other type, even when otherwise invalid",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 2) },
			h:     func(t abi.IndexType) abi.Header { return abi.Header{Type: otherType(t), Timeline: tl} },
			want:  wrongType,
		},
		{
			name:  "1 unknown type",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 2) },
			h:     func(abi.IndexType) abi.Header { return abi.Header{Index: 11, PrevIndex: 10, Type: 7, Timeline: tl} },
			want:  wrongType,
		},
		{
			name:  "1 type none",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 2) },
			h:     func(abi.IndexType) abi.Header { return abi.Header{Index: 11, PrevIndex: 10, Timeline: tl} },
			want:  wrongType,
		},
		{
			name:  "2 index 0 (OpenZiti #2932), even without a baseline",
			start: func(t abi.IndexType) abi.State { return abi.State{Type: t} },
			h:     func(t abi.IndexType) abi.Header { return abi.Header{Type: t, Timeline: tl} },
			want:  invalid,
		},
		{
			name:  "2 index 0 on an initialised filter",
			start: func(t abi.IndexType) abi.State { return at(t, 0, 0) },
			h:     func(t abi.IndexType) abi.Header { return abi.Header{Type: t, Timeline: tl} },
			want:  invalid,
		},
		{
			name:  "2 prevIndex equal to index",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 2) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 11, PrevIndex: 11, Type: t, Term: 2, Timeline: tl}
			},
			want: invalid,
		},
		{
			name:  "2 prevIndex above index",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 2) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 11, PrevIndex: 12, Type: t, Term: 2, Timeline: tl}
			},
			want: invalid,
		},
		{
			name:  "3 no baseline",
			start: func(t abi.IndexType) abi.State { return abi.State{Type: t} },
			h:     func(t abi.IndexType) abi.Header { return abi.Header{Index: 1, Type: t, Timeline: tl} },
			want:  noBase,
		},
		{
			name:  "4 other timeline",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 2) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 11, PrevIndex: 10, Type: t, Term: 2, Timeline: other}
			},
			want: timeline,
		},
		{
			name:  "4 other timeline beats duplicate",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 2) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 10, PrevIndex: 9, Type: t, Term: 2, Timeline: other}
			},
			want: timeline,
		},
		{
			name:  "5 duplicate",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 2) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 10, PrevIndex: 9, Type: t, Term: 2, Timeline: tl}
			},
			want: duplicate,
		},
		{
			name:  "5 duplicate with another prevIndex and an older term",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 2) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 10, PrevIndex: 3, Type: t, Term: 1, Timeline: tl}
			},
			want: duplicate,
		},
		{
			name:  "5 stale",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 2) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 9, PrevIndex: 8, Type: t, Term: 2, Timeline: tl}
			},
			want: stale,
		},
		{
			name:  "6 gap",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 2) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 13, PrevIndex: 12, Type: t, Term: 2, Timeline: tl}
			},
			want: gap,
		},
		{
			name:  "6 prevIndex below the position",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 2) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 13, PrevIndex: 9, Type: t, Term: 2, Timeline: tl}
			},
			want: gap,
		},
		{
			name:  "6 gap beats a backwards term",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 5) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 13, PrevIndex: 12, Type: t, Term: 1, Timeline: tl}
			},
			want: gap,
		},
		{
			name:  "7 term goes backwards",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 5) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 11, PrevIndex: 10, Type: t, Term: 4, Timeline: tl}
			},
			want:   term,
			haOnly: true,
		},
		{
			name:  "8 same term",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 5) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 11, PrevIndex: 10, Type: t, Term: 5, Timeline: tl}
			},
			want: apply,
		},
		{
			name:  "8 next term, index skips within the space",
			start: func(t abi.IndexType) abi.State { return at(t, 10, 5) },
			h: func(t abi.IndexType) abi.Header {
				return abi.Header{Index: 20, PrevIndex: 10, Type: t, Term: 9, Timeline: tl}
			},
			want: apply,
		},
		{
			name:  "8 first change set after a baseline at index 0",
			start: func(t abi.IndexType) abi.State { return at(t, 0, 0) },
			h:     func(t abi.IndexType) abi.Header { return abi.Header{Index: 1, Type: t, Term: 1, Timeline: tl} },
			want:  apply,
		},
	}
	for _, typ := range abi.IndexTypes {
		for _, tt := range tests {
			t.Run(typ.String()+"/"+tt.name, func(t *testing.T) {
				want := tt.want
				if tt.haOnly && typ == abi.IndexLegacy {
					want = apply
				}
				start := tt.start(typ)
				h := tt.h(typ)
				f := restored(t, typ, start)
				if got := native.Evaluate(&start, &h); got != want {
					t.Errorf("Evaluate = %s, want %s", got, want)
				}
				if got := f.Decide(&h); got != want {
					t.Fatalf("Decide(%+v) on %+v = %s, want %s", h, start, got, want)
				}
				wantState := start
				if want == apply {
					wantState.LastIndex, wantState.Term = h.Index, h.Term
				}
				wantState.Version, wantState.Type = abi.StateVersion, typ
				if got := f.Snapshot(); !equalState(got, wantState) {
					t.Fatalf("state after %s = %+v, want %+v", want, got, wantState)
				}
				// Rule 2 is h.Validate for a header of the filter's type.
				if h.Type == typ && (h.Validate() != nil) != (want == invalid) {
					t.Fatalf("Validate() = %v but verdict %s", h.Validate(), want)
				}
			})
		}
	}
}

func restored(t *testing.T, typ abi.IndexType, s abi.State) *native.Filter {
	t.Helper()
	f, err := native.New(typ)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(s); err != nil {
		t.Fatalf("Restore(%+v): %v", s, err)
	}
	return f
}

func equalState(a, b abi.State) bool {
	return a.Version == b.Version && a.Type == b.Type && a.Initialized == b.Initialized &&
		a.LastIndex == b.LastIndex && a.Term == b.Term && a.Timeline == b.Timeline && len(a.Extra) == len(b.Extra)
}

// TestDecideBatchIsSequential: each verdict assumes the earlier Applies.
func TestDecideBatchIsSequential(t *testing.T) {
	f := native.NewHA()
	if err := f.ModeChange(abi.ModeChange{From: abi.IndexLegacy, To: abi.IndexHA, LastIndex: 100, BaseIndex: 100, Timeline: tl}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		h    abi.Header
		want abi.Verdict
	}{
		{abi.Header{Index: 101, PrevIndex: 100, Type: abi.IndexHA, Term: 3, Timeline: tl}, apply},
		{abi.Header{Index: 101, PrevIndex: 100, Type: abi.IndexHA, Term: 3, Timeline: tl}, duplicate},
		{abi.Header{Index: 102, PrevIndex: 101, Type: abi.IndexLegacy, Term: 0, Timeline: tl}, wrongType},
		{abi.Header{Index: 103, PrevIndex: 101, Type: abi.IndexHA, Term: 4, Timeline: tl}, apply},
		{abi.Header{Index: 104, PrevIndex: 103, Type: abi.IndexHA, Term: 3, Timeline: tl}, term},
		{abi.Header{Index: 104, PrevIndex: 103, Type: abi.IndexHA, Term: 4, Timeline: tl}, apply},
		{abi.Header{Index: 102, PrevIndex: 101, Type: abi.IndexHA, Term: 4, Timeline: tl}, stale},
	}
	for i, s := range steps {
		if got := f.Decide(&s.h); got != s.want {
			t.Fatalf("step %d: Decide(%+v) = %s, want %s", i, s.h, got, s.want)
		}
	}
	if s := f.Snapshot(); s.LastIndex != 104 || s.Term != 4 {
		t.Fatalf("ended at %d term %d, want 104 term 4", s.LastIndex, s.Term)
	}
}

func TestModeChange(t *testing.T) {
	uninit := func(t abi.IndexType) abi.State { return abi.State{Version: abi.StateVersion, Type: t} }
	tests := []struct {
		name    string
		start   func(t abi.IndexType) abi.State
		mc      func(t abi.IndexType) abi.ModeChange
		want    func(t abi.IndexType) abi.State
		wantErr error
	}{
		{
			name:  "to this type takes the baseline",
			start: uninit,
			mc: func(t abi.IndexType) abi.ModeChange {
				return abi.ModeChange{From: otherType(t), To: t, LastIndex: 50, BaseIndex: 50, Timeline: tl}
			},
			want: func(t abi.IndexType) abi.State { return at(t, 50, 0) },
		},
		{
			name:  "base index above last index",
			start: uninit,
			mc: func(t abi.IndexType) abi.ModeChange {
				return abi.ModeChange{From: otherType(t), To: t, LastIndex: 50, BaseIndex: 60, Timeline: tl}
			},
			want: func(t abi.IndexType) abi.State { return at(t, 60, 0) },
		},
		{
			name:  "repeated after progress never moves back",
			start: func(t abi.IndexType) abi.State { return at(t, 70, 3) },
			mc: func(t abi.IndexType) abi.ModeChange {
				return abi.ModeChange{From: otherType(t), To: t, LastIndex: 50, BaseIndex: 50, Timeline: tl}
			},
			want: func(t abi.IndexType) abi.State { return at(t, 70, 3) },
		},
		{
			name:  "repeated at the baseline is a no-op",
			start: func(t abi.IndexType) abi.State { return at(t, 50, 0) },
			mc: func(t abi.IndexType) abi.ModeChange {
				return abi.ModeChange{From: otherType(t), To: t, LastIndex: 50, BaseIndex: 50, Timeline: tl}
			},
			want: func(t abi.IndexType) abi.State { return at(t, 50, 0) },
		},
		{
			name:  "behind the baseline moves forward",
			start: func(t abi.IndexType) abi.State { return at(t, 30, 3) },
			mc: func(t abi.IndexType) abi.ModeChange {
				return abi.ModeChange{From: otherType(t), To: t, LastIndex: 50, BaseIndex: 50, Timeline: tl}
			},
			want: func(t abi.IndexType) abi.State { return at(t, 50, 0) },
		},
		{
			name:  "another timeline replaces the position, even backwards",
			start: func(t abi.IndexType) abi.State { return at(t, 70, 3) },
			mc: func(t abi.IndexType) abi.ModeChange {
				return abi.ModeChange{From: otherType(t), To: t, LastIndex: 50, BaseIndex: 50, Timeline: other}
			},
			want: func(t abi.IndexType) abi.State {
				s := at(t, 50, 0)
				s.Timeline = other
				return s
			},
		},
		{
			name:  "away from this type leaves the state",
			start: func(t abi.IndexType) abi.State { return at(t, 70, 3) },
			mc: func(t abi.IndexType) abi.ModeChange {
				return abi.ModeChange{From: t, To: otherType(t), LastIndex: 80, BaseIndex: 80, Timeline: other}
			},
			want: func(t abi.IndexType) abi.State { return at(t, 70, 3) },
		},
		{
			name:  "away from this type while uninitialised",
			start: uninit,
			mc: func(t abi.IndexType) abi.ModeChange {
				return abi.ModeChange{From: t, To: otherType(t), LastIndex: 80, BaseIndex: 80, Timeline: tl}
			},
			want: uninit,
		},
		{
			name:    "same from and to",
			start:   func(t abi.IndexType) abi.State { return at(t, 70, 3) },
			mc:      func(t abi.IndexType) abi.ModeChange { return abi.ModeChange{From: t, To: t, Timeline: tl} },
			want:    func(t abi.IndexType) abi.State { return at(t, 70, 3) },
			wantErr: abi.ErrUnknownIndexType,
		},
		{
			name:    "unknown type",
			start:   func(t abi.IndexType) abi.State { return at(t, 70, 3) },
			mc:      func(t abi.IndexType) abi.ModeChange { return abi.ModeChange{From: 9, To: t, Timeline: tl} },
			want:    func(t abi.IndexType) abi.State { return at(t, 70, 3) },
			wantErr: abi.ErrUnknownIndexType,
		},
		{
			name:  "base index below last index",
			start: uninit,
			mc: func(t abi.IndexType) abi.ModeChange {
				return abi.ModeChange{From: otherType(t), To: t, LastIndex: 50, BaseIndex: 49, Timeline: tl}
			},
			want:    uninit,
			wantErr: abi.ErrMalformed,
		},
	}
	for _, typ := range abi.IndexTypes {
		for _, tt := range tests {
			t.Run(typ.String()+"/"+tt.name, func(t *testing.T) {
				f := restored(t, typ, tt.start(typ))
				err := f.ModeChange(tt.mc(typ))
				if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
					t.Fatalf("ModeChange error %v, want %v", err, tt.wantErr)
				}
				if got, want := f.Snapshot(), tt.want(typ); !equalState(got, want) {
					t.Fatalf("state %+v, want %+v", got, want)
				}
			})
		}
	}
}

// TestRepeatedModeChangeNeverReapplies replays a reconnect: the controller
// sends the mode change again after the router applied change sets; the
// change sets it then resends must be skipped, not applied twice.
func TestRepeatedModeChangeNeverReapplies(t *testing.T) {
	for _, typ := range abi.IndexTypes {
		t.Run(typ.String(), func(t *testing.T) {
			f, _ := native.New(typ)
			mc := abi.ModeChange{From: otherType(typ), To: typ, LastIndex: 10, BaseIndex: 10, Timeline: tl}
			first := abi.Header{Index: 11, PrevIndex: 10, Type: typ, Term: 1, Timeline: tl}
			second := abi.Header{Index: 12, PrevIndex: 11, Type: typ, Term: 1, Timeline: tl}
			// Round 0 is the first connection, round 1 the reconnect.
			for round, want := range [][2]abi.Verdict{{apply, apply}, {stale, duplicate}} {
				if err := f.ModeChange(mc); err != nil {
					t.Fatal(err)
				}
				if got := f.Decide(&first); got != want[0] {
					t.Fatalf("round %d: first change set %s, want %s", round, got, want[0])
				}
				if got := f.Decide(&second); got != want[1] {
					t.Fatalf("round %d: second change set %s, want %s", round, got, want[1])
				}
			}
		})
	}
}

func TestRestore(t *testing.T) {
	tests := []struct {
		name    string
		s       func(t abi.IndexType) abi.State
		want    func(t abi.IndexType) abi.State
		wantErr error
	}{
		{
			name: "own type",
			s:    func(t abi.IndexType) abi.State { return at(t, 9, 2) },
			want: func(t abi.IndexType) abi.State { return at(t, 9, 2) },
		},
		{
			name: "foreign extra is ignored",
			s: func(t abi.IndexType) abi.State {
				s := at(t, 9, 2)
				s.Extra = []byte("written by another module")
				return s
			},
			want: func(t abi.IndexType) abi.State { return at(t, 9, 2) },
		},
		{
			name: "own type uninitialised resets",
			s:    func(t abi.IndexType) abi.State { return abi.State{Version: abi.StateVersion, Type: t, LastIndex: 9} },
			want: func(t abi.IndexType) abi.State { return abi.State{Version: abi.StateVersion, Type: t} },
		},
		{
			name: "type none uninitialised resets",
			s:    func(abi.IndexType) abi.State { return abi.State{Version: abi.StateVersion} },
			want: func(t abi.IndexType) abi.State { return abi.State{Version: abi.StateVersion, Type: t} },
		},
		{
			name: "type none initialised",
			s: func(abi.IndexType) abi.State {
				return abi.State{Version: abi.StateVersion, Initialized: true, LastIndex: 9}
			},
			want:    func(t abi.IndexType) abi.State { return at(t, 5, 1) },
			wantErr: native.ErrWrongType,
		},
		{
			name:    "other type",
			s:       func(t abi.IndexType) abi.State { return at(otherType(t), 9, 2) },
			want:    func(t abi.IndexType) abi.State { return at(t, 5, 1) },
			wantErr: native.ErrWrongType,
		},
		{
			name:    "other type uninitialised",
			s:       func(t abi.IndexType) abi.State { return abi.State{Version: abi.StateVersion, Type: otherType(t)} },
			want:    func(t abi.IndexType) abi.State { return at(t, 5, 1) },
			wantErr: native.ErrWrongType,
		},
	}
	for _, typ := range abi.IndexTypes {
		for _, tt := range tests {
			t.Run(typ.String()+"/"+tt.name, func(t *testing.T) {
				f := restored(t, typ, at(typ, 5, 1))
				err := f.Restore(tt.s(typ))
				if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
					t.Fatalf("Restore error %v, want %v", err, tt.wantErr)
				}
				if got, want := f.Snapshot(), tt.want(typ); !equalState(got, want) {
					t.Fatalf("state %+v, want %+v", got, want)
				}
			})
		}
	}
}

func TestInit(t *testing.T) {
	tests := []struct {
		name    string
		f       *native.Filter
		cfg     abi.Config
		want    abi.Info
		wantErr error
	}{
		{"legacy", native.NewLegacy(), abi.Config{Type: abi.IndexLegacy, Options: []byte("ignored")}, abi.Info{Name: "indexgate-legacy", Version: "1.0.0", Type: abi.IndexLegacy}, nil},
		{"ha", native.NewHA(), abi.Config{Type: abi.IndexHA}, abi.Info{Name: "indexgate-ha", Version: "1.0.0", Type: abi.IndexHA}, nil},
		{"legacy given ha", native.NewLegacy(), abi.Config{Type: abi.IndexHA}, abi.Info{}, native.ErrWrongType},
		{"ha given none", native.NewHA(), abi.Config{}, abi.Info{}, native.ErrWrongType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.f.Init(tt.cfg)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Init error %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("Init = %+v, want %+v", got, tt.want)
			}
			if s := tt.f.Snapshot(); s.Initialized || s.Version != abi.StateVersion {
				t.Fatalf("Init changed the state: %+v", s)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		typ     abi.IndexType
		wantErr error
	}{
		{abi.IndexLegacy, nil},
		{abi.IndexHA, nil},
		{abi.IndexNone, abi.ErrUnknownIndexType},
		{abi.IndexType(3), abi.ErrUnknownIndexType},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			f, err := native.New(tt.typ)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("New error %v, want %v", err, tt.wantErr)
			}
			if err == nil && f.Snapshot().Type != tt.typ {
				t.Fatalf("New(%s) has type %s", tt.typ, f.Snapshot().Type)
			}
		})
	}
}

func TestDecideAllocs(t *testing.T) {
	f := restored(t, abi.IndexHA, at(abi.IndexHA, 1, 1))
	h := abi.Header{Index: 2, PrevIndex: 1, Type: abi.IndexHA, Term: 1, Timeline: tl}
	bad := abi.Header{Type: abi.IndexHA, Timeline: tl}
	allocs := testing.AllocsPerRun(100, func() {
		f.Decide(&h)
		f.Decide(&bad)
		h.Index, h.PrevIndex = h.Index+1, h.Index
	})
	if allocs != 0 {
		t.Fatalf("Decide allocates %.1f times", allocs)
	}
}

func BenchmarkDecide(b *testing.B) {
	f := native.NewHA()
	if err := f.Restore(at(abi.IndexHA, 0, 1)); err != nil {
		b.Fatal(err)
	}
	h := abi.Header{Index: 1, PrevIndex: 0, Type: abi.IndexHA, Term: 1, Timeline: tl}
	for b.Loop() {
		if f.Decide(&h) != apply {
			b.Fatal("not applied")
		}
		h.Index, h.PrevIndex = h.Index+1, h.Index
	}
}
