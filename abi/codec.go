package abi

import (
	"encoding/binary"
	"math/bits"
	"slices"
)

// The encoder always writes the fixed-width msgpack forms (uint 64 as 0xcf,
// uint 8 as 0xcc, bin 8 for the timeline, bin 32 / str 32 for byte strings)
// so a header is exactly HeaderSize bytes and a batch can be read at fixed
// offsets. That is still plain msgpack: any library reads it. The decoder
// accepts every msgpack form of each field, so modules and hosts written with
// other encoders interoperate; it only takes a fast path when the bytes have
// the fixed layout. Hand-written on purpose: this is the measured hot path
// (see the package comment and docs/benchmarks.md).

// Sizes of fixed-layout encodings.
const (
	// HeaderSize is the encoded size of one Header.
	HeaderSize = 1 + 9 + 9 + 2 + 9 + 18
	// VerdictSize is the encoded size of one Verdict.
	VerdictSize = 1 + 2 + 2
	// BatchPrefixSize is the array32 header in front of a header batch or a
	// verdict list.
	BatchPrefixSize = 5
)

const (
	mpNil      = 0xc0
	mpFalse    = 0xc2
	mpTrue     = 0xc3
	mpBin8     = 0xc4
	mpBin16    = 0xc5
	mpBin32    = 0xc6
	mpUint8    = 0xcc
	mpUint16   = 0xcd
	mpUint32   = 0xce
	mpUint64   = 0xcf
	mpInt8     = 0xd0
	mpInt16    = 0xd1
	mpInt32    = 0xd2
	mpInt64    = 0xd3
	mpStr8     = 0xd9
	mpStr16    = 0xda
	mpStr32    = 0xdb
	mpArray16  = 0xdc
	mpArray32  = 0xdd
	mpFixArray = 0x90
)

func appendU64(b []byte, v uint64) []byte {
	b = append(b, mpUint64)
	return binary.BigEndian.AppendUint64(b, v)
}

func appendU8(b []byte, v uint8) []byte { return append(b, mpUint8, v) }

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, mpTrue)
	}
	return append(b, mpFalse)
}

func appendTimeline(b []byte, t Timeline) []byte {
	b = append(b, mpBin8, byte(len(t)))
	return append(b, t[:]...)
}

func appendBin(b []byte, v []byte) []byte {
	b = append(b, mpBin32)
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func appendStr(b []byte, v string) []byte {
	b = append(b, mpStr32)
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func appendArray32(b []byte, n int) []byte {
	b = append(b, mpArray32)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// AppendHeader appends the fixed-layout encoding of h (HeaderSize bytes).
func AppendHeader(b []byte, h *Header) []byte {
	n := len(b)
	b = slices.Grow(b, HeaderSize)[:n+HeaderSize]
	putHeader(b[n:], h)
	return b
}

// putHeader writes the fixed layout of h into b[:HeaderSize] at fixed
// offsets. The host encodes every batch with it: one growth per batch
// instead of a capacity check per field.
func putHeader(b []byte, h *Header) {
	b = b[:HeaderSize]
	b[0] = mpFixArray | 5
	b[1] = mpUint64
	binary.BigEndian.PutUint64(b[2:], h.Index)
	b[10] = mpUint64
	binary.BigEndian.PutUint64(b[11:], h.PrevIndex)
	b[19] = mpUint8
	b[20] = byte(h.Type)
	b[21] = mpUint64
	binary.BigEndian.PutUint64(b[22:], h.Term)
	b[30] = mpBin8
	b[31] = byte(len(h.Timeline))
	copy(b[32:], h.Timeline[:])
}

// AppendHeaderBatch appends an array of headers: the input of ig_decide.
func AppendHeaderBatch(b []byte, hs []Header) []byte {
	b = appendArray32(b, len(hs))
	n := len(b)
	b = slices.Grow(b, len(hs)*HeaderSize)[:n+len(hs)*HeaderSize]
	for i := range hs {
		putHeader(b[n+i*HeaderSize:], &hs[i])
	}
	return b
}

// DecodeHeaderBatch decodes a header array into dst (reusing its capacity)
// and returns it. It does not allocate when dst is large enough.
func DecodeHeaderBatch(src []byte, dst []Header) ([]Header, error) {
	r := Reader{buf: src}
	n, err := r.ArrayLen()
	if err != nil {
		return dst[:0], err
	}
	if n > MaxBatch {
		return dst[:0], wrapf(ErrBatchTooLarge, itoa(n)+" headers, at most "+itoa(MaxBatch))
	}
	if cap(dst) < n {
		dst = make([]Header, n)
	}
	dst = dst[:n]
	// Fixed-layout headers first, read at fixed offsets. A Go guest decodes
	// every header it decides here, and in wasm each call, branch and load
	// costs (wazero bounds-checks memory accesses): the loop makes no call,
	// checks the seven marker bytes with four loads and one branch, and
	// reads each big-endian uint64 with one load and a byte swap. It stops
	// at the first header in another form; r.header reads the rest.
	buf := r.buf[r.off:]
	i := 0
	for ; i < len(dst) && len(buf) >= HeaderSize; i++ {
		b := buf[:HeaderSize]
		// Bytes 19-22: uint8 marker, type, uint64 marker, Term's first byte.
		w := binary.LittleEndian.Uint32(b[19:])
		bad := uint32(binary.LittleEndian.Uint16(b)^(mpUint64<<8|mpFixArray|5)) |
			uint32(b[10]^mpUint64) | (w&0x00ff00ff ^ (mpUint64<<16 | mpUint8)) |
			uint32(binary.LittleEndian.Uint16(b[30:])^(16<<8|mpBin8))
		if bad != 0 {
			break
		}
		h := &dst[i]
		// binary.BigEndian.Uint64, spelled so that it stays one 8-byte load
		// and a byte swap in wasm too (no byte-swap instruction there, and
		// BigEndian.Uint64 becomes eight byte loads); on amd64 it is the
		// same load and BSWAP.
		h.Index = bits.ReverseBytes64(binary.LittleEndian.Uint64(b[2:]))
		h.PrevIndex = bits.ReverseBytes64(binary.LittleEndian.Uint64(b[11:]))
		h.Type = IndexType(w >> 8)
		h.Term = bits.ReverseBytes64(binary.LittleEndian.Uint64(b[22:]))
		h.Timeline = Timeline(b[32:])
		buf = buf[HeaderSize:]
	}
	r.off = len(r.buf) - len(buf)
	for ; i < len(dst); i++ {
		if err := r.header(&dst[i]); err != nil {
			return dst[:0], prefixed("header "+itoa(i), err)
		}
	}
	if r.Len() != 0 {
		return dst[:0], wrapf(ErrMalformed, itoa(r.Len())+" trailing bytes after header batch")
	}
	return dst, nil
}

// fixedHeader reports whether b starts with a fixed-layout header.
func fixedHeader(b []byte) bool {
	return len(b) >= HeaderSize && b[0] == mpFixArray|5 && b[1] == mpUint64 && b[10] == mpUint64 &&
		b[19] == mpUint8 && b[21] == mpUint64 && b[30] == mpBin8 && b[31] == 16
}

func (r *Reader) header(h *Header) error {
	if b := r.buf[r.off:]; fixedHeader(b) {
		h.Index = binary.BigEndian.Uint64(b[2:])
		h.PrevIndex = binary.BigEndian.Uint64(b[11:])
		h.Type = IndexType(b[20])
		h.Term = binary.BigEndian.Uint64(b[22:])
		copy(h.Timeline[:], b[32:48])
		r.off += HeaderSize
		return nil
	}
	if err := r.expectArray(5, "header"); err != nil {
		return err
	}
	var err error
	if h.Index, err = r.Uint(); err != nil {
		return err
	}
	if h.PrevIndex, err = r.Uint(); err != nil {
		return err
	}
	t, err := r.Uint()
	if err != nil {
		return err
	}
	if t > 255 {
		return wrapf(ErrMalformed, "index type "+utoa(t))
	}
	h.Type = IndexType(t)
	if h.Term, err = r.Uint(); err != nil {
		return err
	}
	return r.timeline(&h.Timeline)
}

// AppendVerdicts appends an array of verdicts: the result of ig_decide.
func AppendVerdicts(b []byte, vs []Verdict) []byte {
	b = appendArray32(b, len(vs))
	n := len(b)
	// One growth and fixed offsets: a Go guest encodes every verdict here.
	b = slices.Grow(b, len(vs)*VerdictSize)[:n+len(vs)*VerdictSize]
	for i, v := range vs {
		o := b[n+i*VerdictSize:][:VerdictSize]
		o[0], o[1], o[2], o[3], o[4] = mpFixArray|2, mpUint8, byte(v.Action), mpUint8, byte(v.Reason)
	}
	return b
}

// DecodeVerdicts decodes a verdict array into dst (reusing its capacity).
func DecodeVerdicts(src []byte, dst []Verdict) ([]Verdict, error) {
	r := Reader{buf: src}
	n, err := r.ArrayLen()
	if err != nil {
		return dst[:0], err
	}
	if n > MaxBatch {
		return dst[:0], wrapf(ErrBatchTooLarge, itoa(n)+" verdicts, at most "+itoa(MaxBatch))
	}
	if cap(dst) < n {
		dst = make([]Verdict, n)
	}
	dst = dst[:n]
	for i := range dst {
		b := r.buf[r.off:]
		if len(b) >= VerdictSize && b[0] == mpFixArray|2 && b[1] == mpUint8 && b[3] == mpUint8 {
			dst[i] = Verdict{Action: Action(b[2]), Reason: Reason(b[4])}
			r.off += VerdictSize
			continue
		}
		if err := r.expectArray(2, "verdict"); err != nil {
			return dst[:0], prefixed("verdict "+itoa(i), err)
		}
		a, err := r.Uint()
		if err != nil {
			return dst[:0], prefixed("verdict "+itoa(i), err)
		}
		re, err := r.Uint()
		if err != nil {
			return dst[:0], prefixed("verdict "+itoa(i), err)
		}
		if a > 255 || re > 255 {
			return dst[:0], wrapf(ErrMalformed, "verdict "+itoa(i)+" out of range")
		}
		dst[i] = Verdict{Action: Action(a), Reason: Reason(re)}
	}
	if r.Len() != 0 {
		return dst[:0], wrapf(ErrMalformed, itoa(r.Len())+" trailing bytes after verdicts")
	}
	return dst, nil
}

// AppendModeChange appends the encoding of m.
func AppendModeChange(b []byte, m *ModeChange) []byte {
	b = append(b, mpFixArray|5)
	b = appendU8(b, uint8(m.From))
	b = appendU8(b, uint8(m.To))
	b = appendU64(b, m.LastIndex)
	b = appendU64(b, m.BaseIndex)
	return appendTimeline(b, m.Timeline)
}

// DecodeModeChange decodes a ModeChange.
func DecodeModeChange(src []byte) (ModeChange, error) {
	var m ModeChange
	r := Reader{buf: src}
	if err := r.expectArray(5, "mode change"); err != nil {
		return m, err
	}
	from, err := r.Uint8()
	if err != nil {
		return m, err
	}
	to, err := r.Uint8()
	if err != nil {
		return m, err
	}
	m.From, m.To = IndexType(from), IndexType(to)
	if m.LastIndex, err = r.Uint(); err != nil {
		return m, err
	}
	if m.BaseIndex, err = r.Uint(); err != nil {
		return m, err
	}
	if err := r.timeline(&m.Timeline); err != nil {
		return m, err
	}
	return m, r.end("mode change")
}

// AppendState appends the encoding of s.
func AppendState(b []byte, s *State) []byte {
	b = append(b, mpFixArray|7)
	b = appendU8(b, s.Version)
	b = appendU8(b, uint8(s.Type))
	b = appendBool(b, s.Initialized)
	b = appendU64(b, s.LastIndex)
	b = appendU64(b, s.Term)
	b = appendTimeline(b, s.Timeline)
	return appendBin(b, s.Extra)
}

// DecodeState decodes a State. Extra aliases src: copy it to keep it.
func DecodeState(src []byte) (State, error) {
	var s State
	r := Reader{buf: src}
	if err := r.expectArray(7, "state"); err != nil {
		return s, err
	}
	var err error
	if s.Version, err = r.Uint8(); err != nil {
		return s, err
	}
	if s.Version != StateVersion {
		return s, wrapf(ErrMalformed, "state version "+utoa(uint64(s.Version))+", want "+utoa(uint64(StateVersion)))
	}
	t, err := r.Uint8()
	if err != nil {
		return s, err
	}
	s.Type = IndexType(t)
	if s.Initialized, err = r.Bool(); err != nil {
		return s, err
	}
	if s.LastIndex, err = r.Uint(); err != nil {
		return s, err
	}
	if s.Term, err = r.Uint(); err != nil {
		return s, err
	}
	if err := r.timeline(&s.Timeline); err != nil {
		return s, err
	}
	if s.Extra, err = r.Bin(); err != nil {
		return s, err
	}
	return s, r.end("state")
}

// AppendConfig appends the encoding of c.
func AppendConfig(b []byte, c *Config) []byte {
	b = append(b, mpFixArray|2)
	b = appendU8(b, uint8(c.Type))
	return appendBin(b, c.Options)
}

// DecodeConfig decodes a Config. Options aliases src.
func DecodeConfig(src []byte) (Config, error) {
	var c Config
	r := Reader{buf: src}
	if err := r.expectArray(2, "config"); err != nil {
		return c, err
	}
	t, err := r.Uint8()
	if err != nil {
		return c, err
	}
	c.Type = IndexType(t)
	if c.Options, err = r.Bin(); err != nil {
		return c, err
	}
	return c, r.end("config")
}

// AppendInfo appends the encoding of i.
func AppendInfo(b []byte, i *Info) []byte {
	b = append(b, mpFixArray|3)
	b = appendStr(b, i.Name)
	b = appendStr(b, i.Version)
	return appendU8(b, uint8(i.Type))
}

// DecodeInfo decodes an Info.
func DecodeInfo(src []byte) (Info, error) {
	var i Info
	r := Reader{buf: src}
	if err := r.expectArray(3, "info"); err != nil {
		return i, err
	}
	var err error
	if i.Name, err = r.String(); err != nil {
		return i, err
	}
	if i.Version, err = r.String(); err != nil {
		return i, err
	}
	t, err := r.Uint8()
	if err != nil {
		return i, err
	}
	i.Type = IndexType(t)
	return i, r.end("info")
}

// Reader reads msgpack values from a byte slice without reflection and
// without allocating (except String). It accepts every msgpack encoding of
// the kinds it reads.
type Reader struct {
	buf []byte
	off int
}

// NewReader returns a Reader over b.
func NewReader(b []byte) *Reader { return &Reader{buf: b} }

// Len is the number of unread bytes.
func (r *Reader) Len() int { return len(r.buf) - r.off }

func (r *Reader) short(what string) error {
	return wrapf(ErrMalformed, "truncated "+what+" at offset "+itoa(r.off))
}

func (r *Reader) take(n int, what string) ([]byte, error) {
	if n < 0 || r.Len() < n {
		return nil, r.short(what)
	}
	b := r.buf[r.off : r.off+n]
	r.off += n
	return b, nil
}

func (r *Reader) byte1(what string) (byte, error) {
	if r.Len() < 1 {
		return 0, r.short(what)
	}
	c := r.buf[r.off]
	r.off++
	return c, nil
}

func (r *Reader) end(what string) error {
	if r.Len() != 0 {
		return wrapf(ErrMalformed, itoa(r.Len())+" trailing bytes after "+what)
	}
	return nil
}

// ArrayLen reads an array header.
func (r *Reader) ArrayLen() (int, error) {
	c, err := r.byte1("array")
	if err != nil {
		return 0, err
	}
	switch {
	case c&0xf0 == mpFixArray:
		return int(c & 0x0f), nil
	case c == mpArray16:
		b, err := r.take(2, "array16")
		if err != nil {
			return 0, err
		}
		return int(binary.BigEndian.Uint16(b)), nil
	case c == mpArray32:
		b, err := r.take(4, "array32")
		if err != nil {
			return 0, err
		}
		n := binary.BigEndian.Uint32(b)
		if int64(n) > int64(r.Len()) { // every element takes at least one byte
			return 0, r.short("array32 elements")
		}
		return int(n), nil
	}
	return 0, wrapf(ErrMalformed, "want array, got "+hexByte(c)+" at offset "+itoa(r.off-1))
}

func (r *Reader) expectArray(n int, what string) error {
	got, err := r.ArrayLen()
	if err != nil {
		return prefixed(what, err)
	}
	if got != n {
		return wrapf(ErrMalformed, what+" has "+itoa(got)+" fields, want "+itoa(n))
	}
	return nil
}

// Uint reads a non-negative integer in any msgpack integer form.
func (r *Reader) Uint() (uint64, error) {
	c, err := r.byte1("integer")
	if err != nil {
		return 0, err
	}
	if c <= 0x7f {
		return uint64(c), nil
	}
	var size int
	signed := false
	switch c {
	case mpUint8:
		size = 1
	case mpUint16:
		size = 2
	case mpUint32:
		size = 4
	case mpUint64:
		size = 8
	case mpInt8:
		size, signed = 1, true
	case mpInt16:
		size, signed = 2, true
	case mpInt32:
		size, signed = 4, true
	case mpInt64:
		size, signed = 8, true
	default:
		return 0, wrapf(ErrMalformed, "want unsigned integer, got "+hexByte(c)+" at offset "+itoa(r.off-1))
	}
	b, err := r.take(size, "integer")
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	if signed && b[0]&0x80 != 0 {
		return 0, wrapf(ErrMalformed, "negative integer at offset "+itoa(r.off-size-1))
	}
	return v, nil
}

// Uint8 reads an integer that must fit in a byte.
func (r *Reader) Uint8() (uint8, error) {
	v, err := r.Uint()
	if err != nil {
		return 0, err
	}
	if v > 255 {
		return 0, wrapf(ErrMalformed, utoa(v)+" does not fit a byte")
	}
	return uint8(v), nil
}

// Bool reads a boolean.
func (r *Reader) Bool() (bool, error) {
	c, err := r.byte1("bool")
	if err != nil {
		return false, err
	}
	switch c {
	case mpTrue:
		return true, nil
	case mpFalse:
		return false, nil
	}
	return false, wrapf(ErrMalformed, "want bool, got "+hexByte(c))
}

// Bin reads a bin or str value (nil reads as empty). The result aliases the
// reader's buffer.
func (r *Reader) Bin() ([]byte, error) {
	c, err := r.byte1("bytes")
	if err != nil {
		return nil, err
	}
	var n int
	switch {
	case c == mpNil:
		return nil, nil
	case c&0xe0 == 0xa0: // fixstr
		n = int(c & 0x1f)
	case c == mpBin8 || c == mpStr8:
		b, err := r.take(1, "length")
		if err != nil {
			return nil, err
		}
		n = int(b[0])
	case c == mpBin16 || c == mpStr16:
		b, err := r.take(2, "length")
		if err != nil {
			return nil, err
		}
		n = int(binary.BigEndian.Uint16(b))
	case c == mpBin32 || c == mpStr32:
		b, err := r.take(4, "length")
		if err != nil {
			return nil, err
		}
		n64 := binary.BigEndian.Uint32(b)
		if int64(n64) > int64(r.Len()) {
			return nil, r.short("bytes")
		}
		n = int(n64)
	default:
		return nil, wrapf(ErrMalformed, "want bytes, got "+hexByte(c)+" at offset "+itoa(r.off-1))
	}
	b, err := r.take(n, "bytes")
	if err != nil || len(b) == 0 {
		return nil, err
	}
	return b, nil
}

// String reads a str or bin value as a string.
func (r *Reader) String() (string, error) {
	b, err := r.Bin()
	return string(b), err
}

func (r *Reader) timeline(t *Timeline) error {
	b, err := r.Bin()
	if err != nil {
		return prefixed("timeline", err)
	}
	return t.UnmarshalBinary(b)
}
