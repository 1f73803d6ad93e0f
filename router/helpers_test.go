package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/native"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

// kill9ChildEnv, when set, makes the test binary a router child process
// for TestKill9.
const kill9ChildEnv = "ROUTER_KILL9_CHILD"

// testCacheDir is one compilation cache for every router of the test
// binary, so the built-ins compile once.
var testCacheDir string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, cleanup, err := wasmCacheDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	testCacheDir = dir
	return m.Run()
}

// wasmCacheDir is the compilation cache the tests' routers share. Compiling
// the two built-ins takes tens of seconds under -race, so it persists
// across runs in the user's cache directory (wazero keys its entries by
// its own version, so stale entries are never used), or in
// $INDEXGATE_TEST_WASM_CACHE; a temporary directory is the fallback.
func wasmCacheDir() (string, func(), error) {
	dir := os.Getenv("INDEXGATE_TEST_WASM_CACHE")
	if dir == "" {
		if ucd, err := os.UserCacheDir(); err == nil {
			dir = filepath.Join(ucd, "indexgate", "test-wasm-cache")
		}
	}
	if dir != "" && os.MkdirAll(dir, 0o700) == nil {
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "router-test-cache-")
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

// testLogger discards unless ROUTER_TEST_LOG is set: router goroutines log
// after a test's end, which t.Log does not allow.
func testLogger() *slog.Logger {
	if os.Getenv("ROUTER_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitFor polls cond until it holds; the limit only turns a hang into a
// failure, it asserts nothing about speed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// nativeDecider is a decider on the reference filters, optionally failing.
type nativeDecider struct {
	mu sync.Mutex
	f  [numTypes]*native.Filter
	// failDecide makes the next Decide of a type fail (once), as a trapping
	// module would: the filter stays at its state from before the call.
	failDecide [numTypes]error
	// wrongType makes the type's filter answer Skip/WrongType, as a
	// broken module might.
	wrongType [numTypes]bool
	decides   int
}

func newNativeDecider() *nativeDecider {
	return &nativeDecider{f: [numTypes]*native.Filter{abi.IndexLegacy: native.NewLegacy(), abi.IndexHA: native.NewHA()}}
}

func (d *nativeDecider) Decide(_ context.Context, t abi.IndexType, hs []abi.Header, out []abi.Verdict) ([]abi.Verdict, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !t.Valid() {
		return out, abi.ErrUnknownIndexType
	}
	d.decides++
	if err := d.failDecide[t]; err != nil {
		d.failDecide[t] = nil
		return out, err
	}
	for i := range hs {
		if d.wrongType[t] {
			out = append(out, abi.Verdict{Action: abi.Skip, Reason: abi.ReasonWrongType})
			continue
		}
		out = append(out, d.f[t].Decide(&hs[i]))
	}
	return out, nil
}

func (d *nativeDecider) ModeChange(_ context.Context, mc abi.ModeChange) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, t := range abi.IndexTypes {
		errs = append(errs, d.f[t].ModeChange(mc))
	}
	return errors.Join(errs...)
}

func (d *nativeDecider) Restore(_ context.Context, t abi.IndexType, st abi.State) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.f[t].Restore(st)
}

func (d *nativeDecider) State(_ context.Context, t abi.IndexType) (abi.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.f[t].Snapshot(), nil
}

func openStore(t testing.TB, dir string) *model.Store {
	t.Helper()
	s, err := model.Open(filepath.Join(dir, "router.db"), model.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestApplier(t testing.TB, s *model.Store, d decider) *applier {
	t.Helper()
	met, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApplier(context.Background(), s, d, testLogger(), met)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// testTimeline is the timeline of the unit tests' change sets.
var testTimeline = abi.Timeline{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

func put(kind, id, value string) model.Change {
	return model.Change{Op: model.OpPut, Kind: kind, ID: id, Value: value}
}

func del(kind, id string) model.Change { return model.Change{Op: model.OpDelete, Kind: kind, ID: id} }

// cs is a change set of type t at index idx after prev on testTimeline.
func cs(t abi.IndexType, idx, prev uint64, changes ...model.Change) wire.ChangeSet {
	if len(changes) == 0 {
		changes = []model.Change{put("svc", fmt.Sprintf("k%d", idx), fmt.Sprintf("v%d", idx))}
	}
	return wire.ChangeSet{
		Header:  abi.Header{Index: idx, PrevIndex: prev, Type: t, Term: 1, Timeline: testTimeline},
		Changes: changes,
	}
}

func batch(sets ...wire.ChangeSet) *wire.Batch { return &wire.Batch{Sets: sets} }

// run is a chain of change sets of type t after index after.
func run(t abi.IndexType, after, n uint64) []wire.ChangeSet {
	var out []wire.ChangeSet
	for i := after + 1; i <= after+n; i++ {
		out = append(out, cs(t, i, i-1))
	}
	return out
}

// fullStateFrames is a complete, correct full state of entities at
// mode@index on testTimeline, in chunks of chunk entities.
func fullStateFrames(t testing.TB, mode abi.IndexType, index uint64, chunk int, entities ...model.Entity) []wire.Message {
	t.Helper()
	n := uint64(len(entities))
	out := []wire.Message{&wire.FullStateBegin{
		Mode: mode, Timeline: testTimeline, Index: index,
		Positions: []wire.Position{{Type: mode, Index: index, Timeline: testTimeline}},
		Entities:  n,
	}}
	for rest := entities; len(rest) > 0; {
		k := min(chunk, len(rest))
		out = append(out, &wire.FullStateChunk{Entities: rest[:k]})
		rest = rest[k:]
	}
	return append(out, &wire.FullStateEnd{Entities: n, Digest: entitiesDigest(t, entities)})
}

// entitiesDigest is the model digest of entities, computed by a scratch
// store so the test does not restate the digest format.
func entitiesDigest(t testing.TB, entities []model.Entity) string {
	t.Helper()
	s, err := model.Open(filepath.Join(t.TempDir(), "digest.db"), model.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var d string
	err = s.Update(context.Background(), func(tx *model.Tx) error {
		var ch []model.Change
		for _, e := range entities {
			ch = append(ch, put(e.Kind, e.ID, e.Value))
		}
		if err := tx.Apply(ch); err != nil {
			return err
		}
		var err error
		d, err = tx.Digest()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func ent(kind, id, value string) model.Entity { return model.Entity{Kind: kind, ID: id, Value: value} }

// modelOf returns the store's entities as kind/id → value.
func modelOf(t testing.TB, s *model.Store) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := s.View(context.Background(), func(tx *model.Tx) error {
		return tx.ForEach(func(e model.Entity) error {
			got[e.Kind+"/"+e.ID] = e.Value
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// metricValue is the value of the series name{labels} in reg, labels
// given as name, value pairs (0 when absent): counters, gauges, and a
// histogram's count.
func metricValue(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}
