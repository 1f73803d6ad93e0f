package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/indexgate/indexgate/abi"
)

// DefaultMaxFrame is the largest frame payload (the value of the length
// prefix) accepted when no other limit is configured.
const DefaultMaxFrame = 16 << 20

// FrameHeaderSize is the length prefix in front of every payload.
const FrameHeaderSize = 4

// Sentinel errors callers act on.
var (
	// ErrFrameTooLarge reports a frame whose length exceeds the limit; the
	// receiver detects it from the length prefix alone.
	ErrFrameTooLarge = errors.New("wire: frame too large")
	// ErrMalformed reports bytes that are not a valid frame: unknown type,
	// truncated or invalid body, trailing bytes, invalid changes.
	ErrMalformed = errors.New("wire: malformed frame")
)

// msgpack codes, named as in the msgpack specification.
const (
	mpFixMap   = 0x80
	mpFixArray = 0x90
	mpFixStr   = 0xa0
	mpNil      = 0xc0
	mpFalse    = 0xc2
	mpTrue     = 0xc3
	mpBin8     = 0xc4
	mpBin16    = 0xc5
	mpBin32    = 0xc6
	mpExt8     = 0xc7
	mpExt16    = 0xc8
	mpExt32    = 0xc9
	mpFloat32  = 0xca
	mpFloat64  = 0xcb
	mpUint8    = 0xcc
	mpUint16   = 0xcd
	mpUint32   = 0xce
	mpUint64   = 0xcf
	mpInt8     = 0xd0
	mpInt16    = 0xd1
	mpInt32    = 0xd2
	mpInt64    = 0xd3
	mpFixExt1  = 0xd4
	mpFixExt16 = 0xd8
	mpStr8     = 0xd9
	mpStr16    = 0xda
	mpStr32    = 0xdb
	mpArray16  = 0xdc
	mpArray32  = 0xdd
	mpMap16    = 0xde
	mpMap32    = 0xdf
	mpNegFix   = 0xe0
)

// EncodeFrame appends the frame of m (length prefix, type byte, body) to
// dst. It fails only for a nil or foreign message, a Batch above
// abi.MaxBatch change sets, or a payload that does not fit the 32-bit
// length; the caller's frame limit is checked by Conn.Write.
func EncodeFrame(dst []byte, m Message) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst, err := appendPayload(dst, m)
	if err != nil {
		return dst[:start], err
	}
	n := len(dst) - start - FrameHeaderSize
	if uint64(n) > math.MaxUint32 {
		return dst[:start], fmt.Errorf("%w: %s payload of %d bytes does not fit the length prefix", ErrFrameTooLarge, m.Type(), n)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(n))
	return dst, nil
}

func appendPayload(b []byte, m Message) ([]byte, error) {
	switch m := m.(type) {
	case *Hello:
		if m == nil {
			return b, errNilMessage(m)
		}
		b = append(b, byte(TypeHello), mpFixArray|9)
		b = appendUint(b, uint64(m.ProtoMin))
		b = appendUint(b, uint64(m.ProtoMax))
		b = appendStr(b, m.RouterID)
		// A slice of a byte-sized type is a bin for msgpack libraries
		// (vmihailenco writes and expects one), so the types travel as a
		// bin of one byte each.
		b = appendBinHeader(b, len(m.IndexTypes))
		for _, t := range m.IndexTypes {
			b = append(b, byte(t))
		}
		b = appendArrayLen(b, len(m.ABIVersions))
		for _, v := range m.ABIVersions {
			b = appendUint(b, uint64(v))
		}
		b = appendPositions(b, m.Positions)
		b = appendUint(b, uint64(m.Current))
		b = appendUint(b, m.Capabilities)
		return appendUint(b, uint64(m.MaxFrame)), nil
	case *Welcome:
		if m == nil {
			return b, errNilMessage(m)
		}
		b = append(b, byte(TypeWelcome), mpFixArray|8)
		b = appendUint(b, uint64(m.Proto))
		b = appendStr(b, m.ClusterID)
		b = appendStr(b, m.NodeID)
		b = appendUint(b, uint64(m.Mode))
		b = appendTimeline(b, m.Timeline)
		b = appendUint(b, m.Index)
		b = appendUint(b, uint64(m.Resume))
		return appendUint(b, m.Capabilities), nil
	case *Error:
		if m == nil {
			return b, errNilMessage(m)
		}
		b = append(b, byte(TypeError), mpFixArray|3)
		b = appendUint(b, uint64(m.Code))
		b = appendStr(b, m.Message)
		b = appendArrayLen(b, len(m.Redirect))
		for _, s := range m.Redirect {
			b = appendStr(b, s)
		}
		return b, nil
	case *ChangeSet:
		if m == nil {
			return b, errNilMessage(m)
		}
		return appendChangeSet(append(b, byte(TypeChangeSet)), m), nil
	case *Batch:
		if m == nil {
			return b, errNilMessage(m)
		}
		if len(m.Sets) > abi.MaxBatch {
			return b, fmt.Errorf("wire: encode batch: %w: %d change sets, at most %d", abi.ErrBatchTooLarge, len(m.Sets), abi.MaxBatch)
		}
		b = append(b, byte(TypeBatch), mpFixArray|1)
		b = appendArrayLen(b, len(m.Sets))
		for i := range m.Sets {
			b = appendChangeSet(b, &m.Sets[i])
		}
		return b, nil
	case *FullStateBegin:
		if m == nil {
			return b, errNilMessage(m)
		}
		b = append(b, byte(TypeFullStateBegin), mpFixArray|5)
		b = appendUint(b, uint64(m.Mode))
		b = appendTimeline(b, m.Timeline)
		b = appendUint(b, m.Index)
		b = appendPositions(b, m.Positions)
		return appendUint(b, m.Entities), nil
	case *FullStateChunk:
		if m == nil {
			return b, errNilMessage(m)
		}
		b = append(b, byte(TypeFullStateChunk), mpFixArray|1)
		b = appendArrayLen(b, len(m.Entities))
		for i := range m.Entities {
			e := &m.Entities[i]
			b = append(b, mpFixArray|3)
			b = appendStr(b, e.Kind)
			b = appendStr(b, e.ID)
			b = appendStr(b, e.Value)
		}
		return b, nil
	case *FullStateEnd:
		if m == nil {
			return b, errNilMessage(m)
		}
		b = append(b, byte(TypeFullStateEnd), mpFixArray|2)
		b = appendUint(b, m.Entities)
		return appendStr(b, m.Digest), nil
	case *ModeChange:
		if m == nil {
			return b, errNilMessage(m)
		}
		c := &m.Change
		b = append(b, byte(TypeModeChange), mpFixArray|1, mpFixArray|5)
		b = appendUint(b, uint64(c.From))
		b = appendUint(b, uint64(c.To))
		b = appendUint(b, c.LastIndex)
		b = appendUint(b, c.BaseIndex)
		return appendTimeline(b, c.Timeline), nil
	case *Ack:
		if m == nil {
			return b, errNilMessage(m)
		}
		b = append(b, byte(TypeAck), mpFixArray|3)
		b = appendPositions(b, m.Positions)
		b = appendUint(b, uint64(m.Current))
		return appendUint(b, m.Applied), nil
	case *Heartbeat:
		if m == nil {
			return b, errNilMessage(m)
		}
		b = append(b, byte(TypeHeartbeat), mpFixArray|2)
		b = appendUint(b, m.Index)
		return appendInt(b, m.UnixNano), nil
	case *DigestRequest:
		if m == nil {
			return b, errNilMessage(m)
		}
		return append(b, byte(TypeDigestRequest), mpFixArray|0), nil
	case *DigestReply:
		if m == nil {
			return b, errNilMessage(m)
		}
		b = append(b, byte(TypeDigestReply), mpFixArray|3)
		b = appendPosition(b, &m.Position)
		b = appendUint(b, m.Entities)
		return appendStr(b, m.Digest), nil
	case nil:
		return b, errors.New("wire: encode: nil message")
	}
	return b, fmt.Errorf("wire: encode: %T is not a wire message", m)
}

// appendChangeSet writes [header, changes]. A ChangeSet frame body and a
// Batch element are the same bytes, so a sender may encode each change set
// once and splice it into batches.
func appendChangeSet(b []byte, cs *ChangeSet) []byte {
	h := &cs.Header
	b = append(b, mpFixArray|2, mpFixArray|5)
	b = appendUint(b, h.Index)
	b = appendUint(b, h.PrevIndex)
	b = appendUint(b, uint64(h.Type))
	b = appendUint(b, h.Term)
	b = appendTimeline(b, h.Timeline)
	b = appendArrayLen(b, len(cs.Changes))
	for i := range cs.Changes {
		c := &cs.Changes[i]
		b = append(b, mpFixArray|4)
		b = appendStr(b, string(c.Op))
		b = appendStr(b, c.Kind)
		b = appendStr(b, c.ID)
		b = appendStr(b, c.Value)
	}
	return b
}

func appendPositions(b []byte, ps []Position) []byte {
	b = appendArrayLen(b, len(ps))
	for i := range ps {
		b = appendPosition(b, &ps[i])
	}
	return b
}

func appendPosition(b []byte, p *Position) []byte {
	b = append(b, mpFixArray|3)
	b = appendUint(b, uint64(p.Type))
	b = appendUint(b, p.Index)
	return appendTimeline(b, p.Timeline)
}

// The append helpers write the smallest msgpack form, as the library's
// EncodeUint/EncodeInt/EncodeString/EncodeArrayLen do.

func appendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, mpFixArray|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, mpArray16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, mpArray32), uint32(n))
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v < 0x80:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, mpUint8, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, mpUint16), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, mpUint32), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, mpUint64), v)
}

func appendInt(b []byte, v int64) []byte {
	switch {
	case v >= 0:
		return appendUint(b, uint64(v))
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, mpInt8, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, mpInt16), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, mpInt32), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, mpInt64), uint64(v))
}

func appendStr(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, mpFixStr|byte(n))
	case n <= math.MaxUint8:
		b = append(b, mpStr8, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, mpStr16), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, mpStr32), uint32(n))
	}
	return append(b, s...)
}

func appendBinHeader(b []byte, n int) []byte {
	switch {
	case n <= math.MaxUint8:
		return append(b, mpBin8, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, mpBin16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, mpBin32), uint32(n))
}

// appendTimeline writes the 16 bytes as bin 8, as the library does through
// abi.Timeline.MarshalBinary.
func appendTimeline(b []byte, t abi.Timeline) []byte {
	b = append(b, mpBin8, byte(len(t)))
	return append(b, t[:]...)
}

func errNilMessage(m Message) error { return fmt.Errorf("wire: encode: nil %T", m) }
