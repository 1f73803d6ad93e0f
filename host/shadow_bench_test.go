package host_test

import (
	"context"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/host"
)

// BenchmarkDecideShadow is what a shadow candidate costs the active
// module's decisions: batches of 256 HA headers with the built-in HA module,
// alone and with a copy of itself (trusted) as the candidate, which decides
// the same batch in the same call and agrees on every verdict.
func BenchmarkDecideShadow(b *testing.B) {
	for _, shadow := range []bool{false, true} {
		name := "active-only"
		if shadow {
			name = "with-shadow"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			h, _ := newHost(b, host.Config{Logger: quiet})
			load(b, h, abi.IndexHA, builtinModule(b, abi.IndexHA, host.Trusted))
			baseline(b, h, abi.IndexHA, tlA, 0)
			if shadow {
				cand := builtinModule(b, abi.IndexHA, host.Trusted)
				cand.Name = "candidate"
				if _, err := h.Shadow(ctx, abi.IndexHA, cand); err != nil {
					b.Fatal(err)
				}
			}
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
			if st, ok := h.ShadowStats(abi.IndexHA); shadow && (!ok || st.Disagreements != 0 || st.Decisions != uint64(b.N*benchBatch)) {
				b.Fatalf("shadow stats %+v", st)
			}
		})
	}
}
