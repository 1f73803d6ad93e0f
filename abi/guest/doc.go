// Package guest is the SDK for writing indexgate filter modules in Go.
//
// A filter is a deterministic state machine that implements Filter. A module
// is a `package main` that calls Register from an init function (or main) and
// is built as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o f.wasm ./myfilter
//
// On GOOS=wasip1 the package exports the ABI functions described in
// docs/abi.md (ig_abi_version, ig_buffer, ig_init, ig_decide,
// ig_mode_change, ig_snapshot, ig_restore). They own the input and output
// buffers, decode the msgpack messages with abi's reflection-free codec
// (no allocation per decide call in steady state), turn a panicking filter
// into an error result instead of a trap, and yield to the Go scheduler
// once per call. The yield is there because a reactor only ever runs inside
// host calls: if the export never yields, the runtime's background GC
// goroutines may not get scheduled, GC cycles stop finishing and memory
// grows until the host's cap (knqyf263/go-plugin #78, Go 1.24). A Go 1.26
// module here stayed at 7.5 MiB over 200,000 allocating calls with or
// without the yield, so it is insurance, but cheap insurance.
//
// A Filter that also implements BatchFilter is called once per decide batch
// (DecideBatch) instead of once per header: in wasm a call per header costs
// more than deciding it. The built-in modules register native.Batched
// filters for this.
//
// Everything except the wasm exports builds on every GOOS, so a Filter can
// be unit-tested natively.
package guest
