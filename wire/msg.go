package wire

import (
	"fmt"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
)

// MsgType is the first payload byte of a frame: which message the body
// holds.
type MsgType uint8

// Message types. The values are part of the protocol: never renumber.
const (
	TypeHello          MsgType = 0x01
	TypeWelcome        MsgType = 0x02
	TypeError          MsgType = 0x03
	TypeChangeSet      MsgType = 0x04
	TypeBatch          MsgType = 0x05
	TypeFullStateBegin MsgType = 0x06
	TypeFullStateChunk MsgType = 0x07
	TypeFullStateEnd   MsgType = 0x08
	TypeModeChange     MsgType = 0x09
	TypeAck            MsgType = 0x0a
	TypeHeartbeat      MsgType = 0x0b
	TypeDigestRequest  MsgType = 0x0c
	TypeDigestReply    MsgType = 0x0d
)

var msgTypeNames = [...]string{
	TypeHello: "hello", TypeWelcome: "welcome", TypeError: "error",
	TypeChangeSet: "change-set", TypeBatch: "batch",
	TypeFullStateBegin: "full-state-begin", TypeFullStateChunk: "full-state-chunk",
	TypeFullStateEnd: "full-state-end", TypeModeChange: "mode-change", TypeAck: "ack",
	TypeHeartbeat: "heartbeat", TypeDigestRequest: "digest-request", TypeDigestReply: "digest-reply",
}

// String names the message type.
func (t MsgType) String() string {
	if int(t) < len(msgTypeNames) && msgTypeNames[t] != "" {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("type(0x%02x)", uint8(t))
}

// Message is one of the pointer types below (*Hello, *Batch, ...); Read
// returns them and Write takes them.
type Message interface {
	// Type is the frame type byte of the message.
	Type() MsgType
}

// Position is where a side stands in one index space: the index of the last
// change set of type Type it applied (or, for a controller, committed) on
// Timeline.
type Position struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Type is the index space.
	Type abi.IndexType `msgpack:"type" json:"type"`
	// Index is the last index of that type applied or committed.
	Index uint64 `msgpack:"index" json:"index"`
	// Timeline is the history Index belongs to.
	Timeline abi.Timeline `msgpack:"timeline" json:"timeline"`
}

// String is "type@index/timeline".
func (p Position) String() string { return fmt.Sprintf("%s@%d/%s", p.Type, p.Index, p.Timeline) }

// Hello is the router's first frame.
type Hello struct {
	_msgpack struct{} `msgpack:",as_array"`
	// ProtoMin and ProtoMax are the protocol versions the router speaks.
	ProtoMin uint16 `msgpack:"protoMin" json:"protoMin"`
	ProtoMax uint16 `msgpack:"protoMax" json:"protoMax"`
	// RouterID names the router in the controller's logs and metrics.
	RouterID string `msgpack:"routerID" json:"routerID"`
	// IndexTypes are the index types the router has a filter for.
	IndexTypes []abi.IndexType `msgpack:"indexTypes" json:"indexTypes"`
	// ABIVersions are the filter ABI versions the router's host accepts.
	ABIVersions []uint32 `msgpack:"abiVersions" json:"abiVersions"`
	// Positions are the router's committed positions, at most one per
	// index type. Empty asks for a full state.
	Positions []Position `msgpack:"positions" json:"positions"`
	// Current is the type of the router's last applied change set (or mode
	// change); IndexNone with empty Positions.
	Current abi.IndexType `msgpack:"current" json:"current"`
	// Capabilities is a bit set of optional features; none are defined in
	// protocol 1.
	Capabilities uint64 `msgpack:"capabilities" json:"capabilities"`
	// MaxFrame is the largest frame payload the router reads; 0 means
	// DefaultMaxFrame. The controller never sends a larger frame.
	MaxFrame uint32 `msgpack:"maxFrame" json:"maxFrame"`
}

// Welcome is the controller's answer to an acceptable Hello.
type Welcome struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Proto is the negotiated protocol version.
	Proto uint16 `msgpack:"proto" json:"proto"`
	// ClusterID names the controller cluster, for logs.
	ClusterID string `msgpack:"clusterID" json:"clusterID"`
	// NodeID names the answering controller node, for logs.
	NodeID string `msgpack:"nodeID" json:"nodeID"`
	// Mode is the controller's current index type.
	Mode abi.IndexType `msgpack:"mode" json:"mode"`
	// Timeline is the controller's current timeline.
	Timeline abi.Timeline `msgpack:"timeline" json:"timeline"`
	// Index is the controller's last committed index of type Mode.
	Index uint64 `msgpack:"index" json:"index"`
	// Resume says what follows the Welcome.
	Resume ResumeKind `msgpack:"resume" json:"resume"`
	// Capabilities is the intersection of both sides' capability bits.
	Capabilities uint64 `msgpack:"capabilities" json:"capabilities"`
}

// ResumeKind is how the controller brings a router up to date.
type ResumeKind uint8

const (
	// ResumeReplay: change sets after the router's position follow.
	ResumeReplay ResumeKind = 1
	// ResumeFullState: a FullStateBegin, chunks and a FullStateEnd follow.
	ResumeFullState ResumeKind = 2
	// ResumeUpToDate: the router is current; live change sets follow.
	ResumeUpToDate ResumeKind = 3
)

// String names the resume kind.
func (k ResumeKind) String() string {
	switch k {
	case ResumeReplay:
		return "replay"
	case ResumeFullState:
		return "full-state"
	case ResumeUpToDate:
		return "up-to-date"
	}
	return fmt.Sprintf("resume(%d)", uint8(k))
}

// ChangeSet is one committed change set.
type ChangeSet struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Header places the change set in its index space.
	Header abi.Header `msgpack:"header" json:"header"`
	// Changes are applied in order, atomically.
	Changes []model.Change `msgpack:"changes" json:"changes"`
}

// Batch carries consecutive change sets, at most abi.MaxBatch, so that the
// router decides them in one filter call.
type Batch struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Sets are in index order.
	Sets []ChangeSet `msgpack:"sets" json:"sets"`
}

// FullStateBegin starts a full state transfer: the controller's entities as
// of Index of type Mode on Timeline.
type FullStateBegin struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Mode is the index type of Index.
	Mode abi.IndexType `msgpack:"mode" json:"mode"`
	// Timeline is the history Index belongs to.
	Timeline abi.Timeline `msgpack:"timeline" json:"timeline"`
	// Index is the last change set the state includes.
	Index uint64 `msgpack:"index" json:"index"`
	// Positions are what the router adopts, per index type, once the state
	// is committed; they include {Mode, Index, Timeline}.
	Positions []Position `msgpack:"positions" json:"positions"`
	// Entities is the number of entities the chunks carry in total.
	Entities uint64 `msgpack:"entities" json:"entities"`
}

// FullStateChunk carries some of the entities of a full state.
type FullStateChunk struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Entities are in key order (kind, then id).
	Entities []model.Entity `msgpack:"entities" json:"entities"`
}

// FullStateEnd completes a full state transfer.
type FullStateEnd struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Entities repeats the total so the router can check it.
	Entities uint64 `msgpack:"entities" json:"entities"`
	// Digest is the model digest of the transferred entities.
	Digest string `msgpack:"digest" json:"digest"`
}

// ModeChange tells the router the controller switched index type, in
// stream order between the last change set of the old type and the first of
// the new one.
type ModeChange struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Change is what the filters receive.
	Change abi.ModeChange `msgpack:"change" json:"change"`
}

// Ack reports the router's committed state after it processed a frame.
type Ack struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Positions are the router's committed positions, one per index type.
	Positions []Position `msgpack:"positions" json:"positions"`
	// Current is the type of the router's last applied change set or mode
	// change.
	Current abi.IndexType `msgpack:"current" json:"current"`
	// Applied counts the change sets applied on this connection so far.
	Applied uint64 `msgpack:"applied" json:"applied"`
}

// Heartbeat keeps an idle connection alive.
type Heartbeat struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Index is the sender's current index: the controller's last committed
	// one, the router's position on its current type.
	Index uint64 `msgpack:"index" json:"index"`
	// UnixNano is the sender's clock, for display only.
	UnixNano int64 `msgpack:"unixNano" json:"unixNano"`
}

// ErrorCode classifies an Error frame.
type ErrorCode uint8

// Error codes. The values are part of the protocol: never renumber.
const (
	// ErrCodeVersion: no common protocol version.
	ErrCodeVersion ErrorCode = 1
	// ErrCodeMalformed: a frame could not be decoded.
	ErrCodeMalformed ErrorCode = 2
	// ErrCodeFrameTooLarge: a frame's length exceeded the receiver's limit.
	ErrCodeFrameTooLarge ErrorCode = 3
	// ErrCodeUnauthorized: the peer is not allowed to connect.
	ErrCodeUnauthorized ErrorCode = 4
	// ErrCodeNotServing: this controller does not serve routers now;
	// Redirect lists where to go instead.
	ErrCodeNotServing ErrorCode = 5
	// ErrCodeInternal: the sender failed (storage, filter host).
	ErrCodeInternal ErrorCode = 6
	// ErrCodeProtocol: a valid frame that is wrong in the current state.
	ErrCodeProtocol ErrorCode = 7
)

// String names the code.
func (c ErrorCode) String() string {
	switch c {
	case ErrCodeVersion:
		return "version"
	case ErrCodeMalformed:
		return "malformed"
	case ErrCodeFrameTooLarge:
		return "frame-too-large"
	case ErrCodeUnauthorized:
		return "unauthorized"
	case ErrCodeNotServing:
		return "not-serving"
	case ErrCodeInternal:
		return "internal"
	case ErrCodeProtocol:
		return "protocol"
	}
	return fmt.Sprintf("code(%d)", uint8(c))
}

// Error is the last frame a side sends before it closes the connection.
type Error struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Code classifies the failure.
	Code ErrorCode `msgpack:"code" json:"code"`
	// Message is the detail for the peer's log.
	Message string `msgpack:"message" json:"message"`
	// Redirect lists controller addresses (host:port) to try instead; only
	// with ErrCodeNotServing.
	Redirect []string `msgpack:"redirect" json:"redirect"`
}

// Error makes a received Error frame usable as a Go error.
func (e *Error) Error() string {
	return fmt.Sprintf("wire: peer error %s: %s", e.Code, e.Message)
}

// DigestRequest asks the peer for a DigestReply.
type DigestRequest struct {
	_msgpack struct{} `msgpack:",as_array"`
}

// DigestReply reports the sender's model digest at its position.
type DigestReply struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Position is the sender's position on its current type.
	Position Position `msgpack:"position" json:"position"`
	// Entities is the sender's entity count.
	Entities uint64 `msgpack:"entities" json:"entities"`
	// Digest is the sender's model digest.
	Digest string `msgpack:"digest" json:"digest"`
}

// Type implements Message.
func (*Hello) Type() MsgType { return TypeHello }

// Type implements Message.
func (*Welcome) Type() MsgType { return TypeWelcome }

// Type implements Message.
func (*Error) Type() MsgType { return TypeError }

// Type implements Message.
func (*ChangeSet) Type() MsgType { return TypeChangeSet }

// Type implements Message.
func (*Batch) Type() MsgType { return TypeBatch }

// Type implements Message.
func (*FullStateBegin) Type() MsgType { return TypeFullStateBegin }

// Type implements Message.
func (*FullStateChunk) Type() MsgType { return TypeFullStateChunk }

// Type implements Message.
func (*FullStateEnd) Type() MsgType { return TypeFullStateEnd }

// Type implements Message.
func (*ModeChange) Type() MsgType { return TypeModeChange }

// Type implements Message.
func (*Ack) Type() MsgType { return TypeAck }

// Type implements Message.
func (*Heartbeat) Type() MsgType { return TypeHeartbeat }

// Type implements Message.
func (*DigestRequest) Type() MsgType { return TypeDigestRequest }

// Type implements Message.
func (*DigestReply) Type() MsgType { return TypeDigestReply }
