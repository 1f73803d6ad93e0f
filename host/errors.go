package host

import "errors"

// Sentinel errors. Errors from the host wrap one of these (test with
// errors.Is) and carry the detail: the index type, the module's sha256, the
// export or import concerned, the module's own message.
var (
	// ErrNotWasm reports bytes that are not a WebAssembly binary.
	ErrNotWasm = errors.New("host: not a wasm module")
	// ErrCompile reports a wasm binary wazero refuses: malformed, invalid,
	// or declaring more memory than Config.MemoryLimitBytes.
	ErrCompile = errors.New("host: module does not compile")
	// ErrMissingExport reports an ABI export (or the memory) that the
	// module lacks or exports with the wrong signature.
	ErrMissingExport = errors.New("host: missing or mistyped export")
	// ErrUnknownImport reports an import the host does not provide: only
	// wasi_snapshot_preview1 functions are.
	ErrUnknownImport = errors.New("host: unknown import")
	// ErrABIVersion reports a module built for another abi.Version.
	ErrABIVersion = errors.New("host: unsupported ABI version")
	// ErrSelfTest reports a module that answered a known vector wrongly,
	// or said in abi.Info that it is for another index type.
	ErrSelfTest = errors.New("host: module failed its self-test")
	// ErrModuleFailed reports a call the module did not complete: a trap,
	// a timeout, an exit, a pointer or length outside its memory, a wrong
	// number of verdicts or an unknown verdict code, or an error result
	// where the ABI allows none. Nothing from the failed call may be
	// applied; the host has already replaced the instance.
	ErrModuleFailed = errors.New("host: module failed")
	// ErrNotLoaded reports an index type with no module.
	ErrNotLoaded = errors.New("host: no module loaded for this index type")
	// ErrLoaded reports a Load for an index type that already has a
	// module; Swap replaces it.
	ErrLoaded = errors.New("host: a module is already loaded for this index type")
	// ErrClosed reports a call after Close.
	ErrClosed = errors.New("host: closed")
)
