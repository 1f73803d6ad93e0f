package wire_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

func encode(t testing.TB, m wire.Message) []byte {
	t.Helper()
	b, err := wire.EncodeFrame(nil, m)
	if err != nil {
		t.Fatalf("EncodeFrame(%T): %v", m, err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, tt := range fixtures() {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("prefix")
			frame, err := wire.EncodeFrame(bytes.Clone(prefix), tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(frame, prefix) {
				t.Fatalf("EncodeFrame did not append to dst")
			}
			frame = frame[len(prefix):]
			if got := binary.BigEndian.Uint32(frame); int(got) != len(frame)-4 {
				t.Fatalf("length prefix %d, payload %d bytes", got, len(frame)-4)
			}
			if frame[4] != byte(tt.msg.Type()) {
				t.Fatalf("type byte 0x%02x, want %s", frame[4], tt.msg.Type())
			}
			// A following frame must not be consumed.
			stream := append(bytes.Clone(frame), encode(t, &wire.Heartbeat{Index: 1})...)
			got, n, err := wire.DecodeFrame(stream, 0)
			if err != nil {
				t.Fatalf("DecodeFrame: %v", err)
			}
			if n != len(frame) {
				t.Fatalf("DecodeFrame consumed %d bytes, frame is %d", n, len(frame))
			}
			if !reflect.DeepEqual(got, tt.msg) {
				t.Fatalf("round trip mismatch:\n got %+v\nwant %+v", got, tt.msg)
			}
			// Decoded messages must not alias the input.
			for i := range frame {
				stream[i] = 0xee
			}
			if !reflect.DeepEqual(got, tt.msg) {
				t.Fatalf("decoded message changed when the input buffer was overwritten")
			}
		})
	}
}

// TestMsgpackLibraryInterop: the body is plain msgpack in the struct tags'
// field order, readable and writable by vmihailenco/msgpack/v5. Messages
// are compared by their canonical encoding because the library turns an
// empty list into a non-nil empty slice.
func TestMsgpackLibraryInterop(t *testing.T) {
	for _, tt := range fixtures() {
		t.Run(tt.name, func(t *testing.T) {
			frame := encode(t, tt.msg)
			want := frame

			// Library reads our body.
			v := reflect.New(reflect.TypeOf(tt.msg).Elem())
			if err := msgpack.Unmarshal(frame[5:], v.Interface()); err != nil {
				t.Fatalf("library cannot decode our body: %v", err)
			}
			if got := encode(t, v.Interface().(wire.Message)); !bytes.Equal(got, want) {
				t.Fatalf("library decoded something else:\n got %+v\nwant %+v", v.Interface(), tt.msg)
			}

			// We read the library's body (fixed-width ints, nil lists).
			body, err := msgpack.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			lib := binary.BigEndian.AppendUint32(nil, uint32(len(body)+1))
			lib = append(append(lib, byte(tt.msg.Type())), body...)
			got, _, err := wire.DecodeFrame(lib, 0)
			if err != nil {
				t.Fatalf("cannot decode the library's body % x...: %v", body[:min(len(body), 32)], err)
			}
			if g := encode(t, got); !bytes.Equal(g, want) {
				t.Fatalf("decoded the library's body into something else:\n got %+v\nwant %+v", got, tt.msg)
			}
		})
	}
}

// TestChangeSetSplices: a ChangeSet body is byte-identical to a Batch
// element, so a sender may encode each change set once (documented in
// docs/protocol.md).
func TestChangeSetSplices(t *testing.T) {
	sets := batchSets(20, 3)
	batch := encode(t, &wire.Batch{Sets: sets})
	spliced := []byte{byte(wire.TypeBatch), 0x91, 0xdc, 0x00, 20}
	for i := range sets {
		spliced = append(spliced, encode(t, &sets[i])[5:]...)
	}
	if !bytes.Equal(batch[4:], spliced) {
		t.Fatalf("batch payload differs from spliced change set bodies")
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name    string
		msg     wire.Message
		wantErr error
	}{
		{"nil", nil, nil},
		{"nil pointer", (*wire.Batch)(nil), nil},
		{"foreign type", foreign{}, nil},
		{"batch too large", &wire.Batch{Sets: make([]wire.ChangeSet, abi.MaxBatch+1)}, abi.ErrBatchTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := wire.EncodeFrame(dst, tt.msg)
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("EncodeFrame = %v, want an error (%v)", err, tt.wantErr)
			}
			if string(got) != "keep" {
				t.Fatalf("EncodeFrame left %q in dst after failing", got)
			}
		})
	}
}

type foreign struct{}

func (foreign) Type() wire.MsgType { return wire.TypeHeartbeat }

// frame builds a frame from a hex payload (type byte + body).
func frame(payloadHex string) []byte {
	p, err := hex.DecodeString(strings.ReplaceAll(payloadHex, " ", ""))
	if err != nil {
		panic(err)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(p))), p...)
}

func TestDecodeErrors(t *testing.T) {
	valid := encode(t, &wire.Batch{Sets: batchSets(2, 2)})
	truncatedBody := bytes.Clone(valid[:len(valid)-3])
	binary.BigEndian.PutUint32(truncatedBody, uint32(len(truncatedBody)-4))
	trailing := append(bytes.Clone(valid), 0xc0)
	binary.BigEndian.PutUint32(trailing, uint32(len(trailing)-4))
	deep := frame("0b 93 01 02" + strings.Repeat("91", 100) + "00")
	tooMany := encode(t, &wire.Batch{Sets: batchSets(abi.MaxBatch, 0)})
	tooMany[4+1+1+1], tooMany[4+1+1+2] = 0x10, 0x01 // array16 count 4096 -> 4097
	huge := encode(t, &wire.FullStateEnd{Digest: strings.Repeat("d", 100)})

	tests := []struct {
		name  string
		input []byte
		max   int
		want  []error
		eof   bool // the input ends inside the frame
	}{
		{"empty input", nil, 0, []error{wire.ErrMalformed}, true},
		{"short length", []byte{0, 0, 1}, 0, []error{wire.ErrMalformed}, true},
		{"missing payload", []byte{0, 0, 0, 5, 0x0b}, 0, []error{wire.ErrMalformed}, true},
		{"truncated frame", valid[:len(valid)-1], 0, []error{wire.ErrMalformed}, true},
		{"empty payload", frame(""), 0, []error{wire.ErrMalformed}, false},
		{"over default limit", []byte{0x01, 0x00, 0x00, 0x01}, 0, []error{wire.ErrFrameTooLarge}, false},
		{"over given limit", huge, 50, []error{wire.ErrFrameTooLarge}, false},
		{"max length", []byte{0xff, 0xff, 0xff, 0xff}, math.MaxInt, []error{wire.ErrMalformed}, true},
		{"unknown type 0", frame("00 90"), 0, []error{wire.ErrMalformed}, false},
		{"unknown type 0x0e", frame("0e 90"), 0, []error{wire.ErrMalformed}, false},
		{"unknown type 0xff", frame("ff"), 0, []error{wire.ErrMalformed}, false},
		{"type only", frame("0b"), 0, []error{wire.ErrMalformed}, false},
		{"truncated body", truncatedBody, 0, []error{wire.ErrMalformed}, false},
		{"trailing garbage", trailing, 0, []error{wire.ErrMalformed}, false},
		{"body not an array", frame("0b 2a"), 0, []error{wire.ErrMalformed}, false},
		{"body is a map", frame("0b 82 00 01 01 02"), 0, []error{wire.ErrMalformed}, false},
		{"too few fields", frame("0b 91 01"), 0, []error{wire.ErrMalformed}, false},
		{"field wrong type", frame("0b 92 a1 61 01"), 0, []error{wire.ErrMalformed}, false},
		{"negative uint", frame("0b 92 ff 01"), 0, []error{wire.ErrMalformed}, false},
		{"negative int8 uint", frame("0b 92 d0 80 01"), 0, []error{wire.ErrMalformed}, false},
		{"int64 overflow", frame("0b 92 01 cf ffffffffffffffff"), 0, []error{wire.ErrMalformed}, false},
		{"invalid code c1", frame("0b 92 c1 01"), 0, []error{wire.ErrMalformed}, false},
		{"uint16 overflow", frame("01 99 ce 00010000 01 a0 90 90 90 00 00 00"), 0, []error{wire.ErrMalformed}, false},
		{"index type overflow", frame("0a 93 90 cd 0100 00"), 0, []error{wire.ErrMalformed}, false},
		{"timeline of 15 bytes", frame("0a 93 91 93 01 01 c4 0f 000102030405060708090a0b0c0d0e 01 00"), 0, []error{wire.ErrMalformed}, false},
		{"string longer than body", frame("08 92 00 db 7fffffff 61"), 0, []error{wire.ErrMalformed}, false},
		{"array count bomb", frame("05 91 dd ffffffff 90"), 0, []error{wire.ErrMalformed}, false},
		{"list count bomb", frame("0a 93 dd 00100000 00 00"), 0, []error{wire.ErrMalformed}, false},
		{"skip count bomb", frame("0b 93 01 02 df ffffffff"), 0, []error{wire.ErrMalformed}, false},
		{"nested too deep", deep, 0, []error{wire.ErrMalformed}, false},
		{"batch over MaxBatch", tooMany, 0, []error{wire.ErrMalformed, abi.ErrBatchTooLarge}, false},
		{"invalid change op", frame("04 92 95 01 00 01 00 c0 91 94 a3 707574 a1 6b a0 a0"), 0, []error{wire.ErrMalformed, model.ErrInvalidChange}, false},
		{"nul in kind", frame("04 92 95 01 00 01 00 c0 91 94 a3 707574 a2 6b00 a1 69 a0"), 0, []error{wire.ErrMalformed, model.ErrInvalidChange}, false},
		{"value on delete", frame("04 92 95 01 00 01 00 c0 91 94 a6 64656c657465 a1 6b a1 69 a1 76"), 0, []error{wire.ErrMalformed, model.ErrInvalidChange}, false},
		{"invalid entity", frame("07 91 91 93 a0 a1 69 a0"), 0, []error{wire.ErrMalformed, model.ErrInvalidChange}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, n, err := wire.DecodeFrame(tt.input, tt.max)
			if err == nil {
				t.Fatalf("DecodeFrame = %+v, %d, nil; want an error", m, n)
			}
			if m != nil || n != 0 {
				t.Fatalf("DecodeFrame returned %v, %d with error %v", m, n, err)
			}
			for _, want := range tt.want {
				if !errors.Is(err, want) {
					t.Fatalf("DecodeFrame error %q does not wrap %q", err, want)
				}
			}
			if got := errors.Is(err, io.ErrUnexpectedEOF); got != tt.eof {
				t.Fatalf("DecodeFrame error %q: wraps io.ErrUnexpectedEOF = %v, want %v", err, got, tt.eof)
			}
		})
	}
}

// TestDecodeExtraFieldsSkipped: a later protocol version may append fields
// to any message; this decoder skips them.
func TestDecodeExtraFieldsSkipped(t *testing.T) {
	// Heartbeat [42, 7] plus a map, a float, an ext and a nested array.
	in := frame("0b 97 2a 07 81 a1 6b 92 01 02 cb 3ff0000000000000 d6 01 00000000 93 91 90 c0 c3 c4 00")
	m, _, err := wire.DecodeFrame(in, 0)
	if err != nil {
		t.Fatal(err)
	}
	if hb, ok := m.(*wire.Heartbeat); !ok || hb.Index != 42 || hb.UnixNano != 7 {
		t.Fatalf("got %+v", m)
	}
}

// TestOversizeNotAllocated: a length prefix above the limit is refused from
// the prefix alone, and element counts are checked against the bytes
// present before anything is allocated for them.
func TestOversizeNotAllocated(t *testing.T) {
	inputs := map[string][]byte{
		"oversize length": append([]byte{0xff, 0xff, 0xff, 0xff}, make([]byte, 64)...),
		"count bomb":      frame("05 91 dd ffffffff"),
		"changes bomb":    frame("04 92 95 01 00 01 00 c0 dd 00ffffff"),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range 100 {
				if _, _, err := wire.DecodeFrame(in, 0); err == nil {
					t.Fatal("DecodeFrame succeeded")
				}
			}
			runtime.ReadMemStats(&after)
			// 100 decodes; allocating a body or the announced elements even
			// once would cost megabytes.
			if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
				t.Fatalf("100 rejected decodes allocated %d bytes", got)
			}
		})
	}
}

func TestMsgTypeStrings(t *testing.T) {
	seen := map[string]bool{}
	for _, tt := range fixtures() {
		s := tt.msg.Type().String()
		if strings.HasPrefix(s, "type(") {
			t.Errorf("%s has no name", tt.name)
		}
		seen[s] = true
	}
	if len(seen) != 13 {
		t.Errorf("fixtures cover %d message types, want 13", len(seen))
	}
	if got := wire.MsgType(0x42).String(); got != "type(0x42)" {
		t.Errorf("unknown type string %q", got)
	}
}

// TestDecodeAlternativeForms: any msgpack encoding of a field's kind is
// accepted, not only the smallest one this package writes.
func TestDecodeAlternativeForms(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want wire.Message
	}{
		{"wide ints", frame("0b 92 cf 000000000000002a d3 0000000000000007"), &wire.Heartbeat{Index: 42, UnixNano: 7}},
		{"signed form of a uint", frame("0b 92 d0 05 d1 fffe"), &wire.Heartbeat{Index: 5, UnixNano: -2}},
		{"bin as string", frame("08 92 03 c4 01 78"), &wire.FullStateEnd{Entities: 3, Digest: "x"}},
		{"str8 short string", frame("08 92 03 d9 01 78"), &wire.FullStateEnd{Entities: 3, Digest: "x"}},
		{"nil list and empty timeline", frame("0a 93 c0 01 00"), &wire.Ack{Current: abi.IndexLegacy}},
		{"nil timeline", frame("0d 93 93 02 05 c0 00 a0"), &wire.DigestReply{Position: wire.Position{Type: abi.IndexHA, Index: 5}}},
		{"zero-length timeline", frame("0d 93 93 02 05 c4 00 00 a0"), &wire.DigestReply{Position: wire.Position{Type: abi.IndexHA, Index: 5}}},
		{"index types as array", frame("01 99 01 01 a0 92 01 cc 02 90 90 00 00 00"), &wire.Hello{ProtoMin: 1, ProtoMax: 1, IndexTypes: []abi.IndexType{abi.IndexLegacy, abi.IndexHA}}},
		{"array16 of few", frame("0a dc 0003 90 01 00"), &wire.Ack{Current: abi.IndexLegacy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := wire.DecodeFrame(tt.in, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
