// Package native implements the built-in legacy and HA filter strategies in
// plain Go. The built-in wasm modules (filters/legacy, filters/ha) register
// these filters through abi/guest, and the host uses them as the reference
// when it checks modules and measures them.
//
// A filter is a deterministic state machine over abi.State (Initialized,
// LastIndex, Term, Timeline). Evaluate holds the decision rules; the Filter
// methods add the state changes. docs/abi.md states the same rules as the
// contract every conforming module follows.
package native
