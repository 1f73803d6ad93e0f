package main

import (
	"errors"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/native"
)

var tl = abi.Timeline{7}

func hdr(index, prev, term uint64) abi.Header {
	return abi.Header{Index: index, PrevIndex: prev, Type: abi.IndexHA, Term: term, Timeline: tl}
}

var (
	apply   = abi.Verdict{Action: abi.Apply, Reason: abi.ReasonOK}
	refuse  = abi.Verdict{Action: abi.Resync, Reason: abi.ReasonTerm}
	dup     = abi.Verdict{Action: abi.Skip, Reason: abi.ReasonDuplicate}
	gap     = abi.Verdict{Action: abi.Resync, Reason: abi.ReasonGap}
	invalid = abi.Verdict{Action: abi.Resync, Reason: abi.ReasonInvalid}
	noBase  = abi.Verdict{Action: abi.Resync, Reason: abi.ReasonNoBase}
	wrong   = abi.Verdict{Action: abi.Skip, Reason: abi.ReasonWrongType}
)

// started returns a filter initialised with opts and at baseline 10.
func started(t *testing.T, opts string) *filter {
	t.Helper()
	f := newFilter()
	if _, err := f.Init(abi.Config{Type: abi.IndexHA, Options: []byte(opts)}); err != nil {
		t.Fatal(err)
	}
	if err := f.ModeChange(abi.ModeChange{From: abi.IndexLegacy, To: abi.IndexHA, LastIndex: 10, BaseIndex: 10, Timeline: tl}); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name  string
		opts  string
		steps []abi.Header
		want  []abi.Verdict
	}{
		{
			name:  "first term after the baseline is free",
			opts:  "max-term-jump=1",
			steps: []abi.Header{hdr(11, 10, 40)},
			want:  []abi.Verdict{apply},
		},
		{
			name:  "jump within the limit",
			opts:  "max-term-jump=2",
			steps: []abi.Header{hdr(11, 10, 3), hdr(12, 11, 5)},
			want:  []abi.Verdict{apply, apply},
		},
		{
			name:  "jump above the limit is refused and does not advance",
			opts:  "max-term-jump=2",
			steps: []abi.Header{hdr(11, 10, 3), hdr(12, 11, 6), hdr(12, 11, 4)},
			want:  []abi.Verdict{apply, refuse, apply},
		},
		{
			name:  "no limit without options",
			opts:  "",
			steps: []abi.Header{hdr(11, 10, 3), hdr(12, 11, 300)},
			want:  []abi.Verdict{apply, apply},
		},
		{
			name:  "standard rules come first: duplicate",
			opts:  "max-term-jump=1",
			steps: []abi.Header{hdr(11, 10, 3), hdr(11, 10, 9)},
			want:  []abi.Verdict{apply, dup},
		},
		{
			name:  "standard rules come first: gap",
			opts:  "max-term-jump=1",
			steps: []abi.Header{hdr(11, 10, 3), hdr(13, 12, 9)},
			want:  []abi.Verdict{apply, gap},
		},
		{
			name:  "standard rules come first: index 0",
			opts:  "max-term-jump=1",
			steps: []abi.Header{hdr(11, 10, 3), hdr(0, 0, 9)},
			want:  []abi.Verdict{apply, invalid},
		},
		{
			name:  "other type untouched",
			opts:  "max-term-jump=1",
			steps: []abi.Header{hdr(11, 10, 3), {Index: 12, PrevIndex: 11, Type: abi.IndexLegacy, Term: 90, Timeline: tl}, hdr(12, 11, 4)},
			want:  []abi.Verdict{apply, wrong, apply},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := started(t, tt.opts)
			for i, h := range tt.steps {
				if got := f.Decide(&h); got != tt.want[i] {
					t.Fatalf("step %d: Decide(%+v) = %s, want %s", i, h, got, tt.want[i])
				}
			}
		})
	}
}

// TestMatchesBuiltinWithoutJumps: the module must pass the host's self-test,
// which uses the standard vectors. Wherever no term jumps above the limit,
// strictha and the built-in HA filter agree verdict for verdict.
func TestMatchesBuiltinWithoutJumps(t *testing.T) {
	f := newFilter()
	ref := native.NewHA()
	if _, err := f.Init(abi.Config{Type: abi.IndexHA, Options: []byte("max-term-jump=1")}); err != nil {
		t.Fatal(err)
	}
	other := abi.Timeline{8}
	seq := []abi.Header{
		hdr(11, 10, 1), // no baseline yet
		hdr(0, 0, 1),   // invalid
		{Index: 5, PrevIndex: 4, Type: abi.IndexLegacy, Timeline: tl},
	}
	mc := abi.ModeChange{From: abi.IndexLegacy, To: abi.IndexHA, LastIndex: 10, BaseIndex: 10, Timeline: tl}
	after := []abi.Header{
		hdr(11, 10, 1), hdr(11, 10, 1), hdr(12, 11, 2), hdr(10, 9, 1), hdr(14, 13, 2),
		{Index: 13, PrevIndex: 12, Type: abi.IndexHA, Term: 2, Timeline: other},
		hdr(13, 12, 1), hdr(13, 12, 3), hdr(20, 13, 3), hdr(20, 19, 3),
	}
	check := func(phase string, hs []abi.Header) {
		for i, h := range hs {
			got, want := f.Decide(&h), ref.Decide(&h)
			if got != want {
				t.Fatalf("%s %d: strictha %s, built-in %s for %+v", phase, i, got, want, h)
			}
		}
	}
	check("before mode change", seq)
	for _, flt := range []interface{ ModeChange(abi.ModeChange) error }{f, ref} {
		if err := flt.ModeChange(mc); err != nil {
			t.Fatal(err)
		}
	}
	check("after mode change", after)
	if got, want := f.Snapshot(), ref.Snapshot(); got.LastIndex != want.LastIndex || got.Term != want.Term {
		t.Fatalf("positions differ: %+v vs %+v", got, want)
	}
}

func TestExtraCarriesCounters(t *testing.T) {
	f := started(t, "max-term-jump=1")
	for _, h := range []abi.Header{hdr(11, 10, 2), hdr(12, 11, 9), hdr(12, 11, 8)} {
		f.Decide(&h)
	}
	snap := f.Snapshot()
	if len(snap.Extra) != extraSize {
		t.Fatalf("Extra is %d bytes, want %d", len(snap.Extra), extraSize)
	}
	foreign := snap
	foreign.Extra = []byte("written by someone else, same length!!!")[:extraSize]
	tests := []struct {
		name            string
		s               abi.State
		refused, lastAt uint64
	}{
		{"own extra", snap, 2, 12},
		{"empty extra after a resync", abi.State{Version: abi.StateVersion, Type: abi.IndexHA, Initialized: true, LastIndex: 50, Timeline: tl}, 0, 0},
		{"foreign extra", foreign, 0, 0},
		{"truncated own extra", abi.State{Version: abi.StateVersion, Type: abi.IndexHA, Extra: snap.Extra[:extraSize-1]}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newFilter()
			g.refused = 99 // must not survive a restore
			if err := g.Restore(tt.s); err != nil {
				t.Fatal(err)
			}
			if g.refused != tt.refused || g.lastRefused != tt.lastAt {
				t.Fatalf("counters %d, %d; want %d, %d", g.refused, g.lastRefused, tt.refused, tt.lastAt)
			}
			if got := g.Snapshot(); got.LastIndex != tt.s.LastIndex || got.Initialized != tt.s.Initialized {
				t.Fatalf("position %+v, want the restored %+v", got, tt.s)
			}
		})
	}
}

func TestInit(t *testing.T) {
	tests := []struct {
		name    string
		cfg     abi.Config
		want    uint64
		wantErr bool
	}{
		{"no options", abi.Config{Type: abi.IndexHA}, 0, false},
		{"limit", abi.Config{Type: abi.IndexHA, Options: []byte("max-term-jump=3")}, 3, false},
		{"surrounding space", abi.Config{Type: abi.IndexHA, Options: []byte(" max-term-jump=3\n")}, 3, false},
		{"zero", abi.Config{Type: abi.IndexHA, Options: []byte("max-term-jump=0")}, 0, true},
		{"negative", abi.Config{Type: abi.IndexHA, Options: []byte("max-term-jump=-1")}, 0, true},
		{"unknown key", abi.Config{Type: abi.IndexHA, Options: []byte("jump=3")}, 0, true},
		{"legacy type", abi.Config{Type: abi.IndexLegacy}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFilter()
			info, err := f.Init(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Init error %v, want error %t", err, tt.wantErr)
			}
			if err != nil {
				if tt.cfg.Type == abi.IndexHA && !errors.Is(err, errOptions) {
					t.Fatalf("error %v is not errOptions", err)
				}
				return
			}
			if f.maxJump != tt.want || info.Type != abi.IndexHA || info.Name == "" {
				t.Fatalf("maxJump %d, info %+v; want %d", f.maxJump, info, tt.want)
			}
		})
	}
}
