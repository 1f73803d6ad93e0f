package host

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/indexgate/indexgate/abi"
)

// Defaults applied by New and Check to the zero fields of a Config.
const (
	// DefaultMemoryLimitBytes caps each module instance's linear memory.
	// A Go guest needs a few MiB; 64 MiB leaves room for growth while a
	// runaway allocator is stopped long before it hurts the router.
	DefaultMemoryLimitBytes uint64 = 64 << 20
	// DefaultCallTimeout bounds every call into an untrusted module. A
	// decide call on a full batch takes microseconds; a second means the
	// module is stuck.
	DefaultCallTimeout = time.Second
)

// wasmPageSize is the WebAssembly page size; memory limits are whole pages.
const wasmPageSize = 64 << 10

// maxMemoryLimitBytes is the 32-bit address space: 65536 pages.
const maxMemoryLimitBytes = 1 << 32

// FailPolicy says what the host does after a module fails a call.
type FailPolicy int

const (
	// FailClosed (the default) replaces the failed instance with a fresh
	// instance of the same module, restored to the last good state. The
	// failed call returns ErrModuleFailed and nothing from it is applied.
	FailClosed FailPolicy = iota
	// FailFallback does what FailClosed does but replaces the failed module
	// with Config.Fallback's module for that index type (state carried
	// over), so a broken custom module stops serving after its first
	// failure.
	FailFallback
)

// String names the policy.
func (p FailPolicy) String() string {
	switch p {
	case FailClosed:
		return "fail-closed"
	case FailFallback:
		return "fail-fallback"
	}
	return fmt.Sprintf("FailPolicy(%d)", int(p))
}

// Trust says which wazero runtime a module runs in.
type Trust int

const (
	// Untrusted (the zero value, so forgetting to choose is safe) modules
	// run with a per-call deadline (Config.CallTimeout), which wazero
	// enforces by checking for cancellation in every loop; see RATIONALE.md
	// for its cost.
	Untrusted Trust = iota
	// Trusted modules (the built-ins, modules pinned or signed by the
	// operator) run without those checks: a call cannot be interrupted, so
	// a trusted module that loops forever hangs its index type.
	Trusted
)

// String names the trust level.
func (t Trust) String() string {
	switch t {
	case Untrusted:
		return "untrusted"
	case Trusted:
		return "trusted"
	}
	return fmt.Sprintf("Trust(%d)", int(t))
}

// Config configures a Host. The zero value is valid: every field has a
// documented default.
type Config struct {
	// CacheDir is the directory of wazero's persistent compilation cache,
	// shared by every runtime of the Host so a restart does not recompile
	// the same modules. "" keeps the cache in memory.
	CacheDir string
	// MemoryLimitBytes caps the linear memory of every module instance. It
	// must be a multiple of 64 KiB (the wasm page size) and at most 4 GiB.
	// Default DefaultMemoryLimitBytes.
	MemoryLimitBytes uint64
	// CallTimeout bounds every call into an Untrusted module (and its
	// instantiation). Trusted modules have no deadline. Default
	// DefaultCallTimeout.
	CallTimeout time.Duration
	// FailPolicy says what happens after a module fails. Default FailClosed.
	FailPolicy FailPolicy
	// Fallback returns the module that replaces a failed one of the given
	// type under FailFallback (a router passes its embedded built-ins). It
	// runs as Trusted. Required with FailFallback, ignored otherwise.
	Fallback func(abi.IndexType) ([]byte, bool)
	// Logger receives load, swap and failure events, and guest stdout and
	// stderr at debug level. Default: discard.
	Logger *slog.Logger
	// Registerer, if set, receives the host's Prometheus metrics
	// (namespace "indexgate", subsystem "filter").
	Registerer prometheus.Registerer
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.MemoryLimitBytes%wasmPageSize != 0 {
		return fmt.Errorf("host: MemoryLimitBytes %d is not a multiple of the 64 KiB wasm page", c.MemoryLimitBytes)
	}
	if c.MemoryLimitBytes > maxMemoryLimitBytes {
		return fmt.Errorf("host: MemoryLimitBytes %d is above the 4 GiB wasm address space", c.MemoryLimitBytes)
	}
	if c.CallTimeout < 0 {
		return fmt.Errorf("host: negative CallTimeout %s", c.CallTimeout)
	}
	switch c.FailPolicy {
	case FailClosed:
	case FailFallback:
		if c.Fallback == nil {
			return errors.New("host: FailFallback needs a Fallback")
		}
	default:
		return fmt.Errorf("host: unknown FailPolicy %d", int(c.FailPolicy))
	}
	return nil
}

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.MemoryLimitBytes == 0 {
		c.MemoryLimitBytes = DefaultMemoryLimitBytes
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Module is a filter module to load.
type Module struct {
	// Name says where the module came from (a path, "builtin:ha"); it is
	// reported as ModuleInfo.Source and in logs.
	Name string
	// Bytes is the wasm binary. The host keeps no reference to it after
	// Load, Swap or Shadow return (it keeps a copy, for Rollback).
	Bytes []byte
	// Trust selects the runtime. The zero value is Untrusted.
	Trust Trust
	// Options are passed to the module's init untouched (abi.Config).
	Options []byte
}

// ModuleInfo describes a loaded module.
type ModuleInfo struct {
	Type abi.IndexType `json:"type"`
	// SHA256 is the hex sha256 of the module's bytes: its identity.
	SHA256 string `json:"sha256"`
	// ABI is the version the module reported.
	ABI uint32 `json:"abi"`
	// Name and Version are what the module reported in abi.Info.
	Name    string `json:"name"`
	Version string `json:"version"`
	Trusted bool   `json:"trusted"`
	// Source is Module.Name, or "fallback" for a module the fail policy
	// swapped in.
	Source   string    `json:"source"`
	LoadedAt time.Time `json:"loadedAt"`
}

// SwapReport describes a completed hot swap.
type SwapReport struct {
	// Pause is how long the index type's lock was held: the time during
	// which its decisions waited.
	Pause time.Duration
	// OldSHA256 and NewSHA256 identify the modules swapped.
	OldSHA256, NewSHA256 string
	// State is the position carried over.
	State abi.State
}
