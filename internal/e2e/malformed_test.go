package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/internal/itest"
	"github.com/indexgate/indexgate/router"
	"github.com/indexgate/indexgate/wire"
)

// rawFrame is payload behind its length prefix, whatever the payload.
func rawFrame(payload ...byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(payload))), payload...)
}

// helloBytes is a valid Hello frame from a fresh router.
func helloBytes(t testing.TB, id string) []byte {
	t.Helper()
	b, err := wire.EncodeFrame(nil, freshHello(id))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func freshHello(id string) *wire.Hello {
	return &wire.Hello{ProtoMin: wire.MinProtocol, ProtoMax: wire.MaxProtocol, RouterID: id,
		IndexTypes: abi.IndexTypes[:], ABIVersions: []uint32{abi.Version}}
}

// nestedHello is a valid Hello with one extra field nested depth arrays
// deep: decoders skip extra fields, but only 16 levels deep.
func nestedHello(t testing.TB, depth int) []byte {
	t.Helper()
	b := helloBytes(t, "nested")
	body := b[wire.FrameHeaderSize+1:]
	if body[0]&0xf0 != 0x90 || body[0] == 0x9f {
		t.Fatalf("Hello body starts with %#x, not a fixarray this test can extend", body[0])
	}
	payload := append([]byte{b[wire.FrameHeaderSize], body[0] + 1}, body[1:]...)
	payload = append(payload, bytes.Repeat([]byte{0x91}, depth)...)
	payload = append(payload, 0xc0)
	return rawFrame(payload...)
}

// TestMalformedFramesFromRawClients sends a raw TCP client's garbage to a
// controller that streams to two real routers: each bad connection gets the
// Error frame the protocol prescribes (or, where it prescribes none, is
// just closed), is counted by reason, and nothing else notices — the
// routers' sessions stay up, and they converge after more writes.
func TestMalformedFramesFromRawClients(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	rng := newRand(t)
	cfg := itest.ControllerConfig(t.TempDir())
	// The silent client is closed after this; the routers answer at once.
	cfg.HandshakeTimeout = 500 * time.Millisecond
	ctl := itest.StartController(t, cfg)
	addr, admin := ctl.RouterAddr().String(), ctl.AdminAddr().String()
	routers := []*itest.Router{
		itest.StartRouter(t, itest.RouterConfig(t, "r1", t.TempDir(), addr)),
		itest.StartRouter(t, itest.RouterConfig(t, "r2", t.TempDir(), addr)),
	}
	before := make([]router.Status, len(routers))
	for i, r := range routers {
		before[i] = itest.WaitRouterAt(t, r, ctl.MustStatus(t))
	}

	// The routers stream while the garbage arrives.
	var committed atomic.Uint64
	var wg sync.WaitGroup
	wctx, stopWriter := context.WithCancel(ctx)
	defer func() { stopWriter(); wg.Wait() }()
	wg.Go(func() {
		for seq := uint64(0); wctx.Err() == nil; seq++ {
			if _, err := ctl.Commit(wctx, randomChanges(rng, seq)); err != nil {
				if wctx.Err() == nil {
					t.Errorf("commit: %v", err)
				}
				return
			}
			committed.Add(1)
			time.Sleep(time.Millisecond)
		}
	})

	cases := []struct {
		name string
		// handshake: send a valid Hello first and take the Welcome.
		handshake bool
		send      []byte
		// closeWrite half-closes after send (a frame cut short).
		closeWrite bool
		// code is the Error frame expected before the close; 0: none.
		code wire.ErrorCode
		// reason labels the rejection in the controller's metrics.
		reason string
	}{
		{name: "an HTTP request", send: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
			code: wire.ErrCodeFrameTooLarge, reason: "too_large"},
		{name: "length 0", send: []byte{0, 0, 0, 0}, code: wire.ErrCodeMalformed, reason: "malformed"},
		{name: "unknown type byte", send: rawFrame(0x7f, 0x90), code: wire.ErrCodeMalformed, reason: "malformed"},
		{name: "hello body nil", send: rawFrame(0x01, 0xc0), code: wire.ErrCodeMalformed, reason: "malformed"},
		{name: "hello body a string", send: rawFrame(0x01, 0xa3, 'a', 'b', 'c'), code: wire.ErrCodeMalformed, reason: "malformed"},
		{name: "array count beyond the payload", send: rawFrame(0x01, 0xdd, 0x7f, 0xff, 0xff, 0xff),
			code: wire.ErrCodeMalformed, reason: "malformed"},
		{name: "hello with trailing garbage", send: rawFrame(append(helloBytes(t, "trail")[wire.FrameHeaderSize:], 0xc0)...),
			code: wire.ErrCodeMalformed, reason: "malformed"},
		{name: "extra field nested 1000 deep", send: nestedHello(t, 1000), code: wire.ErrCodeMalformed, reason: "malformed"},
		{name: "ack before hello", send: rawFrame(0x0a, 0x93, 0x90, 0x00, 0x00), code: wire.ErrCodeProtocol, reason: "unexpected"},
		{name: "hello without router id", send: func() []byte {
			b, _ := wire.EncodeFrame(nil, freshHello(""))
			return b
		}(), code: wire.ErrCodeProtocol, reason: "bad_hello"},
		{name: "frame cut short", send: []byte{0, 0, 0, 0x10, 0x01, 0x99}, closeWrite: true},
		{name: "silence"},
		{name: "malformed ack while streaming", handshake: true, send: rawFrame(0x0a, 0x93, 0xc1, 0xc1, 0xc1),
			code: wire.ErrCodeMalformed, reason: "malformed"},
		{name: "oversized frame while streaming", handshake: true, send: []byte{0x7f, 0xff, 0xff, 0xff},
			code: wire.ErrCodeFrameTooLarge, reason: "too_large"},
		{name: "second hello while streaming", handshake: true, send: helloBytes(t, "again"),
			code: wire.ErrCodeProtocol, reason: "unexpected"},
	}
	metricOf := func(r string) string { return fmt.Sprintf("indexgate_controller_frames_rejected_total{reason=%q}", r) }
	wantRejected := map[string]float64{}
	for _, r := range []string{"too_large", "malformed", "unexpected", "bad_hello"} {
		wantRejected[r] = metric(t, admin, metricOf(r))
	}
	for i, tc := range cases {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn := wire.NewConn(nc, wire.ConnOptions{})
		if tc.handshake {
			if err := conn.Write(ctx, freshHello(fmt.Sprintf("raw-%d", i))); err != nil {
				t.Fatal(err)
			}
			if m, err := conn.Read(ctx); err != nil {
				t.Fatalf("%s: handshake: %v", tc.name, err)
			} else if _, ok := m.(*wire.Welcome); !ok {
				t.Fatalf("%s: handshake: %T %+v, want Welcome", tc.name, m, m)
			}
		}
		if _, err := nc.Write(tc.send); err != nil {
			t.Fatalf("%s: send: %v", tc.name, err)
		}
		if tc.closeWrite {
			if err := nc.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
		}
		// Whatever the controller still streams, then its Error (if
		// any), then the close.
		var got *wire.Error
		for {
			m, err := conn.Read(ctx)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("%s: the connection ended with %v, want a close (EOF)", tc.name, err)
				}
				break
			}
			if e, ok := m.(*wire.Error); ok && got == nil {
				got = e
			}
		}
		conn.Close()
		switch {
		case tc.code == 0 && got != nil:
			t.Errorf("%s: Error %v, want the connection closed without one", tc.name, got)
		case tc.code != 0 && (got == nil || got.Code != tc.code):
			t.Errorf("%s: Error %v, want code %v", tc.name, got, tc.code)
		}
		if tc.reason != "" {
			wantRejected[tc.reason]++
		}
	}
	for r, want := range wantRejected {
		if got := metric(t, admin, metricOf(r)); got != want {
			t.Errorf("%s = %v, want %v", metricOf(r), got, want)
		}
	}

	stopWriter()
	wg.Wait()
	commitN(t, ctl, rng, 10)
	st := ctl.MustStatus(t)
	for i, r := range routers {
		rs := itest.WaitRouterAt(t, r, st)
		if !rs.Connected || !rs.ConnectedSince.Equal(before[i].ConnectedSince) {
			t.Errorf("%s: session changed (connected %v since %v, was since %v)", rs.ID, rs.Connected, rs.ConnectedSince, before[i].ConnectedSince)
		}
		if want := (router.Counters{Applied: st.ChangeSets, InitialSyncs: 1}); rs.Counters != want {
			t.Errorf("%s: counters %+v, want %+v", rs.ID, rs.Counters, want)
		}
	}
	t.Logf("%d change sets streamed while %d raw clients misbehaved", st.ChangeSets, len(cases))
}
