package guest

import "github.com/indexgate/indexgate/abi"

// Filter decides, header by header, whether the router applies a change set.
// The host calls it from one goroutine at a time; it needs no locking.
//
// Implementations must be deterministic: the verdict and the new state depend
// only on the state and the input, so the host can replay, compare and hot
// swap modules. docs/abi.md gives the decision rules the built-in filters
// follow and that the host's self-test checks.
type Filter interface {
	// Init is called once, before any other method, with the index type the
	// host will use the module for and the operator's options. cfg.Options
	// stays valid after the call. An error refuses the module.
	Init(cfg abi.Config) (abi.Info, error)
	// Decide returns the verdict for h, advancing the filter's state when
	// the verdict is Apply. Within a batch, verdict i assumes every earlier
	// Apply was applied. h is only valid during the call.
	Decide(h *abi.Header) abi.Verdict
	// ModeChange tells the filter that the controller switched index type.
	ModeChange(mc abi.ModeChange) error
	// Snapshot returns the filter's state with Version abi.StateVersion.
	Snapshot() abi.State
	// Restore replaces the filter's state. s.Extra may be empty or written
	// by another module; the filter must accept both. s.Extra stays valid
	// after the call.
	Restore(s abi.State) error
}

// BatchFilter is a Filter that can also decide a whole batch in one call.
// The SDK uses DecideBatch when the registered Filter has it: a Go guest
// pays for every call in wasm, and the calls made per header (the
// interface call among them) were most of the built-in modules' decide
// cost (docs/benchmarks.md).
//
// A type that embeds a BatchFilter and overrides Decide inherits the
// embedded DecideBatch, which does not call the override: such a wrapper
// must implement DecideBatch too, or not embed (filters/native exposes its
// batch path only through native.Batched for this reason).
type BatchFilter interface {
	Filter
	// DecideBatch sets out[i] to the verdict for hs[i], deciding in order
	// exactly as calling Decide on each header would, state included.
	// len(out) == len(hs); both are only valid during the call.
	DecideBatch(hs []abi.Header, out []abi.Verdict)
}

// active is the filter the wasm exports dispatch to. It is package-level
// state by necessity: //go:wasmexport functions are plain functions with no
// receiver, so the one filter a module serves has to be reachable from them
// through a package variable. Register writes it during module
// initialisation, before the host can call any export.
var active dispatcher

// Register makes f the module's filter. Call it exactly once, from an init
// function or main of the module's main package. Registering nil or a second
// filter is a programming error in the module and panics at start-up, which
// the host reports as a failed instantiation.
func Register(f Filter) {
	if f == nil {
		panic("guest: Register called with a nil Filter")
	}
	if active.f != nil {
		panic("guest: Register called twice; a module serves exactly one Filter")
	}
	active.f = f
}
