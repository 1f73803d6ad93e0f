package host_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/builtin"
	"github.com/indexgate/indexgate/host"
)

var (
	// cacheDir is a compilation cache shared by the tests: the built-ins
	// compile once per run (slow under -race) instead of once per Host.
	cacheDir string
	// rogueWasm is testdata/rogue built for wasip1; nil when the go tool is
	// missing (tests that need it skip) or the build failed (rogueErr).
	rogueWasm []byte
	rogueErr  error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "indexgate-host-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cacheDir = filepath.Join(dir, "cache")
	rogueWasm, rogueErr = buildRogue(dir)
	return m.Run()
}

// buildRogue builds testdata/rogue as a WASI reactor, as `make wasm` builds
// the built-ins.
func buildRogue(dir string) ([]byte, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return nil, nil
	}
	out := filepath.Join(dir, "rogue.wasm")
	cmd := exec.Command(gobin, "build", "-trimpath", "-buildvcs=false", "-buildmode=c-shared", "-o", out, "./testdata/rogue")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./testdata/rogue: %v\n%s", err, msg)
	}
	return os.ReadFile(out)
}

// rogue returns the rogue module, skipping the test without a go tool.
func rogue(t testing.TB) []byte {
	t.Helper()
	if rogueErr != nil {
		t.Fatal(rogueErr)
	}
	if rogueWasm == nil {
		t.Skip("go tool not found: cannot build testdata/rogue")
	}
	return rogueWasm
}

// rogueModule is the rogue filter with the given misbehaviour options.
func rogueModule(t testing.TB, trust host.Trust, opts string) host.Module {
	return host.Module{Name: "rogue:" + opts, Bytes: rogue(t), Trust: trust, Options: []byte(opts)}
}

func builtinModule(t testing.TB, typ abi.IndexType, trust host.Trust) host.Module {
	t.Helper()
	b, err := builtin.For(typ)
	if err != nil {
		t.Fatal(err)
	}
	return host.Module{Name: "builtin:" + typ.String(), Bytes: b, Trust: trust}
}

func fallbackBuiltins(t abi.IndexType) ([]byte, bool) {
	b, err := builtin.For(t)
	return b, err == nil
}

// testLogger writes the host's log into the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu sync.Mutex
	t  testing.TB
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newHost returns a Host with the shared compilation cache, the test's
// logger and a registry of its own, closed when the test ends.
func newHost(t testing.TB, cfg host.Config) (*host.Host, *prometheus.Registry) {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = cacheDir
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	reg := prometheus.NewRegistry()
	if cfg.Registerer == nil {
		cfg.Registerer = reg
	}
	h, err := host.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return h, reg
}

func load(t testing.TB, h *host.Host, typ abi.IndexType, m host.Module) host.ModuleInfo {
	t.Helper()
	info, err := h.Load(context.Background(), typ, m)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

var (
	tlA = abi.Timeline{0xa}
	tlB = abi.Timeline{0xb}
)

// chain returns n headers of type typ continuing from index after.
func chain(typ abi.IndexType, tl abi.Timeline, after, n, term uint64) []abi.Header {
	hs := make([]abi.Header, n)
	for i := range hs {
		idx := after + uint64(i) + 1
		hs[i] = abi.Header{Index: idx, PrevIndex: idx - 1, Type: typ, Term: term, Timeline: tl}
	}
	return hs
}

// baseline puts type typ's filter at index base on timeline tl.
func baseline(t testing.TB, h *host.Host, typ abi.IndexType, tl abi.Timeline, base uint64) {
	t.Helper()
	if err := h.Restore(context.Background(), typ, abi.State{
		Version: abi.StateVersion, Type: typ, Initialized: true, LastIndex: base, Timeline: tl,
	}); err != nil {
		t.Fatal(err)
	}
}

func decide(t testing.TB, h *host.Host, typ abi.IndexType, hs ...abi.Header) []abi.Verdict {
	t.Helper()
	vs, err := h.Decide(context.Background(), typ, hs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func allApply(t testing.TB, vs []abi.Verdict, n int) {
	t.Helper()
	if len(vs) != n {
		t.Fatalf("%d verdicts, want %d", len(vs), n)
	}
	for i, v := range vs {
		if v.Action != abi.Apply {
			t.Fatalf("verdict %d is %s, want apply", i, v)
		}
	}
}

func lastIndex(t testing.TB, h *host.Host, typ abi.IndexType) uint64 {
	t.Helper()
	s, err := h.State(context.Background(), typ)
	if err != nil {
		t.Fatal(err)
	}
	return s.LastIndex
}
