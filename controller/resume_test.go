package controller

import (
	"strings"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/wire"
)

func TestDecideResume(t *testing.T) {
	T := abi.Timeline{1}
	other := abi.Timeline{2}
	ha := func(i uint64) wire.Position { return wire.Position{Type: abi.IndexHA, Index: i, Timeline: T} }
	tests := []struct {
		name      string
		positions []wire.Position
		current   abi.IndexType
		mode      abi.IndexType
		index     uint64
		follows   bool
		want      wire.ResumeKind
	}{
		{"fresh router", nil, abi.IndexNone, abi.IndexLegacy, 10, false, wire.ResumeFullState},
		{"fresh router, empty controller", nil, abi.IndexNone, abi.IndexLegacy, 0, false, wire.ResumeFullState},
		{"want full state even if the log would follow", nil, abi.IndexNone, abi.IndexLegacy, 10, true, wire.ResumeFullState},
		{"no position of the current type", []wire.Position{ha(5)}, abi.IndexLegacy, abi.IndexLegacy, 10, true, wire.ResumeFullState},
		{"other timeline", []wire.Position{legacyAt(5, other)}, abi.IndexLegacy, abi.IndexLegacy, 10, true, wire.ResumeFullState},
		{"other timeline at the same index", []wire.Position{legacyAt(10, other)}, abi.IndexLegacy, abi.IndexLegacy, 10, false, wire.ResumeFullState},
		{"up to date", []wire.Position{legacyAt(10, T)}, abi.IndexLegacy, abi.IndexLegacy, 10, false, wire.ResumeUpToDate},
		{"up to date at zero", []wire.Position{legacyAt(0, T)}, abi.IndexLegacy, abi.IndexLegacy, 0, false, wire.ResumeUpToDate},
		{"replay within the log", []wire.Position{legacyAt(5, T)}, abi.IndexLegacy, abi.IndexLegacy, 10, true, wire.ResumeReplay},
		{"replay from zero", []wire.Position{legacyAt(0, T)}, abi.IndexLegacy, abi.IndexLegacy, 10, true, wire.ResumeReplay},
		{"below the log floor", []wire.Position{legacyAt(5, T)}, abi.IndexLegacy, abi.IndexLegacy, 10, false, wire.ResumeFullState},
		{"ahead of the controller", []wire.Position{legacyAt(11, T)}, abi.IndexLegacy, abi.IndexLegacy, 10, false, wire.ResumeFullState},
		{"ahead even if something follows", []wire.Position{legacyAt(11, T)}, abi.IndexLegacy, abi.IndexLegacy, 10, true, wire.ResumeFullState},
		{"stopped before a mode change, log holds it", []wire.Position{legacyAt(7, T), ha(0)}, abi.IndexLegacy, abi.IndexHA, 12, true, wire.ResumeReplay},
		{"stopped before a mode change, log trimmed", []wire.Position{legacyAt(7, T)}, abi.IndexLegacy, abi.IndexHA, 12, false, wire.ResumeFullState},
		{"current picks among several positions", []wire.Position{legacyAt(3, T), ha(10)}, abi.IndexHA, abi.IndexHA, 10, false, wire.ResumeUpToDate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decideResume(resumeInput{positions: tt.positions, current: tt.current, mode: tt.mode, index: tt.index, timeline: T, follows: tt.follows})
			if got.kind != tt.want {
				t.Fatalf("got %s (%s), want %s", got.kind, got.reason, tt.want)
			}
			if got.reason == "" {
				t.Fatal("no reason given")
			}
			if got.kind != wire.ResumeFullState {
				if p, _ := routerPosition(tt.positions, tt.current); got.from != p {
					t.Fatalf("from %s, want %s", got.from, p)
				}
			}
		})
	}
}

func TestCheckHello(t *testing.T) {
	ok := func() *wire.Hello { return hello("r1", legacyAt(3, abi.Timeline{1})) }
	tests := []struct {
		name   string
		mutate func(h *wire.Hello)
		code   wire.ErrorCode // 0: accepted
		detail string
	}{
		{"valid", func(*wire.Hello) {}, 0, ""},
		{"valid fresh", func(h *wire.Hello) { h.Positions, h.Current = nil, abi.IndexNone }, 0, ""},
		{"wider version range", func(h *wire.Hello) { h.ProtoMin, h.ProtoMax = 1, 9 }, 0, ""},
		{"empty router id", func(h *wire.Hello) { h.RouterID = "" }, wire.ErrCodeProtocol, "router id"},
		{"router id too long", func(h *wire.Hello) { h.RouterID = strings.Repeat("r", 257) }, wire.ErrCodeProtocol, "at most 256"},
		{"router id not UTF-8", func(h *wire.Hello) { h.RouterID = "r\xff" }, wire.ErrCodeProtocol, "UTF-8"},
		{"positions without current", func(h *wire.Hello) { h.Current = abi.IndexNone }, wire.ErrCodeProtocol, "inconsistent"},
		{"current without positions", func(h *wire.Hello) { h.Positions = nil }, wire.ErrCodeProtocol, "inconsistent"},
		{"newer versions only", func(h *wire.Hello) { h.ProtoMin, h.ProtoMax = 2, 3 }, wire.ErrCodeVersion, "controller [1, 1], router [2, 3]"},
		{"inverted range", func(h *wire.Hello) { h.ProtoMin, h.ProtoMax = 1, 0 }, wire.ErrCodeVersion, "router [1, 0]"},
		{"zero range", func(h *wire.Hello) { h.ProtoMin, h.ProtoMax = 0, 0 }, wire.ErrCodeVersion, "router [0, 0]"},
		{"no legacy filter", func(h *wire.Hello) { h.IndexTypes = []abi.IndexType{abi.IndexHA} }, wire.ErrCodeUnauthorized, "legacy"},
		{"no filters", func(h *wire.Hello) { h.IndexTypes = nil }, wire.ErrCodeUnauthorized, "legacy"},
		{"other ABI", func(h *wire.Hello) { h.ABIVersions = []uint32{abi.Version + 1} }, wire.ErrCodeUnauthorized, "ABI"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := ok()
			tt.mutate(h)
			proto, e := checkHello(h, abi.IndexLegacy)
			if tt.code == 0 {
				if e != nil {
					t.Fatalf("refused: %s %s", e.Code, e.Message)
				}
				if proto != wire.MaxProtocol {
					t.Fatalf("proto %d", proto)
				}
				return
			}
			if e == nil {
				t.Fatalf("accepted, want %s", tt.code)
			}
			if e.Code != tt.code || !strings.Contains(e.Message, tt.detail) {
				t.Fatalf("got %s %q, want %s containing %q", e.Code, e.Message, tt.code, tt.detail)
			}
		})
	}
}

func TestTrimCount(t *testing.T) {
	tests := []struct{ count, retention, want uint64 }{
		{0, 10, 0},
		{10, 10, 0},
		{11, 10, 1},
		{100, 10, 90},
		{5, 1, 4},
	}
	for _, tt := range tests {
		if got := trimCount(tt.count, tt.retention); got != tt.want {
			t.Errorf("trimCount(%d, %d) = %d, want %d", tt.count, tt.retention, got, tt.want)
		}
	}
}

func TestLag(t *testing.T) {
	tests := []struct{ index, acked, want uint64 }{
		{10, 10, 0}, {10, 4, 6}, {10, 0, 10}, {3, 10, 0}, {0, 0, 0},
	}
	for _, tt := range tests {
		if got := lag(tt.index, tt.acked); got != tt.want {
			t.Errorf("lag(%d, %d) = %d, want %d", tt.index, tt.acked, got, tt.want)
		}
	}
}

func TestPlanFrames(t *testing.T) {
	// set builds a change set entry whose body is body bytes.
	set := func(i uint64, body int) *logEntry {
		return &logEntry{key: logKey{index: i}, set: &wire.ChangeSet{}, size: body + setFrameOverhead}
	}
	mc := func(i uint64) *logEntry {
		return &logEntry{key: logKey{index: i, sub: subModeChange}, mode: &abi.ModeChange{}, size: 30}
	}
	tests := []struct {
		name     string
		es       []*logEntry
		maxSets  int
		maxBytes int
		want     []frameSpan
		wantErr  bool
	}{
		{"nothing", nil, 4, 1000, nil, false},
		{"one set", []*logEntry{set(1, 10)}, 4, 1000, []frameSpan{{0, 1, false}}, false},
		{"split by count", []*logEntry{set(1, 10), set(2, 10), set(3, 10), set(4, 10), set(5, 10)}, 2, 1000,
			[]frameSpan{{0, 2, false}, {2, 4, false}, {4, 5, false}}, false},
		{"split by bytes", []*logEntry{set(1, 40), set(2, 40), set(3, 40)}, 10, 100,
			[]frameSpan{{0, 2, false}, {2, 3, false}}, false},
		{"exactly at the byte limit", []*logEntry{set(1, 50), set(2, 43)}, 10, 100,
			[]frameSpan{{0, 2, false}}, false},
		{"one byte over", []*logEntry{set(1, 50), set(2, 44)}, 10, 100,
			[]frameSpan{{0, 1, false}, {1, 2, false}}, false},
		{"mode change alone, never inside a batch", []*logEntry{set(1, 10), set(2, 10), mc(2), set(3, 10)}, 10, 1000,
			[]frameSpan{{0, 2, false}, {2, 3, true}, {3, 4, false}}, false},
		{"mode change first", []*logEntry{mc(0), set(1, 10)}, 10, 1000,
			[]frameSpan{{0, 1, true}, {1, 2, false}}, false},
		{"set above the router's limit", []*logEntry{set(1, 10), set(2, 200)}, 10, 100, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planFrames(tt.es, tt.maxSets, tt.maxBytes)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestHubSince(t *testing.T) {
	e := func(i uint64, sub uint8) *logEntry { return &logEntry{key: logKey{index: i, sub: sub}} }
	h := newHub(3, logKey{index: 10}, 10)
	if es, ok := h.since(logKey{index: 10}, 10); !ok || len(es) != 0 {
		t.Fatalf("empty ring at its floor: %v %v", es, ok)
	}
	if _, ok := h.since(logKey{index: 9}, 10); ok {
		t.Fatal("below the floor must go to the store")
	}
	wake := h.wait()
	h.publish([]*logEntry{e(11, 0), e(12, 0)}, 12)
	select {
	case <-wake:
	default:
		t.Fatal("publish did not wake waiters")
	}
	keys := func(es []*logEntry) []logKey {
		var ks []logKey
		for _, e := range es {
			ks = append(ks, e.key)
		}
		return ks
	}
	if es, ok := h.since(logKey{index: 10}, 10); !ok || len(es) != 2 || es[0].key.index != 11 {
		t.Fatalf("since 10: %v %v", keys(es), ok)
	}
	// A mode change at 12 and two more sets evict 11 and 12.
	h.publish([]*logEntry{e(12, 1), e(13, 0), e(14, 0)}, 14)
	if _, ok := h.since(logKey{index: 11}, 10); ok {
		t.Fatal("11 was evicted: the ring no longer covers what follows it")
	}
	es, ok := h.since(logKey{index: 12}, 10)
	if !ok || len(es) != 3 || es[0].key != (logKey{12, 1}) {
		t.Fatalf("since 12/0: %v %v", keys(es), ok)
	}
	es, ok = h.since(logKey{index: 12, sub: 1}, 1)
	if !ok || len(es) != 1 || es[0].key != (logKey{13, 0}) {
		t.Fatalf("since 12/1, max 1: %v %v", keys(es), ok)
	}
	if es, ok := h.since(logKey{index: 14}, 10); !ok || len(es) != 0 {
		t.Fatalf("at the head: %v %v", keys(es), ok)
	}
	if h.lastIndex() != 14 {
		t.Fatalf("lastIndex %d", h.lastIndex())
	}
}
