package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

// guard bounds every wait in these tests so a bug fails the test instead of
// hanging it. It is a deadlock guard, not a speed assertion: nothing here
// measures how long anything took.
const guard = 30 * time.Second

// testConfig is a Config on 127.0.0.1:0 with a fresh data dir.
func testConfig(t testing.TB) Config {
	return Config{
		DataDir:    t.TempDir(),
		ListenAddr: "127.0.0.1:0",
		AdminAddr:  "127.0.0.1:0",
		Insecure:   true,
		NoSync:     true,
	}
}

// running is a controller whose Run goroutine the test owns.
type running struct {
	*Controller
	cancel context.CancelFunc
	done   chan error
}

// startController creates and runs a controller; the cleanup stops it.
func startController(t testing.TB, cfg Config) *running {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return runController(t, c)
}

func runController(t testing.TB, c *Controller) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Controller: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	waitFor(t, "Run to start", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.started
	})
	return r
}

// stop ends Run and closes the controller; repeated calls are no-ops.
func (r *running) stop(t testing.TB) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(guard):
		t.Fatalf("Run did not return after cancel")
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	t.Cleanup(cancel)
	return ctx
}

func put(kind, id, value string) model.Change {
	return model.Change{Op: model.OpPut, Kind: kind, ID: id, Value: value}
}

func del(kind, id string) model.Change {
	return model.Change{Op: model.OpDelete, Kind: kind, ID: id}
}

// commit commits changes and returns the index.
func commit(t testing.TB, c *running, changes ...model.Change) uint64 {
	t.Helper()
	res, err := c.Commit(ctxT(t), changes)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return res.Index
}

// commitN commits n single-put change sets (kind "svc", ids prefix-i).
func commitN(t testing.TB, c *running, prefix string, n int) uint64 {
	t.Helper()
	var last uint64
	for i := range n {
		last = commit(t, c, put("svc", fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("v%d", i)))
	}
	return last
}

func status(t testing.TB, c *running) Status {
	t.Helper()
	st, err := c.Status(ctxT(t))
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	return st
}

// httpDo sends a request to the admin API and returns status and body.
func httpDo(t testing.TB, c *running, method, path string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, "http://"+c.AdminAddr().String()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// hello is a router's Hello with filters for both types at the given
// positions; current is the first position's type.
func hello(id string, ps ...wire.Position) *wire.Hello {
	h := &wire.Hello{
		ProtoMin: wire.MinProtocol, ProtoMax: wire.MaxProtocol, RouterID: id,
		IndexTypes: []abi.IndexType{abi.IndexLegacy, abi.IndexHA}, ABIVersions: []uint32{abi.Version},
		Positions: ps,
	}
	if len(ps) > 0 {
		h.Current = ps[0].Type
	}
	return h
}

func legacyAt(i uint64, tl abi.Timeline) wire.Position {
	return wire.Position{Type: abi.IndexLegacy, Index: i, Timeline: tl}
}

// fakeRouter is a minimal router speaking package wire: it keeps a map of
// entities and its legacy position, enough to check what the controller
// sends.
type fakeRouter struct {
	t        testing.TB
	conn     *wire.Conn
	welcome  *wire.Welcome
	entities map[string]string
	pos      wire.Position
	// pending holds a frame read ahead by a helper.
	pending wire.Message
}

// dial connects to c's router port without a handshake.
func dial(t testing.TB, c *running) *wire.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", c.RouterAddr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn := wire.NewConn(nc, wire.ConnOptions{})
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// connect dials, sends h and reads the Welcome.
func connect(t testing.TB, c *running, h *wire.Hello) *fakeRouter {
	t.Helper()
	conn := dial(t, c)
	if err := conn.Write(ctxT(t), h); err != nil {
		t.Fatalf("write hello: %v", err)
	}
	r := &fakeRouter{t: t, conn: conn, entities: map[string]string{}}
	if p, ok := routerPosition(h.Positions, h.Current); ok {
		r.pos = p
	}
	m := r.read()
	w, ok := m.(*wire.Welcome)
	if !ok {
		t.Fatalf("want welcome, got %T %+v", m, m)
	}
	r.welcome = w
	return r
}

// read returns the next frame other than a Heartbeat.
func (r *fakeRouter) read() wire.Message {
	r.t.Helper()
	if m := r.pending; m != nil {
		r.pending = nil
		return m
	}
	for {
		m, err := r.conn.Read(ctxT(r.t))
		if err != nil {
			r.t.Fatalf("router read: %v", err)
		}
		if _, ok := m.(*wire.Heartbeat); !ok {
			return m
		}
	}
}

// fullState reads a full state transfer and adopts it.
func (r *fakeRouter) fullState() (*wire.FullStateBegin, *wire.FullStateEnd, int) {
	r.t.Helper()
	m := r.read()
	begin, ok := m.(*wire.FullStateBegin)
	if !ok {
		r.t.Fatalf("want full-state-begin, got %T %+v", m, m)
	}
	clear(r.entities)
	chunks := 0
	for {
		switch m := r.read().(type) {
		case *wire.FullStateChunk:
			chunks++
			for _, e := range m.Entities {
				r.entities[e.Kind+"/"+e.ID] = e.Value
			}
		case *wire.FullStateEnd:
			if m.Entities != begin.Entities || uint64(len(r.entities)) != m.Entities {
				r.t.Fatalf("full state: begin says %d entities, end %d, received %d", begin.Entities, m.Entities, len(r.entities))
			}
			if d := digestOf(r.t, r.entities); d != m.Digest {
				r.t.Fatalf("full state digest %s, received entities digest to %s", m.Digest, d)
			}
			r.pos, _ = routerPosition(begin.Positions, begin.Mode)
			return begin, m, chunks
		default:
			r.t.Fatalf("inside a full state: unexpected %T", m)
		}
	}
}

// until reads change sets until the router's position reaches index,
// applying them; it fails on a gap, a wrong type or a timeline change.
func (r *fakeRouter) until(index uint64) []wire.ChangeSet {
	r.t.Helper()
	var got []wire.ChangeSet
	for r.pos.Index < index {
		m := r.read()
		b, ok := m.(*wire.Batch)
		if !ok {
			r.t.Fatalf("want batch (at %d, waiting for %d), got %T %+v", r.pos.Index, index, m, m)
		}
		for _, cs := range b.Sets {
			h := cs.Header
			if h.Type != abi.IndexLegacy || h.Timeline != r.pos.Timeline || h.PrevIndex != r.pos.Index {
				r.t.Fatalf("change set %+v does not follow %s", h, r.pos)
			}
			for _, ch := range cs.Changes {
				if ch.Op == model.OpPut {
					r.entities[ch.Kind+"/"+ch.ID] = ch.Value
				} else {
					delete(r.entities, ch.Kind+"/"+ch.ID)
				}
			}
			r.pos.Index = h.Index
			got = append(got, cs)
		}
	}
	return got
}

// ack sends an Ack of the router's position.
func (r *fakeRouter) ack(applied uint64) {
	r.t.Helper()
	if err := r.conn.Write(ctxT(r.t), &wire.Ack{Positions: []wire.Position{r.pos}, Current: r.pos.Type, Applied: applied}); err != nil {
		r.t.Fatalf("ack: %v", err)
	}
}

// expectError reads frames until an Error and then the connection's end.
func expectError(t testing.TB, conn *wire.Conn, code wire.ErrorCode) *wire.Error {
	t.Helper()
	for {
		m, err := conn.Read(ctxT(t))
		if err != nil {
			t.Fatalf("want error %s, read failed: %v", code, err)
		}
		e, ok := m.(*wire.Error)
		if !ok {
			continue
		}
		if e.Code != code {
			t.Fatalf("want error %s, got %s: %s", code, e.Code, e.Message)
		}
		expectClosed(t, conn)
		return e
	}
}

// expectClosed reads until the controller closes the connection.
func expectClosed(t testing.TB, conn *wire.Conn) {
	t.Helper()
	for {
		_, err := conn.Read(ctxT(t))
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			t.Fatalf("want the connection closed, got %v", err)
		}
		return
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}

// digestOf computes the model digest of entities keyed "kind/id" through a
// scratch model store, the same code a router uses.
func digestOf(t testing.TB, entities map[string]string) string {
	t.Helper()
	db, err := model.Open(filepath.Join(t.TempDir(), "digest.db"), model.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var d string
	err = db.Update(context.Background(), func(tx *model.Tx) error {
		var chs []model.Change
		for k, v := range entities {
			kind, id, _ := cut(k)
			chs = append(chs, put(kind, id, v))
		}
		if len(chs) > 0 {
			if err := tx.Apply(chs); err != nil {
				return err
			}
		}
		var err error
		d, err = tx.Digest()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func cut(k string) (string, string, bool) {
	for i := range len(k) {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

// entitiesOf returns the controller's entities keyed "kind/id" via the
// admin API.
func entitiesOf(t testing.TB, c *running, query string) map[string]string {
	t.Helper()
	code, body := httpDo(t, c, http.MethodGet, "/v1/entities"+query, nil)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/entities: %d %s", code, body)
	}
	var es []model.Entity
	if err := json.Unmarshal(body, &es); err != nil {
		t.Fatalf("GET /v1/entities: %v: %s", err, body)
	}
	out := map[string]string{}
	for _, e := range es {
		out[e.Kind+"/"+e.ID] = e.Value
	}
	return out
}

// waitFor polls cond until it holds. It is a deadlock guard, not a timing
// assertion: conditions that depend on another goroutine (an ack being
// processed) become true eventually or the test fails after guard.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
