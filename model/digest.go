package model

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"go.etcd.io/bbolt"
)

// EmptyDigest is the digest of a model without entities: SHA-256 of nothing.
const EmptyDigest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// msgpack codes of the compact string and array forms the digest uses; they
// are what github.com/vmihailenco/msgpack/v5 writes for a []string (the
// tests compare against the library byte for byte).
const (
	mpFixArray3 = 0x93
	mpFixStr    = 0xa0
	mpStr8      = 0xd9
	mpStr16     = 0xda
	mpStr32     = 0xdb
)

// appendStrHeader appends the msgpack str header for a string of n bytes.
func appendStrHeader(b []byte, n int) []byte {
	switch {
	case n < 32:
		return append(b, mpFixStr|byte(n))
	case n <= 0xff:
		return append(b, mpStr8, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, mpStr16), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, mpStr32), uint32(n))
	}
}

// splitKey returns the kind and id of an entity key.
func splitKey(k []byte) (kind, id []byte, err error) {
	i := bytes.IndexByte(k, 0)
	if i <= 0 || i == len(k)-1 {
		return nil, nil, fmt.Errorf("%w: entity key %q has no kind/id separator", ErrCorrupt, truncate(string(k)))
	}
	return k[:i], k[i+1:], nil
}

// appendKey appends the bbolt key of (kind, id).
func appendKey(b []byte, kind, id string) []byte {
	b = append(b, kind...)
	b = append(b, 0)
	return append(b, id...)
}

// ctxCheckEvery is how many entities a long loop handles between context
// checks: often enough to stop a 100k-entity scan promptly, rarely enough
// not to show in profiles.
const ctxCheckEvery = 4096

// digestBucket streams b in key order (= kind, then id) into SHA-256. The
// value is hashed straight from the mmap so large values are never copied.
func digestBucket(ctx context.Context, b *bbolt.Bucket) (string, error) {
	h := sha256.New()
	hdr := make([]byte, 0, 2*MaxIDLen)
	c := b.Cursor()
	n := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if n++; n%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return "", fmt.Errorf("model: digest: %w", err)
			}
		}
		kind, id, err := splitKey(k)
		if err != nil {
			return "", err
		}
		hdr = append(hdr[:0], mpFixArray3)
		hdr = appendStrHeader(hdr, len(kind))
		hdr = append(hdr, kind...)
		hdr = appendStrHeader(hdr, len(id))
		hdr = append(hdr, id...)
		hdr = appendStrHeader(hdr, len(v))
		h.Write(hdr)
		h.Write(v)
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])), nil
}
