package main

import (
	"strings"
	"testing"

	"github.com/indexgate/indexgate/filters/builtin"
)

// Opcodes of the hand-assembled modules below.
const (
	opUnreachable = 0x00
	opLoop        = 0x03
	opEnd         = 0x0b
	opBr          = 0x0c
	opI32Const    = 0x41
	opI64Const    = 0x42
	blockVoid     = 0x40
)

// abiModule assembles a module with the filter ABI's exports (docs/abi.md)
// whose bodies are given by name; unnamed ones do the least that type
// checks. body["-name"] drops the export. It is built by hand so each
// hostile variant is broken in exactly one way.
func abiModule(bodies map[string][]byte) []byte {
	types := [][2][]byte{
		{nil, nil},       // () -> ()
		{nil, {0x7f}},    // () -> i32
		{{0x7f}, {0x7f}}, // (i32) -> i32
		{{0x7f}, {0x7e}}, // (i32) -> i64
		{nil, {0x7e}},    // () -> i64
	}
	funcs := []struct {
		name string
		typ  byte
		body []byte
	}{
		{"_initialize", 0, nil},
		{"ig_abi_version", 1, []byte{opI32Const, 1}},
		{"ig_buffer", 2, []byte{opI32Const, 0x80, 0x08}}, // 1024
		{"ig_init", 3, []byte{opI64Const, 0}},
		{"ig_decide", 3, []byte{opI64Const, 0}},
		{"ig_mode_change", 3, []byte{opI64Const, 0}},
		{"ig_snapshot", 4, []byte{opI64Const, 0}},
		{"ig_restore", 3, []byte{opI64Const, 0}},
	}
	vec := func(items ...[]byte) []byte {
		out := []byte{byte(len(items))}
		for _, it := range items {
			out = append(out, it...)
		}
		return out
	}
	section := func(id byte, body []byte) []byte {
		return append([]byte{id, byte(len(body))}, body...)
	}
	str := func(s string) []byte { return append([]byte{byte(len(s))}, s...) }

	var typeSec, funcSec, exportSec, codeSec [][]byte
	for _, t := range types {
		typeSec = append(typeSec, append(append([]byte{0x60}, vec(bytesOf(t[0])...)...), vec(bytesOf(t[1])...)...))
	}
	exportSec = append(exportSec, append(str("memory"), 0x02, 0))
	for i, f := range funcs {
		body := f.body
		if b, ok := bodies[f.name]; ok {
			body = b
		}
		funcSec = append(funcSec, []byte{f.typ})
		code := append([]byte{0}, body...) // no locals
		code = append(code, opEnd)
		codeSec = append(codeSec, append([]byte{byte(len(code))}, code...))
		if _, drop := bodies["-"+f.name]; !drop {
			exportSec = append(exportSec, append(str(f.name), 0x00, byte(i)))
		}
	}
	out := []byte("\x00asm\x01\x00\x00\x00")
	out = append(out, section(1, vec(typeSec...))...)
	out = append(out, section(3, vec(funcSec...))...)
	out = append(out, section(5, []byte{1, 0x00, 1})...) // one memory, min 1 page
	out = append(out, section(7, vec(exportSec...))...)
	out = append(out, section(10, vec(codeSec...))...)
	return out
}

func bytesOf(b []byte) [][]byte {
	var out [][]byte
	for _, x := range b {
		out = append(out, []byte{x})
	}
	return out
}

func TestFiltersTest(t *testing.T) {
	tests := []struct {
		name     string
		module   []byte
		args     []string
		wantCode int
		wantOut  []string // lines on stdout
		wantErr  string   // the one stderr line
	}{
		{"built-in legacy", builtin.Legacy(), []string{"--type", "legacy"}, exitOK,
			[]string{"PASS  exports the ABI", "PASS  vector: resync on a gap", "PASS: "}, ""},
		{"built-in ha, type detected", builtin.HA(), nil, exitOK,
			[]string{"checked for index type ha", "PASS  vector: resync when the raft term goes back", "PASS: "}, ""},
		{"ha module checked as legacy", builtin.HA(), []string{"--type", "legacy"}, exitFailure,
			[]string{"FAIL  init", "FAIL: "}, "module failed"},
		{"not wasm", []byte("\x7fELF garbage"), nil, exitFailure, nil, "is not a WebAssembly module"},
		{"empty module", []byte("\x00asm\x01\x00\x00\x00"), []string{"--type", "ha"}, exitFailure,
			[]string{"FAIL  exports the ABI", "SKIP  init", "FAIL: "}, "missing or mistyped export"},
		{"missing ig_decide", abiModule(map[string][]byte{"-ig_decide": nil}), []string{"--type", "ha"}, exitFailure,
			[]string{"FAIL  exports the ABI: ", "FAIL: "}, "ig_decide"},
		{"wrong ABI version", abiModule(map[string][]byte{"ig_abi_version": {opI32Const, 2}}), []string{"--type", "legacy"}, exitFailure,
			[]string{"PASS  instantiate", "FAIL  ABI version", "FAIL: "}, "unsupported ABI version"},
		{"trap", abiModule(map[string][]byte{"ig_abi_version": {opUnreachable, opI32Const, 1}}), []string{"--type", "legacy"}, exitFailure,
			[]string{"FAIL  ABI version", "FAIL: "}, "module failed"},
		{"runaway init", abiModule(map[string][]byte{"ig_init": {opLoop, blockVoid, opBr, 0, opEnd, opI64Const, 0}}), []string{"--type", "legacy"}, exitFailure,
			[]string{"PASS  ABI version", "FAIL  init", "FAIL: "}, "module failed"},
		{"truncated", builtin.Legacy()[:4096], []string{"--type", "legacy"}, exitFailure,
			[]string{"FAIL  wasm binary compiles", "FAIL: "}, "does not compile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "module.wasm", tc.module)
			args := append([]string{"filters", "test", path, "--cache-dir", cacheDir}, tc.args...)
			if tc.name != "runaway init" {
				// Instantiating under -race on a loaded machine can take
				// longer than a router's default deadline.
				args = append(args, "--call-timeout", "30s")
			}
			code, stdout, stderr := runCmd(t, args...)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, stdout, stderr)
			}
			for _, want := range tc.wantOut {
				if !containsLinePrefix(stdout, want) {
					t.Errorf("stdout lacks a line starting %q:\n%s", want, stdout)
				}
			}
			if tc.wantErr == "" {
				if stderr != "" {
					t.Errorf("stderr %q, want none", stderr)
				}
			} else {
				checkOneLine(t, stderr, tc.wantErr)
			}
			if strings.Contains(stdout+stderr, "goroutine ") {
				t.Error("a panic trace")
			}
		})
	}
}

func TestFiltersTestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"filters", "test"},
		{"filters", "test", "a.wasm", "b.wasm"},
		{"filters", "test", "a.wasm", "--type", "raft"},
		{"filters"},
	} {
		code, _, stderr := runCmd(t, args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
		checkOneLine(t, stderr, "")
	}
	code, _, stderr := runCmd(t, "filters", "test", "/nonexistent/module.wasm")
	if code != exitFailure {
		t.Errorf("missing file: exit %d, want %d", code, exitFailure)
	}
	checkOneLine(t, stderr, "no such file")
}

func containsLinePrefix(s, prefix string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) || (strings.HasPrefix(prefix, "checked") && strings.Contains(l, prefix)) {
			return true
		}
	}
	return false
}
