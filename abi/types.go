package abi

import (
	"errors"
	"strconv"
)

// Version is the ABI version this package implements. A module reports its
// version through the ExportABIVersion export; the host refuses any other.
const Version uint32 = 1

// Names of the functions a filter module exports. docs/abi.md gives their
// wasm signatures.
const (
	ExportABIVersion = "ig_abi_version"
	ExportBuffer     = "ig_buffer"
	ExportInit       = "ig_init"
	ExportDecide     = "ig_decide"
	ExportModeChange = "ig_mode_change"
	ExportSnapshot   = "ig_snapshot"
	ExportRestore    = "ig_restore"
	// ExportInitialize is the WASI reactor initialiser a Go c-shared module
	// exports; the host runs it once right after instantiation.
	ExportInitialize = "_initialize"
)

// MaxBatch is the largest number of headers one decide call may carry. It
// bounds the guest's buffers: 4096 * HeaderSize is 192 KiB.
const MaxBatch = 4096

// Sentinel errors callers act on.
var (
	// ErrMalformed reports bytes that are not a valid encoding of the
	// expected ABI message.
	ErrMalformed = errors.New("abi: malformed message")
	// ErrUnknownIndexType reports an index type other than legacy or ha.
	ErrUnknownIndexType = errors.New("abi: unknown index type")
	// ErrBatchTooLarge reports a batch above MaxBatch headers.
	ErrBatchTooLarge = errors.New("abi: batch too large")
)

// IndexType says which index space a change set's index belongs to.
type IndexType uint8

const (
	// IndexNone is the zero value: no index type. It is never valid in a
	// header.
	IndexNone IndexType = 0
	// IndexLegacy is the single-node controller's persisted counter.
	IndexLegacy IndexType = 1
	// IndexHA is the raft log index of an HA controller cluster.
	IndexHA IndexType = 2
)

// IndexTypes lists the valid index types in a fixed order.
var IndexTypes = [...]IndexType{IndexLegacy, IndexHA}

// Valid reports whether t is legacy or ha.
func (t IndexType) Valid() bool { return t == IndexLegacy || t == IndexHA }

// String returns "legacy", "ha", or "none"/"unknown(N)".
func (t IndexType) String() string {
	switch t {
	case IndexLegacy:
		return "legacy"
	case IndexHA:
		return "ha"
	case IndexNone:
		return "none"
	}
	return "unknown(" + strconv.Itoa(int(t)) + ")"
}

// ParseIndexType parses "legacy" or "ha".
func ParseIndexType(s string) (IndexType, error) {
	switch s {
	case "legacy":
		return IndexLegacy, nil
	case "ha":
		return IndexHA, nil
	}
	return IndexNone, wrapf(ErrUnknownIndexType, strconv.Quote(s)+" (want legacy or ha)")
}

// MarshalText encodes t as its name, so JSON carries "legacy" / "ha".
func (t IndexType) MarshalText() ([]byte, error) {
	if t != IndexNone && !t.Valid() {
		return nil, wrapf(ErrUnknownIndexType, strconv.Itoa(int(t)))
	}
	return []byte(t.String()), nil
}

// UnmarshalText parses a name written by MarshalText.
func (t *IndexType) UnmarshalText(b []byte) error {
	if string(b) == "none" || len(b) == 0 {
		*t = IndexNone
		return nil
	}
	v, err := ParseIndexType(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// Timeline identifies one continuous history of indexes. Two positions are
// comparable only on the same timeline; a controller picks a new random
// timeline whenever its history stops being a continuation of the old one
// (a restore from an older backup, a cluster initialised separately).
type Timeline [16]byte

// IsZero reports whether t is the zero timeline (no history yet).
func (t Timeline) IsZero() bool { return t == Timeline{} }

// String returns 32 lowercase hex digits.
func (t Timeline) String() string {
	var b [2 * len(t)]byte
	for i, c := range t {
		b[2*i], b[2*i+1] = hexDigits[c>>4], hexDigits[c&0xf]
	}
	return string(b[:])
}

// ParseTimeline parses 32 hex digits; the empty string is the zero timeline.
func ParseTimeline(s string) (Timeline, error) {
	var t Timeline
	if s == "" {
		return t, nil
	}
	if len(s) != 32 {
		return t, wrapf(ErrMalformed, "timeline "+strconv.Quote(s)+" is not 32 hex digits")
	}
	for i := range t {
		hi, ok1 := fromHex(s[2*i])
		lo, ok2 := fromHex(s[2*i+1])
		if !ok1 || !ok2 {
			bad := s[2*i]
			if ok1 {
				bad = s[2*i+1]
			}
			// encoding/hex's InvalidByteError, which this used to return.
			return t, wrapf(ErrMalformed, "timeline "+strconv.Quote(s)+": encoding/hex: invalid byte: "+runeU(rune(bad)))
		}
		t[i] = hi<<4 | lo
	}
	return t, nil
}

// MarshalText writes hex (JSON); msgpack uses MarshalBinary (bin 16).
func (t Timeline) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText parses hex.
func (t *Timeline) UnmarshalText(b []byte) error {
	v, err := ParseTimeline(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// MarshalBinary returns the 16 raw bytes; vmihailenco/msgpack prefers it to
// MarshalText, so msgpack carries a bin 16 as docs/abi.md says.
func (t Timeline) MarshalBinary() ([]byte, error) { return t[:], nil }

// UnmarshalBinary reads 16 raw bytes (or none: the zero timeline).
func (t *Timeline) UnmarshalBinary(b []byte) error {
	switch len(b) {
	case 0:
		*t = Timeline{}
	case len(t):
		copy(t[:], b)
	default:
		return wrapf(ErrMalformed, "timeline of "+strconv.Itoa(len(b))+" bytes, want 16")
	}
	return nil
}

// Header is what a filter sees of a change set: where it sits in which
// history. PrevIndex is the index of the change set before it in the same
// index space (the baseline for the first one after a mode change), which
// lets a filter detect a gap.
type Header struct {
	_msgpack  struct{}  `msgpack:",as_array"`
	Index     uint64    `msgpack:"index" json:"index"`
	PrevIndex uint64    `msgpack:"prevIndex" json:"prevIndex"`
	Type      IndexType `msgpack:"type" json:"type"`
	Term      uint64    `msgpack:"term" json:"term"`
	Timeline  Timeline  `msgpack:"timeline" json:"timeline"`
}

// Validate checks what every filter relies on: a known type and an index
// above zero (OpenZiti #2932: synthetic change sets with index 0).
func (h *Header) Validate() error {
	if !h.Type.Valid() {
		return wrapf(ErrUnknownIndexType, "header type "+strconv.Itoa(int(h.Type)))
	}
	if h.Index == 0 {
		return wrapf(ErrMalformed, "header index 0")
	}
	if h.PrevIndex >= h.Index {
		return wrapf(ErrMalformed, "header prevIndex "+strconv.FormatUint(h.PrevIndex, 10)+" not below index "+strconv.FormatUint(h.Index, 10))
	}
	return nil
}

// Action is what the router does with a change set.
type Action uint8

const (
	// Apply: commit the change set and advance the position.
	Apply Action = 0
	// Skip: drop it; the router already has it (Reason says why).
	Skip Action = 1
	// Resync: the router's copy can no longer be trusted to continue from
	// this change set; it must fetch a full state.
	Resync Action = 2
)

// String names the action.
func (a Action) String() string {
	switch a {
	case Apply:
		return "apply"
	case Skip:
		return "skip"
	case Resync:
		return "resync"
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// Reason explains a verdict.
type Reason uint8

const (
	ReasonOK        Reason = 0 // with Apply
	ReasonDuplicate Reason = 1 // index equals the last applied one
	ReasonStale     Reason = 2 // index below the last applied one
	ReasonGap       Reason = 3 // prevIndex is not the last applied index
	ReasonTimeline  Reason = 4 // another timeline than the filter's
	ReasonNoBase    Reason = 5 // the filter has no baseline for this type
	ReasonWrongType Reason = 6 // header of another index type: not this filter's
	ReasonInvalid   Reason = 7 // index 0, unknown type, prevIndex >= index
	ReasonTerm      Reason = 8 // raft term went backwards (ha only)
)

// String names the reason.
func (r Reason) String() string {
	switch r {
	case ReasonOK:
		return "ok"
	case ReasonDuplicate:
		return "duplicate"
	case ReasonStale:
		return "stale"
	case ReasonGap:
		return "gap"
	case ReasonTimeline:
		return "timeline"
	case ReasonNoBase:
		return "no-baseline"
	case ReasonWrongType:
		return "wrong-type"
	case ReasonInvalid:
		return "invalid"
	case ReasonTerm:
		return "term"
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// Verdict is a filter's decision on one header.
type Verdict struct {
	_msgpack struct{} `msgpack:",as_array"`
	Action   Action   `msgpack:"action" json:"action"`
	Reason   Reason   `msgpack:"reason" json:"reason"`
}

// Valid reports whether the verdict uses known codes; the host treats an
// unknown one as a broken module.
func (v Verdict) Valid() bool { return v.Action <= Resync && v.Reason <= ReasonTerm }

// String is "action/reason".
func (v Verdict) String() string { return v.Action.String() + "/" + v.Reason.String() }

// ModeChange tells filters that the controller switched index type. For a
// continuous migration BaseIndex is the position in the To space that stands
// for LastIndex in the From space: the first change set of type To carries
// PrevIndex == BaseIndex. Legacy → HA seeds raft with a snapshot at index
// LastIndex, so BaseIndex == LastIndex; rollback continues the legacy
// counter above the last HA index, so again BaseIndex == LastIndex.
type ModeChange struct {
	_msgpack  struct{}  `msgpack:",as_array"`
	From      IndexType `msgpack:"from" json:"from"`
	To        IndexType `msgpack:"to" json:"to"`
	LastIndex uint64    `msgpack:"lastIndex" json:"lastIndex"`
	BaseIndex uint64    `msgpack:"baseIndex" json:"baseIndex"`
	Timeline  Timeline  `msgpack:"timeline" json:"timeline"`
}

// Validate checks the fields a filter relies on.
func (m *ModeChange) Validate() error {
	if !m.From.Valid() || !m.To.Valid() || m.From == m.To {
		return wrapf(ErrUnknownIndexType, "mode change "+m.From.String()+" -> "+m.To.String())
	}
	if m.BaseIndex < m.LastIndex {
		return wrapf(ErrMalformed, "mode change base index "+strconv.FormatUint(m.BaseIndex, 10)+" below last index "+strconv.FormatUint(m.LastIndex, 10))
	}
	return nil
}

// StateVersion is the version of the State envelope.
const StateVersion uint8 = 1

// State is a filter's position, the part every conforming module must
// understand so state carries over a hot swap between different modules,
// plus Extra, bytes only the module that wrote them interprets (a module
// must accept a State whose Extra is empty or foreign).
type State struct {
	_msgpack    struct{}  `msgpack:",as_array"`
	Version     uint8     `msgpack:"version" json:"version"`
	Type        IndexType `msgpack:"type" json:"type"`
	Initialized bool      `msgpack:"initialized" json:"initialized"`
	LastIndex   uint64    `msgpack:"lastIndex" json:"lastIndex"`
	Term        uint64    `msgpack:"term" json:"term"`
	Timeline    Timeline  `msgpack:"timeline" json:"timeline"`
	Extra       []byte    `msgpack:"extra" json:"extra,omitempty"`
}

// Config is the init blob the host hands a module.
type Config struct {
	_msgpack struct{}  `msgpack:",as_array"`
	Type     IndexType `msgpack:"type" json:"type"`
	// Options are operator-supplied bytes the host passes through untouched.
	Options []byte `msgpack:"options" json:"options,omitempty"`
}

// Info is what a module says about itself in answer to init.
type Info struct {
	_msgpack struct{}  `msgpack:",as_array"`
	Name     string    `msgpack:"name" json:"name"`
	Version  string    `msgpack:"version" json:"version"`
	Type     IndexType `msgpack:"type" json:"type"`
}

// fromHex decodes one hex digit, either case, as encoding/hex does.
func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// runeU is fmt's %#U: U+0067 'g', the quoted rune only when printable.
func runeU(r rune) string {
	h := strconv.FormatUint(uint64(r), 16)
	for len(h) < 4 {
		h = "0" + h
	}
	s := "U+"
	for _, c := range []byte(h) {
		if 'a' <= c && c <= 'f' {
			c -= 'a' - 'A'
		}
		s += string(rune(c))
	}
	if strconv.IsPrint(r) {
		s += " '" + string(r) + "'"
	}
	return s
}
