package host_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/host"
	w "github.com/indexgate/indexgate/host/internal/wasmtest"
)

// Where the hand-assembled modules keep their canned results.
const (
	infoAt  = 1024
	stateAt = 2048
	errAt   = 3072
	errText = "no thanks"
)

// Function types of the hand-assembled modules.
const (
	tVoidI32 uint32 = iota // () -> i32
	tI32I32                // (i32) -> i32
	tI32I64                // (i32) -> i64
	tVoidI64               // () -> i64
	tVoid                  // () -> ()
	tI32Void               // (i32) -> ()
	tI64I32                // (i64) -> i32
)

// handModule describes a hand-assembled filter module: by default it has
// every export with the right signature, answers ig_abi_version with 1,
// ig_buffer with a fixed buffer, ig_init with a canned HA Info, ig_snapshot
// with a fresh HA state, and traps in ig_decide. Each test case breaks one
// thing.
type handModule struct {
	imports        []w.Import
	memory         *w.Memory
	noMemoryExport bool
	omit           []string
	types          map[string]uint32 // export name -> function type
	bodies         map[string][]byte // export name -> body
	start          []byte            // body of _initialize; nil: empty
	info           *abi.Info
	data           []w.Data // more data segments
}

func packed(ptr, n int) int64 { return int64(ptr)<<32 | int64(n) }

func (hm handModule) bytes() []byte {
	info := abi.Info{Name: "hand", Version: "0", Type: abi.IndexHA}
	if hm.info != nil {
		info = *hm.info
	}
	infoBytes := abi.AppendInfo(nil, &info)
	stateBytes := abi.AppendState(nil, &abi.State{Version: abi.StateVersion, Type: abi.IndexHA})
	m := &w.Module{
		Types: []w.FuncType{
			tVoidI32: {Results: []byte{w.I32}},
			tI32I32:  {Params: []byte{w.I32}, Results: []byte{w.I32}},
			tI32I64:  {Params: []byte{w.I32}, Results: []byte{w.I64}},
			tVoidI64: {Results: []byte{w.I64}},
			tVoid:    {},
			tI32Void: {Params: []byte{w.I32}},
			tI64I32:  {Params: []byte{w.I64}, Results: []byte{w.I32}},
		},
		Imports: hm.imports,
		Memory:  &w.Memory{Min: 1},
		Data: []w.Data{
			{Offset: infoAt, Bytes: infoBytes},
			{Offset: stateAt, Bytes: stateBytes},
			{Offset: errAt, Bytes: []byte(errText)},
		},
	}
	m.Data = append(m.Data, hm.data...)
	if hm.memory != nil {
		m.Memory = hm.memory
	}
	if !hm.noMemoryExport {
		m.Exports = append(m.Exports, w.Export{Name: "memory", Kind: w.KindMemory})
	}
	defaults := []struct {
		name string
		typ  uint32
		body []byte
	}{
		{abi.ExportABIVersion, tVoidI32, w.I32Const(1)},
		{abi.ExportBuffer, tI32I32, w.I32Const(4096)},
		{abi.ExportInit, tI32I64, w.I64Const(packed(infoAt, len(infoBytes)))},
		{abi.ExportDecide, tI32I64, []byte{w.OpUnreachable}},
		{abi.ExportModeChange, tI32I64, w.I64Const(0)},
		{abi.ExportSnapshot, tVoidI64, w.I64Const(packed(stateAt, len(stateBytes)))},
		{abi.ExportRestore, tI32I64, w.I64Const(0)},
	}
	defaults = append(defaults, struct {
		name string
		typ  uint32
		body []byte
	}{abi.ExportInitialize, tVoid, hm.start})
	for _, d := range defaults {
		if contains(hm.omit, d.name) {
			continue
		}
		typ, body := d.typ, d.body
		if t, ok := hm.types[d.name]; ok {
			typ = t
		}
		if b, ok := hm.bodies[d.name]; ok {
			body = b
		}
		idx := uint32(len(hm.imports) + len(m.Funcs))
		m.Funcs = append(m.Funcs, w.Func{Type: typ, Body: body})
		m.Exports = append(m.Exports, w.Export{Name: d.name, Kind: w.KindFunc, Index: idx})
	}
	return m.Bytes()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// spin is a loop that never ends.
var spin = []byte{w.OpLoop, w.BlockVoid, w.OpBr, 0, w.OpEnd}

// growUntilRefused grows memory 4 MiB at a time until memory.grow returns
// -1 (the cap, 16 MiB in these tests), then traps, as an allocator that
// cannot get memory aborts.
var growUntilRefused = w.Seq(
	[]byte{w.OpLoop, w.BlockVoid},
	w.I32Const(64), []byte{w.OpMemoryGrow, 0x00},
	w.I32Const(-1), []byte{w.OpI32Ne, w.OpBrIf, 0, w.OpEnd},
	[]byte{w.OpUnreachable},
)

// hostileConfig has a memory cap small enough that a module growing memory
// reaches it at once (the Go guests need about 4 MiB). The deadline stays
// the default: a shorter one would make a loaded machine fail well-behaved
// modules.
// hostileConfig's call timeout is generous because under -race on a
// loaded 2-core CI machine instantiating a Go guest in the untrusted runtime
// alone has taken over the 1 s default; the loop cases still end by it.
var hostileConfig = host.Config{MemoryLimitBytes: 16 << 20, CallTimeout: 5 * time.Second}

// TestHostileModules offers a serving host one broken module after another
// as a Swap, an empty host the same module as a Load, and Check the same
// bytes: each must be refused with a clear error, while the module in
// place keeps deciding and the empty host stays empty.
func TestHostileModules(t *testing.T) {
	ctx := context.Background()
	cfg := hostileConfig
	cfg.CacheDir = cacheDir
	h, _ := newHost(t, cfg)
	empty, _ := newHost(t, cfg)
	load(t, h, abi.IndexHA, builtinModule(t, abi.IndexHA, host.Trusted))
	next := uint64(1000)
	baseline(t, h, abi.IndexHA, tlA, next)

	wasi := func(name string, typ uint32) []w.Import {
		return []w.Import{{Module: "wasi_snapshot_preview1", Name: name, Type: typ}}
	}
	body := func(name string, b []byte) map[string][]byte { return map[string][]byte{name: b} }
	legacyInfo := abi.Info{Name: "hand", Version: "0", Type: abi.IndexLegacy}

	tests := []struct {
		name   string
		module func(t *testing.T) host.Module
		want   error
		detail string // in the error message
	}{
		{"not wasm", raw([]byte("#!/bin/sh\necho filter\n")), host.ErrNotWasm, "wasm magic"},
		{"empty", raw(nil), host.ErrNotWasm, "0 bytes"},
		{"malformed wasm", raw(append([]byte("\x00asm\x01\x00\x00\x00"), 0x01, 0xff, 0xff)), host.ErrCompile, ""},
		{"no exports", raw((&w.Module{Memory: &w.Memory{Min: 1}}).Bytes()), host.ErrMissingExport, "ig_abi_version (want () -> i32)"},
		{"one export missing", hand(handModule{omit: []string{abi.ExportRestore}}), host.ErrMissingExport, "ig_restore (want (i32) -> i64)"},
		{"no reactor initialiser", hand(handModule{omit: []string{abi.ExportInitialize}}), host.ErrMissingExport, "_initialize (want () -> ())"},
		{"mistyped export", hand(handModule{types: map[string]uint32{abi.ExportDecide: tI64I32}, bodies: body(abi.ExportDecide, w.I32Const(0))}),
			host.ErrMissingExport, "ig_decide has signature (i64) -> i32, want (i32) -> i64"},
		{"memory not exported", hand(handModule{noMemoryExport: true}), host.ErrMissingExport, `memory "memory"`},
		{"import from env", hand(handModule{imports: []w.Import{{Module: "env", Name: "now", Type: tVoidI64}}}), host.ErrUnknownImport, "env.now"},
		{"unknown wasi function", hand(handModule{imports: wasi("not_a_syscall", tVoid)}), host.ErrUnknownImport, "wasi_snapshot_preview1.not_a_syscall"},
		{"wasi function mistyped", hand(handModule{imports: wasi("proc_exit", tVoidI32)}), host.ErrUnknownImport, "proc_exit with signature () -> i32"},
		{"memory above the cap", hand(handModule{memory: &w.Memory{Min: 2048}}), host.ErrCompile, "over limit"},
		{"wrong ABI version", hand(handModule{bodies: body(abi.ExportABIVersion, w.I32Const(2))}), host.ErrABIVersion, "ABI 2"},
		{"trap in _initialize", hand(handModule{start: []byte{w.OpUnreachable}}), host.ErrModuleFailed, "unreachable"},
		{"exit in _initialize", hand(handModule{imports: wasi("proc_exit", tI32Void), start: w.Seq(w.I32Const(0), w.Call(0))}),
			host.ErrModuleFailed, "exited during initialization"},
		{"loop in _initialize", hand(handModule{start: spin}), host.ErrModuleFailed, "timed out"},
		{"trap in init", hand(handModule{bodies: body(abi.ExportInit, []byte{w.OpUnreachable})}), host.ErrModuleFailed, "ig_init: wasm error: unreachable"},
		{"loop in init", hand(handModule{bodies: body(abi.ExportInit, w.Seq(spin, w.I64Const(0)))}), host.ErrModuleFailed, "ig_init: call timed out"},
		// Trusted: growing memory is slow enough on a loaded machine that
		// an untrusted module might time out first, which proves nothing.
		{"memory growth bomb", trusted(hand(handModule{bodies: body(abi.ExportInit, w.Seq(growUntilRefused, w.I64Const(0)))})), host.ErrModuleFailed, "ig_init: wasm error: unreachable"},
		{"result outside memory", hand(handModule{bodies: body(abi.ExportInit, w.I64Const(packed(0x7fff0000, 16)))}), host.ErrModuleFailed, "outside memory"},
		{"error result", hand(handModule{bodies: body(abi.ExportInit, w.I64Const(-packed(errAt, len(errText))))}), host.ErrModuleFailed, "module returned error: " + errText},
		{"no input buffer", hand(handModule{bodies: body(abi.ExportBuffer, w.I32Const(0))}), host.ErrModuleFailed, "no buffer"},
		{"input buffer outside memory", hand(handModule{bodies: body(abi.ExportBuffer, w.I32Const(0x7fff0000))}), host.ErrModuleFailed, "outside memory"},
		{"malformed Info", hand(handModule{bodies: body(abi.ExportInit, w.I64Const(packed(errAt, len(errText))))}), host.ErrModuleFailed, "ABI violation"},
		{"Info for another type", hand(handModule{info: &legacyInfo}), host.ErrSelfTest, "says it filters legacy"},
		{"trap in decide", hand(handModule{}), host.ErrModuleFailed, "fresh state has no baseline: host: module failed: ig_decide: wasm error: unreachable"},
		{"no verdicts", hand(handModule{bodies: body(abi.ExportDecide, w.I64Const(0))}), host.ErrModuleFailed, "ig_decide: ABI violation"},
		{"built-in for another type", func(t *testing.T) host.Module { return builtinModule(t, abi.IndexLegacy, host.Trusted) },
			host.ErrModuleFailed, "config for ha, filter is legacy"},
		{"Go guest panics in init", func(t *testing.T) host.Module { return rogueModule(t, host.Untrusted, "panic-init") },
			host.ErrModuleFailed, "filter panicked: rogue: panic in init"},
		{"Go guest crashes in init", func(t *testing.T) host.Module { return rogueModule(t, host.Untrusted, "crash-init") },
			host.ErrModuleFailed, "ig_init: wasm error: unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.module(t)
			_, _, err := h.Swap(ctx, abi.IndexHA, m)
			check := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, tt.want) {
					t.Fatalf("%s: err = %v, want %v", op, err, tt.want)
				}
				if !strings.Contains(err.Error(), tt.detail) {
					t.Fatalf("%s: error %q does not say %q", op, err, tt.detail)
				}
			}
			check("Swap", err)
			t.Logf("Swap: %v", err)
			_, err = empty.Load(ctx, abi.IndexHA, m)
			check("Load", err)
			if mods := empty.Modules(); len(mods) != 0 {
				t.Fatalf("failed Load left modules: %+v", mods)
			}
			rep, err := host.Check(ctx, cfg, abi.IndexHA, m)
			check("Check", err)
			if rep.Passed() {
				t.Fatalf("Check report passed:\n%s", rep.String())
			}

			// The built-in still serves, from where it was.
			allApply(t, decide(t, h, abi.IndexHA, chain(abi.IndexHA, tlA, next, 3, 0)...), 3)
			next += 3
			if mods := h.Modules(); len(mods) != 1 || mods[0].Name != "indexgate-ha" {
				t.Fatalf("Modules() = %+v", mods)
			}
		})
	}
	st := h.Stats().ByType[abi.IndexHA]
	if st.SwapFailures != uint64(len(tests)) || st.Swaps != 0 || st.Traps != 0 {
		t.Fatalf("stats %+v: want %d swap failures and nothing else", st, len(tests))
	}
}

func raw(b []byte) func(*testing.T) host.Module {
	return func(*testing.T) host.Module { return host.Module{Name: "hand", Bytes: b} }
}

func hand(hm handModule) func(*testing.T) host.Module {
	return func(*testing.T) host.Module { return host.Module{Name: "hand", Bytes: hm.bytes()} }
}

func trusted(f func(*testing.T) host.Module) func(*testing.T) host.Module {
	return func(t *testing.T) host.Module {
		m := f(t)
		m.Trust = host.Trusted
		return m
	}
}

// TestPoisoning makes a serving module fail in each way a call can fail.
// The call returns ErrModuleFailed and no verdicts; the host replaces the
// instance with a fresh one restored to the state from before the call
// (the failing batch applied its first header inside the guest before
// failing on the second: that must be undone).
func TestPoisoning(t *testing.T) {
	const (
		base    = 1_000_004
		trigger = "1000006"
	)
	tests := []struct {
		key       string
		detail    string
		only      host.Trust
		onlyTrust bool
	}{
		// Only an untrusted module can be stopped.
		{"loop", "ig_decide: call timed out", host.Untrusted, true},
		{"trap", "ig_decide: wasm error: out of bounds memory access", 0, false},
		// A Go reactor's runtime aborts with the unreachable instruction.
		{"panic", "runtime.gopanic", 0, false},
		// Trusted only: an untrusted module may time out first.
		{"bomb", "runtime.mallocgc", host.Trusted, true},
		{"badptr", "ig_decide: ABI violation: result [2147483632, +64) outside memory", 0, false},
		{"count", "ig_decide: ABI violation: 1 verdicts for 2 headers", 0, false},
		{"code", "ig_decide: ABI violation: unknown verdict action 9 reason 42 for header 1", 0, false},
		{"error", "ig_decide: module returned error: rogue: refusing index 1000006", 0, false},
		{"badsnap", "ig_snapshot: ABI violation", 0, false},
	}
	for _, trust := range []host.Trust{host.Untrusted, host.Trusted} {
		t.Run(trust.String(), func(t *testing.T) {
			ctx := context.Background()
			h, _ := newHost(t, hostileConfig)
			load(t, h, abi.IndexHA, rogueModule(t, trust, ""))
			var want host.TypeStats
			for _, tt := range tests {
				if tt.onlyTrust && tt.only != trust {
					continue
				}
				t.Run(tt.key, func(t *testing.T) {
					if _, _, err := h.Swap(ctx, abi.IndexHA, rogueModule(t, trust, tt.key+"="+trigger)); err != nil {
						t.Fatal(err)
					}
					want.Swaps++
					baseline(t, h, abi.IndexHA, tlA, base)
					out := make([]abi.Verdict, 0, 4)
					vs, err := h.Decide(ctx, abi.IndexHA, chain(abi.IndexHA, tlA, base, 2, 0), out)
					if !errors.Is(err, host.ErrModuleFailed) || !strings.Contains(err.Error(), tt.detail) {
						t.Fatalf("err = %v, want ErrModuleFailed saying %q", err, tt.detail)
					}
					t.Logf("Decide: %v", err)
					if len(vs) != 0 {
						t.Fatalf("failed call returned verdicts %v", vs)
					}
					want.Traps++
					want.Replacements++
					if got := lastIndex(t, h, abi.IndexHA); got != base {
						t.Fatalf("state after the failure: last index %d, want %d", got, base)
					}
					// The replacement serves from the state before the call.
					allApply(t, decide(t, h, abi.IndexHA, chain(abi.IndexHA, tlA, base, 1, 0)...), 1)
					want.Apply++
					if got := h.Stats().ByType[abi.IndexHA]; got != want {
						t.Fatalf("stats %+v, want %+v", got, want)
					}
				})
			}
		})
	}
}

// TestCallerCancel ends an untrusted call with the caller's context: that
// is not the module's failure, but the instance wazero closed must still be
// replaced.
func TestCallerCancel(t *testing.T) {
	h, _ := newHost(t, host.Config{CallTimeout: time.Hour})
	load(t, h, abi.IndexHA, rogueModule(t, host.Untrusted, "loop=7"))
	baseline(t, h, abi.IndexHA, tlA, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := h.Decide(ctx, abi.IndexHA, chain(abi.IndexHA, tlA, 5, 2, 0), nil)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, host.ErrModuleFailed) {
		t.Fatalf("err = %v, want the caller's context.DeadlineExceeded", err)
	}
	allApply(t, decide(t, h, abi.IndexHA, chain(abi.IndexHA, tlA, 5, 1, 0)...), 1)
	if st := h.Stats().ByType[abi.IndexHA]; st.Traps != 0 || st.Replacements != 1 {
		t.Fatalf("stats %+v, want no trap and one replacement", st)
	}
}

// TestFailFallback: under FailFallback the first failure swaps the
// fallback in, with the state carried over; a failure of the fallback
// itself only replaces its instance.
func TestFailFallback(t *testing.T) {
	ctx := context.Background()
	h, _ := newHost(t, host.Config{FailPolicy: host.FailFallback, Fallback: fallbackBuiltins})
	load(t, h, abi.IndexHA, rogueModule(t, host.Untrusted, "trap=12"))
	baseline(t, h, abi.IndexHA, tlA, 10)
	if _, err := h.Decide(ctx, abi.IndexHA, chain(abi.IndexHA, tlA, 10, 2, 0), nil); !errors.Is(err, host.ErrModuleFailed) {
		t.Fatalf("err = %v, want ErrModuleFailed", err)
	}
	mods := h.Modules()
	if len(mods) != 1 || mods[0].Source != "fallback" || mods[0].Name != "indexgate-ha" || !mods[0].Trusted {
		t.Fatalf("Modules() = %+v, want the fallback", mods)
	}
	if got := lastIndex(t, h, abi.IndexHA); got != 10 {
		t.Fatalf("carried state: last index %d, want 10", got)
	}
	allApply(t, decide(t, h, abi.IndexHA, chain(abi.IndexHA, tlA, 10, 5, 0)...), 5)
	if st := h.Stats().ByType[abi.IndexHA]; st.Traps != 1 || st.Fallbacks != 1 || st.Replacements != 0 {
		t.Fatalf("stats %+v", st)
	}
}
