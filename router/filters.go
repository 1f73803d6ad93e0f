package router

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/builtin"
	"github.com/indexgate/indexgate/host"
)

// errNotPersisted reports a hot swap that took effect but could not be
// written to the data directory, so a restart loads the previous module.
var errNotPersisted = errors.New("router: module swapped in but not persisted; a restart loads the previous module")

// wasmMagic starts every WebAssembly binary.
var wasmMagic = []byte{0x00, 0x61, 0x73, 0x6d}

// isWasm reports whether b starts like a WebAssembly binary: the cheap
// check in front of the host's, so that an upload that is plainly
// something else gets a plain answer.
func isWasm(b []byte) bool { return bytes.HasPrefix(b, wasmMagic) }

// filterStore persists the modules hot-swapped through the admin API in
// DataDir/filters (TYPE.wasm, and TYPE.options when options were given),
// so a restart serves them again.
type filterStore struct {
	dir string
	log *slog.Logger
	// mu serialises swaps, so the file on disk is always the module the
	// last successful swap put in.
	mu sync.Mutex
}

func (f *filterStore) wasmPath(t abi.IndexType) string {
	return filepath.Join(f.dir, t.String()+".wasm")
}

func (f *filterStore) optionsPath(t abi.IndexType) string {
	return filepath.Join(f.dir, t.String()+".options")
}

// startModule picks the module type t starts with: the configured one,
// else the last hot-swapped one, else the built-in.
func (f *filterStore) startModule(cfg *Config, t abi.IndexType) (m host.Module, origin string, err error) {
	b, err := os.ReadFile(f.wasmPath(t))
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		b = nil
	default:
		return m, "", fmt.Errorf("router: read hot-swapped %s module: %w", t, err)
	}
	if cm, ok := cfg.Filters[t]; ok {
		if b != nil {
			f.log.Warn("ignoring the hot-swapped filter module: the configured one wins",
				"type", t.String(), "ignored", f.wasmPath(t))
		}
		if cm.Name == "" {
			cm.Name = "config:" + t.String()
		}
		return cm, "configured", nil
	}
	if b != nil {
		opts, err := os.ReadFile(f.optionsPath(t))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return m, "", fmt.Errorf("router: read hot-swapped %s module options: %w", t, err)
		}
		return host.Module{Name: f.wasmPath(t), Bytes: b, Trust: host.Untrusted, Options: opts}, "hot-swapped", nil
	}
	bin, err := builtin.For(t)
	if err != nil {
		return m, "", err
	}
	return host.Module{Name: "builtin:" + t.String(), Bytes: bin, Trust: host.Trusted}, "builtin", nil
}

// loadFilters loads one module per index type into h. The types load
// concurrently: compiling a module the cache does not hold yet takes
// seconds, and the host compiles different types in parallel.
func (f *filterStore) loadFilters(ctx context.Context, h *host.Host, cfg *Config) error {
	errs := make([]error, len(abi.IndexTypes))
	var wg sync.WaitGroup
	for i, t := range abi.IndexTypes {
		m, origin, err := f.startModule(cfg, t)
		if err != nil {
			return err
		}
		wg.Go(func() { errs[i] = f.load(ctx, h, t, m, origin) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (f *filterStore) load(ctx context.Context, h *host.Host, t abi.IndexType, m host.Module, origin string) error {
	// The host logs the loaded module's identity; this says why it is the one.
	f.log.Info("loading filter module", "type", t.String(), "origin", origin, "source", m.Name, "trusted", m.Trust == host.Trusted)
	_, err := h.Load(ctx, t, m)
	switch {
	case err != nil && origin == "configured":
		return fmt.Errorf("%w: %s filter %s: %w", ErrInvalidConfig, t, m.Name, err)
	case err != nil && origin == "hot-swapped":
		return fmt.Errorf("router: the %s module hot-swapped earlier (%s) does not load; remove it to start with the built-in: %w", t, m.Name, err)
	case err != nil:
		return fmt.Errorf("router: load built-in %s filter: %w", t, err)
	}
	return nil
}

// swap hot-swaps m into type t and persists it. The built-in module's
// bytes (without options) swap the built-in back in, trusted, and remove
// the persisted module. A configured module for t still wins at the next
// start; the caller is told through the returned note.
func (f *filterStore) swap(ctx context.Context, h *host.Host, cfg *Config, t abi.IndexType, bin, options []byte) (host.ModuleInfo, host.SwapReport, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sum := sha256.Sum256(bin)
	builtinSum, err := builtin.SHA256(t)
	if err != nil {
		return host.ModuleInfo{}, host.SwapReport{}, "", err
	}
	isBuiltin := sum == builtinSum && len(options) == 0
	m := host.Module{Name: f.wasmPath(t), Bytes: bin, Trust: host.Untrusted, Options: options}
	var tmp string
	if isBuiltin {
		m.Name, m.Trust = "builtin:"+t.String(), host.Trusted
	} else {
		// Written before the swap so that a swap that succeeds is only
		// one rename away from being persisted.
		if tmp, err = writeTemp(f.dir, "."+t.String()+"-*.wasm.tmp", bin); err != nil {
			return host.ModuleInfo{}, host.SwapReport{}, "", fmt.Errorf("router: stage module file: %w", err)
		}
	}
	info, rep, err := h.Swap(ctx, t, m)
	if err != nil {
		if tmp != "" {
			_ = os.Remove(tmp)
		}
		return info, rep, "", err
	}
	f.log.Info("filter module hot-swapped", "type", t.String(), "sha256", info.SHA256, "old_sha256", rep.OldSHA256,
		"name", info.Name, "version", info.Version, "trusted", info.Trusted, "pause", rep.Pause)
	var note string
	if _, ok := cfg.Filters[t]; ok {
		note = "a module configured for this type (--filter) is loaded again at the next start"
	}
	if err := f.persist(t, tmp, options, isBuiltin); err != nil {
		return info, rep, note, fmt.Errorf("%w: %w", errNotPersisted, err)
	}
	return info, rep, note, nil
}

func (f *filterStore) persist(t abi.IndexType, tmp string, options []byte, isBuiltin bool) error {
	if isBuiltin {
		for _, p := range []string{f.wasmPath(t), f.optionsPath(t)} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return syncDir(f.dir)
	}
	if len(options) > 0 {
		otmp, err := writeTemp(f.dir, "."+t.String()+"-*.options.tmp", options)
		if err == nil {
			err = os.Rename(otmp, f.optionsPath(t))
		}
		if err != nil {
			_ = os.Remove(tmp)
			return err
		}
	} else if err := os.Remove(f.optionsPath(t)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, f.wasmPath(t)); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(f.dir)
}

// writeTemp writes b to a new file in dir and syncs it.
func writeTemp(dir, pattern string, b []byte) (string, error) {
	fh, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	_, err = fh.Write(b)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(fh.Name())
		return "", err
	}
	return fh.Name(), nil
}

// syncDir makes renames and removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func hexSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
