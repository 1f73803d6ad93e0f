package host

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/indexgate/indexgate/abi"
)

// engine is one wazero runtime plus the compiled modules it holds. A Host
// has two, trusted and untrusted, that differ only in close-on-context-done
// (RATIONALE.md) and share one compilation cache.
type engine struct {
	rt      wazero.Runtime
	trusted bool
	// timeout is the per-call deadline; zero for the trusted engine.
	timeout time.Duration
	// wasi lists the functions wasi_snapshot_preview1 provides: the only
	// imports a module may have.
	wasi map[string]api.FunctionDefinition

	mu       sync.Mutex
	compiled map[[32]byte]*compiled // guarded by mu
	closed   bool                   // guarded by mu
}

// compiled is a compiled module shared by every instance of the same bytes
// in one engine. wazero keys compiled code by content, so two
// CompiledModules of identical bytes in one runtime share it and closing
// either breaks the other (wazero #1913): an A→B→A swap would pull the code
// from under the serving A. Hence one compiled per sha256, refcounted, and
// closed when the last user releases it.
type compiled struct {
	e    *engine
	sum  [32]byte
	hash string // hex of sum
	refs int    // guarded by e.mu
	// ready is closed when compilation finished; cm and err are set
	// before and read-only after.
	ready chan struct{}
	cm    wazero.CompiledModule
	err   error
}

func newEngine(ctx context.Context, cache wazero.CompilationCache, cfg *Config, trusted bool) (*engine, error) {
	rc := wazero.NewRuntimeConfig().
		WithCompilationCache(cache).
		WithMemoryLimitPages(uint32(cfg.MemoryLimitBytes / wasmPageSize)).
		WithCloseOnContextDone(!trusted).WithDebugInfoEnabled(false)
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("host: instantiate %s: %w", wasi_snapshot_preview1.ModuleName, err)
	}
	e := &engine{
		rt:       rt,
		trusted:  trusted,
		wasi:     rt.Module(wasi_snapshot_preview1.ModuleName).ExportedFunctionDefinitions(),
		compiled: make(map[[32]byte]*compiled),
	}
	if !trusted {
		e.timeout = cfg.CallTimeout
	}
	return e, nil
}

// wasmMagic starts every wasm binary: "\0asm" and version 1.
const wasmMagic = "\x00asm\x01\x00\x00\x00"

// acquire returns the compiled module for bin (whose sha256 is sum),
// compiling and validating it on first use, with one more reference.
//
// Concurrent acquires of the same bytes wait for one compilation (wazero
// recommends against compiling one module from several goroutines at
// once); different modules compile in parallel, and e.mu is never held
// while compiling.
func (e *engine) acquire(ctx context.Context, sum [32]byte, bin []byte) (*compiled, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	c := e.compiled[sum]
	if c != nil {
		c.refs++
		e.mu.Unlock()
		<-c.ready
		if c.err != nil {
			c.release(ctx)
			return nil, c.err
		}
		return c, nil
	}
	c = &compiled{e: e, sum: sum, hash: hex.EncodeToString(sum[:]), refs: 1, ready: make(chan struct{})}
	e.compiled[sum] = c
	e.mu.Unlock()

	cm, err := e.compile(ctx, bin)
	if err == nil {
		if err = errors.Join(e.checkImports(cm), checkExports(cm)); err != nil {
			_ = cm.Close(ctx)
			cm = nil
		}
	}
	c.cm, c.err = cm, err
	close(c.ready)
	if err != nil {
		c.release(ctx)
		return nil, err
	}
	return c, nil
}

// release drops one reference and closes the compiled code with the last.
func (c *compiled) release(ctx context.Context) {
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	c.refs--
	if c.refs > 0 || e.closed {
		return
	}
	if e.compiled[c.sum] == c {
		delete(e.compiled, c.sum)
	}
	if c.cm != nil {
		_ = c.cm.Close(ctx)
	}
}

// close closes the runtime, which closes every instance in it, and the
// compiled modules (a shared compilation cache would otherwise keep their
// code alive).
func (e *engine) close(ctx context.Context) error {
	e.mu.Lock()
	e.closed = true
	cs := make([]*compiled, 0, len(e.compiled))
	for _, c := range e.compiled {
		cs = append(cs, c)
	}
	clear(e.compiled)
	e.mu.Unlock()
	err := e.rt.Close(ctx)
	for _, c := range cs {
		// A compilation still running finishes against the closed
		// runtime and fails; its caller releases a nil module.
		<-c.ready
		if c.cm != nil {
			_ = c.cm.Close(ctx)
		}
	}
	return err
}

// export is an ABI function and its wasm signature.
type export struct {
	name    string
	params  []api.ValueType
	results []api.ValueType
}

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// Indexes into exports and instance.fns.
const (
	fnABIVersion = iota
	fnBuffer
	fnInit
	fnDecide
	fnModeChange
	fnSnapshot
	fnRestore
	numFns
)

// exports are the functions every module must export (docs/abi.md).
var exports = [numFns]export{
	fnABIVersion: {abi.ExportABIVersion, nil, []api.ValueType{i32}},
	fnBuffer:     {abi.ExportBuffer, []api.ValueType{i32}, []api.ValueType{i32}},
	fnInit:       {abi.ExportInit, []api.ValueType{i32}, []api.ValueType{i64}},
	fnDecide:     {abi.ExportDecide, []api.ValueType{i32}, []api.ValueType{i64}},
	fnModeChange: {abi.ExportModeChange, []api.ValueType{i32}, []api.ValueType{i64}},
	fnSnapshot:   {abi.ExportSnapshot, nil, []api.ValueType{i64}},
	fnRestore:    {abi.ExportRestore, []api.ValueType{i32}, []api.ValueType{i64}},
}

// memoryExport is the name under which a module exports its linear memory,
// the only memory the host reads and writes.
const memoryExport = "memory"

// compile checks the wasm header and compiles bin. The caller owns the
// result; acquire is the way to share it.
func (e *engine) compile(ctx context.Context, bin []byte) (wazero.CompiledModule, error) {
	if len(bin) < len(wasmMagic) || string(bin[:len(wasmMagic)]) != wasmMagic {
		return nil, fmt.Errorf("%w: %d bytes without the wasm magic and version 1 header", ErrNotWasm, len(bin))
	}
	cm, err := e.rt.CompileModule(ctx, bin)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCompile, err)
	}
	return cm, nil
}

// checkImports requires every import to be a wasi_snapshot_preview1
// function the host provides, with its signature, and names every
// offender. It runs on the compiled module, before anything of it runs.
func (e *engine) checkImports(cm wazero.CompiledModule) error {
	var unknown []string
	for _, f := range cm.ImportedFunctions() {
		mod, name, _ := f.Import()
		want, ok := e.wasi[name]
		switch {
		case mod != wasi_snapshot_preview1.ModuleName || !ok:
			unknown = append(unknown, fmt.Sprintf("%s.%s", mod, name))
		case !slices.Equal(f.ParamTypes(), want.ParamTypes()) || !slices.Equal(f.ResultTypes(), want.ResultTypes()):
			unknown = append(unknown, fmt.Sprintf("%s.%s with signature %s (the host's is %s)",
				mod, name, signature(f.ParamTypes(), f.ResultTypes()), signature(want.ParamTypes(), want.ResultTypes())))
		}
	}
	for _, m := range cm.ImportedMemories() {
		mod, name, _ := m.Import()
		unknown = append(unknown, fmt.Sprintf("memory %s.%s", mod, name))
	}
	if len(unknown) > 0 {
		return fmt.Errorf("%w: %s (only %s functions are provided)", ErrUnknownImport, strings.Join(unknown, ", "), wasi_snapshot_preview1.ModuleName)
	}
	return nil
}

// checkExports requires the ABI exports with their signatures, the
// reactor initialiser and the memory, and names every one missing or
// mistyped.
func checkExports(cm wazero.CompiledModule) error {
	var bad []string
	got := cm.ExportedFunctions()
	for _, x := range exports {
		f, ok := got[x.name]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("%s (want %s)", x.name, signature(x.params, x.results)))
		case !slices.Equal(f.ParamTypes(), x.params) || !slices.Equal(f.ResultTypes(), x.results):
			bad = append(bad, fmt.Sprintf("%s has signature %s, want %s", x.name,
				signature(f.ParamTypes(), f.ResultTypes()), signature(x.params, x.results)))
		}
	}
	// docs/abi.md requires the reactor initialiser even when it has
	// nothing to do, so every module starts the same way.
	switch f, ok := got[abi.ExportInitialize]; {
	case !ok:
		bad = append(bad, abi.ExportInitialize+" (want () -> ())")
	case len(f.ParamTypes()) != 0 || len(f.ResultTypes()) != 0:
		bad = append(bad, fmt.Sprintf("%s has signature %s, want () -> ()", abi.ExportInitialize,
			signature(f.ParamTypes(), f.ResultTypes())))
	}
	if _, ok := cm.ExportedMemories()[memoryExport]; !ok {
		bad = append(bad, fmt.Sprintf("memory %q", memoryExport))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrMissingExport, strings.Join(bad, "; "))
	}
	return nil
}

// signature renders a wasm signature as "(i32) -> i64".
func signature(params, results []api.ValueType) string {
	names := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return strings.Join(s, ", ")
	}
	r := names(results)
	if len(results) != 1 {
		r = "(" + r + ")"
	}
	return "(" + names(params) + ") -> " + r
}
