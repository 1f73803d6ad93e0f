package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"

	"github.com/tetratelabs/wazero"

	"github.com/indexgate/indexgate/abi"
)

// Report is the outcome of Check: every conformance check in order, passed
// or failed with detail.
type Report struct {
	Type abi.IndexType `json:"type"`
	// Name is Module.Name.
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	// ABI and Info are what the module reported, when it got that far.
	ABI    uint32        `json:"abi"`
	Info   abi.Info      `json:"info"`
	Checks []CheckResult `json:"checks"`
}

// Passed reports whether every check passed.
func (r *Report) Passed() bool {
	for _, c := range r.Checks {
		if !c.Pass {
			return false
		}
	}
	return len(r.Checks) > 0
}

// String renders one line per check.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "module %q sha256 %s for %s (reports %q %q, ABI %d)\n", r.Name, r.SHA256, r.Type, r.Info.Name, r.Info.Version, r.ABI)
	for _, c := range r.Checks {
		mark := "PASS"
		switch {
		case c.Skipped:
			mark = "SKIP"
		case !c.Pass:
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "%s  %s", mark, c.Name)
		if c.Detail != "" {
			fmt.Fprintf(&b, ": %s", c.Detail)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// Check runs the conformance checks on module m for index type t, in a
// runtime of its own configured for m.Trust as Load would: the wasm header,
// compilation,
// imports, exports, instantiation, ABI version, init and the Info it
// returns, then the self-test vectors Load runs (decisions, snapshot/restore
// round trip, mode changes). The Report lists every check; the error, nil
// only when all passed, wraps the sentinel of the first failure.
func Check(ctx context.Context, cfg Config, t abi.IndexType, m Module) (Report, error) {
	sum := sha256.Sum256(m.Bytes)
	rep := Report{Type: t, Name: m.Name, SHA256: hex.EncodeToString(sum[:])}
	if err := cfg.Validate(); err != nil {
		return rep, err
	}
	if !t.Valid() {
		return rep, fmt.Errorf("host: check: %w: %d", abi.ErrUnknownIndexType, uint8(t))
	}
	cfg = cfg.withDefaults()
	cache, err := newCache(cfg.CacheDir)
	if err != nil {
		return rep, err
	}
	defer cache.Close(context.WithoutCancel(ctx))
	e, err := newEngine(ctx, cache, &cfg, m.Trust == Trusted)
	if err != nil {
		return rep, err
	}
	defer e.close(context.WithoutCancel(ctx))

	var ck checker
	var cm wazero.CompiledModule
	ck.run("wasm binary compiles", func() (err error) {
		cm, err = e.compile(ctx, m.Bytes)
		return err
	})
	if cm != nil {
		defer cm.Close(context.WithoutCancel(ctx))
	}
	ck.run("imports only wasi_snapshot_preview1", func() error { return e.checkImports(cm) })
	ck.run("exports the ABI", func() error { return checkExports(cm) })
	var in *instance
	if ck.err == nil {
		c := &compiled{e: e, sum: sum, hash: rep.SHA256, cm: cm}
		init := &abi.Config{Type: t, Options: m.Options}
		in, rep.ABI, rep.Info = start(ctx, &ck, c, init, cfg.Logger)
		defer in.close(context.WithoutCancel(ctx))
	} else {
		start(ctx, &ck, nil, nil, nil)
	}
	selfTest(ctx, &ck, in, t)
	rep.Checks = ck.results
	return rep, ck.err
}

// start instantiates c and brings the instance up: ABI version, init with
// cfg, and Info.Type == cfg.Type, recording each as a check. On failure the
// instance is closed and nil.
func start(ctx context.Context, ck *checker, c *compiled, cfg *abi.Config, log *slog.Logger) (in *instance, version uint32, info abi.Info) {
	ck.run("instantiate", func() (err error) {
		in, err = c.newInstance(ctx, log)
		return moduleErr(err)
	})
	ck.run("ABI version", func() (err error) {
		if version, err = in.abiVersion(ctx); err != nil {
			return moduleErr(err)
		}
		if version != abi.Version {
			return fmt.Errorf("%w: module implements ABI %d, host %d", ErrABIVersion, version, abi.Version)
		}
		return nil
	})
	ck.run("init", func() (err error) {
		info, err = in.init(ctx, cfg)
		return moduleErr(err)
	})
	ck.run("Info names the index type", func() error {
		if info.Type != cfg.Type {
			return fmt.Errorf("%w: module %q says it filters %s, loaded for %s", ErrSelfTest, info.Name, info.Type, cfg.Type)
		}
		return nil
	})
	if ck.err != nil && in != nil {
		in.close(context.WithoutCancel(ctx))
		in = nil
	}
	return in, version, info
}

// newCache opens the compilation cache: on disk when dir is set.
func newCache(dir string) (wazero.CompilationCache, error) {
	if dir == "" {
		return wazero.NewCompilationCache(), nil
	}
	c, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		return nil, fmt.Errorf("host: compilation cache %s: %w", dir, err)
	}
	return c, nil
}
