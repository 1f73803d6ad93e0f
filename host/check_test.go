package host_test

import (
	"context"
	"errors"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/host"
	w "github.com/indexgate/indexgate/host/internal/wasmtest"
)

func TestCheck(t *testing.T) {
	ctx := context.Background()
	cfg := host.Config{CacheDir: cacheDir}
	// A module that applies everything: a conforming ABI, wrong decisions.
	const verdictsAt = 4000
	applyAll := abi.AppendVerdicts(nil, []abi.Verdict{{Action: abi.Apply}})
	yes := handModule{
		bodies: map[string][]byte{abi.ExportDecide: w.I64Const(packed(verdictsAt, len(applyAll)))},
		data:   []w.Data{{Offset: verdictsAt, Bytes: applyAll}},
	}

	tests := []struct {
		name     string
		typ      abi.IndexType
		module   func(t *testing.T) host.Module
		want     error
		failed   string // the first failed check
		notRun   bool   // later checks are reported as not run
		passedAt int    // checks passed before the failure
	}{
		{"built-in legacy", abi.IndexLegacy, func(t *testing.T) host.Module { return builtinModule(t, abi.IndexLegacy, host.Trusted) }, nil, "", false, 0},
		{"built-in ha", abi.IndexHA, func(t *testing.T) host.Module { return builtinModule(t, abi.IndexHA, host.Untrusted) }, nil, "", false, 0},
		{"rogue, well-behaved, as legacy", abi.IndexLegacy, func(t *testing.T) host.Module { return rogueModule(t, host.Untrusted, "") }, nil, "", false, 0},
		{"no exports", abi.IndexHA, raw((&w.Module{Memory: &w.Memory{Min: 1}}).Bytes()), host.ErrMissingExport, "exports the ABI", true, 2},
		{"applies everything", abi.IndexHA, hand(yes), host.ErrSelfTest, "vector: fresh state has no baseline", true, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := host.Check(ctx, cfg, tt.typ, tt.module(t))
			t.Logf("report:\n%s", rep.String())
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if rep.Passed() != (tt.want == nil) {
				t.Fatalf("Passed() = %t with err %v", rep.Passed(), err)
			}
			if tt.want == nil {
				if rep.ABI != abi.Version || rep.Info.Type != tt.typ || len(rep.Checks) < 20 {
					t.Fatalf("report %+v", rep)
				}
				return
			}
			for i, c := range rep.Checks {
				switch {
				case i < tt.passedAt:
					if !c.Pass {
						t.Errorf("check %d %q failed before %q", i, c.Name, tt.failed)
					}
				case i == tt.passedAt:
					if c.Pass || c.Name != tt.failed || c.Detail == "" {
						t.Errorf("check %d = %+v, want %q failed with detail", i, c, tt.failed)
					}
				default:
					if c.Pass || (tt.notRun && !c.Skipped) {
						t.Errorf("check %d after the failure = %+v", i, c)
					}
				}
			}
		})
	}
	if _, err := host.Check(ctx, cfg, abi.IndexNone, builtinModule(t, abi.IndexHA, host.Trusted)); !errors.Is(err, abi.ErrUnknownIndexType) {
		t.Fatalf("Check for IndexNone: %v", err)
	}
}
