package host_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/host"
)

var (
	strictOnce sync.Once
	strictWasm []byte
	strictErr  error
)

// strictHA is examples/strictha built for wasip1: the built-in HA rules
// plus a rule of its own, so with "max-term-jump=N" it disagrees with the
// built-in on purpose.
func strictHA(t testing.TB) []byte {
	t.Helper()
	strictOnce.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			return
		}
		out := filepath.Join(t.TempDir(), "strictha.wasm")
		cmd := exec.Command(gobin, "build", "-trimpath", "-buildvcs=false", "-buildmode=c-shared", "-o", out,
			"github.com/indexgate/indexgate/examples/strictha")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if msg, err := cmd.CombinedOutput(); err != nil {
			strictErr = errors.New("go build examples/strictha: " + err.Error() + "\n" + string(msg))
			return
		}
		strictWasm, strictErr = os.ReadFile(out)
	})
	if strictErr != nil {
		t.Fatal(strictErr)
	}
	if strictWasm == nil {
		t.Skip("go tool not found: cannot build examples/strictha")
	}
	return strictWasm
}

// termJump is a chain of HA headers after index after whose term jumps
// from 1 to 5 at index jump.
func termJump(after, n, jump uint64) []abi.Header {
	hs := chain(abi.IndexHA, tlA, after, n, 1)
	for i := range hs {
		if hs[i].Index >= jump {
			hs[i].Term = 5
		}
	}
	return hs
}

// slowOK is the configuration of the shadow tests: untrusted candidates
// instantiate under -race on a loaded machine, which can take longer than
// the default call deadline, and none of these tests is about deadlines.
var slowOK = host.Config{CallTimeout: 30 * time.Second}

func TestShadowComparesAndResyncs(t *testing.T) {
	h, reg := newHost(t, slowOK)
	active := load(t, h, abi.IndexHA, builtinModule(t, abi.IndexHA, host.Trusted))
	cand := host.Module{Name: "strictha", Bytes: strictHA(t), Options: []byte("max-term-jump=1")}
	info, err := h.Shadow(context.Background(), abi.IndexHA, cand)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "example-strictha" || info.Trusted {
		t.Errorf("candidate %+v", info)
	}
	// The candidate follows Restore.
	baseline(t, h, abi.IndexHA, tlA, 10)

	steps := []struct {
		name    string
		batch   []abi.Header
		compare uint64 // verdicts compared in this batch
		differ  bool
	}{
		{"agreement", chain(abi.IndexHA, tlA, 10, 10, 1), 10, false},
		{"term jump at 25: the candidate refuses it", termJump(20, 10, 25), 5, true},
		// Re-synced to the active module's state (term 5 at 30), the
		// candidate agrees again: without the re-sync it would see a gap.
		{"agreement after the re-sync", termJump(30, 10, 0), 10, false},
	}
	var want host.ShadowStats
	for _, st := range steps {
		vs, err := h.Decide(context.Background(), abi.IndexHA, st.batch, nil)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		allApply(t, vs, len(st.batch)) // the active module alone decides
		want.Decisions += uint64(len(st.batch))
		want.Compared += st.compare
		if st.differ {
			want.Disagreements++
			want.Resyncs++
		}
		got, ok := h.ShadowStats(abi.IndexHA)
		if !ok || got.Decisions != want.Decisions || got.Compared != want.Compared ||
			got.Disagreements != want.Disagreements || got.Resyncs != want.Resyncs || got.Failed != "" {
			t.Fatalf("%s: stats %+v, want %+v", st.name, got, want)
		}
	}
	got, _ := h.ShadowStats(abi.IndexHA)
	if len(got.FirstDisagreements) != 1 {
		t.Fatalf("first disagreements %+v", got.FirstDisagreements)
	}
	d := got.FirstDisagreements[0]
	if d.Header.Index != 25 || d.Active != (abi.Verdict{Action: abi.Apply}) ||
		d.Candidate != (abi.Verdict{Action: abi.Resync, Reason: abi.ReasonTerm}) {
		t.Errorf("disagreement %+v", d)
	}
	if got.Module.SHA256 == active.SHA256 || h.Modules()[0].SHA256 != active.SHA256 {
		t.Errorf("the candidate replaced the active module: %+v", h.Modules())
	}
	for name, want := range map[string]float64{"shadow_decisions_total": 30, "shadow_disagreements_total": 1, "shadow_failures_total": 0} {
		if v := counterValue(t, reg, "indexgate_filter_"+name, "ha"); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	if lastIndex(t, h, abi.IndexHA) != 40 {
		t.Errorf("active at %d, want 40", lastIndex(t, h, abi.IndexHA))
	}

	stats, err := h.StopShadow(context.Background(), abi.IndexHA)
	if err != nil || stats.Decisions != 30 {
		t.Errorf("StopShadow: %+v %v", stats, err)
	}
	if _, ok := h.ShadowStats(abi.IndexHA); ok {
		t.Error("stats after StopShadow")
	}
	if _, err := h.StopShadow(context.Background(), abi.IndexHA); !errors.Is(err, host.ErrNoShadow) {
		t.Errorf("second StopShadow: %v", err)
	}
}

func TestShadowCandidateFailureIsContained(t *testing.T) {
	h, reg := newHost(t, slowOK)
	load(t, h, abi.IndexHA, builtinModule(t, abi.IndexHA, host.Trusted))
	baseline(t, h, abi.IndexHA, tlA, 10)
	if _, err := h.Shadow(context.Background(), abi.IndexHA, rogueModule(t, host.Untrusted, "trap=15")); err != nil {
		t.Fatal(err)
	}
	allApply(t, decide(t, h, abi.IndexHA, chain(abi.IndexHA, tlA, 10, 10, 1)...), 10)
	st, ok := h.ShadowStats(abi.IndexHA)
	if !ok || st.Failed == "" {
		t.Fatalf("stats after a trapping candidate: %+v", st)
	}
	if v := counterValue(t, reg, "indexgate_filter_shadow_failures_total", "ha"); v != 1 {
		t.Errorf("shadow failures %v, want 1", v)
	}
	if n := h.Stats().ByType[abi.IndexHA].Traps; n != 0 {
		t.Errorf("the candidate's trap counted against the active module: %d", n)
	}
	// The active module decides on; the dropped candidate cannot be
	// promoted.
	allApply(t, decide(t, h, abi.IndexHA, chain(abi.IndexHA, tlA, 20, 5, 1)...), 5)
	if _, _, err := h.Promote(context.Background(), abi.IndexHA); !errors.Is(err, host.ErrNoShadow) {
		t.Errorf("Promote of a dropped candidate: %v", err)
	}
}

func TestPromoteAndRollback(t *testing.T) {
	ctx := context.Background()
	h, _ := newHost(t, host.Config{})
	builtin := load(t, h, abi.IndexLegacy, builtinModule(t, abi.IndexLegacy, host.Trusted))
	if _, _, err := h.Rollback(ctx, abi.IndexLegacy); !errors.Is(err, host.ErrNoPrevious) {
		t.Errorf("Rollback after Load: %v", err)
	}
	if _, _, err := h.Promote(ctx, abi.IndexLegacy); !errors.Is(err, host.ErrNoShadow) {
		t.Errorf("Promote without a candidate: %v", err)
	}
	baseline(t, h, abi.IndexLegacy, tlA, 100)
	// The same bytes under another name: a module of its own to the host
	// (its own instance and state), without a second compilation.
	cand := builtinModule(t, abi.IndexLegacy, host.Trusted)
	cand.Name = "candidate"
	if _, err := h.Shadow(ctx, abi.IndexLegacy, cand); err != nil {
		t.Fatal(err)
	}
	next := uint64(100)
	step := func(what string) {
		t.Helper()
		allApply(t, decide(t, h, abi.IndexLegacy, chain(abi.IndexLegacy, tlA, next, 7, 0)...), 7)
		next += 7
		if got := lastIndex(t, h, abi.IndexLegacy); got != next {
			t.Fatalf("%s: at %d, want %d", what, got, next)
		}
	}
	step("shadowing")
	info, rep, err := h.Promote(ctx, abi.IndexLegacy)
	if err != nil || info.Source != "candidate" || h.Modules()[0].Source != "candidate" || rep.State.LastIndex != next {
		t.Fatalf("Promote: %+v %+v %v", info, rep, err)
	}
	if _, ok := h.ShadowStats(abi.IndexLegacy); ok {
		t.Error("a promoted candidate is still shadowing")
	}
	step("promoted")
	// A rollback returns to the module the promotion replaced; the next
	// one rolls forward again.
	for i, want := range []string{builtin.Source, "candidate", builtin.Source} {
		got, rep, err := h.Rollback(ctx, abi.IndexLegacy)
		if err != nil || got.Source != want || h.Modules()[0].Source != want || rep.State.LastIndex != next {
			t.Fatalf("rollback %d: %+v %+v %v, want %s", i, got, rep, err, want)
		}
		step("rolled back")
	}
}

// TestPromoteRollbackUnderLoad decides a continuous chain on one
// goroutine while another shadows, promotes and rolls back: every header
// must be applied exactly once, which a lost or repeated decision around
// a switch would break (a gap or a duplicate).
func TestPromoteRollbackUnderLoad(t *testing.T) {
	ctx := context.Background()
	h, _ := newHost(t, host.Config{})
	load(t, h, abi.IndexLegacy, builtinModule(t, abi.IndexLegacy, host.Trusted))
	baseline(t, h, abi.IndexLegacy, tlA, 0)
	cand := builtinModule(t, abi.IndexLegacy, host.Trusted)
	cand.Name = "candidate"

	stop := make(chan struct{})
	var decided uint64
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		for next := uint64(0); ; next += 16 {
			select {
			case <-stop:
				decided = next
				return
			default:
			}
			vs, err := h.Decide(ctx, abi.IndexLegacy, chain(abi.IndexLegacy, tlA, next, 16, 0), nil)
			if err != nil {
				errc <- err
				return
			}
			for i, v := range vs {
				if v.Action != abi.Apply {
					errc <- fmt.Errorf("header %d: %s", next+uint64(i)+1, v)
					return
				}
			}
		}
	}()
	for range 2 {
		if _, err := h.Shadow(ctx, abi.IndexLegacy, cand); err != nil {
			t.Fatal(err)
		}
		if _, _, err := h.Promote(ctx, abi.IndexLegacy); err != nil {
			t.Fatal(err)
		}
		if _, _, err := h.Rollback(ctx, abi.IndexLegacy); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-errc; err != nil {
		t.Fatalf("a decision around a switch: %v", err)
	}
	if got := lastIndex(t, h, abi.IndexLegacy); got != decided {
		t.Errorf("filter at %d after %d headers applied once each", got, decided)
	}
	if st := h.Stats().ByType[abi.IndexLegacy]; st.Apply != decided || st.Skip+st.Resync != 0 {
		t.Errorf("stats %+v, want %d applied and nothing else", st, decided)
	}
}

// counterValue is the counter name{type=typ} in reg.
func counterValue(t testing.TB, reg prometheus.Gatherer, name, typ string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{type=%q}", name, typ)
	return 0
}
