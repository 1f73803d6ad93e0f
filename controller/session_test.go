package controller

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

func TestResumeFreshRouterGetsFullStateThenLive(t *testing.T) {
	cfg := testConfig(t)
	cfg.FullStateChunkBytes = 2 << 10 // several chunks for a few hundred entities
	c := startController(t, cfg)
	var chs []model.Change
	for i := range 300 {
		chs = append(chs, put("svc", fmt.Sprintf("s%03d", i), strings.Repeat("v", 20)))
	}
	commit(t, c, chs...)
	commit(t, c, del("svc", "s007"), put("route", "r1", `{"to":"svc/s001"}`))
	st := status(t, c)

	r := connect(t, c, hello("fresh"))
	if r.welcome.Resume != wire.ResumeFullState || r.welcome.Index != 2 || r.welcome.Timeline != st.Timeline ||
		r.welcome.Mode != abi.IndexLegacy || r.welcome.ClusterID != st.ClusterID || r.welcome.Proto != wire.MaxProtocol {
		t.Fatalf("welcome %+v", r.welcome)
	}
	begin, end, chunks := r.fullState()
	if begin.Index != 2 || begin.Mode != abi.IndexLegacy || begin.Timeline != st.Timeline || begin.Entities != 300 {
		t.Fatalf("begin %+v", begin)
	}
	if len(begin.Positions) != 1 || begin.Positions[0] != legacyAt(2, st.Timeline) {
		t.Fatalf("begin positions %v", begin.Positions)
	}
	if end.Digest != st.Digest || chunks < 3 {
		t.Fatalf("end %+v after %d chunks; controller digest %s", end, chunks, st.Digest)
	}
	// Streaming continues after the full state's index.
	idx := commit(t, c, put("svc", "new", "x"))
	if got := r.until(idx); len(got) != 1 || got[0].Header.PrevIndex != 2 {
		t.Fatalf("live change sets %+v", got)
	}
	if d := digestOf(t, r.entities); d != status(t, c).Digest {
		t.Fatal("router copy diverged from the controller")
	}
	waitFor(t, "full state counted", func() bool {
		_, body := httpDo(t, c, http.MethodGet, "/metrics", nil)
		return strings.Contains(string(body), "indexgate_controller_full_states_sent_total 1")
	})
}

func TestResumeEmptyControllerFullState(t *testing.T) {
	c := startController(t, testConfig(t))
	r := connect(t, c, hello("fresh"))
	if r.welcome.Resume != wire.ResumeFullState || r.welcome.Index != 0 {
		t.Fatalf("welcome %+v", r.welcome)
	}
	begin, end, chunks := r.fullState()
	if begin.Entities != 0 || end.Digest != model.EmptyDigest || chunks != 0 {
		t.Fatalf("begin %+v end %+v chunks %d", begin, end, chunks)
	}
	if got := r.until(commit(t, c, put("a", "b", "c"))); len(got) != 1 || got[0].Header.Index != 1 || got[0].Header.PrevIndex != 0 {
		t.Fatalf("first change set %+v", got)
	}
}

func TestResumeDecisions(t *testing.T) {
	cfg := testConfig(t)
	cfg.Retention = 10
	c := startController(t, cfg)
	last := commitN(t, c, "x", 25) // the log keeps 16..25, floor 15
	st := status(t, c)
	if st.LogFloor != 15 || st.LogChangeSets != 10 {
		t.Fatalf("floor %d, log %d, want 15 and 10", st.LogFloor, st.LogChangeSets)
	}
	T := st.Timeline
	tests := []struct {
		name  string
		hello *wire.Hello
		want  wire.ResumeKind
	}{
		{"replay within the log", hello("r", legacyAt(20, T)), wire.ResumeReplay},
		{"replay from the floor", hello("r", legacyAt(15, T)), wire.ResumeReplay},
		{"up to date", hello("r", legacyAt(last, T)), wire.ResumeUpToDate},
		{"below the log floor", hello("r", legacyAt(14, T)), wire.ResumeFullState},
		{"far below the log floor", hello("r", legacyAt(1, T)), wire.ResumeFullState},
		{"other timeline", hello("r", legacyAt(20, abi.NewTimeline())), wire.ResumeFullState},
		{"ahead of the controller", hello("r", legacyAt(last+5, T)), wire.ResumeFullState},
		{"want full state (no positions)", hello("r"), wire.ResumeFullState},
		{"current type without a position", &wire.Hello{
			ProtoMin: 1, ProtoMax: 1, RouterID: "r", IndexTypes: []abi.IndexType{abi.IndexLegacy}, ABIVersions: []uint32{abi.Version},
			Positions: []wire.Position{{Type: abi.IndexHA, Index: 3, Timeline: T}}, Current: abi.IndexLegacy,
		}, wire.ResumeFullState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := connect(t, c, tt.hello)
			if r.welcome.Resume != tt.want {
				t.Fatalf("resume %s, want %s", r.welcome.Resume, tt.want)
			}
			if r.welcome.Index != last || r.welcome.Timeline != T {
				t.Fatalf("welcome %+v", r.welcome)
			}
			switch tt.want {
			case wire.ResumeReplay:
				from := r.pos.Index
				got := r.until(last)
				if uint64(len(got)) != last-from || got[0].Header.PrevIndex != from {
					t.Fatalf("replayed %d change sets from %d", len(got), from)
				}
			case wire.ResumeFullState:
				if begin, _, _ := r.fullState(); begin.Index != last {
					t.Fatalf("full state at %d", begin.Index)
				}
			case wire.ResumeUpToDate:
			}
			_ = r.conn.Close()
		})
	}
}

// TestReplayFromStoreBelowTheRing has a ring much smaller than the log, so
// a replay reads bbolt first and the ring once it catches up.
func TestReplayFromStoreBelowTheRing(t *testing.T) {
	cfg := testConfig(t)
	cfg.RingSize = 4
	c := startController(t, cfg)
	last := commitN(t, c, "x", 700) // several readAhead pages and Batches
	T := status(t, c).Timeline
	r := connect(t, c, hello("r", legacyAt(3, T)))
	if r.welcome.Resume != wire.ResumeReplay {
		t.Fatalf("resume %s", r.welcome.Resume)
	}
	if got := r.until(last); len(got) != int(last-3) {
		t.Fatalf("replayed %d", len(got))
	}
	// Caught up, the session continues from the ring.
	next := commitN(t, c, "y", 10)
	if got := r.until(next); len(got) != 10 {
		t.Fatalf("live after replay: %d", len(got))
	}
}

func TestLiveStreamToSeveralRouters(t *testing.T) {
	c := startController(t, testConfig(t))
	commitN(t, c, "pre", 3)
	T := status(t, c).Timeline
	rs := []*fakeRouter{
		connect(t, c, hello("a", legacyAt(3, T))),
		connect(t, c, hello("b", legacyAt(0, T))),
		connect(t, c, hello("c")),
	}
	rs[2].fullState()
	last := commitN(t, c, "live", 50)
	want := status(t, c).Digest
	for _, r := range rs {
		r.until(last)
		if r.pos.Index != last {
			t.Fatalf("router at %d", r.pos.Index)
		}
	}
	// Routers a and b saw only change sets; their maps lack "pre" ones
	// applied before they connected (a) — compare b and c, which have
	// everything.
	for _, r := range rs[1:] {
		if d := digestOf(t, r.entities); d != want {
			t.Fatalf("router digest %s, controller %s", d, want)
		}
	}
}

func TestVersionMismatchRefused(t *testing.T) {
	c := startController(t, testConfig(t))
	conn := dial(t, c)
	h := hello("future")
	h.ProtoMin, h.ProtoMax = 2, 3
	if err := conn.Write(ctxT(t), h); err != nil {
		t.Fatal(err)
	}
	e := expectError(t, conn, wire.ErrCodeVersion)
	if !strings.Contains(e.Message, "[1, 1]") || !strings.Contains(e.Message, "[2, 3]") {
		t.Fatalf("message %q must name both ranges", e.Message)
	}
	if st := status(t, c); len(st.Routers) != 0 {
		t.Fatalf("refused router registered: %+v", st.Routers)
	}
	_, body := httpDo(t, c, http.MethodGet, "/metrics", nil)
	if !strings.Contains(string(body), `indexgate_controller_frames_rejected_total{reason="version"} 1`) {
		t.Fatal("rejection not counted")
	}
}

// frame builds a raw frame: a length prefix for payload, then payload.
func frame(payload ...byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	return append(b, payload...)
}

func encoded(t testing.TB, m wire.Message) []byte {
	b, err := wire.EncodeFrame(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHostileFramesDoNotDisturbOtherSessions sends malformed, oversize and
// unexpected frames on raw connections while a well-behaved router stays
// connected: each bad connection gets its Error frame and is closed, the
// controller keeps serving, nothing is applied, and the good session still
// receives change sets.
func TestHostileFramesDoNotDisturbOtherSessions(t *testing.T) {
	c := startController(t, testConfig(t))
	commit(t, c, put("svc", "a", "1"))
	st := status(t, c)
	good := connect(t, c, hello("good", legacyAt(1, st.Timeline)))

	validHello := encoded(t, hello("bad"))
	heartbeat := encoded(t, &wire.Heartbeat{Index: 1})
	trailing := frame(append(heartbeat[4:], 0x00)...)
	tests := []struct {
		name string
		// handshake first sends a valid Hello and reads the Welcome.
		handshake bool
		raw       []byte
		code      wire.ErrorCode
	}{
		{"length above the limit", false, []byte{0xff, 0xff, 0xff, 0xff}, wire.ErrCodeFrameTooLarge},
		{"length just above 16 MiB", false, binary.BigEndian.AppendUint32(nil, wire.DefaultMaxFrame+1), wire.ErrCodeFrameTooLarge},
		{"zero length", false, frame(), wire.ErrCodeMalformed},
		{"unknown type byte", false, frame(0x7f, 0x90), wire.ErrCodeMalformed},
		{"invalid msgpack body", false, frame(byte(wire.TypeHello), 0xc1), wire.ErrCodeMalformed},
		{"array claiming 4G elements", false, frame(byte(wire.TypeBatch), 0x91, 0xdd, 0xff, 0xff, 0xff, 0xff), wire.ErrCodeMalformed},
		{"truncated hello", false, frame(validHello[4 : len(validHello)-3]...), wire.ErrCodeMalformed},
		{"trailing garbage", false, trailing, wire.ErrCodeMalformed},
		{"first frame not a hello", false, encoded(t, &wire.Ack{}), wire.ErrCodeProtocol},
		{"hello without router id", false, encoded(t, &wire.Hello{ProtoMin: 1, ProtoMax: 1, IndexTypes: []abi.IndexType{abi.IndexLegacy}, ABIVersions: []uint32{1}}), wire.ErrCodeProtocol},
		{"hello without a legacy filter", false, encoded(t, &wire.Hello{ProtoMin: 1, ProtoMax: 1, RouterID: "x", IndexTypes: []abi.IndexType{abi.IndexHA}, ABIVersions: []uint32{1}}), wire.ErrCodeUnauthorized},
		{"batch from a router", true, encoded(t, &wire.Batch{Sets: []wire.ChangeSet{{Header: abi.Header{Index: 99, PrevIndex: 98, Type: abi.IndexLegacy}, Changes: []model.Change{put("evil", "x", "y")}}}}), wire.ErrCodeProtocol},
		{"second hello", true, validHello, wire.ErrCodeProtocol},
		{"malformed after the handshake", true, frame(byte(wire.TypeAck), 0xc1), wire.ErrCodeMalformed},
		{"oversize after the handshake", true, []byte{0x7f, 0xff, 0xff, 0xff}, wire.ErrCodeFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", c.RouterAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			conn := wire.NewConn(nc, wire.ConnOptions{})
			defer conn.Close()
			if tt.handshake {
				if err := conn.Write(ctxT(t), hello("bad")); err != nil {
					t.Fatal(err)
				}
				// Welcome, then a full state: read up to its end.
				for {
					m, err := conn.Read(ctxT(t))
					if err != nil {
						t.Fatal(err)
					}
					if _, ok := m.(*wire.FullStateEnd); ok {
						break
					}
				}
			}
			if _, err := nc.Write(tt.raw); err != nil {
				t.Fatal(err)
			}
			expectError(t, conn, tt.code)
		})
	}

	// The good session is untouched and nothing was applied.
	after := status(t, c)
	if after.Index != 1 || after.Digest != st.Digest {
		t.Fatalf("hostile frames changed the store: %+v", after)
	}
	idx := commit(t, c, put("svc", "b", "2"))
	if got := good.until(idx); len(got) != 1 {
		t.Fatalf("good router got %+v", got)
	}
	for _, r := range status(t, c).Routers {
		if r.ID == "good" && !r.Connected {
			t.Fatal("good router disconnected")
		}
	}
	_, body := httpDo(t, c, http.MethodGet, "/metrics", nil)
	for _, want := range []string{
		`indexgate_controller_frames_rejected_total{reason="too_large"} 3`,
		`indexgate_controller_frames_rejected_total{reason="malformed"} 7`,
		`indexgate_controller_frames_rejected_total{reason="unexpected"} 3`,
		`indexgate_controller_frames_rejected_total{reason="bad_hello"} 1`,
		`indexgate_controller_frames_rejected_total{reason="unsupported"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestSlowRouterBlocksNeitherWritersNorOthers connects a router that never
// reads while enough data to fill every socket buffer is committed: every
// write still commits and the other router receives everything.
func TestSlowRouterBlocksNeitherWritersNorOthers(t *testing.T) {
	c := startController(t, testConfig(t))
	T := status(t, c).Timeline
	nc, err := net.Dial("tcp", c.RouterAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	// A small receive buffer keeps the amount the kernel absorbs for the
	// stalled router well below what is committed.
	if err := nc.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	stalled := wire.NewConn(nc, wire.ConnOptions{})
	defer stalled.Close()
	if err := stalled.Write(ctxT(t), hello("stalled", legacyAt(0, T))); err != nil {
		t.Fatal(err)
	}
	fast := connect(t, c, hello("fast", legacyAt(0, T)))
	value := strings.Repeat("v", 32<<10)
	var last uint64
	for i := range 300 { // about 10 MiB
		last = commit(t, c, put("blob", fmt.Sprint(i), value))
	}
	if got := fast.until(last); len(got) != 300 {
		t.Fatalf("fast router got %d", len(got))
	}
	var stalledStatus *RouterStatus
	for _, r := range status(t, c).Routers {
		if r.ID == "stalled" {
			stalledStatus = &r
		}
	}
	if stalledStatus == nil || !stalledStatus.Connected || stalledStatus.SentIndex >= last {
		// SentIndex < last shows the stalled session really is behind,
		// i.e. the test exercised a blocked session.
		t.Fatalf("stalled router status %+v (last %d)", stalledStatus, last)
	}
}

func TestAcksDriveStatusAndLag(t *testing.T) {
	c := startController(t, testConfig(t))
	last := commitN(t, c, "x", 5)
	T := status(t, c).Timeline
	r := connect(t, c, hello("r1", legacyAt(2, T)))
	router := func() RouterStatus {
		for _, rs := range status(t, c).Routers {
			if rs.ID == "r1" {
				return rs
			}
		}
		t.Fatal("r1 not in status")
		return RouterStatus{}
	}
	if rs := router(); !rs.Connected || rs.AckedIndex != 2 || rs.Lag != 3 || rs.AckedType != abi.IndexLegacy ||
		rs.Resume != "replay" || rs.ConnectedAt.IsZero() || rs.Remote == "" {
		t.Fatalf("before acks: %+v", rs)
	}
	r.until(last)
	r.ack(3)
	waitFor(t, "the ack", func() bool { return router().AckedIndex == last })
	if rs := router(); rs.Lag != 0 || rs.Applied != 3 {
		t.Fatalf("after ack: %+v", rs)
	}
	commit(t, c, put("svc", "y", "1"))
	if rs := router(); rs.Lag != 1 {
		t.Fatalf("lag after a commit without ack: %+v", rs)
	}
	_, body := httpDo(t, c, http.MethodGet, "/metrics", nil)
	for _, want := range []string{`indexgate_controller_router_lag{router="r1"} 1`, "indexgate_controller_routers_connected 1", "indexgate_controller_replays_total 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	_ = r.conn.Close()
	waitFor(t, "the disconnect", func() bool { return !router().Connected })
	if rs := router(); rs.DisconnectedAt.IsZero() {
		t.Fatalf("after disconnect: %+v", rs)
	}
	_, body = httpDo(t, c, http.MethodGet, "/metrics", nil)
	if strings.Contains(string(body), `router_lag{router="r1"}`) {
		t.Error("a disconnected router keeps its lag series")
	}
}

func TestHeartbeatWhenIdle(t *testing.T) {
	cfg := testConfig(t)
	cfg.HeartbeatInterval = 10 * 1e6 // 10 ms
	c := startController(t, cfg)
	idx := commit(t, c, put("a", "b", "c"))
	r := connect(t, c, hello("r", legacyAt(idx, status(t, c).Timeline)))
	for {
		m, err := r.conn.Read(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if hb, ok := m.(*wire.Heartbeat); ok {
			if hb.Index != idx || hb.UnixNano == 0 {
				t.Fatalf("heartbeat %+v", hb)
			}
			return
		}
		t.Fatalf("idle session sent %T", m)
	}
}

func TestIdleRouterDisconnected(t *testing.T) {
	cfg := testConfig(t)
	cfg.IdleTimeout = 50 * 1e6 // 50 ms
	c := startController(t, cfg)
	r := connect(t, c, hello("quiet"))
	r.fullState()
	// The router sends nothing: the controller closes after IdleTimeout.
	expectClosed(t, r.conn)
}

func TestDigestRequest(t *testing.T) {
	c := startController(t, testConfig(t))
	idx := commit(t, c, put("a", "b", "c"), put("d", "e", "f"))
	st := status(t, c)
	r := connect(t, c, hello("r", legacyAt(idx, st.Timeline)))
	if err := r.conn.Write(ctxT(t), &wire.DigestRequest{}); err != nil {
		t.Fatal(err)
	}
	m := r.read()
	d, ok := m.(*wire.DigestReply)
	if !ok {
		t.Fatalf("got %T", m)
	}
	if d.Digest != st.Digest || d.Entities != 2 || d.Position != legacyAt(idx, st.Timeline) {
		t.Fatalf("digest reply %+v, status %+v", d, st)
	}
}

func TestReconnectReplacesOldSession(t *testing.T) {
	c := startController(t, testConfig(t))
	T := status(t, c).Timeline
	first := connect(t, c, hello("same", legacyAt(0, T)))
	second := connect(t, c, hello("same", legacyAt(0, T)))
	expectClosed(t, first.conn)
	idx := commit(t, c, put("a", "b", "c"))
	second.until(idx)
	rs := status(t, c).Routers
	if len(rs) != 1 || !rs[0].Connected {
		t.Fatalf("routers %+v", rs)
	}
}

func TestRouterFrameLimitRespected(t *testing.T) {
	c := startController(t, testConfig(t))
	T := status(t, c).Timeline
	h := hello("small", legacyAt(0, T))
	h.MaxFrame = 64 << 10
	r := connect(t, c, h)
	value := strings.Repeat("v", 20<<10)
	var last uint64
	for i := range 20 {
		last = commit(t, c, put("blob", fmt.Sprint(i), value))
	}
	frames := 0
	for r.pos.Index < last {
		nc := r.read()
		b, ok := nc.(*wire.Batch)
		if !ok {
			t.Fatalf("got %T", nc)
		}
		if n := len(encoded(t, b)) - wire.FrameHeaderSize; n > int(h.MaxFrame) {
			t.Fatalf("batch payload of %d bytes above the router's %d", n, h.MaxFrame)
		}
		r.pending = b
		r.until(r.pos.Index + uint64(len(b.Sets)))
		frames++
	}
	if frames < 7 {
		t.Fatalf("%d frames for 400 KiB under a 64 KiB limit", frames)
	}
	// A change set above the router's limit cannot be sent: the
	// controller says so and closes.
	commit(t, c, put("blob", "huge", strings.Repeat("h", 100<<10)))
	e := expectError(t, r.conn, wire.ErrCodeInternal)
	if !bytes.Contains([]byte(e.Message), []byte("frame limit")) {
		t.Fatalf("error %q", e.Message)
	}
}

func TestShutdownTellsRoutersNotServing(t *testing.T) {
	c := startController(t, testConfig(t))
	r := connect(t, c, hello("r"))
	r.fullState()
	got := make(chan wire.Message, 1)
	go func() {
		// Reads on the side; the test goroutine checks the result.
		for {
			m, err := r.conn.Read(context.Background())
			if err != nil {
				got <- nil
				return
			}
			if _, ok := m.(*wire.Heartbeat); !ok {
				got <- m
				return
			}
		}
	}()
	c.stop(t)
	m := <-got
	if e, ok := m.(*wire.Error); !ok || e.Code != wire.ErrCodeNotServing {
		t.Fatalf("last frame at shutdown: %T %+v, want a not-serving error", m, m)
	}
}
