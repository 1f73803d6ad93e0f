// Package abi is the contract between the indexgate router host and the
// WebAssembly filter modules that decide, for every change set, whether the
// router applies it.
//
// The package holds the ABI version, the export names a module must provide,
// the wire types (Header, Verdict, ModeChange, State, Config, Info) and their
// msgpack codec. It has no dependencies so that guest modules (see abi/guest)
// can import it without pulling a reflection-based encoder into the module.
//
// Every type carries vmihailenco/msgpack struct tags (as_array) and the tests
// prove that the hand-written codec here and github.com/vmihailenco/msgpack/v5
// read each other's bytes. The codec is hand-written because it is the hot
// path of the router: a reflection decoder inside a Go guest costs ~5.7 µs per
// header, the fixed-stride reader here a few ns (docs/benchmarks.md).
//
// docs/abi.md is the normative description; this package implements it.
package abi
