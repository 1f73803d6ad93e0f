package host_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/builtin"
	"github.com/indexgate/indexgate/host"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  host.Config
		ok   bool
	}{
		{"zero value", host.Config{}, true},
		{"memory in pages", host.Config{MemoryLimitBytes: 16 << 20}, true},
		{"memory not whole pages", host.Config{MemoryLimitBytes: 1000}, false},
		{"memory above 4 GiB", host.Config{MemoryLimitBytes: 8 << 30}, false},
		{"negative timeout", host.Config{CallTimeout: -1}, false},
		{"fallback without module", host.Config{FailPolicy: host.FailFallback}, false},
		{"fallback", host.Config{FailPolicy: host.FailFallback, Fallback: fallbackBuiltins}, true},
		{"unknown policy", host.Config{FailPolicy: 7}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%t", err, tt.ok)
			}
			if !tt.ok {
				if _, err := host.New(context.Background(), tt.cfg); err == nil {
					t.Fatal("New accepted an invalid Config")
				}
			}
		})
	}
}

// TestDecide runs both built-ins in both runtimes through the basic cycle:
// fresh (no baseline), mode change, a chain of applies, duplicates.
func TestDecide(t *testing.T) {
	for _, typ := range abi.IndexTypes {
		for _, trust := range []host.Trust{host.Trusted, host.Untrusted} {
			t.Run(typ.String()+"/"+trust.String(), func(t *testing.T) {
				ctx := context.Background()
				h, _ := newHost(t, host.Config{})
				m := builtinModule(t, typ, trust)
				info := load(t, h, typ, m)
				sum, _ := builtin.SHA256Hex(typ)
				if info.SHA256 != sum || info.Type != typ || info.ABI != abi.Version || info.Trusted != (trust == host.Trusted) || info.Source != m.Name {
					t.Fatalf("ModuleInfo %+v", info)
				}
				if got := h.Modules(); len(got) != 1 || got[0] != info {
					t.Fatalf("Modules() = %+v, want [%+v]", got, info)
				}

				if s, err := h.State(ctx, typ); err != nil || s.Initialized || s.Type != typ {
					t.Fatalf("fresh State() = %+v, %v", s, err)
				}
				hs := chain(typ, tlA, 10, 300, 1)
				if vs := decide(t, h, typ, hs[0]); vs[0] != (abi.Verdict{Action: abi.Resync, Reason: abi.ReasonNoBase}) {
					t.Fatalf("fresh filter: %s, want resync/no-baseline", vs[0])
				}
				other := abi.IndexLegacy
				if typ == abi.IndexLegacy {
					other = abi.IndexHA
				}
				if err := h.ModeChange(ctx, abi.ModeChange{From: other, To: typ, LastIndex: 10, BaseIndex: 10, Timeline: tlA}); err != nil {
					t.Fatal(err)
				}
				out := make([]abi.Verdict, 0, 512)
				vs, err := h.Decide(ctx, typ, hs, out)
				if err != nil {
					t.Fatal(err)
				}
				allApply(t, vs, len(hs))
				if &vs[0] != &out[:1][0] {
					t.Error("Decide did not reuse out's capacity")
				}
				if got := lastIndex(t, h, typ); got != 310 {
					t.Fatalf("last index %d, want 310", got)
				}
				vs = decide(t, h, typ, hs[len(hs)-1], hs[0])
				if vs[0].Reason != abi.ReasonDuplicate || vs[1].Reason != abi.ReasonStale {
					t.Fatalf("replayed headers: %v", vs)
				}
				st := h.Stats().ByType[typ]
				if st.Apply != 300 || st.Skip != 2 || st.Resync != 1 || st.Traps != 0 {
					t.Fatalf("stats %+v", st)
				}
			})
		}
	}
}

func TestCallErrors(t *testing.T) {
	ctx := context.Background()
	h, _ := newHost(t, host.Config{})
	load(t, h, abi.IndexHA, builtinModule(t, abi.IndexHA, host.Trusted))
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	st := abi.State{Version: abi.StateVersion, Type: abi.IndexLegacy}
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"load twice", func() error {
			_, err := h.Load(ctx, abi.IndexHA, builtinModule(t, abi.IndexHA, host.Trusted))
			return err
		}, host.ErrLoaded},
		{"decide unloaded", func() error {
			_, err := h.Decide(ctx, abi.IndexLegacy, chain(abi.IndexLegacy, tlA, 0, 1, 0), nil)
			return err
		}, host.ErrNotLoaded},
		{"state unloaded", func() error { _, err := h.State(ctx, abi.IndexLegacy); return err }, host.ErrNotLoaded},
		{"restore unloaded", func() error { return h.Restore(ctx, abi.IndexLegacy, st) }, host.ErrNotLoaded},
		{"swap unloaded", func() error {
			_, _, err := h.Swap(ctx, abi.IndexLegacy, builtinModule(t, abi.IndexLegacy, host.Trusted))
			return err
		}, host.ErrNotLoaded},
		{"unknown type", func() error { _, err := h.Decide(ctx, 9, nil, nil); return err }, abi.ErrUnknownIndexType},
		{"batch too large", func() error {
			_, err := h.Decide(ctx, abi.IndexHA, make([]abi.Header, abi.MaxBatch+1), nil)
			return err
		}, abi.ErrBatchTooLarge},
		{"restore other type", func() error {
			return h.Restore(ctx, abi.IndexHA, abi.State{Version: abi.StateVersion, Type: abi.IndexLegacy, Initialized: true})
		}, abi.ErrUnknownIndexType},
		{"restore other version", func() error { return h.Restore(ctx, abi.IndexHA, abi.State{Version: 9, Type: abi.IndexHA}) }, abi.ErrMalformed},
		{"invalid mode change", func() error { return h.ModeChange(ctx, abi.ModeChange{From: abi.IndexHA, To: abi.IndexHA}) }, abi.ErrUnknownIndexType},
		{"canceled context", func() error {
			_, err := h.Decide(canceled, abi.IndexHA, chain(abi.IndexHA, tlA, 0, 1, 0), nil)
			return err
		}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if s := h.Stats().Total(); s.Traps != 0 || s.Replacements != 0 {
		t.Fatalf("caller errors counted as module failures: %+v", s)
	}
}

func TestRestoreAndState(t *testing.T) {
	ctx := context.Background()
	h, _ := newHost(t, host.Config{})
	load(t, h, abi.IndexHA, rogueModule(t, host.Untrusted, "extra=private"))
	want := abi.State{Version: abi.StateVersion, Type: abi.IndexHA, Initialized: true, LastIndex: 42, Term: 7, Timeline: tlB}
	if err := h.Restore(ctx, abi.IndexHA, want); err != nil {
		t.Fatal(err)
	}
	got, err := h.State(ctx, abi.IndexHA)
	if err != nil {
		t.Fatal(err)
	}
	want.Extra = []byte("private")
	if got.LastIndex != 42 || got.Term != 7 || got.Timeline != tlB || string(got.Extra) != "private" {
		t.Fatalf("State() = %+v, want %+v", got, want)
	}
	got.Extra[0] = 'X' // a copy: must not reach the host's state
	if again, _ := h.State(ctx, abi.IndexHA); string(again.Extra) != "private" {
		t.Fatalf("State() shares Extra with the host: %q", again.Extra)
	}
	// Reset, as after a full resync.
	if err := h.Restore(ctx, abi.IndexHA, abi.State{Version: abi.StateVersion}); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.State(ctx, abi.IndexHA); got.Initialized {
		t.Fatalf("State() after reset = %+v", got)
	}
}

func TestClose(t *testing.T) {
	ctx := context.Background()
	h, err := host.New(ctx, host.Config{CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	load(t, h, abi.IndexLegacy, builtinModule(t, abi.IndexLegacy, host.Trusted))
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := h.Decide(ctx, abi.IndexLegacy, chain(abi.IndexLegacy, tlA, 0, 1, 0), nil); !errors.Is(err, host.ErrClosed) {
		t.Fatalf("Decide after Close: %v", err)
	}
	if _, err := h.Load(ctx, abi.IndexHA, builtinModule(t, abi.IndexHA, host.Trusted)); !errors.Is(err, host.ErrClosed) {
		t.Fatalf("Load after Close: %v", err)
	}
	if len(h.Modules()) != 0 {
		t.Fatalf("Modules() after Close: %v", h.Modules())
	}
}

// TestConcurrentTypes decides both types from several goroutines at once
// (run with -race): per-type serialization keeps each type's stream exact.
func TestConcurrentTypes(t *testing.T) {
	h, _ := newHost(t, host.Config{})
	const n = 2000
	var wg sync.WaitGroup
	for _, typ := range abi.IndexTypes {
		load(t, h, typ, builtinModule(t, typ, host.Trusted))
		baseline(t, h, typ, tlA, 0)
		hs := chain(typ, tlA, 0, n, 1)
		// Two goroutines per type race for the same stream: each header
		// must be applied exactly once whoever decides it.
		var mu sync.Mutex
		applied := make([]int, n+1)
		for range 2 {
			wg.Go(func() {
				for i := 0; i < n; i += 50 {
					vs, err := h.Decide(context.Background(), typ, hs[i:i+50], nil)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					for j, v := range vs {
						if v.Action == abi.Apply {
							applied[hs[i+j].Index]++
						}
					}
					mu.Unlock()
				}
			})
		}
		t.Cleanup(func() {
			for idx := 1; idx <= n; idx++ {
				if applied[idx] != 1 {
					t.Errorf("%s index %d applied %d times", typ, idx, applied[idx])
					return
				}
			}
		})
	}
	wg.Wait()
	for _, typ := range abi.IndexTypes {
		if got := lastIndex(t, h, typ); got != n {
			t.Errorf("%s last index %d, want %d", typ, got, n)
		}
	}
}

func TestSwapCarriesState(t *testing.T) {
	ctx := context.Background()
	h, _ := newHost(t, host.Config{})
	old := load(t, h, abi.IndexHA, builtinModule(t, abi.IndexHA, host.Trusted))
	baseline(t, h, abi.IndexHA, tlA, 100)
	allApply(t, decide(t, h, abi.IndexHA, chain(abi.IndexHA, tlA, 100, 50, 4)...), 50)

	info, rep, err := h.Swap(ctx, abi.IndexHA, rogueModule(t, host.Untrusted, "extra=mine"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.OldSHA256 != old.SHA256 || rep.NewSHA256 != info.SHA256 || info.Name != "rogue" || info.Trusted {
		t.Fatalf("swap report %+v, info %+v", rep, info)
	}
	if rep.State.LastIndex != 150 || rep.State.Term != 4 || rep.State.Timeline != tlA || string(rep.State.Extra) != "mine" {
		t.Fatalf("carried state %+v", rep.State)
	}
	allApply(t, decide(t, h, abi.IndexHA, chain(abi.IndexHA, tlA, 150, 10, 4)...), 10)
	if got := h.Modules()[0]; got.SHA256 != info.SHA256 {
		t.Fatalf("Modules() = %+v after swap", got)
	}
	// The rogue's private Extra goes to the built-in, which must accept a
	// foreign Extra.
	if _, _, err := h.Swap(ctx, abi.IndexHA, builtinModule(t, abi.IndexHA, host.Trusted)); err != nil {
		t.Fatal(err)
	}
	allApply(t, decide(t, h, abi.IndexHA, chain(abi.IndexHA, tlA, 160, 10, 4)...), 10)
	if st := h.Stats().ByType[abi.IndexHA]; st.Swaps != 2 || st.SwapFailures != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSwapABAB swaps between two modules and back, in one runtime and
// across both: each swap must leave the serving module's compiled code
// alone (wazero #1913: closing one of two CompiledModules of the same
// bytes breaks the other).
func TestSwapABAB(t *testing.T) {
	ctx := context.Background()
	h, _ := newHost(t, host.Config{})
	a := builtinModule(t, abi.IndexHA, host.Untrusted)
	b := rogueModule(t, host.Untrusted, "")
	aTrusted := builtinModule(t, abi.IndexHA, host.Trusted)
	load(t, h, abi.IndexHA, a)
	baseline(t, h, abi.IndexHA, tlA, 0)
	next := uint64(0)
	step := func(m host.Module) {
		t.Helper()
		if _, _, err := h.Swap(ctx, abi.IndexHA, m); err != nil {
			t.Fatal(err)
		}
		allApply(t, decide(t, h, abi.IndexHA, chain(abi.IndexHA, tlA, next, 20, 1)...), 20)
		next += 20
	}
	for _, m := range []host.Module{b, a, b, a, a, aTrusted, a, aTrusted, b, aTrusted} {
		step(m)
	}
	if got := lastIndex(t, h, abi.IndexHA); got != next {
		t.Fatalf("last index %d, want %d", got, next)
	}
}

// TestSwapUnderLoad swaps many times while a goroutine decides a continuous
// stream: every header must be applied exactly once, by one module or the
// other, and the final state counts every header.
func TestSwapUnderLoad(t *testing.T) {
	ctx := context.Background()
	h, _ := newHost(t, host.Config{})
	mods := []host.Module{
		rogueModule(t, host.Untrusted, ""),
		builtinModule(t, abi.IndexHA, host.Trusted),
		builtinModule(t, abi.IndexHA, host.Untrusted),
	}
	load(t, h, abi.IndexHA, mods[1])
	baseline(t, h, abi.IndexHA, tlA, 0)

	stop := make(chan struct{})
	done := make(chan struct{})
	var decided uint64 // the decider's: read after done
	applied := map[uint64]int{}
	go func() {
		defer close(done)
		rnd := rand.New(rand.NewPCG(1, 2))
		var out []abi.Verdict
		for {
			select {
			case <-stop:
				return
			default:
			}
			hs := chain(abi.IndexHA, tlA, decided, uint64(1+rnd.IntN(64)), 1)
			var err error
			out, err = h.Decide(ctx, abi.IndexHA, hs, out[:0])
			if err != nil {
				t.Error(err)
				return
			}
			for j, v := range out {
				if v.Action != abi.Apply {
					t.Errorf("index %d: %s", hs[j].Index, v)
					return
				}
				applied[hs[j].Index]++
			}
			decided += uint64(len(hs))
		}
	}()
	const swaps = 30
	for i := range swaps {
		if _, _, err := h.Swap(ctx, abi.IndexHA, mods[i%len(mods)]); err != nil {
			t.Error(err)
			break
		}
	}
	close(stop)
	<-done
	for idx := uint64(1); idx <= decided; idx++ {
		if applied[idx] != 1 {
			t.Fatalf("index %d applied %d times", idx, applied[idx])
		}
	}
	if got := lastIndex(t, h, abi.IndexHA); got != decided {
		t.Fatalf("last index %d, want %d", got, decided)
	}
	if st := h.Stats().ByType[abi.IndexHA]; st.Swaps != swaps || st.Apply != decided {
		t.Fatalf("stats %+v, want %d swaps and %d applies", st, swaps, decided)
	}
	t.Logf("%d swaps during %d decisions", swaps, decided)
}

// TestMetrics checks the Prometheus series against what the test did.
func TestMetrics(t *testing.T) {
	ctx := context.Background()
	h, reg := newHost(t, host.Config{})
	load(t, h, abi.IndexHA, rogueModule(t, host.Untrusted, "trap=9"))
	baseline(t, h, abi.IndexHA, tlA, 0)
	decide(t, h, abi.IndexHA, append(chain(abi.IndexHA, tlA, 0, 5, 0), chain(abi.IndexHA, tlA, 0, 2, 0)...)...)
	if _, err := h.Decide(ctx, abi.IndexHA, chain(abi.IndexHA, tlA, 5, 4, 0), nil); !errors.Is(err, host.ErrModuleFailed) {
		t.Fatalf("err = %v, want ErrModuleFailed", err)
	}
	if _, _, err := h.Swap(ctx, abi.IndexHA, builtinModule(t, abi.IndexHA, host.Trusted)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Swap(ctx, abi.IndexHA, host.Module{Name: "junk", Bytes: []byte("junk")}); err == nil {
		t.Fatal("swap to junk succeeded")
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				got[key] = m.GetCounter().GetValue()
			case m.Histogram != nil:
				got[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"indexgate_filter_decisions_total,action=apply,type=ha":  5,
		"indexgate_filter_decisions_total,action=skip,type=ha":   2,
		"indexgate_filter_decisions_total,action=resync,type=ha": 0,
		"indexgate_filter_traps_total,type=ha":                   1,
		"indexgate_filter_replacements_total,type=ha":            1,
		"indexgate_filter_fallbacks_total,type=ha":               0,
		"indexgate_filter_swaps_total,result=ok,type=ha":         1,
		"indexgate_filter_swaps_total,result=failed,type=ha":     1,
		"indexgate_filter_swap_pause_seconds,type=ha":            1, // observations
		"indexgate_filter_decide_duration_seconds,type=ha":       1, // one successful batch
		"indexgate_filter_traps_total,type=legacy":               0,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}
