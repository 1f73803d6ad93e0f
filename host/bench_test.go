package host_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/native"
	"github.com/indexgate/indexgate/host"
)

// quiet keeps the benchmarks' output to their figures.
var quiet = slog.New(slog.DiscardHandler)

// benchBatch is the batch size of the decide benchmarks.
const benchBatch = 256

// nextBatch rewrites hs in place to continue the chain after last: the
// same work in the wasm and the native benchmark, so every header is an
// Apply and the filters do their full decision. The fields are assigned
// one by one: assigning a composite literal builds it in a temporary and
// copies it, which stalled on store forwarding and cost ~6.5 ns per header,
// most of what the native baseline measured.
func nextBatch(hs []abi.Header, last uint64) uint64 {
	for i := range hs {
		h := &hs[i]
		h.Index, h.PrevIndex, h.Type, h.Term, h.Timeline = last+1, last, abi.IndexHA, 1, tlA
		last++
	}
	return last
}

func reportPerHeader(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/header")
}

// BenchmarkDecideWASM decides batches of 256 HA headers with the built-in
// HA module through the host, in the trusted runtime and in the untrusted
// one (close-on-context-done and a deadline per call).
func BenchmarkDecideWASM(b *testing.B) {
	for _, trust := range []host.Trust{host.Trusted, host.Untrusted} {
		b.Run(trust.String(), func(b *testing.B) {
			ctx := context.Background()
			h, _ := newHost(b, host.Config{Logger: quiet})
			load(b, h, abi.IndexHA, builtinModule(b, abi.IndexHA, trust))
			baseline(b, h, abi.IndexHA, tlA, 0)
			hs := make([]abi.Header, benchBatch)
			out := make([]abi.Verdict, 0, benchBatch)
			var last uint64
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				last = nextBatch(hs, last)
				var err error
				if out, err = h.Decide(ctx, abi.IndexHA, hs, out[:0]); err != nil {
					b.Fatal(err)
				}
			}
			reportPerHeader(b)
			if out[benchBatch-1].Action != abi.Apply {
				b.Fatalf("last verdict %s", out[benchBatch-1])
			}
		})
	}
}

// BenchmarkDecideNative is the baseline: the same strategy on the same Go
// structs, no encoding, no wasm. batch is the baseline every ratio in
// docs/benchmarks.md is against: native.Batched(native.NewHA()).DecideBatch,
// exactly the code the built-in module runs, and the faster of the two
// native paths, so the ratio is not flattered by a slow baseline.
// per-header calls Decide once per header, as a Go router without wasm
// would.
func BenchmarkDecideNative(b *testing.B) {
	newFilter := func(b *testing.B) *native.Filter {
		f := native.NewHA()
		if _, err := f.Init(abi.Config{Type: abi.IndexHA}); err != nil {
			b.Fatal(err)
		}
		if err := f.Restore(abi.State{Version: abi.StateVersion, Type: abi.IndexHA, Initialized: true, Timeline: tlA}); err != nil {
			b.Fatal(err)
		}
		return f
	}
	b.Run("batch", func(b *testing.B) {
		f := native.Batched(newFilter(b))
		hs := make([]abi.Header, benchBatch)
		out := make([]abi.Verdict, benchBatch)
		var last uint64
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			last = nextBatch(hs, last)
			f.DecideBatch(hs, out)
		}
		reportPerHeader(b)
		if out[benchBatch-1].Action != abi.Apply {
			b.Fatalf("last verdict %s", out[benchBatch-1])
		}
	})
	b.Run("per-header", func(b *testing.B) {
		f := newFilter(b)
		hs := make([]abi.Header, benchBatch)
		out := make([]abi.Verdict, 0, benchBatch)
		var last uint64
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			last = nextBatch(hs, last)
			out = out[:0]
			for i := range hs {
				out = append(out, f.Decide(&hs[i]))
			}
		}
		reportPerHeader(b)
		if out[benchBatch-1].Action != abi.Apply {
			b.Fatalf("last verdict %s", out[benchBatch-1])
		}
	})
}

// BenchmarkSwapPause swaps the HA module back and forth while a goroutine
// decides batches of 256 without pause, and reports the pause (how long
// decisions waited) at p50 and p99. ns/op is the whole swap.
//
// same-module swaps between two instances of one compiled module (options
// differ), so ns/op is instantiate, init and self-test. two-runtimes swaps
// the built-in between the trusted and the untrusted runtime: the module
// swapped out has no instance left and is closed, so every swap also
// compiles from the (warm) compilation cache, with the garbage that makes.
func BenchmarkSwapPause(b *testing.B) {
	ha := builtinModule(b, abi.IndexHA, host.Trusted)
	other := ha
	other.Options = []byte("same bytes, another instance")
	untrusted := ha
	untrusted.Trust = host.Untrusted
	for _, bc := range []struct {
		name string
		mods []host.Module
	}{
		{"same-module", []host.Module{ha, other}},
		{"two-runtimes", []host.Module{ha, untrusted}},
	} {
		b.Run(bc.name, func(b *testing.B) { benchSwap(b, bc.mods) })
	}
}

func benchSwap(b *testing.B, mods []host.Module) {
	ctx := context.Background()
	h, _ := newHost(b, host.Config{Logger: quiet})
	load(b, h, abi.IndexHA, mods[0])
	baseline(b, h, abi.IndexHA, tlA, 0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		hs := make([]abi.Header, benchBatch)
		var out []abi.Verdict
		var last uint64
		for {
			select {
			case <-stop:
				return
			default:
			}
			last = nextBatch(hs, last)
			var err error
			if out, err = h.Decide(ctx, abi.IndexHA, hs, out[:0]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	pauses := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		_, rep, err := h.Swap(ctx, abi.IndexHA, mods[(i+1)%len(mods)])
		if err != nil {
			b.Fatal(err)
		}
		pauses = append(pauses, rep.Pause)
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	slices.Sort(pauses)
	b.ReportMetric(float64(pauses[len(pauses)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(pauses[(len(pauses)*99)/100].Nanoseconds()), "p99-ns")
}

// BenchmarkColdStart is a router starting up: New and both built-ins loaded
// (compile from a warm on-disk compilation cache, instantiate, init,
// self-test), one after the other and concurrently.
func BenchmarkColdStart(b *testing.B) {
	dir := b.TempDir()
	start := func(b *testing.B, parallel bool) {
		ctx := context.Background()
		h, err := host.New(ctx, host.Config{CacheDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, typ := range abi.IndexTypes {
			f := func() {
				if _, err := h.Load(ctx, typ, builtinModule(b, typ, host.Trusted)); err != nil {
					b.Error(err)
				}
			}
			if parallel {
				wg.Go(f)
			} else {
				f()
			}
		}
		wg.Wait()
		b.StopTimer()
		if err := h.Close(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	start(b, false) // warm the cache
	for _, mode := range []struct {
		name     string
		parallel bool
	}{{"sequential", false}, {"parallel", true}} {
		b.Run(mode.name, func(b *testing.B) {
			for range b.N {
				start(b, mode.parallel)
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/start")
		})
	}
}
