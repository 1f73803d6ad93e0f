package router

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/builtin"
	"github.com/indexgate/indexgate/host"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

// BenchmarkApplyBatch measures the applier's path for one Batch of 256
// change sets of one put each: decide (native Go filters, or the built-in
// wasm modules) and one bbolt transaction with the changes, positions,
// filter states and counters.
func BenchmarkApplyBatch(b *testing.B) {
	const batchSize = 256
	for _, bc := range []struct {
		name       string
		wasm, sync bool
	}{
		{"native-nosync", false, false},
		{"wasm-nosync", true, false},
		{"wasm-fsync", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			s, err := model.Open(filepath.Join(b.TempDir(), "router.db"), model.Options{NoSync: !bc.sync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var d decider = newNativeDecider()
			if bc.wasm {
				h, err := host.New(ctx, host.Config{CacheDir: testCacheDir})
				if err != nil {
					b.Fatal(err)
				}
				defer h.Close(ctx)
				for _, t := range abi.IndexTypes {
					bin, _ := builtin.For(t)
					if _, err := h.Load(ctx, t, host.Module{Name: "builtin", Bytes: bin, Trust: host.Trusted}); err != nil {
						b.Fatal(err)
					}
				}
				d = h
			}
			a := newTestApplier(b, s, d)
			for _, m := range fullStateFrames(b, legacy, 0, 1) {
				if _, err := a.handle(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
			sets := make([]wire.ChangeSet, batchSize)
			next := uint64(0)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for i := range sets {
					next++
					id := strconv.FormatUint(next%10000, 10)
					sets[i] = wire.ChangeSet{
						Header:  abi.Header{Index: next, PrevIndex: next - 1, Type: legacy, Term: 1, Timeline: testTimeline},
						Changes: []model.Change{put("svc", id, "value-"+id)},
					}
				}
				res, err := a.handle(ctx, &wire.Batch{Sets: sets})
				if err != nil || res.resync {
					b.Fatal(err, res)
				}
			}
			b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "sets/s")
		})
	}
}
