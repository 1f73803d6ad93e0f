package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/indexgate/indexgate/internal/itest"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/router"
)

// submitters is how many goroutines commit at once: enough that the
// controller's group commit fills its transactions and the sessions'
// Batch frames, as many writers behind the admin API would.
const submitters = 64

// ingest is a controller and one router in this process, connected over
// loopback TCP, both on fsync-less stores: the benchmark measures the
// pipeline (commit, log, session, wire, decide, apply, ack), not the disk.
type ingest struct {
	ctl *itest.Controller
	r   *itest.Router
}

func startIngest(tb testing.TB, native bool, logs *recorder) *ingest {
	tb.Helper()
	ctl := itest.StartController(tb, itest.ControllerConfig(tb.TempDir()))
	cfg := itest.RouterConfig(tb, "bench", tb.TempDir(), ctl.RouterAddr().String())
	cfg.NativeFilters = native
	if logs != nil {
		cfg.Logger = slog.New(logs)
	}
	r := itest.StartRouter(tb, cfg)
	itest.WaitRouterAt(tb, r, ctl.MustStatus(tb))
	return &ingest{ctl: ctl, r: r}
}

// run commits n change sets of one put each from submitters goroutines
// through Controller.Commit (the admin API's path without HTTP) and
// returns once the router has applied the last of them.
func (in *ingest) run(tb testing.TB, n int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var next atomic.Int64
	var last atomic.Uint64
	var wg sync.WaitGroup
	for range min(submitters, n) {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				id := strconv.FormatInt(i%10_000, 10)
				res, err := in.ctl.Commit(ctx, []model.Change{itest.Put("svc", id, "value-"+id)})
				if err != nil {
					tb.Errorf("commit: %v", err)
					cancel()
					return
				}
				for {
					l := last.Load()
					if res.Index <= l || last.CompareAndSwap(l, res.Index) {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	if tb.Failed() {
		tb.FailNow()
	}
	// Polled only now: a status reads the store and digests the model,
	// which would compete with the pipeline for the two cores.
	target := last.Load()
	for {
		st, err := in.r.Status(ctx)
		if err != nil {
			tb.Fatalf("router status: %v", err)
		}
		if st.LastIndex["legacy"] >= target {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("router stuck at %d of %d", st.LastIndex["legacy"], target)
		case <-time.After(time.Millisecond):
		}
	}
}

// BenchmarkIngest measures end-to-end ingest, change sets per second from
// Controller.Commit to the router's committed model, once with the
// built-in wasm filters and once with the native Go reference filters
// (router.Config.NativeFilters), so the ratio of the two comes from one
// run. docs/benchmarks.md records the figures and the command.
func BenchmarkIngest(b *testing.B) {
	for _, bc := range []struct {
		name   string
		native bool
	}{{"filters=wasm", false}, {"filters=native", true}} {
		b.Run(bc.name, func(b *testing.B) {
			in := startIngest(b, bc.native, nil)
			b.ResetTimer()
			in.run(b, b.N)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changesets/s")
			// How full the controller's transactions and the router's
			// frames were: the throughput depends on both.
			ca := in.ctl.AdminAddr().String()
			b.ReportMetric(metric(b, ca, "indexgate_controller_commit_batch_size_sum")/
				metric(b, ca, "indexgate_controller_commit_batch_size_count"), "sets/commit")
			b.ReportMetric(float64(b.N)/metric(b, in.r.AdminAddr(), "indexgate_router_commit_duration_seconds_count"), "sets/frame")
		})
	}
}

// TestIngest runs the benchmark's harness small, with both kinds of
// filters, and checks what the benchmark only assumes: the router applied
// every change set, one by one, and holds the controller's model.
func TestIngest(t *testing.T) {
	for _, native := range []bool{false, true} {
		t.Run(fmt.Sprintf("native=%v", native), func(t *testing.T) {
			logs := &recorder{}
			in := startIngest(t, native, logs)
			if got := logs.contains(slog.LevelWarn, "native Go reference filters"); got != native {
				t.Errorf("router says it decides with the native filters: %v, want %v", got, native)
			}
			const n = 500
			in.run(t, n)
			st := in.ctl.MustStatus(t)
			rs := itest.WaitRouterAt(t, in.r, st)
			if want := (router.Counters{Applied: n, InitialSyncs: 1}); st.ChangeSets != n || rs.Counters != want {
				t.Errorf("controller committed %d, router counters %+v; want %d and %+v", st.ChangeSets, rs.Counters, n, want)
			}
		})
	}
}
