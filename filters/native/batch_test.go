package native_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/native"
)

// TestDecideBatchMatchesDecide runs random batches through DecideBatch and
// through Decide header by header on a twin filter: the verdicts and the
// states must agree after every batch. The headers stay close to the
// filter's position so that every rule, Apply included, comes up often.
func TestDecideBatchMatchesDecide(t *testing.T) {
	for _, typ := range abi.IndexTypes {
		t.Run(typ.String(), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(typ), 7))
			for round := range 300 {
				batch, seq := native.Batched(native.NewHA()), native.NewHA()
				if typ == abi.IndexLegacy {
					batch, seq = native.Batched(native.NewLegacy()), native.NewLegacy()
				}
				if round%10 != 0 { // a tenth start uninitialised
					st := abi.State{Version: abi.StateVersion, Type: typ, Initialized: true,
						LastIndex: uint64(r.IntN(5)), Term: uint64(r.IntN(3)), Timeline: tl}
					if err := batch.Restore(st); err != nil {
						t.Fatal(err)
					}
					if err := seq.Restore(st); err != nil {
						t.Fatal(err)
					}
				}
				for range 5 {
					hs := randomBatch(r, typ, seq.Snapshot())
					got := make([]abi.Verdict, len(hs))
					batch.DecideBatch(hs, got)
					for i := range hs {
						if want := seq.Decide(&hs[i]); got[i] != want {
							t.Fatalf("round %d: header %d %+v: DecideBatch says %s, Decide says %s", round, i, hs[i], got[i], want)
						}
					}
					if b, s := batch.Snapshot(), seq.Snapshot(); !equalState(b, s) {
						t.Fatalf("round %d: DecideBatch left %+v, Decide %+v", round, b, s)
					}
				}
			}
		})
	}
}

// randomBatch mostly continues the chain from s, with every way of
// breaking it mixed in.
func randomBatch(r *rand.Rand, typ abi.IndexType, s abi.State) []abi.Header {
	hs := make([]abi.Header, r.IntN(40))
	last, tm := s.LastIndex, s.Term
	for i := range hs {
		h := abi.Header{Index: last + 1, PrevIndex: last, Type: typ, Term: tm, Timeline: tl}
		switch r.IntN(12) {
		case 0:
			h.Type = abi.IndexType(r.IntN(4))
		case 1:
			h.Index = uint64(r.IntN(int(last) + 2))
		case 2:
			h.PrevIndex = uint64(r.IntN(int(last) + 3))
		case 3:
			h.Timeline = other
		case 4:
			h.Timeline[15] = 1 // differs in the second half only
		case 5:
			h.Term = uint64(r.IntN(int(tm) + 2))
		case 6:
			h.Index, h.PrevIndex = 0, 0
		case 7:
			h.Term = tm + 1
		}
		if h.Index > last && h.PrevIndex == last {
			last, tm = h.Index, max(tm, h.Term) // roughly where an Apply takes it
		}
		hs[i] = h
	}
	return hs
}

// TestDecideBatchEmpty: an empty batch is a no-op.
func TestDecideBatchEmpty(t *testing.T) {
	f := native.Batched(restored(t, abi.IndexHA, at(abi.IndexHA, 5, 1)))
	f.DecideBatch(nil, nil)
	if s := f.Snapshot(); s.LastIndex != 5 || s.Term != 1 {
		t.Fatalf("empty batch moved the position to %d term %d", s.LastIndex, s.Term)
	}
}

func TestDecideBatchAllocs(t *testing.T) {
	f := native.Batched(restored(t, abi.IndexHA, at(abi.IndexHA, 0, 1)))
	hs := make([]abi.Header, 64)
	out := make([]abi.Verdict, len(hs))
	var last uint64
	allocs := testing.AllocsPerRun(100, func() {
		for i := range hs {
			hs[i] = abi.Header{Index: last + 1, PrevIndex: last, Type: abi.IndexHA, Term: 1, Timeline: tl}
			last++
		}
		f.DecideBatch(hs, out)
	})
	if allocs != 0 {
		t.Fatalf("DecideBatch allocates %.1f times", allocs)
	}
}

// TestErrorMessages pins the messages to what fmt built before the package
// stopped using it (errors.go), for every index type value.
func TestErrorMessages(t *testing.T) {
	for v := range 256 {
		typ := abi.IndexType(v)
		if _, err := native.New(typ); typ.Valid() != (err == nil) {
			t.Fatalf("New(%d) error %v", v, err)
		} else if err != nil {
			want := fmt.Errorf("native: %w: %d", abi.ErrUnknownIndexType, uint8(typ))
			sameError(t, err, want, abi.ErrUnknownIndexType)
		}
		for _, f := range []*native.Filter{native.NewLegacy(), native.NewHA()} {
			own := f.Snapshot().Type
			if _, err := f.Init(abi.Config{Type: typ}); typ != own {
				want := fmt.Errorf("%w: config for %s, filter is %s", native.ErrWrongType, typ, own)
				sameError(t, err, want, native.ErrWrongType)
			}
			for _, initialized := range []bool{false, true} {
				s := abi.State{Version: abi.StateVersion, Type: typ, Initialized: initialized}
				err := f.Restore(s)
				if typ == own || (typ == abi.IndexNone && !initialized) {
					if err != nil {
						t.Fatalf("Restore(%+v): %v", s, err)
					}
					continue
				}
				want := fmt.Errorf("%w: state for %s (initialized %t), filter is %s", native.ErrWrongType, typ, initialized, own)
				sameError(t, err, want, native.ErrWrongType)
			}
		}
	}
	for from := range abi.IndexType(4) {
		for to := range abi.IndexType(4) {
			for _, idx := range [][2]uint64{{5, 5}, {5, 4}, {0, 1 << 63}} {
				mc := abi.ModeChange{From: from, To: to, LastIndex: idx[0], BaseIndex: idx[1]}
				verr := mc.Validate()
				err := native.NewHA().ModeChange(mc)
				if verr == nil {
					if err != nil {
						t.Fatalf("ModeChange(%+v): %v", mc, err)
					}
					continue
				}
				sentinel := abi.ErrUnknownIndexType
				if errors.Is(verr, abi.ErrMalformed) {
					sentinel = abi.ErrMalformed
				}
				sameError(t, err, fmt.Errorf("native: %w", verr), sentinel)
			}
		}
	}
}

func sameError(t *testing.T, got, want, sentinel error) {
	t.Helper()
	if got == nil || got.Error() != want.Error() || !errors.Is(got, sentinel) {
		t.Fatalf("error %v, want %v (wrapping %v)", got, want, sentinel)
	}
}
