// Command strictha is an example custom filter module: the built-in HA
// strategy plus one rule of its own. When Config.Options says
// "max-term-jump=N", a change set that would otherwise apply is refused with
// Resync/Term if its raft term is more than N above the term of the last
// applied change set: a router then takes a full state instead of following
// a cluster whose terms raced ahead (for example one that went through a
// long series of failed elections that the operator wants to look at).
//
// Empty Options disable the rule, so the module then decides exactly like the
// built-in HA filter. The module keeps two counters of its own in
// State.Extra to show how a filter carries private state across restarts and
// hot swaps; docs/filters.md walks through it.
//
// Build: make examples (writes bin/examples/strictha.wasm).
package main
