package router

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/builtin"
	"github.com/indexgate/indexgate/trust"
)

// publish puts a file into dir the safe way: written aside, then renamed
// into place.
func publish(t testing.TB, dir, name string, b []byte) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func TestFilterDirWatch(t *testing.T) {
	kf, priv := signingKey(t)
	custom := withCustomSection(builtin.Legacy(), "swap")
	atStart := withCustomSection(builtin.HA(), "flag")
	watched := t.TempDir()
	// A module already in the directory is swapped in at start.
	publish(t, watched, "ha.wasm.sig", sign(t, atStart, priv))
	publish(t, watched, "ha.wasm", atStart)

	fc := newFakeController(t)
	cfg := testConfig(t.TempDir(), fc.listen())
	cfg.FilterDir = watched
	cfg.FilterDirSettle = 20 * time.Millisecond
	cfg.Trust = trust.Config{KeyFiles: []string{kf.Public}}
	tr := startRouter(t, cfg, nil)
	waitFirstFullState(t, tr)
	waitFor(t, "the module present at start to serve", func() bool {
		f := tr.status(t).Filters["ha"]
		return f.SHA256 == hexSHA256(atStart) && f.Trust == "signed"
	})
	count := func(typ abi.IndexType, res string) float64 {
		return metricValue(t, tr.reg, "indexgate_router_filter_dir_swaps_total", "type", typ.String(), "result", res)
	}
	legacySum, _ := builtin.SHA256Hex(abi.IndexLegacy)

	// Unsigned: refused, the built-in keeps serving.
	publish(t, watched, "legacy.wasm", custom)
	waitFor(t, "the unsigned module to be refused", func() bool { return count(abi.IndexLegacy, "refused") >= 1 })
	if f := tr.status(t).Filters["legacy"]; f.SHA256 != legacySum {
		t.Fatalf("an unsigned module from the directory serves: %+v", f)
	}

	// Its signature arrives: now it is swapped in, and decides.
	publish(t, watched, "legacy.wasm.sig", sign(t, custom, priv))
	waitFor(t, "the signed module to serve", func() bool { return tr.status(t).Filters["legacy"].SHA256 == hexSHA256(custom) })
	if n := count(abi.IndexLegacy, "ok"); n != 1 {
		t.Errorf("%v ok swaps, want 1", n)
	}
	fc.appendN(3)
	if s := waitConverged(t, tr, fc); s.Counters.Applied != 3 {
		t.Errorf("counters after the swap %+v", s.Counters)
	}

	// A broken module, properly signed: it does not load, and the module
	// serving stays. Its signature lands first and changes nothing.
	broken := custom[:len(custom)/2]
	publish(t, watched, "legacy.wasm.sig", sign(t, broken, priv))
	publish(t, watched, "legacy.wasm", broken)
	waitFor(t, "the broken module to be refused", func() bool { return count(abi.IndexLegacy, "failed") >= 1 })
	if f := tr.status(t).Filters["legacy"]; f.SHA256 != hexSHA256(custom) {
		t.Fatalf("after a broken module the legacy filter is %+v", f)
	}
	fc.appendN(2)
	waitConverged(t, tr, fc)

	// Other files are not modules.
	publish(t, watched, "README", []byte("not a module"))
	publish(t, watched, "raft.wasm", custom)
	if got := count(abi.IndexHA, "failed") + count(abi.IndexHA, "refused"); got != 0 {
		t.Errorf("%v ha attempts for files that are not ha modules", got)
	}
}
