// Package wasmtest assembles small WebAssembly 1.0 binaries by hand for the
// host's tests: modules that are broken in exactly one, precise way (a
// missing export, a foreign import, a trap, a runaway loop, a pointer past
// the end of memory) are far easier to state as a few raw opcodes than to
// coax out of a compiler, and they build in microseconds.
//
// Only what those tests need is here: function types, function imports, one
// memory, functions, exports and active data segments. Function bodies are
// raw opcode bytes; the helpers below cover the handful of instructions the
// tests use. The binary format is described in
// https://www.w3.org/TR/wasm-core-1/#binary-format%E2%91%A0.
package wasmtest

import "encoding/binary"

// Value types.
const (
	I32 byte = 0x7f
	I64 byte = 0x7e
)

// Export kinds.
const (
	KindFunc   byte = 0x00
	KindMemory byte = 0x02
)

// Opcodes used by the tests' function bodies.
const (
	OpUnreachable byte = 0x00
	OpLoop        byte = 0x03
	OpEnd         byte = 0x0b
	OpBr          byte = 0x0c
	OpBrIf        byte = 0x0d
	OpCall        byte = 0x10
	OpI32Const    byte = 0x41
	OpI64Const    byte = 0x42
	OpMemoryGrow  byte = 0x40 // followed by the memory index 0x00
	OpI32Ne       byte = 0x47
	// BlockVoid is the block type of a block or loop without a result.
	BlockVoid byte = 0x40
)

// FuncType is a function signature.
type FuncType struct {
	Params, Results []byte
}

// Import is a function import; Type indexes Module.Types.
type Import struct {
	Module, Name string
	Type         uint32
}

// Func is a function defined in the module. Body holds the instructions
// without the final end opcode, which Bytes appends.
type Func struct {
	Type   uint32
	Locals []byte // one value type per local
	Body   []byte
}

// Export names a function (by index in the function space: imports first)
// or the memory.
type Export struct {
	Name  string
	Kind  byte
	Index uint32
}

// Data is an active data segment copied to Offset at instantiation.
type Data struct {
	Offset uint32
	Bytes  []byte
}

// Memory is the module's one linear memory, in 64 KiB pages.
type Memory struct {
	Min uint32
	Max *uint32
}

// Module is a module to assemble.
type Module struct {
	Types   []FuncType
	Imports []Import
	Funcs   []Func
	Memory  *Memory
	Exports []Export
	Data    []Data
}

// Bytes returns the binary encoding of m.
func (m *Module) Bytes() []byte {
	out := []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}
	if len(m.Types) > 0 {
		var s []byte
		s = U32(s, uint32(len(m.Types)))
		for _, t := range m.Types {
			s = append(s, 0x60)
			s = vec(s, t.Params)
			s = vec(s, t.Results)
		}
		out = section(out, 1, s)
	}
	if len(m.Imports) > 0 {
		var s []byte
		s = U32(s, uint32(len(m.Imports)))
		for _, im := range m.Imports {
			s = name(s, im.Module)
			s = name(s, im.Name)
			s = append(s, KindFunc)
			s = U32(s, im.Type)
		}
		out = section(out, 2, s)
	}
	if len(m.Funcs) > 0 {
		var s []byte
		s = U32(s, uint32(len(m.Funcs)))
		for _, f := range m.Funcs {
			s = U32(s, f.Type)
		}
		out = section(out, 3, s)
	}
	if m.Memory != nil {
		s := []byte{1}
		if m.Memory.Max == nil {
			s = append(s, 0x00)
			s = U32(s, m.Memory.Min)
		} else {
			s = append(s, 0x01)
			s = U32(s, m.Memory.Min)
			s = U32(s, *m.Memory.Max)
		}
		out = section(out, 5, s)
	}
	if len(m.Exports) > 0 {
		var s []byte
		s = U32(s, uint32(len(m.Exports)))
		for _, e := range m.Exports {
			s = name(s, e.Name)
			s = append(s, e.Kind)
			s = U32(s, e.Index)
		}
		out = section(out, 7, s)
	}
	if len(m.Funcs) > 0 {
		var s []byte
		s = U32(s, uint32(len(m.Funcs)))
		for _, f := range m.Funcs {
			var body []byte
			// Each local gets its own (count=1, type) entry: simple, and
			// the tests never declare more than a few.
			body = U32(body, uint32(len(f.Locals)))
			for _, l := range f.Locals {
				body = append(body, 1, l)
			}
			body = append(body, f.Body...)
			body = append(body, OpEnd)
			s = U32(s, uint32(len(body)))
			s = append(s, body...)
		}
		out = section(out, 10, s)
	}
	if len(m.Data) > 0 {
		var s []byte
		s = U32(s, uint32(len(m.Data)))
		for _, d := range m.Data {
			s = append(s, 0x00) // active, memory 0
			s = append(s, OpI32Const)
			s = S64(s, int64(int32(d.Offset)))
			s = append(s, OpEnd)
			s = U32(s, uint32(len(d.Bytes)))
			s = append(s, d.Bytes...)
		}
		out = section(out, 11, s)
	}
	return out
}

// U32 appends v as unsigned LEB128.
func U32(b []byte, v uint32) []byte {
	return binary.AppendUvarint(b, uint64(v))
}

// S64 appends v as signed LEB128 (the immediate of i32.const and i64.const).
func S64(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// I32Const is the instruction pushing v.
func I32Const(v int32) []byte { return S64([]byte{OpI32Const}, int64(v)) }

// I64Const is the instruction pushing v.
func I64Const(v int64) []byte { return S64([]byte{OpI64Const}, v) }

// Call is the instruction calling function i.
func Call(i uint32) []byte { return U32([]byte{OpCall}, i) }

// Seq concatenates instructions.
func Seq(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func vec(b, items []byte) []byte {
	b = U32(b, uint32(len(items)))
	return append(b, items...)
}

func name(b []byte, s string) []byte {
	b = U32(b, uint32(len(s)))
	return append(b, s...)
}

func section(b []byte, id byte, content []byte) []byte {
	b = append(b, id)
	b = U32(b, uint32(len(content)))
	return append(b, content...)
}
