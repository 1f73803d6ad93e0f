//go:build !wasip1

// Package builtin embeds the built-in filter modules, so a router built with
// `go install ./cmd/router` from a clean clone carries them.
//
// legacy.wasm and ha.wasm are generated: `make wasm` builds them from
// filters/legacy and filters/ha (reproducibly: -trimpath, no VCS stamp), they
// are committed, and `make check-wasm` (part of `make test`) fails when they
// no longer match their sources. Do not edit them by hand.
//
// The package builds only for host platforms. A guest module that imported
// it, directly or not, would embed the previous build of itself, so its
// output could never settle to one that check-wasm accepts; the build
// constraint turns that mistake into a compile error.
package builtin
