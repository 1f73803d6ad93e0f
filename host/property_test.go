package host_test

import (
	"bytes"
	"context"
	"testing"

	"pgregory.net/rapid"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/native"
	"github.com/indexgate/indexgate/host"
)

// TestMatchesNative feeds random streams to the built-in wasm modules
// through the host and to filters/native directly: duplicates, reordering,
// gaps, other types, other timelines, term changes, mode changes, and
// snapshot/restore in the middle. Verdicts and states must be identical.
func TestMatchesNative(t *testing.T) {
	ctx := context.Background()
	h, _ := newHost(t, host.Config{})
	for _, typ := range abi.IndexTypes {
		load(t, h, typ, builtinModule(t, typ, host.Trusted))
	}
	timelines := []abi.Timeline{tlA, tlB, {0xc}}

	rapid.Check(t, func(rt *rapid.T) {
		ref := map[abi.IndexType]*native.Filter{}
		for _, typ := range abi.IndexTypes {
			f, _ := native.New(typ)
			if _, err := f.Init(abi.Config{Type: typ}); err != nil {
				rt.Fatal(err)
			}
			ref[typ] = f
			if err := h.Restore(ctx, typ, abi.State{Version: abi.StateVersion, Type: typ}); err != nil {
				rt.Fatal(err)
			}
		}
		genType := rapid.SampledFrom(abi.IndexTypes[:])
		genTimeline := rapid.SampledFrom(timelines)
		// header draws a header for a filter in state s: mostly near its
		// position, so that applies, duplicates, stale headers and gaps
		// all come up, sometimes anything at all.
		header := func(rt *rapid.T, typ abi.IndexType, s abi.State) abi.Header {
			hd := abi.Header{Type: typ, Timeline: s.Timeline, Term: s.Term}
			switch rapid.IntRange(0, 9).Draw(rt, "kind") {
			case 0, 1, 2, 3: // next
				hd.PrevIndex = s.LastIndex
				hd.Index = s.LastIndex + rapid.Uint64Range(1, 3).Draw(rt, "step")
			case 4: // duplicate or stale
				hd.Index = s.LastIndex - min(s.LastIndex, rapid.Uint64Range(0, 3).Draw(rt, "back"))
				hd.PrevIndex = hd.Index - min(hd.Index, 1)
			case 5: // gap
				hd.PrevIndex = s.LastIndex + rapid.Uint64Range(1, 3).Draw(rt, "gap")
				hd.Index = hd.PrevIndex + 1
			default: // anything
				hd.Index = rapid.Uint64Range(0, 40).Draw(rt, "index")
				hd.PrevIndex = rapid.Uint64Range(0, 40).Draw(rt, "prev")
				hd.Type = abi.IndexType(rapid.IntRange(0, 3).Draw(rt, "type"))
				hd.Timeline = genTimeline.Draw(rt, "timeline")
			}
			hd.Term += rapid.Uint64Range(0, 2).Draw(rt, "term+")
			hd.Term -= min(hd.Term, rapid.Uint64Range(0, 1).Draw(rt, "term-"))
			return hd
		}
		compareState := func(rt *rapid.T, typ abi.IndexType) abi.State {
			got, err := h.State(ctx, typ)
			if err != nil {
				rt.Fatal(err)
			}
			want := ref[typ].Snapshot()
			if got.Version != want.Version || got.Type != want.Type || got.Initialized != want.Initialized ||
				got.LastIndex != want.LastIndex || got.Term != want.Term || got.Timeline != want.Timeline ||
				!bytes.Equal(got.Extra, want.Extra) {
				rt.Fatalf("%s state: wasm %+v, native %+v", typ, got, want)
			}
			return got
		}

		var out []abi.Verdict
		for step := range rapid.IntRange(1, 40).Draw(rt, "steps") {
			typ := genType.Draw(rt, "filter")
			f := ref[typ]
			switch op := rapid.IntRange(0, 9).Draw(rt, "op"); {
			case op < 7: // a batch, decided sequentially on both sides
				s := f.Snapshot()
				hs := make([]abi.Header, rapid.IntRange(1, 16).Draw(rt, "batch"))
				want := make([]abi.Verdict, len(hs))
				for i := range hs {
					hs[i] = header(rt, typ, s)
					want[i] = f.Decide(&hs[i])
					s = f.Snapshot()
				}
				var err error
				out, err = h.Decide(ctx, typ, hs, out[:0])
				if err != nil {
					rt.Fatal(err)
				}
				for i := range hs {
					if out[i] != want[i] {
						rt.Fatalf("step %d, %s header %d %+v: wasm %s, native %s", step, typ, i, hs[i], out[i], want[i])
					}
				}
			case op == 7: // mode change, to every filter
				mc := abi.ModeChange{From: genType.Draw(rt, "from"), Timeline: genTimeline.Draw(rt, "mcTimeline")}
				mc.To = abi.IndexLegacy
				if mc.From == abi.IndexLegacy {
					mc.To = abi.IndexHA
				}
				mc.LastIndex = rapid.Uint64Range(0, 40).Draw(rt, "last")
				mc.BaseIndex = mc.LastIndex + rapid.Uint64Range(0, 3).Draw(rt, "base")
				if err := h.ModeChange(ctx, mc); err != nil {
					rt.Fatal(err)
				}
				for _, g := range ref {
					if err := g.ModeChange(mc); err != nil {
						rt.Fatal(err)
					}
				}
			case op == 8: // snapshot, then restore it: a round trip
				s := compareState(rt, typ)
				if err := h.Restore(ctx, typ, s); err != nil {
					rt.Fatal(err)
				}
			default: // restore a drawn state, initialized or not
				s := abi.State{Version: abi.StateVersion, Type: typ}
				if rapid.Bool().Draw(rt, "initialized") {
					s.Initialized = true
					s.LastIndex = rapid.Uint64Range(0, 40).Draw(rt, "restoreIndex")
					s.Term = rapid.Uint64Range(0, 3).Draw(rt, "restoreTerm")
					s.Timeline = genTimeline.Draw(rt, "restoreTimeline")
				}
				if err := h.Restore(ctx, typ, s); err != nil {
					rt.Fatal(err)
				}
				if err := f.Restore(s); err != nil {
					rt.Fatal(err)
				}
			}
			for _, typ := range abi.IndexTypes {
				compareState(rt, typ)
			}
		}
	})
	if st := h.Stats().Total(); st.Traps != 0 {
		t.Fatalf("module failures during the property test: %+v", st)
	}
}
