package abi_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/indexgate/indexgate/abi"
)

var exampleTimeline = abi.Timeline{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}

// message is one ABI message kind: how abi encodes and decodes it. decode
// returns a value comparable with want (slices and structs by value).
type message struct {
	name   string
	value  any // a pointer, as msgpack.Unmarshal needs
	encode func(b []byte) []byte
	decode func(b []byte) (any, error)
	// fresh returns a new pointer of the same type for msgpack.Unmarshal.
	fresh func() any
}

// examples are the messages docs/abi.md shows; TestDocExamples keeps the
// document's hex in step with them.
func examples() []message {
	h := abi.Header{Index: 42, PrevIndex: 41, Type: abi.IndexHA, Term: 3, Timeline: exampleTimeline}
	batch := []abi.Header{h, {Index: 43, PrevIndex: 42, Type: abi.IndexHA, Term: 3, Timeline: exampleTimeline}}
	verdicts := []abi.Verdict{{Action: abi.Apply, Reason: abi.ReasonOK}, {Action: abi.Skip, Reason: abi.ReasonDuplicate}}
	mc := abi.ModeChange{From: abi.IndexLegacy, To: abi.IndexHA, LastIndex: 1000, BaseIndex: 1000, Timeline: exampleTimeline}
	st := abi.State{Version: abi.StateVersion, Type: abi.IndexHA, Initialized: true, LastIndex: 43, Term: 3, Timeline: exampleTimeline, Extra: []byte{0x01, 0x02}}
	cfg := abi.Config{Type: abi.IndexHA, Options: []byte("max-term-jump=2")}
	info := abi.Info{Name: "indexgate-ha", Version: "1.0.0", Type: abi.IndexHA}
	return []message{
		{
			name: "header", value: &h,
			encode: func(b []byte) []byte { return abi.AppendHeader(b, &h) },
			decode: func(b []byte) (any, error) {
				hs, err := abi.DecodeHeaderBatch(append([]byte{0x91}, b...), nil)
				if err != nil {
					return nil, err
				}
				return hs[0], nil
			},
			fresh: func() any { return new(abi.Header) },
		},
		{
			name: "header batch", value: &batch,
			encode: func(b []byte) []byte { return abi.AppendHeaderBatch(b, batch) },
			decode: func(b []byte) (any, error) { return abi.DecodeHeaderBatch(b, nil) },
			fresh:  func() any { return new([]abi.Header) },
		},
		{
			name: "verdicts", value: &verdicts,
			encode: func(b []byte) []byte { return abi.AppendVerdicts(b, verdicts) },
			decode: func(b []byte) (any, error) { return abi.DecodeVerdicts(b, nil) },
			fresh:  func() any { return new([]abi.Verdict) },
		},
		{
			name: "mode change", value: &mc,
			encode: func(b []byte) []byte { return abi.AppendModeChange(b, &mc) },
			decode: func(b []byte) (any, error) { return abi.DecodeModeChange(b) },
			fresh:  func() any { return new(abi.ModeChange) },
		},
		{
			name: "state", value: &st,
			encode: func(b []byte) []byte { return abi.AppendState(b, &st) },
			decode: func(b []byte) (any, error) { return abi.DecodeState(b) },
			fresh:  func() any { return new(abi.State) },
		},
		{
			name: "config", value: &cfg,
			encode: func(b []byte) []byte { return abi.AppendConfig(b, &cfg) },
			decode: func(b []byte) (any, error) { return abi.DecodeConfig(b) },
			fresh:  func() any { return new(abi.Config) },
		},
		{
			name: "info", value: &info,
			encode: func(b []byte) []byte { return abi.AppendInfo(b, &info) },
			decode: func(b []byte) (any, error) { return abi.DecodeInfo(b) },
			fresh:  func() any { return new(abi.Info) },
		},
	}
}

// deref returns the value p points to.
func deref(p any) any { return reflect.ValueOf(p).Elem().Interface() }

// same compares decoded messages treating nil and empty byte slices alike:
// msgpack has no way to tell them apart.
func same(a, b any) bool {
	norm := func(v any) any {
		switch x := v.(type) {
		case abi.State:
			if len(x.Extra) == 0 {
				x.Extra = nil
			}
			return x
		case abi.Config:
			if len(x.Options) == 0 {
				x.Options = nil
			}
			return x
		case []abi.Header:
			if len(x) == 0 {
				return []abi.Header(nil)
			}
		}
		return v
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func TestRoundTrip(t *testing.T) {
	for _, m := range examples() {
		t.Run(m.name, func(t *testing.T) {
			enc := m.encode(nil)
			got, err := m.decode(enc)
			if err != nil {
				t.Fatalf("decode(%x): %v", enc, err)
			}
			if !same(got, deref(m.value)) {
				t.Fatalf("round trip = %+v, want %+v", got, deref(m.value))
			}
			// Append must append, not overwrite.
			prefix := []byte("prefix")
			if again := m.encode(bytes.Clone(prefix)); !bytes.Equal(again, append(prefix, enc...)) {
				t.Fatalf("encode after a prefix = %x", again)
			}
		})
	}
}

// TestRoundTripEdgeValues runs the extremes of each field through the codec.
func TestRoundTripEdgeValues(t *testing.T) {
	const maxU = ^uint64(0)
	long := bytes.Repeat([]byte{0xab}, 70000) // beyond bin 16
	tests := []struct {
		name   string
		encode func() []byte
		decode func([]byte) (any, error)
		want   any
	}{
		{
			name: "header max",
			encode: func() []byte {
				return abi.AppendHeaderBatch(nil, []abi.Header{{Index: maxU, PrevIndex: maxU - 1, Type: 255, Term: maxU}})
			},
			decode: func(b []byte) (any, error) { return abi.DecodeHeaderBatch(b, nil) },
			want:   []abi.Header{{Index: maxU, PrevIndex: maxU - 1, Type: 255, Term: maxU}},
		},
		{
			name:   "empty batch",
			encode: func() []byte { return abi.AppendHeaderBatch(nil, nil) },
			decode: func(b []byte) (any, error) { return abi.DecodeHeaderBatch(b, nil) },
			want:   []abi.Header{},
		},
		{
			name:   "state zero",
			encode: func() []byte { return abi.AppendState(nil, &abi.State{Version: abi.StateVersion}) },
			decode: func(b []byte) (any, error) { return abi.DecodeState(b) },
			want:   abi.State{Version: abi.StateVersion},
		},
		{
			name: "state long extra",
			encode: func() []byte {
				return abi.AppendState(nil, &abi.State{Version: abi.StateVersion, Type: abi.IndexLegacy, LastIndex: maxU, Term: maxU, Extra: long})
			},
			decode: func(b []byte) (any, error) { return abi.DecodeState(b) },
			want:   abi.State{Version: abi.StateVersion, Type: abi.IndexLegacy, LastIndex: maxU, Term: maxU, Extra: long},
		},
		{
			name:   "info empty strings",
			encode: func() []byte { return abi.AppendInfo(nil, &abi.Info{}) },
			decode: func(b []byte) (any, error) { return abi.DecodeInfo(b) },
			want:   abi.Info{},
		},
		{
			name: "info utf-8",
			encode: func() []byte {
				return abi.AppendInfo(nil, &abi.Info{Name: "filtré ✓", Version: "2", Type: abi.IndexLegacy})
			},
			decode: func(b []byte) (any, error) { return abi.DecodeInfo(b) },
			want:   abi.Info{Name: "filtré ✓", Version: "2", Type: abi.IndexLegacy},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.decode(tt.encode())
			if err != nil {
				t.Fatal(err)
			}
			if !same(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestLibraryReadsOurBytes: github.com/vmihailenco/msgpack/v5 decodes what
// abi writes into the same structs.
func TestLibraryReadsOurBytes(t *testing.T) {
	for _, m := range examples() {
		t.Run(m.name, func(t *testing.T) {
			enc := m.encode(nil)
			got := m.fresh()
			if err := msgpack.Unmarshal(enc, got); err != nil {
				t.Fatalf("msgpack.Unmarshal(%x): %v", enc, err)
			}
			if !same(deref(got), deref(m.value)) {
				t.Fatalf("library decoded %+v, want %+v", deref(got), deref(m.value))
			}
		})
	}
}

// TestWeReadLibraryBytes: abi decodes the library's encodings, compact
// integers included, and the default (wide integer) ones.
func TestWeReadLibraryBytes(t *testing.T) {
	for _, compact := range []bool{true, false} {
		for _, m := range examples() {
			t.Run(m.name, func(t *testing.T) {
				var buf bytes.Buffer
				enc := msgpack.NewEncoder(&buf)
				enc.UseCompactInts(compact)
				if err := enc.Encode(m.value); err != nil {
					t.Fatal(err)
				}
				got, err := m.decode(buf.Bytes())
				if err != nil {
					t.Fatalf("compact=%t: decode(%x): %v", compact, buf.Bytes(), err)
				}
				if !same(got, deref(m.value)) {
					t.Fatalf("compact=%t: decoded %+v, want %+v", compact, got, deref(m.value))
				}
				if compact && m.name == "header" && buf.Len() >= abi.HeaderSize {
					t.Fatalf("compact header is %d bytes, so the slow path was not exercised", buf.Len())
				}
			})
		}
	}
}

// TestIndexTypeEncodings: msgpack carries the type as an integer, JSON as
// its name.
func TestIndexTypeEncodings(t *testing.T) {
	tests := []struct {
		typ      abi.IndexType
		msgpack  string
		json     string
		jsonBack abi.IndexType
	}{
		{abi.IndexNone, "cc00", `"none"`, abi.IndexNone},
		{abi.IndexLegacy, "cc01", `"legacy"`, abi.IndexLegacy},
		{abi.IndexHA, "cc02", `"ha"`, abi.IndexHA},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			b, err := msgpack.Marshal(tt.typ)
			if err != nil || hex.EncodeToString(b) != tt.msgpack {
				t.Fatalf("msgpack.Marshal = %x, %v; want %s", b, err, tt.msgpack)
			}
			var back abi.IndexType
			if err := msgpack.Unmarshal([]byte{byte(tt.typ)}, &back); err != nil || back != tt.typ {
				t.Fatalf("msgpack.Unmarshal(fixint) = %v, %v", back, err)
			}
			j, err := json.Marshal(tt.typ)
			if err != nil || string(j) != tt.json {
				t.Fatalf("json.Marshal = %s, %v; want %s", j, err, tt.json)
			}
			if err := json.Unmarshal(j, &back); err != nil || back != tt.jsonBack {
				t.Fatalf("json.Unmarshal = %v, %v", back, err)
			}
		})
	}
	var typ abi.IndexType
	for _, bad := range []string{"cd0100", "a26861", "cc01cc"} {
		b, _ := hex.DecodeString(bad)
		if err := typ.UnmarshalMsgpack(b); !errors.Is(err, abi.ErrMalformed) {
			t.Errorf("UnmarshalMsgpack(%s) = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestFixedLayout(t *testing.T) {
	h := abi.Header{Index: 1, PrevIndex: 0, Type: abi.IndexLegacy, Term: 0}
	tests := []struct {
		name string
		enc  []byte
		want int
	}{
		{"header", abi.AppendHeader(nil, &h), abi.HeaderSize},
		{"header is 48 bytes", abi.AppendHeader(nil, &h), 48},
		{"header batch of 3", abi.AppendHeaderBatch(nil, []abi.Header{h, h, h}), abi.BatchPrefixSize + 3*abi.HeaderSize},
		{"empty header batch", abi.AppendHeaderBatch(nil, nil), abi.BatchPrefixSize},
		{"verdicts of 3", abi.AppendVerdicts(nil, make([]abi.Verdict, 3)), abi.BatchPrefixSize + 3*abi.VerdictSize},
		{"mode change", abi.AppendModeChange(nil, &abi.ModeChange{}), 1 + 2 + 2 + 9 + 9 + 18},
		{"state, empty extra", abi.AppendState(nil, &abi.State{}), 1 + 2 + 2 + 1 + 9 + 9 + 18 + 5},
		{"state, 3 bytes extra", abi.AppendState(nil, &abi.State{Extra: []byte("abc")}), 1 + 2 + 2 + 1 + 9 + 9 + 18 + 5 + 3},
		{"config", abi.AppendConfig(nil, &abi.Config{Options: []byte("ab")}), 1 + 2 + 5 + 2},
		{"info", abi.AppendInfo(nil, &abi.Info{Name: "n", Version: "v1"}), 1 + 5 + 1 + 5 + 2 + 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.enc) != tt.want {
				t.Fatalf("%d bytes, want %d", len(tt.enc), tt.want)
			}
		})
	}
	// Every header in a batch starts at a fixed stride, whatever its values.
	hs := []abi.Header{{Index: 1}, {Index: ^uint64(0), Term: 7, Type: abi.IndexHA, Timeline: exampleTimeline}}
	b := abi.AppendHeaderBatch(nil, hs)
	for i := range hs {
		one := abi.AppendHeader(nil, &hs[i])
		off := abi.BatchPrefixSize + i*abi.HeaderSize
		if !bytes.Equal(b[off:off+abi.HeaderSize], one) {
			t.Fatalf("header %d not at offset %d", i, off)
		}
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMalformed feeds each decoder bytes that are not its message. Every
// one must fail with the sentinel, never panic.
func TestMalformed(t *testing.T) {
	decoders := map[string]func([]byte) error{
		"header batch": func(b []byte) error { _, err := abi.DecodeHeaderBatch(b, nil); return err },
		"verdicts":     func(b []byte) error { _, err := abi.DecodeVerdicts(b, nil); return err },
		"mode change":  func(b []byte) error { _, err := abi.DecodeModeChange(b); return err },
		"state":        func(b []byte) error { _, err := abi.DecodeState(b); return err },
		"config":       func(b []byte) error { _, err := abi.DecodeConfig(b); return err },
		"info":         func(b []byte) error { _, err := abi.DecodeInfo(b); return err },
	}
	header := "95 cf0000000000000002 cf0000000000000001 cc02 cf0000000000000001 c410 00000000000000000000000000000000"
	tests := []struct {
		name    string
		decoder string
		in      string // hex, spaces ignored
		want    error
	}{
		{"empty", "header batch", "", abi.ErrMalformed},
		{"not an array", "header batch", "c0", abi.ErrMalformed},
		{"array32 longer than input", "header batch", "ddffffffff", abi.ErrMalformed},
		{"array16 count beyond MaxBatch", "header batch", "dc1001", abi.ErrBatchTooLarge},
		{"array32 count beyond MaxBatch", "header batch", "dd00001001" + strings.Repeat("00", 4097), abi.ErrBatchTooLarge},
		{"header with 4 fields", "header batch", "91 94 01 00 02 01", abi.ErrMalformed},
		{"negative index", "header batch", "91 95 ff 00 02 01 c410 00000000000000000000000000000000", abi.ErrMalformed},
		{"negative int8 prevIndex", "header batch", "91 95 05 d0ff 02 01 c410 00000000000000000000000000000000", abi.ErrMalformed},
		{"type above a byte", "header batch", "91 95 05 04 cd0100 01 c410 00000000000000000000000000000000", abi.ErrMalformed},
		{"index as a float", "header batch", "91 95 cb3ff0000000000000 00 02 01 c0", abi.ErrMalformed},
		{"timeline of 15 bytes", "header batch", "91 95 05 04 02 01 c40f 000000000000000000000000000000", abi.ErrMalformed},
		{"timeline as an integer", "header batch", "91 95 05 04 02 01 05", abi.ErrMalformed},
		{"trailing bytes", "header batch", "91" + header + "00", abi.ErrMalformed},
		{"fewer headers than announced", "header batch", "dd00000002" + header, abi.ErrMalformed},
		{"verdict with 3 fields", "verdicts", "91 93 00 00 00", abi.ErrMalformed},
		{"verdict action above a byte", "verdicts", "91 92 cd0100 00", abi.ErrMalformed},
		{"verdicts count beyond MaxBatch", "verdicts", "dc1001", abi.ErrBatchTooLarge},
		{"mode change with a map", "mode change", "85", abi.ErrMalformed},
		{"mode change trailing", "mode change", "95 01 02 00 00 c0 00", abi.ErrMalformed},
		{"state version 2", "state", "97 02 02 c3 00 00 c0 c0", abi.ErrMalformed},
		{"state initialized as int", "state", "97 01 02 01 00 00 c0 c0", abi.ErrMalformed},
		{"state extra longer than input", "state", "97 01 02 c3 00 00 c0 c6ffffffff", abi.ErrMalformed},
		{"config 3 fields", "config", "93 02 c0 c0", abi.ErrMalformed},
		{"config options as int", "config", "92 02 05", abi.ErrMalformed},
		{"info type above a byte", "info", "93 a0 a0 cd0100", abi.ErrMalformed},
		{"info str32 longer than input", "info", "93 db7fffffff", abi.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.decoder+"/"+tt.name, func(t *testing.T) {
			err := decoders[tt.decoder](mustHex(t, tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

// TestTruncated cuts every example message at every length: a decoder must
// report ErrMalformed, never panic or succeed.
func TestTruncated(t *testing.T) {
	for _, m := range examples() {
		t.Run(m.name, func(t *testing.T) {
			enc := m.encode(nil)
			for n := range len(enc) {
				if got, err := m.decode(enc[:n]); !errors.Is(err, abi.ErrMalformed) {
					t.Fatalf("decode of the first %d of %d bytes = %+v, %v; want ErrMalformed", n, len(enc), got, err)
				}
			}
		})
	}
}

// TestDecodeHeaderBatchReusesDst: decoding into a slice with room does not
// allocate, which the guest's zero-allocation decide relies on.
func TestDecodeHeaderBatchReusesDst(t *testing.T) {
	in := abi.AppendHeaderBatch(nil, benchHeaders(256))
	dst := make([]abi.Header, 0, 256)
	allocs := testing.AllocsPerRun(50, func() {
		var err error
		if dst, err = abi.DecodeHeaderBatch(in, dst); err != nil || len(dst) != 256 {
			t.Fatalf("decode: %d headers, %v", len(dst), err)
		}
	})
	if allocs != 0 {
		t.Fatalf("DecodeHeaderBatch into a large enough slice allocates %.1f times", allocs)
	}
}

// TestDocExamples keeps docs/abi.md honest: each example message's hex, as
// abi writes it, appears in the document verbatim.
func TestDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/abi.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range examples() {
		t.Run(m.name, func(t *testing.T) {
			want := hex.EncodeToString(m.encode(nil))
			if !bytes.Contains(doc, []byte(want)) {
				t.Fatalf("docs/abi.md lacks the %s example %s", m.name, want)
			}
		})
	}
}

func benchHeaders(n int) []abi.Header {
	hs := make([]abi.Header, n)
	for i := range hs {
		hs[i] = abi.Header{Index: uint64(i + 1001), PrevIndex: uint64(i + 1000), Type: abi.IndexHA, Term: 7, Timeline: exampleTimeline}
	}
	return hs
}

func FuzzDecodeHeaderBatch(f *testing.F) {
	f.Add(abi.AppendHeaderBatch(nil, nil))
	f.Add(abi.AppendHeaderBatch(nil, benchHeaders(1)))
	f.Add(abi.AppendHeaderBatch(nil, benchHeaders(3)))
	f.Add(abi.AppendHeaderBatch(nil, benchHeaders(3))[:70])
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x91, 0x95, 0x05, 0x04, 0x02, 0x01, 0xc0})
	f.Add([]byte{0x91, 0x95, 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x02, 0x01, 0xc0})
	if lib, err := msgpack.Marshal(benchHeaders(2)); err == nil {
		f.Add(lib)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		hs, err := abi.DecodeHeaderBatch(data, nil)
		if err != nil {
			if !errors.Is(err, abi.ErrMalformed) && !errors.Is(err, abi.ErrBatchTooLarge) {
				t.Fatalf("error %v is neither ErrMalformed nor ErrBatchTooLarge", err)
			}
			return
		}
		if len(hs) > abi.MaxBatch {
			t.Fatalf("decoded %d headers, above MaxBatch", len(hs))
		}
		// Whatever form was read, the fixed form must carry the same headers.
		enc := abi.AppendHeaderBatch(nil, hs)
		if len(enc) != abi.BatchPrefixSize+len(hs)*abi.HeaderSize {
			t.Fatalf("re-encoded %d headers into %d bytes", len(hs), len(enc))
		}
		again, err := abi.DecodeHeaderBatch(enc, nil)
		if err != nil || !reflect.DeepEqual(again, hs) {
			t.Fatalf("re-encoded batch decodes to %+v, %v; want %+v", again, err, hs)
		}
		// What abi accepts, the reference library reads the same way.
		var lib []abi.Header
		if err := msgpack.Unmarshal(data, &lib); err != nil {
			t.Fatalf("abi accepted %x but msgpack/v5 says %v", data, err)
		}
		if len(lib) != len(hs) || (len(hs) > 0 && !reflect.DeepEqual(lib, hs)) {
			t.Fatalf("abi read %+v, msgpack/v5 read %+v", hs, lib)
		}
	})
}

func BenchmarkDecodeHeaderBatch(b *testing.B) {
	const n = 256
	in := abi.AppendHeaderBatch(nil, benchHeaders(n))
	b.Run("abi", func(b *testing.B) {
		dst := make([]abi.Header, 0, n)
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if dst, err = abi.DecodeHeaderBatch(in, dst); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/header")
	})
	// The reflection-based library, for comparison: why abi hand-writes it.
	b.Run("msgpack-v5", func(b *testing.B) {
		var dst []abi.Header
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		for b.Loop() {
			if err := msgpack.Unmarshal(in, &dst); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/header")
	})
}
