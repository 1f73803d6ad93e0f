// Command ha is the built-in filter module for the raft (HA) index: the
// strategy in filters/native, exported through abi/guest. Build it with
// `make wasm`, which writes filters/builtin/ha.wasm.
package main
