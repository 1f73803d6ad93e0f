package wire_test

import (
	"testing"

	"github.com/indexgate/indexgate/wire"
)

// benchBatch is 256 change sets of 4 puts each (~60-byte values).
func benchBatch() *wire.Batch { return &wire.Batch{Sets: batchSets(256, 4)} }

func BenchmarkEncodeBatch(b *testing.B) {
	m := benchBatch()
	buf, err := wire.EncodeFrame(nil, m)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if buf, err = wire.EncodeFrame(buf[:0], m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBatch(b *testing.B) {
	buf, err := wire.EncodeFrame(nil, benchBatch())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := wire.DecodeFrame(buf, 0); err != nil {
			b.Fatal(err)
		}
	}
}
