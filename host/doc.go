// Package host runs the router's WebAssembly filter modules with wazero:
// one active module per index type, each deciding, header by header,
// whether a change set is applied.
//
// # Lifecycle
//
// Load compiles a module (through a compilation cache, on disk when
// Config.CacheDir is set), checks before running any of it that it imports
// only wasi_snapshot_preview1 and exports the ABI of package abi with the
// right signatures, instantiates it with no filesystem, environment,
// arguments or network and a memory cap, runs its WASI reactor initialiser,
// checks its ABI version, initialises it and runs a self-test of known
// vectors on a second, throwaway instance. Only then may it serve. Swap does
// the same for a replacement and carries the state over. Check runs the
// same checks standalone and reports each one.
//
// # Concurrency
//
// Filters are stateful, and a wazero api.Function is not safe for
// concurrent calls, so each index type has one instance and one mutex:
// every call for a type (Decide, ModeChange, Restore, State, the critical
// section of Swap) holds it, and calls for different types run
// concurrently. The decide path reuses the instance's cached function
// handles, call stack, encode buffer and verdict slice and does not
// allocate for a trusted module.
//
// Swap does everything that is slow or can fail (compile, instantiate,
// init, self-test) without the lock, while the old module keeps deciding.
// Under the lock it only restores the old module's last state into the new
// instance, checks it with a snapshot and switches, so a decision is made
// by exactly one of the two modules and never lost or repeated. The pause
// is reported in SwapReport and in the swap_pause_seconds histogram.
//
// # Shadow mode and rollback
//
// Shadow runs a candidate module beside a type's active module: it is
// prepared and checked like a Swap's module, starts from the active
// module's state, and then decides a copy of every batch right after the
// active module, under the same lock. Its verdicts are only compared
// (ShadowStats, the shadow_* metrics); after a batch where they differ it
// is set back to the active module's state, so one difference does not
// cascade. A candidate that fails a call is dropped and reported; the
// active module never sees it. Promote makes the candidate active with the
// active module's state carried over, as Swap does; Rollback swaps back
// the module the last Swap, Promote or Rollback replaced (the host keeps
// its bytes).
//
// # Deadlines and trust
//
// A Trusted module (a built-in, or one the operator pinned) runs in a
// runtime without cancellation checks: its calls cannot be interrupted, and
// cost nothing extra. An Untrusted module runs in a second runtime built
// with close-on-context-done, and every call gets Config.CallTimeout. The
// two runtimes share one compilation cache. RATIONALE.md gives the numbers
// behind the split.
//
// # Failures
//
// A call that traps, times out, exits, reads or returns a pointer outside
// the module's memory, returns the wrong number of verdicts or an unknown
// verdict, or returns an error where the ABI allows none, poisons the
// instance. The host closes it, replaces it with a fresh instance of the
// same module restored to the last known-good state (the host snapshots
// after every successful call that can change state) and returns
// ErrModuleFailed: the caller applies nothing from that call. Under
// FailFallback the host instead swaps in Config.Fallback's module with the
// same state. Stats and the Prometheus metrics count failures,
// replacements, fallbacks and swaps.
package host
