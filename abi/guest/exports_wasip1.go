//go:build wasip1

package guest

import (
	"runtime"
	"unsafe"

	"github.com/indexgate/indexgate/abi"
)

// The ABI exports. Each one yields once (see the package comment: without
// it the runtime's GC workers never run inside a reactor that only ever
// executes host calls) and then hands its bytes to the dispatcher.
// Pointers are addresses in the module's linear memory; Go's heap does not
// move objects, and the dispatcher keeps the buffers referenced, so they
// stay valid for as long as docs/abi.md promises.

//go:wasmexport ig_abi_version
func igABIVersion() int32 {
	runtime.Gosched()
	return int32(abi.Version)
}

//go:wasmexport ig_buffer
func igBuffer(size int32) int32 {
	runtime.Gosched()
	b := active.buffer(int(size))
	if b == nil {
		return 0
	}
	return int32(addr(b))
}

//go:wasmexport ig_init
func igInit(n int32) int64 {
	runtime.Gosched()
	return result(active.init(int(n)))
}

//go:wasmexport ig_decide
func igDecide(n int32) int64 {
	runtime.Gosched()
	return result(active.decide(int(n)))
}

//go:wasmexport ig_mode_change
func igModeChange(n int32) int64 {
	runtime.Gosched()
	return result(active.modeChange(int(n)))
}

//go:wasmexport ig_snapshot
func igSnapshot() int64 {
	runtime.Gosched()
	return result(active.snapshot())
}

//go:wasmexport ig_restore
func igRestore(n int32) int64 {
	runtime.Gosched()
	return result(active.restore(int(n)))
}

func result(res []byte, err error) int64 {
	if err != nil {
		msg := active.errorMessage(err)
		return pack(addr(msg), uint32(len(msg)), true)
	}
	if len(res) == 0 {
		return 0
	}
	return pack(addr(res), uint32(len(res)), false)
}

// addr is the linear-memory address of b's first byte.
func addr(b []byte) uint32 {
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}
