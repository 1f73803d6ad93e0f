package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/internal/itest"
	"github.com/indexgate/indexgate/wire"
)

// TestVersionMismatchController connects a raw client that speaks only
// protocol versions 2 and 3 while a real router streams: the controller
// answers Error{version} naming both ranges, closes, counts the refusal,
// and goes on serving the router.
func TestVersionMismatchController(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	rng := newRand(t)
	ctl := itest.StartController(t, itest.ControllerConfig(t.TempDir()))
	r := itest.StartRouter(t, itest.RouterConfig(t, "r1", t.TempDir(), ctl.RouterAddr().String()))
	commitN(t, ctl, rng, 10)
	before := itest.WaitRouterAt(t, r, ctl.MustStatus(t))
	const rejected = `indexgate_controller_frames_rejected_total{reason="version"}`
	rejected0 := metric(t, ctl.AdminAddr().String(), rejected)

	conn := dial(t, ctl.RouterAddr().String())
	hello := &wire.Hello{ProtoMin: 2, ProtoMax: 3, RouterID: "from-the-future",
		IndexTypes: abi.IndexTypes[:], ABIVersions: []uint32{abi.Version}}
	if err := conn.Write(ctx, hello); err != nil {
		t.Fatal(err)
	}
	m, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read the answer to a version 2–3 Hello: %v", err)
	}
	e, ok := m.(*wire.Error)
	if !ok || e.Code != wire.ErrCodeVersion {
		t.Fatalf("answer %T %+v, want Error{version}", m, m)
	}
	want := fmt.Sprintf("[%d, %d]", wire.MinProtocol, wire.MaxProtocol)
	if !strings.Contains(e.Message, want) || !strings.Contains(e.Message, "[2, 3]") {
		t.Errorf("Error message %q does not name both ranges (%s and [2, 3])", e.Message, want)
	}
	if _, err := conn.Read(ctx); !errors.Is(err, io.EOF) {
		t.Errorf("after the Error: %v, want the connection closed (EOF)", err)
	}
	if d := metric(t, ctl.AdminAddr().String(), rejected) - rejected0; d != 1 {
		t.Errorf("%s grew by %v, want 1", rejected, d)
	}

	commitN(t, ctl, rng, 10)
	after := itest.WaitRouterAt(t, r, ctl.MustStatus(t))
	if !after.Connected || !after.ConnectedSince.Equal(before.ConnectedSince) {
		t.Errorf("router session changed: connected %v since %v, was since %v", after.Connected, after.ConnectedSince, before.ConnectedSince)
	}
}

// TestVersionMismatchRouter points a real router at fake controllers that
// cannot agree on a version with it. The router must log the refusal, stay
// up and disconnected, and retry at its maximum backoff — a refusal that
// only a new deployment cures must not become a reconnect storm.
func TestVersionMismatchRouter(t *testing.T) {
	for _, tc := range []struct {
		name string
		// answer is the fake controller's reply to the router's Hello.
		answer wire.Message
		// routerError: the router must answer with Error{version}.
		routerError bool
	}{
		{name: "controller refuses", answer: &wire.Error{Code: wire.ErrCodeVersion,
			Message: "no common protocol version: controller [2, 3], router [1, 1]"}},
		{name: "controller picks an unsupported version", routerError: true,
			answer: &wire.Welcome{Proto: 2, ClusterID: "c", NodeID: "fake", Mode: abi.IndexLegacy, Resume: wire.ResumeFullState}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const backoffMax = 100 * time.Millisecond
			fc := startVersionFake(t, tc.answer)
			logs := &recorder{}
			cfg := itest.RouterConfig(t, "r1", t.TempDir(), fc.addr)
			cfg.Logger = slog.New(logs)
			cfg.BackoffMin, cfg.BackoffMax = time.Millisecond, backoffMax
			r := itest.StartRouter(t, cfg)

			const attempts = 4
			var as []attempt
			itest.WaitFor(t, fmt.Sprintf("%d connection attempts", attempts), func() bool {
				as = fc.attempts()
				return len(as) >= attempts
			})
			for i, a := range as {
				if a.hello.ProtoMin != wire.MinProtocol || a.hello.ProtoMax != wire.MaxProtocol {
					t.Errorf("attempt %d: Hello offers [%d, %d]", i, a.hello.ProtoMin, a.hello.ProtoMax)
				}
				if tc.routerError && (a.reply == nil || a.reply.Code != wire.ErrCodeVersion) {
					t.Errorf("attempt %d: router answered %+v, want Error{version}", i, a.reply)
				}
				// The jitter keeps a delay in [max/2, max]: anything
				// shorter is the short backoff of a transient failure.
				if i > 0 {
					if gap := a.at.Sub(as[i-1].answered); gap < backoffMax/2 {
						t.Errorf("attempt %d came %v after the refusal, want at least %v (maximum backoff)", i, gap, backoffMax/2)
					}
				}
			}
			st := r.MustStatus(t)
			if st.Connected || !strings.Contains(st.LastError, "version") {
				t.Errorf("router status connected=%v lastError=%q, want disconnected with a version error", st.Connected, st.LastError)
			}
			if !logs.contains(slog.LevelWarn, "version") {
				t.Errorf("router logged no warning about the version; logs:\n%s", logs)
			}
		})
	}
}

func dial(t testing.TB, addr string) *wire.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := wire.NewConn(nc, wire.ConnOptions{})
	t.Cleanup(func() { conn.Close() })
	return conn
}

// attempt is one router connection to a versionFake.
type attempt struct {
	at, answered time.Time
	hello        *wire.Hello
	reply        *wire.Error // what the router sent back, if anything
}

// versionFake is a controller that answers every Hello with one fixed
// message, then reads what the router says back and closes.
type versionFake struct {
	addr   string
	answer wire.Message
	mu     sync.Mutex
	as     []attempt
}

func startVersionFake(t *testing.T, answer wire.Message) *versionFake {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fc := &versionFake{addr: ln.Addr().String(), answer: answer}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { fc.serve(nc) })
		}
	})
	return fc
}

func (fc *versionFake) serve(nc net.Conn) {
	a := attempt{at: time.Now()}
	conn := wire.NewConn(nc, wire.ConnOptions{ReadTimeout: itest.Guard})
	defer conn.Close()
	defer func() {
		fc.mu.Lock()
		fc.as = append(fc.as, a)
		fc.mu.Unlock()
	}()
	ctx := context.Background()
	m, err := conn.Read(ctx)
	if err != nil {
		return
	}
	a.hello, _ = m.(*wire.Hello)
	a.answered = time.Now()
	if conn.Write(ctx, fc.answer) != nil {
		return
	}
	// Until the router closes: its Error, if it sends one, comes first.
	if m, err := conn.Read(ctx); err == nil {
		a.reply, _ = m.(*wire.Error)
	}
}

func (fc *versionFake) attempts() []attempt {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return append([]attempt(nil), fc.as...)
}

// recorder is a slog.Handler keeping every record as a line of text.
type recorder struct {
	mu    sync.Mutex
	lines []recorded
	attrs []slog.Attr
}

type recorded struct {
	level slog.Level
	text  string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, recorded{rec.Level, b.String()})
	return nil
}

// WithAttrs and WithGroup drop the context attributes: the tests look
// for words in messages and record attributes only.
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) contains(min slog.Level, word string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if l.level >= min && strings.Contains(l.text, word) {
			return true
		}
	}
	return false
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, l := range r.lines {
		fmt.Fprintf(&b, "%s %s\n", l.level, l.text)
	}
	return b.String()
}
