// Package itest runs controllers and routers in the test process for
// end-to-end tests: real TCP between them, raft's TCP transport and
// raft-boltdb between controllers, the routers' built-in wasm filters,
// everything on 127.0.0.1. It owns the plumbing (start, stop, kill, wait,
// a shared wasm compilation cache); the tests say what to check.
//
// Helpers fail the test (t.Fatal) when a bounded wait runs out, so call them
// from the test's goroutine. The bounds are deadlock guards, not speed
// assertions.
package itest
