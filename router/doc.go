// Package router is the edge side of indexgate: it connects to a controller,
// resumes from its committed positions, decides every change set with the
// WebAssembly filter of the change set's index type (package host) and
// commits what the filters accept to its local model (package model), then
// acknowledges. It also serves the router's admin HTTP API.
//
// The package keeps its concerns apart:
//
//   - the client owns the connection: dialing (mutual TLS 1.3 with the
//     router's certificate, package pki, unless Config.Insecure) with
//     backoff across the configured controller addresses, redirects, the
//     handshake, heartbeats and the frame loop;
//   - the applier is deterministic: a frame goes in, store transactions
//     and an acknowledgement come out. It never touches a socket, so its
//     crash and rollback behaviour is tested frame by frame;
//   - the filter store vets every module but the built-ins against the
//     trust policy (package trust), hot-swaps, shadows, promotes and rolls
//     back modules in the host and persists what serves;
//   - the admin API reads committed state, and its mutating endpoints
//     (behind a bearer token) drive the filter store; the filter
//     directory watcher drives it from files.
//
// The session rules (handshake, resume, batches, mode changes, full state)
// are docs/architecture.md's "Session semantics"; docs/router.md describes
// the store layout, the applier's transaction, the fail policy, the flags
// and the admin API.
//
// Every change set, position, filter state and counter that belongs
// together commits in one bbolt transaction, so a router killed at any
// instant restarts at a committed position with the filter state that goes
// with it: it neither loses nor re-applies a change set.
package router
