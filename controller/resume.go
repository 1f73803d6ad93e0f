package controller

import (
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/wire"
)

// The decisions of this file are pure functions of their inputs, so that
// every case is one row of a table test; the session gathers the inputs
// (from the Hello and one read transaction) and acts on the result.

// maxBatchSets is the most change sets the controller puts in one Batch
// (docs/architecture.md, "Streaming"): big enough to amortise a filter
// call, small enough that an Ack follows soon.
const maxBatchSets = 256

// batchOverhead is what a Batch payload adds to its change set bodies: the
// type byte, the struct's fixarray byte and the sets' array header (at most
// 5 bytes).
const batchOverhead = 7

// setFrameOverhead is what a stored change set frame has beyond its body:
// the length prefix and the type byte.
const setFrameOverhead = wire.FrameHeaderSize + 1

// maxRouterIDLen bounds Hello.RouterID: it becomes a log attribute, a
// status key and a metric label.
const maxRouterIDLen = 256

// checkHello validates a router's Hello against this controller
// (docs/protocol.md §5.1) and returns the negotiated protocol version, or
// the Error frame to answer with.
func checkHello(h *wire.Hello, mode abi.IndexType) (uint16, *wire.Error) {
	if h.RouterID == "" {
		return 0, &wire.Error{Code: wire.ErrCodeProtocol, Message: "hello: empty router id"}
	}
	if len(h.RouterID) > maxRouterIDLen || !utf8.ValidString(h.RouterID) {
		return 0, &wire.Error{Code: wire.ErrCodeProtocol, Message: fmt.Sprintf(
			"hello: router id must be valid UTF-8 of at most %d bytes (got %d bytes)", maxRouterIDLen, len(h.RouterID))}
	}
	if (len(h.Positions) == 0) != (h.Current == abi.IndexNone) {
		return 0, &wire.Error{Code: wire.ErrCodeProtocol, Message: fmt.Sprintf(
			"hello: current %s is inconsistent with %d positions (current is none exactly when there are no positions)",
			h.Current, len(h.Positions))}
	}
	proto, err := wire.Negotiate(wire.MinProtocol, wire.MaxProtocol, h.ProtoMin, h.ProtoMax)
	if err != nil {
		return 0, &wire.Error{Code: wire.ErrCodeVersion, Message: fmt.Sprintf(
			"no common protocol version: controller [%d, %d], router [%d, %d]",
			wire.MinProtocol, wire.MaxProtocol, h.ProtoMin, h.ProtoMax)}
	}
	if !slices.Contains(h.IndexTypes, mode) {
		return 0, &wire.Error{Code: wire.ErrCodeUnauthorized, Message: fmt.Sprintf(
			"router has no filter for index type %s, the controller's mode (it has %v)", mode, h.IndexTypes)}
	}
	if !slices.Contains(h.ABIVersions, abi.Version) {
		return 0, &wire.Error{Code: wire.ErrCodeUnauthorized, Message: fmt.Sprintf(
			"router accepts filter ABI versions %v, the controller needs %d", h.ABIVersions, abi.Version)}
	}
	return proto, nil
}

// routerPosition is the Hello position of type current.
func routerPosition(ps []wire.Position, current abi.IndexType) (wire.Position, bool) {
	if current == abi.IndexNone {
		return wire.Position{}, false
	}
	for _, p := range ps {
		if p.Type == current {
			return p, true
		}
	}
	return wire.Position{}, false
}

// resumeInput is what the resume decision looks at.
type resumeInput struct {
	// positions and current are the Hello's.
	positions []wire.Position
	current   abi.IndexType
	// mode, index and timeline are the controller's: M, I and T.
	mode     abi.IndexType
	index    uint64
	timeline abi.Timeline
	// follows: the log, above its floor, holds the entry right after the
	// router's position p (see follows in store.go).
	follows bool
}

// resumeDecision is what the session does.
type resumeDecision struct {
	kind wire.ResumeKind
	// reason says why, for the log.
	reason string
	// from is the router's position when kind is replay or up-to-date.
	from wire.Position
}

// decideResume is docs/protocol.md §6 (docs/architecture.md "Session
// semantics", item 2): replay when the router's position lies on this
// timeline and the log still holds everything after it, up-to-date when it
// is the controller's position, a full state otherwise.
func decideResume(in resumeInput) resumeDecision {
	full := func(why string) resumeDecision { return resumeDecision{kind: wire.ResumeFullState, reason: why} }
	if len(in.positions) == 0 {
		return full("router asked for a full state (no positions)")
	}
	p, ok := routerPosition(in.positions, in.current)
	if !ok {
		return full(fmt.Sprintf("router has no position of its current type %s", in.current))
	}
	if p.Timeline != in.timeline {
		return full(fmt.Sprintf("router is on timeline %s, controller on %s", p.Timeline, in.timeline))
	}
	if p.Type == in.mode {
		switch {
		case p.Index == in.index:
			return resumeDecision{kind: wire.ResumeUpToDate, reason: "router is at the controller's index", from: p}
		case p.Index > in.index:
			return full(fmt.Sprintf("router at %s is ahead of the controller's index %d", p, in.index))
		}
	}
	if !in.follows {
		return full(fmt.Sprintf("the log no longer holds what follows %s", p))
	}
	return resumeDecision{kind: wire.ResumeReplay, reason: fmt.Sprintf("replaying the log after %s", p), from: p}
}

// trimCount is the log retention rule: how many of the oldest change sets
// to drop so that at most retention remain.
func trimCount(logCount, retention uint64) uint64 {
	if logCount <= retention {
		return 0
	}
	return logCount - retention
}

// lag is how far an acked index trails the controller's index; an ack
// ahead of it (another timeline, a restored store) counts as no lag.
func lag(index, acked uint64) uint64 {
	if acked >= index {
		return 0
	}
	return index - acked
}

// frameSpan is es[start:end], sent as one frame: a Batch, or a ModeChange
// when mode is set (then end == start+1).
type frameSpan struct {
	start, end int
	mode       bool
}

// planFrames splits log entries into frames: consecutive change sets in
// Batches of at most maxSets whose payload stays within maxBytes, every
// mode change in a frame of its own (never inside a Batch). A change set
// too large for maxBytes on its own is an error: that router cannot
// receive it.
func planFrames(es []*logEntry, maxSets, maxBytes int) ([]frameSpan, error) {
	var spans []frameSpan
	budget := maxBytes - batchOverhead
	cur := frameSpan{start: -1}
	size := 0
	flush := func() {
		if cur.start >= 0 {
			spans = append(spans, cur)
			cur = frameSpan{start: -1}
			size = 0
		}
	}
	for i, e := range es {
		if e.mode != nil {
			flush()
			spans = append(spans, frameSpan{start: i, end: i + 1, mode: true})
			continue
		}
		body := e.size - setFrameOverhead
		if body > budget {
			return nil, fmt.Errorf("change set %d is %d bytes, above the frame limit of %d", e.key.index, e.size, maxBytes)
		}
		if cur.start >= 0 && (cur.end-cur.start >= maxSets || size+body > budget) {
			flush()
		}
		if cur.start < 0 {
			cur = frameSpan{start: i, end: i}
		}
		cur.end = i + 1
		size += body
	}
	flush()
	return spans, nil
}
