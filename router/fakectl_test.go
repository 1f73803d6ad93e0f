package router

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/pki"
	"github.com/indexgate/indexgate/wire"
)

// fakeController speaks the controller side of docs/architecture.md's
// session semantics from an in-memory log, over any number of 127.0.0.1
// listeners that share it: resume by replay or full state, batches, mode
// changes, heartbeats. Its hooks inject the failures the router must
// survive.
type fakeController struct {
	t     testing.TB
	ctx   context.Context
	store *model.Store // the controller's model: digests and full states
	tl    abi.Timeline

	// batchMax is the most change sets per Batch; chunk the most entities
	// per FullStateChunk.
	batchMax, chunk int
	heartbeat       time.Duration

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every append
	log     []logEntry
	mode    abi.IndexType
	term    uint64           // raft term of new change sets; 0 means 1
	last    [numTypes]uint64 // last index per type (a mode change's base for the new type)
	top     uint64           // highest index of any type
	hellos  []*wire.Hello
	peers   []string // the router certificate's name per Hello ("" over plaintext)
	welcome []*wire.Welcome
	lns     map[string]*fakeListener
	// skipOnce leaves these indexes out of the next stream that reaches
	// them: a gap.
	skipOnce map[uint64]bool
	// dropAfter, when > 0, closes every session after that many streamed
	// frames.
	dropAfter int
	// onHello may answer a Hello itself (the n-th, from 0): a non-nil
	// message is sent and the connection closed; closeNow closes without
	// an answer.
	onHello func(n int, h *wire.Hello) (reply wire.Message, closeNow bool)

	// stallFull makes full states stop after their first chunk.
	stallFull atomic.Bool
	// askDigest makes the next idle session send a DigestRequest; the
	// reply lands in digestReply.
	askDigest   atomic.Bool
	digestReply *wire.DigestReply

	acks       atomic.Int64
	heartbeats atomic.Int64
	errs       []*wire.Error
	lastAck    *wire.Ack
}

type logEntry struct {
	set *wire.ChangeSet
	mc  *abi.ModeChange
	idx uint64
}

type fakeListener struct {
	ln       net.Listener
	redirect []string // answer every Hello with NotServing to these
	mu       sync.Mutex
	conns    map[net.Conn]bool
	closed   bool
}

func newFakeController(t testing.TB) *fakeController {
	t.Helper()
	s, err := model.Open(filepath.Join(t.TempDir(), "controller.db"), model.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fc := &fakeController{
		t: t, ctx: ctx, store: s, tl: abi.NewTimeline(), batchMax: 4, chunk: 3, heartbeat: 50 * time.Millisecond,
		changed: make(chan struct{}), mode: abi.IndexLegacy, lns: map[string]*fakeListener{}, skipOnce: map[uint64]bool{},
	}
	t.Cleanup(func() {
		cancel()
		fc.mu.Lock()
		for a := range fc.lns {
			fc.mu.Unlock()
			fc.closeListener(a)
			fc.mu.Lock()
		}
		fc.mu.Unlock()
		s.Close()
	})
	return fc
}

// listen serves the log on a new 127.0.0.1 listener and returns its
// address.
func (fc *fakeController) listen() string { return fc.listenOn("127.0.0.1:0", nil) }

// listenRedirect answers every Hello with Error{NotServing, to}.
func (fc *fakeController) listenRedirect(to ...string) string { return fc.listenOn("127.0.0.1:0", to) }

// listenTLS serves the log over TLS with cfg (a controller's ServerTLS).
// Each session records the name of the router certificate it saw.
func (fc *fakeController) listenTLS(cfg *tls.Config) string {
	return fc.listenWith("127.0.0.1:0", nil, cfg)
}

func (fc *fakeController) listenOn(addr string, redirect []string) string {
	return fc.listenWith(addr, redirect, nil)
}

func (fc *fakeController) listenWith(addr string, redirect []string, tcfg *tls.Config) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fc.t.Fatal(err)
	}
	if tcfg != nil {
		ln = tls.NewListener(ln, tcfg)
	}
	fl := &fakeListener{ln: ln, redirect: redirect, conns: map[net.Conn]bool{}}
	fc.mu.Lock()
	fc.lns[ln.Addr().String()] = fl
	fc.mu.Unlock()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			fl.mu.Lock()
			if fl.closed {
				fl.mu.Unlock()
				nc.Close()
				return
			}
			fl.conns[nc] = true
			fl.mu.Unlock()
			go func() {
				defer func() {
					fl.mu.Lock()
					delete(fl.conns, nc)
					fl.mu.Unlock()
					nc.Close()
				}()
				fc.serve(nc, fl)
			}()
		}
	}()
	return ln.Addr().String()
}

// closeListener stops a listener and drops its connections: a controller
// that went away.
func (fc *fakeController) closeListener(addr string) {
	fc.mu.Lock()
	fl := fc.lns[addr]
	delete(fc.lns, addr)
	fc.mu.Unlock()
	if fl == nil {
		return
	}
	fl.mu.Lock()
	fl.closed = true
	fl.ln.Close()
	for c := range fl.conns {
		c.Close()
	}
	fl.mu.Unlock()
}

// dropConnections closes every live session, keeping the listeners.
func (fc *fakeController) dropConnections() {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for _, fl := range fc.lns {
		fl.mu.Lock()
		for c := range fl.conns {
			c.Close()
		}
		fl.mu.Unlock()
	}
}

// appendSet commits a change set of the current mode and returns its
// index.
func (fc *fakeController) appendSet(changes ...model.Change) uint64 {
	fc.t.Helper()
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.appendLocked(changes)
}

func (fc *fakeController) appendLocked(changes []model.Change) uint64 {
	idx := fc.top + 1
	h := abi.Header{Index: idx, PrevIndex: fc.last[fc.mode], Type: fc.mode, Term: max(fc.term, 1), Timeline: fc.tl}
	if err := fc.store.Update(context.Background(), func(tx *model.Tx) error { return tx.Apply(changes) }); err != nil {
		fc.t.Fatal(err)
	}
	fc.log = append(fc.log, logEntry{set: &wire.ChangeSet{Header: h, Changes: changes}, idx: idx})
	fc.last[fc.mode], fc.top = idx, idx
	fc.notify()
	return idx
}

// appendN commits n change sets one by one, each putting one key.
func (fc *fakeController) appendN(n int) {
	for range n {
		fc.mu.Lock()
		fc.appendLocked(fc.nextChanges())
		fc.mu.Unlock()
	}
}

// appendAtOnce commits n change sets that sessions see together.
func (fc *fakeController) appendAtOnce(n int) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for range n {
		fc.appendLocked(fc.nextChanges())
	}
}

func (fc *fakeController) nextChanges() []model.Change {
	k := "k" + strconv.FormatUint(fc.top+1, 10)
	return []model.Change{put("svc", k, "v"+k), put("cnt", "last", k)}
}

// setTerm sets the raft term of the change sets appended from now on.
func (fc *fakeController) setTerm(term uint64) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.term = term
}

// switchMode records a mode change to to at the current top index.
func (fc *fakeController) switchMode(to abi.IndexType) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	mc := &abi.ModeChange{From: fc.mode, To: to, LastIndex: fc.top, BaseIndex: fc.top, Timeline: fc.tl}
	fc.log = append(fc.log, logEntry{mc: mc, idx: fc.top})
	fc.mode = to
	fc.last[to] = fc.top
	fc.notify()
}

func (fc *fakeController) notify() {
	close(fc.changed)
	fc.changed = make(chan struct{})
}

func (fc *fakeController) changeSets() uint64 {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	n := uint64(0)
	for _, e := range fc.log {
		if e.set != nil {
			n++
		}
	}
	return n
}

func (fc *fakeController) digest() (string, uint64) {
	var d string
	var n uint64
	err := fc.store.View(context.Background(), func(tx *model.Tx) error {
		var err error
		d, err = tx.Digest()
		n = tx.Count()
		return err
	})
	if err != nil {
		fc.t.Fatal(err)
	}
	return d, n
}

func (fc *fakeController) position(t abi.IndexType) uint64 {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.last[t]
}

func (fc *fakeController) helloList() []*wire.Hello {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return append([]*wire.Hello(nil), fc.hellos...)
}

func (fc *fakeController) welcomes() []*wire.Welcome {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return append([]*wire.Welcome(nil), fc.welcome...)
}

// serve runs one session.
func (fc *fakeController) serve(nc net.Conn, fl *fakeListener) {
	ctx, cancel := context.WithCancel(fc.ctx)
	defer cancel()
	conn := wire.NewConn(nc, wire.ConnOptions{})
	m, err := conn.Read(ctx)
	if err != nil {
		return
	}
	hello, ok := m.(*wire.Hello)
	if !ok {
		return
	}
	var peer string
	if tc, ok := nc.(*tls.Conn); ok {
		_, peer, _ = pki.PeerName(tc.ConnectionState())
	}
	fc.mu.Lock()
	n := len(fc.hellos)
	fc.hellos = append(fc.hellos, hello)
	fc.peers = append(fc.peers, peer)
	onHello := fc.onHello
	fc.mu.Unlock()
	if fl.redirect != nil {
		_ = conn.Write(ctx, &wire.Error{Code: wire.ErrCodeNotServing, Message: "not the leader", Redirect: fl.redirect})
		return
	}
	if onHello != nil {
		reply, closeNow := onHello(n, hello)
		if closeNow {
			return
		}
		if reply != nil {
			_ = conn.Write(ctx, reply)
			return
		}
	}

	// Acks and heartbeats from the router.
	go func() {
		defer cancel()
		for {
			m, err := conn.Read(ctx)
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *wire.Ack:
				fc.mu.Lock()
				fc.lastAck = m
				fc.mu.Unlock()
				fc.acks.Add(1)
			case *wire.Heartbeat:
				fc.heartbeats.Add(1)
			case *wire.DigestReply:
				fc.mu.Lock()
				fc.digestReply = m
				fc.mu.Unlock()
			case *wire.Error:
				fc.mu.Lock()
				fc.errs = append(fc.errs, m)
				fc.mu.Unlock()
				return
			}
		}
	}()

	fc.mu.Lock()
	var p wire.Position
	found := false
	for _, q := range hello.Positions {
		if q.Type == hello.Current {
			p, found = q, true
		}
	}
	replay := found && p.Timeline == fc.tl && p.Index <= fc.top
	w := &wire.Welcome{Proto: 1, NodeID: "fake", Mode: fc.mode, Timeline: fc.tl, Index: fc.last[fc.mode], Resume: wire.ResumeReplay}
	cursor := 0
	if replay {
		// Every entry after (p.Index, 0): a mode change recorded at
		// p.Index is sent again.
		for cursor < len(fc.log) {
			e := fc.log[cursor]
			if e.idx > p.Index || (e.idx == p.Index && e.mc != nil) {
				break
			}
			cursor++
		}
	} else {
		w.Resume = wire.ResumeFullState
	}
	fc.welcome = append(fc.welcome, w)
	var full []wire.Message
	if !replay {
		full, cursor = fc.fullStateLocked()
	}
	fc.mu.Unlock()

	if err := conn.Write(ctx, w); err != nil {
		return
	}
	for i, f := range full {
		if i == 2 && fc.stallFull.Load() {
			<-ctx.Done()
			return
		}
		if err := conn.Write(ctx, f); err != nil {
			return
		}
	}
	fc.stream(ctx, conn, cursor)
}

// fullStateLocked snapshots the model with the log position it matches.
func (fc *fakeController) fullStateLocked() ([]wire.Message, int) {
	var ents []model.Entity
	var d string
	err := fc.store.View(context.Background(), func(tx *model.Tx) error {
		if err := tx.ForEach(func(e model.Entity) error { ents = append(ents, e); return nil }); err != nil {
			return err
		}
		var err error
		d, err = tx.Digest()
		return err
	})
	if err != nil {
		fc.t.Error(err)
		return nil, len(fc.log)
	}
	var ps []wire.Position
	for _, t := range abi.IndexTypes {
		if fc.last[t] > 0 || t == fc.mode {
			ps = append(ps, wire.Position{Type: t, Index: fc.last[t], Timeline: fc.tl})
		}
	}
	out := []wire.Message{&wire.FullStateBegin{
		Mode: fc.mode, Timeline: fc.tl, Index: fc.last[fc.mode], Positions: ps, Entities: uint64(len(ents)),
	}}
	for rest := ents; len(rest) > 0; {
		k := min(fc.chunk, len(rest))
		out = append(out, &wire.FullStateChunk{Entities: rest[:k]})
		rest = rest[k:]
	}
	return append(out, &wire.FullStateEnd{Entities: uint64(len(ents)), Digest: d}), len(fc.log)
}

// stream sends the log from cursor on, then live entries, with
// heartbeats while idle.
func (fc *fakeController) stream(ctx context.Context, conn *wire.Conn, cursor int) {
	sent := 0
	for {
		fc.mu.Lock()
		entries := fc.log[cursor:]
		changed := fc.changed
		dropAfter := fc.dropAfter
		var frames []wire.Message
		var b *wire.Batch
		for _, e := range entries {
			if e.mc != nil {
				b = nil
				frames = append(frames, &wire.ModeChange{Change: *e.mc})
				continue
			}
			if fc.skipOnce[e.idx] {
				delete(fc.skipOnce, e.idx)
				continue
			}
			if b == nil || len(b.Sets) == fc.batchMax {
				b = &wire.Batch{}
				frames = append(frames, b)
			}
			b.Sets = append(b.Sets, *e.set)
		}
		cursor += len(entries)
		top := fc.top
		fc.mu.Unlock()

		for _, f := range frames {
			if err := conn.Write(ctx, f); err != nil {
				return
			}
			if sent++; dropAfter > 0 && sent >= dropAfter {
				return
			}
		}
		if len(frames) > 0 {
			continue
		}
		if fc.askDigest.CompareAndSwap(true, false) {
			if err := conn.Write(ctx, &wire.DigestRequest{}); err != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(fc.heartbeat):
			if err := conn.Write(ctx, &wire.Heartbeat{Index: top}); err != nil {
				return
			}
		}
	}
}
