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
	"github.com/indexgate/indexgate/trust"
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

// trustBuiltin is the trust reason reported for the embedded modules,
// which the router trusts without asking the policy.
const trustBuiltin = "builtin"

// moduleRecord is a module as the router received it, after the trust
// check: what it persists, and what a promotion or rollback needs.
type moduleRecord struct {
	// name is host.Module.Name: a path, or "builtin:TYPE".
	name    string
	bin     []byte
	options []byte
	sig     []byte // detached signature; nil without one
	builtin bool
	trust   host.Trust
	// reason is why the module may serve: trustBuiltin or a
	// trust.Reason's name.
	reason string
	sha    string
}

func (m *moduleRecord) module() host.Module {
	return host.Module{Name: m.name, Bytes: m.bin, Trust: m.trust, Options: m.options}
}

// filterStore vets modules against the trust policy, hot-swaps them into
// the host and persists them in DataDir/filters (TYPE.wasm, TYPE.wasm.sig
// when signed, TYPE.options when options were given), so a restart serves
// them again after verifying them again.
type filterStore struct {
	dir    string
	log    *slog.Logger
	policy *trust.Policy
	h      *host.Host
	// configured marks the types Config.Filters sets, which win over a
	// persisted module at the next start.
	configured [numTypes]bool

	// mu serialises swaps, shadows, promotions and rollbacks, so the files
	// on disk are always the module that serves. It is held while a module
	// compiles: readers use recMu.
	mu sync.Mutex
	// recMu guards the records; they change only with mu held too.
	recMu sync.Mutex
	// cur is the module serving each type, prev the one it replaced (the
	// target of a rollback), cand the shadow candidate.
	cur, prev, cand [numTypes]*moduleRecord
}

// setRecords changes the records of t, with f.mu held.
func (f *filterStore) setRecords(t abi.IndexType, cur, prev, cand *moduleRecord) {
	f.recMu.Lock()
	f.cur[t], f.prev[t], f.cand[t] = cur, prev, cand
	f.recMu.Unlock()
}

func (f *filterStore) wasmPath(t abi.IndexType) string {
	return filepath.Join(f.dir, t.String()+".wasm")
}

func (f *filterStore) sigPath(t abi.IndexType) string { return trust.SignaturePath(f.wasmPath(t)) }

func (f *filterStore) optionsPath(t abi.IndexType) string {
	return filepath.Join(f.dir, t.String()+".options")
}

// vet decides whether a module may serve type t, and how: the built-in's
// exact bytes without options are the built-in (trusted, no policy);
// anything else must pass the policy, and runs trusted only when pinned or
// signed. A refusal wraps trust.ErrUntrusted and says what would make the
// module acceptable.
func (f *filterStore) vet(t abi.IndexType, name string, bin, sig, options []byte) (*moduleRecord, error) {
	sum := sha256.Sum256(bin)
	builtinSum, err := builtin.SHA256(t)
	if err != nil {
		return nil, err
	}
	rec := &moduleRecord{name: name, bin: bin, options: options, sig: sig, sha: hex.EncodeToString(sum[:])}
	if sum == builtinSum && len(options) == 0 {
		rec.name, rec.builtin, rec.trust, rec.reason, rec.sig = "builtin:"+t.String(), true, host.Trusted, trustBuiltin, nil
		return rec, nil
	}
	d, err := f.policy.Verify(bin, sig)
	if err != nil {
		return nil, fmt.Errorf("router: %s module %s: %w", t, name, err)
	}
	rec.reason = d.Reason.String()
	if d.Vouched() {
		rec.trust = host.Trusted
	}
	f.log.Info("filter module accepted by the trust policy", "type", t.String(), "source", name, "decision", d.String())
	return rec, nil
}

// startModule picks the module type t starts with: the configured one,
// else the last hot-swapped one, else the built-in, and vets it.
func (f *filterStore) startModule(cfg *Config, t abi.IndexType) (rec *moduleRecord, origin string, err error) {
	b, err := readOptional(f.wasmPath(t))
	if err != nil {
		return nil, "", fmt.Errorf("router: read hot-swapped %s module: %w", t, err)
	}
	if cm, ok := cfg.Filters[t]; ok {
		if b != nil {
			f.log.Warn("ignoring the hot-swapped filter module: the configured one wins",
				"type", t.String(), "ignored", f.wasmPath(t))
		}
		if cm.Name == "" {
			cm.Name = "config:" + t.String()
		}
		rec, err := f.vet(t, cm.Name, cm.Bytes, cfg.FilterSignatures[t], cm.Options)
		if err != nil {
			return nil, "", fmt.Errorf("%w: %s filter: %w", ErrInvalidConfig, t, err)
		}
		return rec, "configured", nil
	}
	if b != nil {
		sig, err := readOptional(f.sigPath(t))
		if err == nil {
			var opts []byte
			if opts, err = readOptional(f.optionsPath(t)); err == nil {
				rec, err = f.vet(t, f.wasmPath(t), b, sig, opts)
			}
		}
		if err != nil {
			return nil, "", fmt.Errorf("router: the %s module hot-swapped earlier (%s) cannot serve; trust it (--pin %s, or a signature by a --trusted-key) or remove it to start with the built-in: %w",
				t, f.wasmPath(t), hexSHA256(b), err)
		}
		return rec, "hot-swapped", nil
	}
	bin, err := builtin.For(t)
	if err != nil {
		return nil, "", err
	}
	rec, err = f.vet(t, "builtin:"+t.String(), bin, nil, nil)
	return rec, "builtin", err
}

// loadFilters loads one module per index type into the host. The types
// load concurrently: compiling a module the cache does not hold yet takes
// seconds, and the host compiles different types in parallel.
func (f *filterStore) loadFilters(ctx context.Context, cfg *Config) error {
	errs := make([]error, len(abi.IndexTypes))
	recs := make([]*moduleRecord, len(abi.IndexTypes))
	origins := make([]string, len(abi.IndexTypes))
	for i, t := range abi.IndexTypes {
		_, f.configured[t] = cfg.Filters[t]
		var err error
		if recs[i], origins[i], err = f.startModule(cfg, t); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	for i, t := range abi.IndexTypes {
		wg.Go(func() { errs[i] = f.load(ctx, t, recs[i], origins[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, t := range abi.IndexTypes {
		f.setRecords(t, recs[i], nil, nil)
	}
	return nil
}

func (f *filterStore) load(ctx context.Context, t abi.IndexType, rec *moduleRecord, origin string) error {
	// The host logs the loaded module's identity; this says why it is the one.
	f.log.Info("loading filter module", "type", t.String(), "origin", origin, "source", rec.name,
		"trusted", rec.trust == host.Trusted, "trust", rec.reason)
	_, err := f.h.Load(ctx, t, rec.module())
	switch {
	case err != nil && origin == "configured":
		return fmt.Errorf("%w: %s filter %s: %w", ErrInvalidConfig, t, rec.name, err)
	case err != nil && origin == "hot-swapped":
		return fmt.Errorf("router: the %s module hot-swapped earlier (%s) does not load; remove it to start with the built-in: %w", t, rec.name, err)
	case err != nil:
		return fmt.Errorf("router: load built-in %s filter: %w", t, err)
	}
	return nil
}

// record returns the module serving t and the one a rollback would bring
// back, for the status API.
func (f *filterStore) records(t abi.IndexType) (cur, prev *moduleRecord) {
	f.recMu.Lock()
	defer f.recMu.Unlock()
	return f.cur[t], f.prev[t]
}

// swap vets a module for type t, hot-swaps it in and persists it. The
// built-in module's bytes (without options) swap the built-in back in,
// trusted, and remove the persisted module. A configured module for t
// still wins at the next start; the caller is told through the returned
// note.
func (f *filterStore) swap(ctx context.Context, t abi.IndexType, name string, bin, sig, options []byte) (host.ModuleInfo, host.SwapReport, string, error) {
	rec, err := f.vet(t, name, bin, sig, options)
	if err != nil {
		return host.ModuleInfo{}, host.SwapReport{}, "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Written before the swap so that a swap that succeeds is only a
	// rename away from being persisted.
	st, err := f.stage(t, rec)
	if err != nil {
		return host.ModuleInfo{}, host.SwapReport{}, "", fmt.Errorf("router: stage module file: %w", err)
	}
	info, rep, err := f.h.Swap(ctx, t, rec.module())
	if err != nil {
		st.discard()
		return info, rep, "", err
	}
	f.log.Info("filter module hot-swapped", "type", t.String(), "sha256", info.SHA256, "old_sha256", rep.OldSHA256,
		"name", info.Name, "version", info.Version, "trusted", info.Trusted, "trust", rec.reason, "source", name, "pause", rep.Pause)
	f.setRecords(t, rec, f.cur[t], f.cand[t])
	note := f.note(t)
	if err := st.commit(); err != nil {
		return info, rep, note, fmt.Errorf("%w: %w", errNotPersisted, err)
	}
	return info, rep, note, nil
}

// note is what a caller should know about a module swapped into t.
func (f *filterStore) note(t abi.IndexType) string {
	if f.configured[t] {
		return "a module configured for this type (--filter) is loaded again at the next start"
	}
	return ""
}

// staged is a module written next to its final files, one rename each
// away from being persisted.
type staged struct {
	f                  *filterStore
	t                  abi.IndexType
	builtin            bool
	wasm, sig, options string // temporary files; "" for none
}

// stage writes rec's files under temporary names.
func (f *filterStore) stage(t abi.IndexType, rec *moduleRecord) (*staged, error) {
	st := &staged{f: f, t: t, builtin: rec.builtin}
	if rec.builtin {
		return st, nil
	}
	var err error
	for _, x := range []struct {
		dst  *string
		ext  string
		data []byte
	}{{&st.wasm, ".wasm", rec.bin}, {&st.sig, ".wasm.sig", rec.sig}, {&st.options, ".options", rec.options}} {
		if len(x.data) == 0 {
			continue
		}
		if *x.dst, err = writeTemp(f.dir, "."+t.String()+"-*"+x.ext+".tmp", x.data); err != nil {
			st.discard()
			return nil, err
		}
	}
	return st, nil
}

func (s *staged) discard() {
	for _, p := range []string{s.wasm, s.sig, s.options} {
		if p != "" {
			_ = os.Remove(p)
		}
	}
}

// commit moves the staged files into place. The old signature goes
// first: a crash half-way leaves a module without a signature (refused at
// start with a clear message unless pinned) rather than a module with
// another module's signature.
func (s *staged) commit() error {
	f, t := s.f, s.t
	err := removeIfExists(f.sigPath(t))
	if err == nil {
		if s.builtin {
			err = errors.Join(removeIfExists(f.wasmPath(t)), removeIfExists(f.optionsPath(t)))
		} else {
			err = os.Rename(s.wasm, f.wasmPath(t))
		}
	}
	if err == nil && s.sig != "" {
		err = os.Rename(s.sig, f.sigPath(t))
	}
	if err == nil && !s.builtin {
		if s.options != "" {
			err = os.Rename(s.options, f.optionsPath(t))
		} else {
			err = removeIfExists(f.optionsPath(t))
		}
	}
	if err == nil {
		err = syncDir(f.dir)
	}
	if err != nil {
		s.discard()
	}
	return err
}

// readOptional reads a file that may be missing (nil, nil).
func readOptional(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
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
