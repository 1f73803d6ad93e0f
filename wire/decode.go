package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
)

// maxSkipDepth bounds the nesting of values a decoder skips (fields a
// later protocol version appends). Protocol 1 values nest at most four
// deep; the bound only has to stop a hostile frame from recursing deeply.
const maxSkipDepth = 16

// Smallest encodings of list elements, used to refuse element counts the
// remaining bytes cannot hold before allocating for them.
const (
	minPosition  = 4 // fixarray, type, index, nil timeline
	minChange    = 5 // fixarray, four fixstr
	minChangeSet = 8 // fixarray, header of five fixints, empty changes
	minEntity    = 4 // fixarray, three fixstr
)

// DecodeFrame decodes the frame at the start of b and returns the message
// and the frame's size in bytes (more frames may follow). max is the
// largest payload accepted (0 or less: DefaultMaxFrame); a larger length
// prefix fails with ErrFrameTooLarge before the body is looked at. A b that
// ends inside the frame fails with ErrMalformed wrapping
// io.ErrUnexpectedEOF. The message never aliases b; its strings share one
// copy of the payload, so a string kept long-term keeps that copy alive
// (strings.Clone what you keep from large frames).
func DecodeFrame(b []byte, max int) (Message, int, error) {
	if len(b) < FrameHeaderSize {
		return nil, 0, fmt.Errorf("%w: %d bytes, the length prefix needs %d: %w", ErrMalformed, len(b), FrameHeaderSize, io.ErrUnexpectedEOF)
	}
	n := binary.BigEndian.Uint32(b)
	if err := checkLength(n, max); err != nil {
		return nil, 0, err
	}
	end := FrameHeaderSize + int(n)
	if len(b) < end {
		return nil, 0, fmt.Errorf("%w: payload of %d bytes announced, %d present: %w", ErrMalformed, n, len(b)-FrameHeaderSize, io.ErrUnexpectedEOF)
	}
	m, err := decodePayload(b[FrameHeaderSize:end])
	if err != nil {
		return nil, 0, err
	}
	return m, end, nil
}

// checkLength validates a length prefix against the limit.
func checkLength(n uint32, max int) error {
	if max <= 0 {
		max = DefaultMaxFrame
	}
	if uint64(n) > uint64(max) {
		return fmt.Errorf("%w: payload of %d bytes, limit %d", ErrFrameTooLarge, n, max)
	}
	if n == 0 {
		return fmt.Errorf("%w: empty payload (no message type)", ErrMalformed)
	}
	return nil
}

// decodePayload decodes a type byte and body that must fill p exactly.
func decodePayload(p []byte) (Message, error) {
	t := MsgType(p[0])
	r := reader{b: p, off: 1}
	var (
		m   Message
		err error
	)
	switch t {
	case TypeHello:
		m, err = r.hello()
	case TypeWelcome:
		m, err = r.welcome()
	case TypeError:
		m, err = r.errorMsg()
	case TypeChangeSet:
		cs := new(ChangeSet)
		m, err = cs, r.changeSet(cs)
	case TypeBatch:
		m, err = r.batch()
	case TypeFullStateBegin:
		m, err = r.fullStateBegin()
	case TypeFullStateChunk:
		m, err = r.fullStateChunk()
	case TypeFullStateEnd:
		m, err = r.fullStateEnd()
	case TypeModeChange:
		m, err = r.modeChange()
	case TypeAck:
		m, err = r.ack()
	case TypeHeartbeat:
		m, err = r.heartbeat()
	case TypeDigestRequest:
		m, err = r.digestRequest()
	case TypeDigestReply:
		m, err = r.digestReply()
	default:
		return nil, fmt.Errorf("%w: unknown message type 0x%02x", ErrMalformed, p[0])
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, t, err)
	}
	if r.off != len(p) {
		return nil, fmt.Errorf("%w: %s: %d trailing bytes after the body at offset %d", ErrMalformed, t, len(p)-r.off, r.off+FrameHeaderSize)
	}
	return m, nil
}

func (r *reader) hello() (*Hello, error) {
	extra, err := r.fields("hello", 9)
	if err != nil {
		return nil, err
	}
	var m Hello
	if m.ProtoMin, err = r.uint16("protoMin"); err != nil {
		return nil, err
	}
	if m.ProtoMax, err = r.uint16("protoMax"); err != nil {
		return nil, err
	}
	if m.RouterID, err = r.str("routerID"); err != nil {
		return nil, err
	}
	if m.IndexTypes, err = r.indexTypes("indexTypes"); err != nil {
		return nil, err
	}
	n, err := r.list("abiVersions", 1)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		m.ABIVersions = make([]uint32, n)
		for i := range m.ABIVersions {
			v, err := r.uintMax("abiVersions", math.MaxUint32)
			if err != nil {
				return nil, err
			}
			m.ABIVersions[i] = uint32(v)
		}
	}
	if m.Positions, err = r.positions("positions"); err != nil {
		return nil, err
	}
	if m.Current, err = r.indexType("current"); err != nil {
		return nil, err
	}
	if m.Capabilities, err = r.uint("capabilities"); err != nil {
		return nil, err
	}
	v, err := r.uintMax("maxFrame", math.MaxUint32)
	if err != nil {
		return nil, err
	}
	m.MaxFrame = uint32(v)
	return &m, r.skipN(extra)
}

func (r *reader) welcome() (*Welcome, error) {
	extra, err := r.fields("welcome", 8)
	if err != nil {
		return nil, err
	}
	var m Welcome
	if m.Proto, err = r.uint16("proto"); err != nil {
		return nil, err
	}
	if m.ClusterID, err = r.str("clusterID"); err != nil {
		return nil, err
	}
	if m.NodeID, err = r.str("nodeID"); err != nil {
		return nil, err
	}
	if m.Mode, err = r.indexType("mode"); err != nil {
		return nil, err
	}
	if m.Timeline, err = r.timeline("timeline"); err != nil {
		return nil, err
	}
	if m.Index, err = r.uint("index"); err != nil {
		return nil, err
	}
	v, err := r.uintMax("resume", math.MaxUint8)
	if err != nil {
		return nil, err
	}
	m.Resume = ResumeKind(v)
	if m.Capabilities, err = r.uint("capabilities"); err != nil {
		return nil, err
	}
	return &m, r.skipN(extra)
}

func (r *reader) errorMsg() (*Error, error) {
	extra, err := r.fields("error", 3)
	if err != nil {
		return nil, err
	}
	var m Error
	v, err := r.uintMax("code", math.MaxUint8)
	if err != nil {
		return nil, err
	}
	m.Code = ErrorCode(v)
	if m.Message, err = r.str("message"); err != nil {
		return nil, err
	}
	n, err := r.list("redirect", 1)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		m.Redirect = make([]string, n)
		for i := range m.Redirect {
			if m.Redirect[i], err = r.str("redirect"); err != nil {
				return nil, err
			}
		}
	}
	return &m, r.skipN(extra)
}

func (r *reader) batch() (*Batch, error) {
	extra, err := r.fields("batch", 1)
	if err != nil {
		return nil, err
	}
	n, err := r.list("sets", minChangeSet)
	if err != nil {
		return nil, err
	}
	if n > abi.MaxBatch {
		return nil, fmt.Errorf("sets: %w: %d change sets, at most %d", abi.ErrBatchTooLarge, n, abi.MaxBatch)
	}
	var m Batch
	if n > 0 {
		m.Sets = make([]ChangeSet, n)
		for i := range m.Sets {
			if err := r.changeSet(&m.Sets[i]); err != nil {
				return nil, fmt.Errorf("change set %d: %w", i, err)
			}
		}
	}
	return &m, r.skipN(extra)
}

// changeSet decodes [header, changes] and validates the changes, so that a
// frame either decodes into change sets the model accepts or not at all.
func (r *reader) changeSet(cs *ChangeSet) error {
	extra, err := r.fields("change set", 2)
	if err != nil {
		return err
	}
	if err := r.header(&cs.Header); err != nil {
		return err
	}
	n, err := r.list("changes", minChange)
	if err != nil {
		return err
	}
	if n > 0 {
		cs.Changes = make([]model.Change, n)
		for i := range cs.Changes {
			if err := r.change(&cs.Changes[i]); err != nil {
				return fmt.Errorf("change %d: %w", i, err)
			}
		}
		if err := model.ValidateChanges(cs.Changes); err != nil {
			return err
		}
	}
	return r.skipN(extra)
}

func (r *reader) header(h *abi.Header) error {
	extra, err := r.fields("header", 5)
	if err != nil {
		return err
	}
	if h.Index, err = r.uint("header index"); err != nil {
		return err
	}
	if h.PrevIndex, err = r.uint("header prevIndex"); err != nil {
		return err
	}
	if h.Type, err = r.indexType("header type"); err != nil {
		return err
	}
	if h.Term, err = r.uint("header term"); err != nil {
		return err
	}
	if h.Timeline, err = r.timeline("header timeline"); err != nil {
		return err
	}
	return r.skipN(extra)
}

func (r *reader) change(c *model.Change) error {
	extra, err := r.fields("change", 4)
	if err != nil {
		return err
	}
	op, err := r.strBytes("op")
	if err != nil {
		return err
	}
	// The two valid ops are mapped to constants so the hot path does not
	// allocate for them.
	switch string(op) {
	case string(model.OpPut):
		c.Op = model.OpPut
	case string(model.OpDelete):
		c.Op = model.OpDelete
	default:
		c.Op = model.Op(op)
	}
	if c.Kind, err = r.str("kind"); err != nil {
		return err
	}
	if c.ID, err = r.str("id"); err != nil {
		return err
	}
	if c.Value, err = r.str("value"); err != nil {
		return err
	}
	return r.skipN(extra)
}

func (r *reader) fullStateBegin() (*FullStateBegin, error) {
	extra, err := r.fields("full state begin", 5)
	if err != nil {
		return nil, err
	}
	var m FullStateBegin
	if m.Mode, err = r.indexType("mode"); err != nil {
		return nil, err
	}
	if m.Timeline, err = r.timeline("timeline"); err != nil {
		return nil, err
	}
	if m.Index, err = r.uint("index"); err != nil {
		return nil, err
	}
	if m.Positions, err = r.positions("positions"); err != nil {
		return nil, err
	}
	if m.Entities, err = r.uint("entities"); err != nil {
		return nil, err
	}
	return &m, r.skipN(extra)
}

func (r *reader) fullStateChunk() (*FullStateChunk, error) {
	extra, err := r.fields("full state chunk", 1)
	if err != nil {
		return nil, err
	}
	n, err := r.list("entities", minEntity)
	if err != nil {
		return nil, err
	}
	var m FullStateChunk
	if n > 0 {
		m.Entities = make([]model.Entity, n)
		for i := range m.Entities {
			e := &m.Entities[i]
			ex, err := r.fields("entity", 3)
			if err != nil {
				return nil, fmt.Errorf("entity %d: %w", i, err)
			}
			if e.Kind, err = r.str("kind"); err != nil {
				return nil, fmt.Errorf("entity %d: %w", i, err)
			}
			if e.ID, err = r.str("id"); err != nil {
				return nil, fmt.Errorf("entity %d: %w", i, err)
			}
			if e.Value, err = r.str("value"); err != nil {
				return nil, fmt.Errorf("entity %d: %w", i, err)
			}
			if err := r.skipN(ex); err != nil {
				return nil, fmt.Errorf("entity %d: %w", i, err)
			}
			if err := e.Validate(); err != nil {
				return nil, fmt.Errorf("entity %d: %w", i, err)
			}
		}
	}
	return &m, r.skipN(extra)
}

func (r *reader) fullStateEnd() (*FullStateEnd, error) {
	extra, err := r.fields("full state end", 2)
	if err != nil {
		return nil, err
	}
	var m FullStateEnd
	if m.Entities, err = r.uint("entities"); err != nil {
		return nil, err
	}
	if m.Digest, err = r.str("digest"); err != nil {
		return nil, err
	}
	return &m, r.skipN(extra)
}

func (r *reader) modeChange() (*ModeChange, error) {
	extra, err := r.fields("mode change", 1)
	if err != nil {
		return nil, err
	}
	var m ModeChange
	c := &m.Change
	ex, err := r.fields("mode change body", 5)
	if err != nil {
		return nil, err
	}
	if c.From, err = r.indexType("from"); err != nil {
		return nil, err
	}
	if c.To, err = r.indexType("to"); err != nil {
		return nil, err
	}
	if c.LastIndex, err = r.uint("lastIndex"); err != nil {
		return nil, err
	}
	if c.BaseIndex, err = r.uint("baseIndex"); err != nil {
		return nil, err
	}
	if c.Timeline, err = r.timeline("timeline"); err != nil {
		return nil, err
	}
	if err := r.skipN(ex); err != nil {
		return nil, err
	}
	return &m, r.skipN(extra)
}

func (r *reader) ack() (*Ack, error) {
	extra, err := r.fields("ack", 3)
	if err != nil {
		return nil, err
	}
	var m Ack
	if m.Positions, err = r.positions("positions"); err != nil {
		return nil, err
	}
	if m.Current, err = r.indexType("current"); err != nil {
		return nil, err
	}
	if m.Applied, err = r.uint("applied"); err != nil {
		return nil, err
	}
	return &m, r.skipN(extra)
}

func (r *reader) heartbeat() (*Heartbeat, error) {
	extra, err := r.fields("heartbeat", 2)
	if err != nil {
		return nil, err
	}
	var m Heartbeat
	if m.Index, err = r.uint("index"); err != nil {
		return nil, err
	}
	if m.UnixNano, err = r.int("unixNano"); err != nil {
		return nil, err
	}
	return &m, r.skipN(extra)
}

func (r *reader) digestRequest() (*DigestRequest, error) {
	extra, err := r.fields("digest request", 0)
	if err != nil {
		return nil, err
	}
	return &DigestRequest{}, r.skipN(extra)
}

func (r *reader) digestReply() (*DigestReply, error) {
	extra, err := r.fields("digest reply", 3)
	if err != nil {
		return nil, err
	}
	var m DigestReply
	if err := r.position(&m.Position); err != nil {
		return nil, err
	}
	if m.Entities, err = r.uint("entities"); err != nil {
		return nil, err
	}
	if m.Digest, err = r.str("digest"); err != nil {
		return nil, err
	}
	return &m, r.skipN(extra)
}

func (r *reader) positions(what string) ([]Position, error) {
	n, err := r.list(what, minPosition)
	if err != nil || n == 0 {
		return nil, err
	}
	ps := make([]Position, n)
	for i := range ps {
		if err := r.position(&ps[i]); err != nil {
			return nil, fmt.Errorf("%s %d: %w", what, i, err)
		}
	}
	return ps, nil
}

func (r *reader) position(p *Position) error {
	extra, err := r.fields("position", 3)
	if err != nil {
		return err
	}
	if p.Type, err = r.indexType("position type"); err != nil {
		return err
	}
	if p.Index, err = r.uint("position index"); err != nil {
		return err
	}
	if p.Timeline, err = r.timeline("position timeline"); err != nil {
		return err
	}
	return r.skipN(extra)
}

// reader reads msgpack values from a frame payload. Every method checks
// that the bytes it needs are present and reports the frame offset of a
// problem; none allocates more than the bytes present can justify.
type reader struct {
	b   []byte
	off int
	// s is a copy of b made on the first string read. Every string of the
	// message is a substring of it: one allocation per frame instead of
	// one per field (a batch of 256 change sets has thousands of fields).
	s string
}

// errAt formats a decode error at the current frame offset. Errors inside
// a complete payload never wrap io.ErrUnexpectedEOF: that is reserved for
// "the frame itself is incomplete", which callers treat as "read more".
func (r *reader) errAt(format string, args ...any) error {
	return fmt.Errorf("at offset %d: %w", r.off+FrameHeaderSize, fmt.Errorf(format, args...))
}

func (r *reader) short(what string) error {
	return fmt.Errorf("%s at offset %d: body ends early", what, r.off+FrameHeaderSize)
}

func (r *reader) rest() int { return len(r.b) - r.off }

func (r *reader) take(n uint64, what string) ([]byte, error) {
	if n > uint64(r.rest()) {
		return nil, r.short(what)
	}
	b := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return b, nil
}

func (r *reader) code(what string) (byte, error) {
	if r.rest() < 1 {
		return 0, r.short(what)
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

// be reads an n-byte big-endian unsigned number.
func (r *reader) be(n int, what string) (uint64, error) {
	b, err := r.take(uint64(n), what)
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

// uint reads any msgpack integer form holding a non-negative value.
func (r *reader) uint(what string) (uint64, error) {
	start := r.off
	c, err := r.code(what)
	if err != nil {
		return 0, err
	}
	switch {
	case c < 0x80:
		return uint64(c), nil
	case c >= mpNegFix:
		r.off = start
		return 0, r.errAt("%s: negative integer %d", what, int8(c))
	}
	switch c {
	case mpUint8:
		return r.be(1, what)
	case mpUint16:
		return r.be(2, what)
	case mpUint32:
		return r.be(4, what)
	case mpUint64:
		return r.be(8, what)
	case mpInt8, mpInt16, mpInt32, mpInt64:
		r.off = start
		v, err := r.int(what)
		if err != nil {
			return 0, err
		}
		if v < 0 {
			r.off = start
			return 0, r.errAt("%s: negative integer %d", what, v)
		}
		return uint64(v), nil
	}
	r.off = start
	return 0, r.errAt("%s: want an unsigned integer, got msgpack code 0x%02x", what, c)
}

func (r *reader) uintMax(what string, max uint64) (uint64, error) {
	start := r.off
	v, err := r.uint(what)
	if err == nil && v > max {
		r.off = start
		return 0, r.errAt("%s: %d out of range (at most %d)", what, v, max)
	}
	return v, err
}

func (r *reader) uint16(what string) (uint16, error) {
	v, err := r.uintMax(what, math.MaxUint16)
	return uint16(v), err
}

// indexType reads a type byte. Unknown types decode; judging them is the
// filters' job (they answer resync/invalid).
func (r *reader) indexType(what string) (abi.IndexType, error) {
	v, err := r.uintMax(what, math.MaxUint8)
	return abi.IndexType(v), err
}

// indexTypes reads a bin (or str) of one type byte each, as encoders
// write a slice of a byte-sized type; an array of integers and nil are
// accepted too.
func (r *reader) indexTypes(what string) ([]abi.IndexType, error) {
	if r.rest() > 0 {
		if c := r.b[r.off]; c == mpBin8 || c == mpBin16 || c == mpBin32 || c&0xe0 == mpFixStr || c == mpStr8 || c == mpStr16 || c == mpStr32 {
			b, err := r.strBytes(what)
			if err != nil || len(b) == 0 {
				return nil, err
			}
			ts := make([]abi.IndexType, len(b))
			for i, c := range b {
				ts[i] = abi.IndexType(c)
			}
			return ts, nil
		}
	}
	n, err := r.list(what, 1)
	if err != nil || n == 0 {
		return nil, err
	}
	ts := make([]abi.IndexType, n)
	for i := range ts {
		if ts[i], err = r.indexType(what); err != nil {
			return nil, err
		}
	}
	return ts, nil
}

// int reads any msgpack integer form that fits an int64.
func (r *reader) int(what string) (int64, error) {
	start := r.off
	c, err := r.code(what)
	if err != nil {
		return 0, err
	}
	switch {
	case c < 0x80:
		return int64(c), nil
	case c >= mpNegFix:
		return int64(int8(c)), nil
	}
	switch c {
	case mpInt8:
		v, err := r.be(1, what)
		return int64(int8(v)), err
	case mpInt16:
		v, err := r.be(2, what)
		return int64(int16(v)), err
	case mpInt32:
		v, err := r.be(4, what)
		return int64(int32(v)), err
	case mpInt64:
		v, err := r.be(8, what)
		return int64(v), err
	case mpUint8, mpUint16, mpUint32, mpUint64:
		r.off = start
		v, err := r.uint(what)
		if err != nil {
			return 0, err
		}
		if v > math.MaxInt64 {
			r.off = start
			return 0, r.errAt("%s: %d does not fit an int64", what, v)
		}
		return int64(v), nil
	}
	r.off = start
	return 0, r.errAt("%s: want an integer, got msgpack code 0x%02x", what, c)
}

// strBytes reads a str (or bin: some encoders write byte strings that way)
// and returns its bytes without copying.
func (r *reader) strBytes(what string) ([]byte, error) {
	start := r.off
	c, err := r.code(what)
	if err != nil {
		return nil, err
	}
	var n uint64
	switch {
	case c&0xe0 == mpFixStr:
		n = uint64(c & 0x1f)
	case c == mpStr8 || c == mpBin8:
		n, err = r.be(1, what)
	case c == mpStr16 || c == mpBin16:
		n, err = r.be(2, what)
	case c == mpStr32 || c == mpBin32:
		n, err = r.be(4, what)
	default:
		r.off = start
		return nil, r.errAt("%s: want a string, got msgpack code 0x%02x", what, c)
	}
	if err != nil {
		return nil, err
	}
	return r.take(n, what)
}

func (r *reader) str(what string) (string, error) {
	b, err := r.strBytes(what)
	if err != nil || len(b) == 0 {
		return "", err
	}
	if r.s == "" {
		r.s = string(r.b)
	}
	end := r.off // strBytes left off just after the string
	return r.s[end-len(b) : end], nil
}

// timeline reads 16 bytes (bin or str), or nil / zero bytes for the zero
// timeline, as abi.Timeline.UnmarshalBinary accepts.
func (r *reader) timeline(what string) (abi.Timeline, error) {
	var t abi.Timeline
	if r.rest() > 0 && r.b[r.off] == mpNil {
		r.off++
		return t, nil
	}
	start := r.off
	b, err := r.strBytes(what)
	if err != nil {
		return t, err
	}
	switch len(b) {
	case 0:
	case len(t):
		copy(t[:], b)
	default:
		r.off = start
		return t, r.errAt("%s: %d bytes, want 16", what, len(b))
	}
	return t, nil
}

// arrayLen reads an array header.
func (r *reader) arrayLen(what string) (int, error) {
	start := r.off
	c, err := r.code(what)
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c&0xf0 == mpFixArray:
		n = uint64(c & 0x0f)
	case c == mpArray16:
		n, err = r.be(2, what)
	case c == mpArray32:
		n, err = r.be(4, what)
	default:
		r.off = start
		return 0, r.errAt("%s: want an array, got msgpack code 0x%02x", what, c)
	}
	if err != nil {
		return 0, err
	}
	if n > uint64(r.rest()) {
		// Every element takes at least one byte.
		r.off = start
		return 0, r.errAt("%s: %d elements announced, only %d bytes left", what, n, r.rest())
	}
	return int(n), nil
}

// fields reads a struct's array header: at least want elements; the
// number of extra ones (appended by a later protocol version) is returned
// for skipN.
func (r *reader) fields(what string, want int) (int, error) {
	start := r.off
	n, err := r.arrayLen(what)
	if err != nil {
		return 0, err
	}
	if n < want {
		r.off = start
		return 0, r.errAt("%s: %d fields, want %d", what, n, want)
	}
	return n - want, nil
}

// list reads a list's array header (nil reads as empty) and refuses counts
// whose smallest encoding (minElem bytes each) exceeds the bytes left.
func (r *reader) list(what string, minElem int) (int, error) {
	if r.rest() > 0 && r.b[r.off] == mpNil {
		r.off++
		return 0, nil
	}
	start := r.off
	n, err := r.arrayLen(what)
	if err != nil {
		return 0, err
	}
	if uint64(n)*uint64(minElem) > uint64(r.rest()) {
		r.off = start
		return 0, r.errAt("%s: %d elements of at least %d bytes announced, only %d bytes left", what, n, minElem, r.rest())
	}
	return n, nil
}

// skipN skips n values of any msgpack type.
func (r *reader) skipN(n int) error {
	for range n {
		if err := r.skip(0); err != nil {
			return err
		}
	}
	return nil
}

func (r *reader) skip(depth int) error {
	const what = "skipped value"
	if depth > maxSkipDepth {
		return r.errAt("%s nested deeper than %d", what, maxSkipDepth)
	}
	start := r.off
	c, err := r.code(what)
	if err != nil {
		return err
	}
	var (
		size  uint64 // payload bytes to skip
		elems uint64 // nested values to skip
	)
	switch {
	case c < 0x80, c >= mpNegFix, c == mpNil, c == mpFalse, c == mpTrue:
		return nil
	case c&0xf0 == mpFixMap:
		elems = 2 * uint64(c&0x0f)
	case c&0xf0 == mpFixArray:
		elems = uint64(c & 0x0f)
	case c&0xe0 == mpFixStr:
		size = uint64(c & 0x1f)
	case c == mpBin8 || c == mpStr8:
		size, err = r.be(1, what)
	case c == mpBin16 || c == mpStr16:
		size, err = r.be(2, what)
	case c == mpBin32 || c == mpStr32:
		size, err = r.be(4, what)
	case c == mpExt8:
		size, err = r.be(1, what)
		size++ // ext type byte
	case c == mpExt16:
		size, err = r.be(2, what)
		size++
	case c == mpExt32:
		size, err = r.be(4, what)
		size++
	case c == mpFloat32:
		size = 4
	case c == mpFloat64:
		size = 8
	case c == mpUint8 || c == mpInt8:
		size = 1
	case c == mpUint16 || c == mpInt16:
		size = 2
	case c == mpUint32 || c == mpInt32:
		size = 4
	case c == mpUint64 || c == mpInt64:
		size = 8
	case c >= mpFixExt1 && c <= mpFixExt16:
		size = 1 + 1<<(c-mpFixExt1)
	case c == mpArray16:
		elems, err = r.be(2, what)
	case c == mpArray32:
		elems, err = r.be(4, what)
	case c == mpMap16:
		elems, err = r.be(2, what)
		elems *= 2
	case c == mpMap32:
		elems, err = r.be(4, what)
		elems *= 2
	default: // 0xc1, never used
		r.off = start
		return r.errAt("%s: invalid msgpack code 0x%02x", what, c)
	}
	if err != nil {
		return err
	}
	if _, err := r.take(size, what); err != nil {
		return err
	}
	if elems > uint64(r.rest()) {
		r.off = start
		return r.errAt("%s: %d elements announced, only %d bytes left", what, elems, r.rest())
	}
	for range elems {
		if err := r.skip(depth + 1); err != nil {
			return err
		}
	}
	return nil
}
