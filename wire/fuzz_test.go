package wire_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/indexgate/indexgate/wire"
)

const fuzzMaxFrame = 1 << 20

// FuzzDecodeFrame: no input panics, a failed decode returns nothing, and a
// decoded message re-encodes to a frame that decodes to the same message
// (and encodes to the same bytes again).
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, n, err := wire.DecodeFrame(data, fuzzMaxFrame)
		if err != nil {
			if m != nil || n != 0 {
				t.Fatalf("error %v with message %v, size %d", err, m, n)
			}
			return
		}
		if n < wire.FrameHeaderSize+1 || n > len(data) {
			t.Fatalf("frame size %d of %d input bytes", n, len(data))
		}
		re, err := wire.EncodeFrame(nil, m)
		if err != nil {
			t.Fatalf("decoded %T does not re-encode: %v", m, err)
		}
		m2, n2, err := wire.DecodeFrame(re, len(re))
		if err != nil || n2 != len(re) {
			t.Fatalf("re-encoded frame does not decode: %v (%d of %d bytes)", err, n2, len(re))
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-decoded message differs:\n%+v\n%+v", m, m2)
		}
		if re2, _ := wire.EncodeFrame(nil, m2); !bytes.Equal(re, re2) {
			t.Fatalf("encoding is not canonical")
		}
	})
}

type seed struct {
	name string
	data []byte
	// valid seeds must keep decoding; edge seeds must keep failing.
	valid bool
}

// seeds are the committed corpus of testdata/fuzz/FuzzDecodeFrame: a valid
// frame of every message type and hand-made edge cases.
func seeds(t testing.TB) []seed {
	var out []seed
	for _, tt := range fixtures() {
		b := encode(t, tt.msg)
		if len(b) > 64<<10 {
			continue // big seeds only slow the fuzzer down
		}
		out = append(out, seed{"valid-" + strings.ReplaceAll(tt.name, " ", "-"), b, true})
	}
	edge := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"short-length", []byte{0, 0, 1}},
		{"empty-payload", []byte{0, 0, 0, 0}},
		{"oversize", []byte{0xff, 0xff, 0xff, 0xff, 0x01}},
		{"unknown-type", frame("0e 90")},
		{"truncated", frame("0b 92 01")},
		{"trailing", frame("0b 92 01 02 c0")},
		{"count-bomb", frame("05 91 dd ffffffff 90")},
		{"skip-count-bomb", frame("0b 93 01 02 df ffffffff")},
		{"deep-nesting", frame("0b 93 01 02" + strings.Repeat("91", 40) + "00")},
		{"extra-fields", frame("0b 97 2a 07 81 a1 6b 92 01 02 cb 3ff0000000000000 d6 01 00000000 93 91 90 c0 c3 c4 00")},
		{"invalid-change", frame("04 92 95 01 00 01 00 c0 91 94 a3 707574 a2 6b00 a1 69 a0")},
		{"two-frames", append(frame("0c 90"), frame("0c 90")...)},
	}
	for _, e := range edge {
		_, _, err := wire.DecodeFrame(e.data, fuzzMaxFrame)
		out = append(out, seed{"edge-" + e.name, e.data, err == nil})
	}
	return out
}

// TestFuzzSeedCorpus keeps testdata/fuzz/FuzzDecodeFrame in step with the
// seeds: every seed file exists and has the current bytes. Regenerate with
// WIRE_WRITE_SEEDS=1 go test -run TestFuzzSeedCorpus ./wire/
func TestFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeFrame")
	write := os.Getenv("WIRE_WRITE_SEEDS") == "1"
	if write {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range seeds(t) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(s.data)))
		path := filepath.Join(dir, s.name)
		if write {
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("seed %s: %v (regenerate: WIRE_WRITE_SEEDS=1)", s.name, err)
		}
		if string(got) != content {
			t.Errorf("seed %s is stale (regenerate: WIRE_WRITE_SEEDS=1)", s.name)
		}
		if _, _, err := wire.DecodeFrame(s.data, fuzzMaxFrame); (err == nil) != s.valid {
			t.Errorf("seed %s: decode error %v, want valid=%v", s.name, err, s.valid)
		}
	}
}
