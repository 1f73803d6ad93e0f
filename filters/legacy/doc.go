// Command legacy is the built-in filter module for the legacy counter: the
// strategy in filters/native, exported through abi/guest. Build it with
// `make wasm`, which writes filters/builtin/legacy.wasm.
package main
