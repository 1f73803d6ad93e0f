// Package e2e holds the end-to-end tests and the ingest benchmark of a
// legacy controller and its routers over loopback TCP: the real binaries
// killed with SIGKILL mid-ingest, replay within the change log and one full
// resync beyond it, protocol version mismatches on both sides, malformed
// frames from a raw client, and change sets per second from controller to
// router with the wasm filters against the native reference filters.
//
// The package has no non-test code: the plumbing (in-process servers,
// child processes, admin clients) is package internal/itest's, so other
// end-to-end tests reuse it.
package e2e
