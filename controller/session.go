package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/pki"
	"github.com/indexgate/indexgate/wire"
)

// Session tuning.
const (
	// errorWriteTimeout bounds the best-effort Error frame before a close
	// (docs/protocol.md §11: at most 1 s).
	errorWriteTimeout = time.Second
	// readAhead is how many log entries a session takes per look: enough
	// for a few full Batches.
	readAhead = 4 * maxBatchSets
	// readAheadBytes bounds what one look reads from bbolt.
	readAheadBytes = wire.DefaultMaxFrame
	// maxChunkEntities bounds a FullStateChunk by count
	// (docs/protocol.md §6 suggests 4096).
	maxChunkEntities = 4096
	// entityOverhead is an entity's msgpack framing beyond its three
	// strings: a fixarray byte and three string headers of at most 5 bytes.
	entityOverhead = 16
)

// shuttingDown is the last frame of every session when the controller
// stops (docs/protocol.md §5.1: not serving).
func shuttingDown() *wire.Error {
	return &wire.Error{Code: wire.ErrCodeNotServing, Message: "controller shutting down"}
}

// session is one router connection after its Hello. Two goroutines serve
// it: stream writes the log to the router and heartbeats; readLoop takes
// the router's acks, heartbeats and digest requests. Either one ending
// cancels the other.
type session struct {
	c        *Controller
	conn     *wire.Conn
	id       string
	remote   string
	log      *slog.Logger
	maxFrame int
	cancel   context.CancelFunc
	// batch is stream's reusable Batch slice.
	batch []wire.ChangeSet
	// timeline is the history the router is being brought along, and gen
	// the hub generation (store replacements) the cursor was checked
	// against.
	timeline abi.Timeline
	gen      uint64

	// digestWaiters are the Validate calls waiting for a DigestReply,
	// oldest first.
	digestMu      sync.Mutex
	digestWaiters []chan *wire.DigestReply
}

// serveConn runs one router connection from accept to close.
func (c *Controller) serveConn(ctx context.Context, nc net.Conn) {
	tc, _ := nc.(*tls.Conn)
	if tc != nil {
		// Handshake now, bounded, rather than lazily at the first read:
		// a refused certificate or a plaintext client is then reported
		// as what it is.
		hctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
		err := pki.Handshake(hctx, tc)
		cancel()
		if err != nil {
			c.met.rejected.WithLabelValues(rejectTLS).Inc()
			c.log.Warn("router connection refused: TLS handshake failed", "remote", nc.RemoteAddr().String(), "err", err)
			_ = nc.Close()
			return
		}
	}
	conn := wire.NewConn(nc, wire.ConnOptions{
		MaxFrame:     c.cfg.MaxFrame,
		ReadTimeout:  c.cfg.IdleTimeout,
		WriteTimeout: c.cfg.WriteTimeout,
	})
	defer conn.Close()
	remote := nc.RemoteAddr().String()
	log := c.log.With("remote", remote)

	hctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	msg, err := conn.Read(hctx)
	cancel()
	if err != nil {
		c.readFailed(conn, log, err, "waiting for hello")
		return
	}
	hello, ok := msg.(*wire.Hello)
	if !ok {
		c.reject(conn, log, rejectUnexpected, &wire.Error{Code: wire.ErrCodeProtocol,
			Message: fmt.Sprintf("the first frame must be a hello, got %s", msg.Type())})
		return
	}
	log = log.With("router", hello.RouterID)
	if err := checkRouterCert(tc, hello.RouterID); err != nil {
		c.reject(conn, log, rejectUnauthorized, &wire.Error{Code: wire.ErrCodeUnauthorized,
			Message: fmt.Sprintf("router id %q is not the one its certificate names: %v", hello.RouterID, err)})
		return
	}

	if !c.acceptsRouters() {
		// docs/protocol.md §5.1 item 5: an HA member that is not serving
		// (a new member before its first snapshot, one without a leader, a
		// retired member) sends the router elsewhere.
		to := c.redirects(ctx)
		log.Info("router redirected: this controller does not serve routers now", "role", role(c.role.Load()).String(), "redirect", to)
		c.sendError(conn, &wire.Error{Code: wire.ErrCodeNotServing, Message: "this controller does not serve routers now", Redirect: to})
		return
	}

	var welcome *wire.Welcome
	var dec resumeDecision
	var werr *wire.Error
	var gen, ahead uint64
	for attempt := 0; ; attempt++ {
		// Taken before the decision: a store replaced after it makes the
		// session re-check its cursor.
		gen = c.hub.generation()
		welcome, dec, werr, ahead, err = c.decide(ctx, hello)
		if err != nil || werr != nil || ahead == 0 || role(c.role.Load()) != roleHA || attempt > 0 {
			break
		}
		// An HA member behind the router (it failed over from a member
		// further ahead): the entries are committed and on their way, so
		// wait for them rather than send a full state.
		c.waitIndex(ctx, ahead, catchUpWait)
	}
	if err == nil && werr == nil && ahead != 0 && role(c.role.Load()) == roleHA {
		to := c.redirects(ctx)
		log.Info("router is ahead of this member; redirecting it", "routerIndex", ahead, "index", welcome.Index, "redirect", to)
		c.sendError(conn, &wire.Error{Code: wire.ErrCodeNotServing,
			Message: fmt.Sprintf("this member is at %d, behind the router's %d", welcome.Index, ahead), Redirect: to})
		return
	}
	if err != nil {
		if ctx.Err() != nil {
			c.sendError(conn, shuttingDown())
			return
		}
		log.Error("handshake: reading the store failed", "err", err)
		c.sendError(conn, &wire.Error{Code: wire.ErrCodeInternal, Message: "controller storage error"})
		return
	}
	if werr != nil {
		reason := rejectBadHello
		switch werr.Code {
		case wire.ErrCodeVersion:
			reason = rejectVersion
		case wire.ErrCodeUnauthorized:
			reason = rejectUnsupported
		}
		if werr.Code == wire.ErrCodeVersion {
			log.Warn("router refused: no common protocol version",
				"controllerMin", wire.MinProtocol, "controllerMax", wire.MaxProtocol,
				"routerMin", hello.ProtoMin, "routerMax", hello.ProtoMax)
		}
		c.reject(conn, log, reason, werr)
		return
	}

	maxFrame := c.cfg.MaxFrame
	if hello.MaxFrame != 0 {
		maxFrame = min(maxFrame, int(hello.MaxFrame))
	}
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	s := &session{c: c, conn: conn, id: hello.RouterID, remote: remote, log: log, maxFrame: maxFrame, cancel: scancel,
		timeline: welcome.Timeline, gen: gen}
	acked, _ := routerPosition(hello.Positions, hello.Current)
	if old := c.routers.attach(s, acked, dec.kind); old != nil {
		log.Warn("router reconnected while its previous session was open; closing the previous one", "previous", old.remote)
		old.cancel()
	}
	defer c.routers.detach(s)
	log.Info("router connected", "resume", dec.kind.String(), "reason", dec.reason,
		"positions", fmt.Sprint(hello.Positions), "current", hello.Current.String(), "index", welcome.Index)
	if dec.kind == wire.ResumeReplay {
		c.met.replays.Inc()
	}
	if err := conn.Write(sctx, welcome); err != nil {
		log.Info("router session ended: writing welcome", "err", err)
		return
	}

	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer scancel()
		s.readLoop(sctx)
	}()
	err = s.stream(sctx, dec)
	scancel()
	<-readDone
	switch {
	case ctx.Err() != nil:
		// Tell the router to go elsewhere or retry, rather than let it
		// guess from a closed connection.
		c.sendError(conn, shuttingDown())
		log.Info("router session ended: controller shutting down")
	case err != nil:
		log.Info("router session ended", "err", err)
	default:
		log.Info("router session ended")
	}
}

// catchUpWait bounds how long a handshake waits for an HA member to catch
// up with a router that is ahead of it; it stays well within the router's
// handshake timeout.
const catchUpWait = 3 * time.Second

// decide validates a Hello and decides the resume from one read
// transaction. ahead is the router's index when it is ahead of this
// controller on its timeline and mode (the decision is then a full state).
func (c *Controller) decide(ctx context.Context, hello *wire.Hello) (welcome *wire.Welcome, dec resumeDecision, werr *wire.Error, ahead uint64, err error) {
	err = c.st.view(ctx, func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		proto, e := checkHello(hello, m.mode)
		if e != nil {
			werr = e
			return nil
		}
		in := resumeInput{positions: hello.Positions, current: hello.Current, mode: m.mode, index: m.index(), timeline: m.timeline}
		if p, ok := routerPosition(hello.Positions, hello.Current); ok && p.Timeline == m.timeline {
			if in.follows, err = follows(tx, &m, p); err != nil {
				return err
			}
			if p.Type == m.mode && p.Index > m.index() {
				ahead = p.Index
			}
		}
		dec = decideResume(in)
		welcome = &wire.Welcome{
			Proto: proto, ClusterID: m.clusterID, NodeID: c.nodeID(),
			Mode: m.mode, Timeline: m.timeline, Index: m.index(), Resume: dec.kind,
		}
		return nil
	})
	return welcome, dec, werr, ahead, err
}

// waitIndex waits until the controller's index reaches index, at most d.
func (c *Controller) waitIndex(ctx context.Context, index uint64, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		wake := c.hub.wait()
		if c.hub.lastIndex() >= index {
			return
		}
		select {
		case <-wake:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// readFailed handles a failed Read: an oversize or undecodable frame gets
// an Error frame (docs/protocol.md §11), every other failure (peer gone,
// idle, shutdown) just ends the connection.
func (c *Controller) readFailed(conn *wire.Conn, log *slog.Logger, err error, doing string) {
	switch {
	case errors.Is(err, wire.ErrFrameTooLarge):
		c.reject(conn, log, rejectTooLarge, &wire.Error{Code: wire.ErrCodeFrameTooLarge, Message: err.Error()})
	case errors.Is(err, wire.ErrMalformed):
		c.reject(conn, log, rejectMalformed, &wire.Error{Code: wire.ErrCodeMalformed, Message: err.Error()})
	case errors.Is(err, io.EOF), errors.Is(err, context.Canceled):
		log.Debug("connection closed", "while", doing, "err", err)
	default:
		log.Info("connection closed", "while", doing, "err", err)
	}
}

// reject counts a rejected frame, logs it, and sends the Error frame; the
// caller closes the connection.
func (c *Controller) reject(conn *wire.Conn, log *slog.Logger, reason string, e *wire.Error) {
	c.met.rejected.WithLabelValues(reason).Inc()
	log.Warn("router frame rejected; closing the connection", "code", e.Code.String(), "detail", e.Message)
	c.sendError(conn, e)
}

// sendError writes e best-effort: a short timeout, errors ignored, because
// the connection is closed right after either way.
func (c *Controller) sendError(conn *wire.Conn, e *wire.Error) {
	ctx, cancel := context.WithTimeout(context.Background(), errorWriteTimeout)
	defer cancel()
	_ = conn.Write(ctx, e)
}

// readLoop handles the router's frames until the connection ends.
func (s *session) readLoop(ctx context.Context) {
	for {
		msg, err := s.conn.Read(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.c.readFailed(s.conn, s.log, err, "streaming")
			}
			return
		}
		switch m := msg.(type) {
		case *wire.Ack:
			s.c.routers.acked(s, m)
		case *wire.Heartbeat:
			// Any frame resets the idle timeout; nothing else to do.
		case *wire.DigestRequest:
			if err := s.replyDigest(ctx); err != nil {
				s.log.Info("digest reply failed", "err", err)
				return
			}
		case *wire.DigestReply:
			s.log.Debug("router digest", "position", m.Position.String(), "entities", m.Entities, "digest", m.Digest)
			s.gotDigest(m)
		case *wire.Error:
			s.log.Warn("router sent an error; closing", "code", m.Code.String(), "detail", m.Message)
			return
		default:
			s.c.reject(s.conn, s.log, rejectUnexpected, &wire.Error{Code: wire.ErrCodeProtocol,
				Message: fmt.Sprintf("unexpected %s frame from a router after the handshake", msg.Type())})
			return
		}
	}
}

// replyDigest answers a DigestRequest from one read transaction.
func (s *session) replyDigest(ctx context.Context) error {
	var r wire.DigestReply
	err := s.c.st.view(ctx, func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		d, err := tx.Digest()
		if err != nil {
			return err
		}
		r = wire.DigestReply{Position: wire.Position{Type: m.mode, Index: m.index(), Timeline: m.timeline}, Entities: tx.Count(), Digest: d}
		return nil
	})
	if err != nil {
		return err
	}
	return s.conn.Write(ctx, &r)
}

// stream brings the router up to date per dec and then follows the log
// until ctx ends or a write fails.
func (s *session) stream(ctx context.Context, dec resumeDecision) error {
	var cursor logKey
	afterFull := false
	switch dec.kind {
	case wire.ResumeFullState:
		var err error
		if cursor, err = s.sendFullState(ctx); err != nil {
			return err
		}
		afterFull = true
	case wire.ResumeReplay, wire.ResumeUpToDate:
		// Everything after (p.Index, 0) (docs/architecture.md, "Session
		// semantics"): a mode change recorded at p.Index is re-sent, which
		// filters treat idempotently.
		cursor = logKey{index: dec.from.Index, sub: subChangeSet}
	}
	interval := s.c.cfg.HeartbeatInterval
	hb := time.NewTimer(interval)
	defer hb.Stop()
	for {
		wake := s.c.hub.wait()
		if g := s.c.hub.generation(); g != s.gen {
			// The store was replaced (an HA snapshot restore): streaming
			// goes on from the cursor only if the new store continues it.
			s.gen = g
			ok, err := s.c.continues(ctx, cursor, s.timeline)
			if err != nil {
				return err
			}
			if !ok {
				s.log.Info("the replaced store does not continue this router's stream; sending a full state", "at", cursor.index)
				if cursor, err = s.sendFullState(ctx); err != nil {
					return err
				}
				afterFull = true
				hb.Reset(interval)
				continue
			}
		}
		es, err := s.next(ctx, cursor)
		if errors.Is(err, errBelowFloor) {
			if afterFull {
				// docs/protocol.md §6: the router starts over.
				return fmt.Errorf("the log no longer reaches back to the full state at %d: %w", cursor.index, err)
			}
			s.log.Info("router fell below the log floor; sending a full state", "at", cursor.index)
			if cursor, err = s.sendFullState(ctx); err != nil {
				return err
			}
			afterFull = true
			hb.Reset(interval)
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				s.c.sendError(s.conn, &wire.Error{Code: wire.ErrCodeInternal, Message: "controller storage error"})
			}
			return err
		}
		if len(es) > 0 {
			if err := s.send(ctx, es); err != nil {
				return err
			}
			cursor = es[len(es)-1].key
			afterFull = false
			hb.Reset(interval)
			continue
		}
		if !s.c.serving() {
			// Everything published has been sent (a rollback's mode change
			// included): send the router to where it is served now.
			to := s.c.redirects(ctx)
			s.log.Info("this controller stopped serving routers; redirecting", "redirect", to)
			s.c.sendError(s.conn, &wire.Error{Code: wire.ErrCodeNotServing, Message: "this controller stopped serving routers", Redirect: to})
			return nil
		}
		select {
		case <-wake:
		case <-hb.C:
			if err := s.conn.Write(ctx, &wire.Heartbeat{Index: s.c.hub.lastIndex(), UnixNano: time.Now().UnixNano()}); err != nil {
				return err
			}
			hb.Reset(interval)
		case <-ctx.Done():
			return nil
		}
	}
}

// next returns the log entries after cursor: from the hub's ring when it
// reaches back that far, else from bbolt.
func (s *session) next(ctx context.Context, cursor logKey) ([]*logEntry, error) {
	if es, ok := s.c.hub.since(cursor, readAhead); ok {
		return es, nil
	}
	var es []*logEntry
	err := s.c.st.view(ctx, func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		es, err = readLog(tx, &m, cursor, readAhead, readAheadBytes)
		return err
	})
	return es, err
}

// send writes es as Batch and ModeChange frames within the router's frame
// limit.
func (s *session) send(ctx context.Context, es []*logEntry) error {
	spans, err := planFrames(es, maxBatchSets, s.maxFrame)
	if err != nil {
		s.c.sendError(s.conn, &wire.Error{Code: wire.ErrCodeInternal, Message: err.Error()})
		return err
	}
	var sent uint64
	for _, sp := range spans {
		if sp.mode {
			if err := s.conn.Write(ctx, &wire.ModeChange{Change: *es[sp.start].mode}); err != nil {
				return err
			}
			continue
		}
		s.batch = s.batch[:0]
		for _, e := range es[sp.start:sp.end] {
			s.batch = append(s.batch, *e.set)
		}
		if err := s.conn.Write(ctx, &wire.Batch{Sets: s.batch}); err != nil {
			return err
		}
		sent = es[sp.end-1].key.index
		s.c.routers.sent(s, sent)
	}
	clear(s.batch) // drop references to published entries' changes
	return nil
}

// sendFullState sends the entities and position of one read transaction
// (docs/protocol.md §6) and returns the log key streaming continues after.
func (s *session) sendFullState(ctx context.Context) (logKey, error) {
	var at logKey
	var entities uint64
	limit := min(s.c.cfg.FullStateChunkBytes, s.maxFrame-batchOverhead)
	err := s.c.st.view(ctx, func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		entities = tx.Count()
		begin := &wire.FullStateBegin{Mode: m.mode, Timeline: m.timeline, Index: m.index(), Positions: m.positions(), Entities: entities}
		if err := s.conn.Write(ctx, begin); err != nil {
			return err
		}
		chunk := make([]model.Entity, 0, 256)
		size := 0
		flush := func() error {
			err := s.conn.Write(ctx, &wire.FullStateChunk{Entities: chunk})
			clear(chunk)
			chunk, size = chunk[:0], 0
			return err
		}
		err = tx.ForEach(func(e model.Entity) error {
			es := len(e.Kind) + len(e.ID) + len(e.Value) + entityOverhead
			if es > s.maxFrame-batchOverhead {
				return fmt.Errorf("entity %s/%s is %d bytes, above this router's frame limit of %d", e.Kind, e.ID, es, s.maxFrame)
			}
			if len(chunk) > 0 && (size+es > limit || len(chunk) >= maxChunkEntities) {
				if err := flush(); err != nil {
					return err
				}
			}
			chunk = append(chunk, e)
			size += es
			return nil
		})
		if err != nil {
			return err
		}
		if len(chunk) > 0 {
			if err := flush(); err != nil {
				return err
			}
		}
		digest, err := tx.Digest()
		if err != nil {
			return err
		}
		if err := s.conn.Write(ctx, &wire.FullStateEnd{Entities: entities, Digest: digest}); err != nil {
			return err
		}
		at = logKey{index: m.index(), sub: subChangeSet}
		s.timeline = m.timeline
		return nil
	})
	if err != nil {
		return at, fmt.Errorf("full state: %w", err)
	}
	s.c.met.fullStates.Inc()
	s.c.routers.sent(s, at.index)
	s.log.Info("full state sent", "index", at.index, "entities", entities)
	return at, nil
}

// continues reports whether the (replaced) store continues a stream that
// has sent everything up to cursor on timeline tl: same timeline, cursor
// not below the log floor and not beyond the log's end. A raft snapshot
// is always a later state of the same history, so sessions normally carry
// on; anything else gets a full state.
func (c *Controller) continues(ctx context.Context, cursor logKey, tl abi.Timeline) (bool, error) {
	var ok bool
	err := c.st.view(ctx, func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		last, err := lastLogKey(tx)
		if err != nil {
			return err
		}
		end := max(last.index, m.index())
		ok = m.timeline == tl && cursor.index >= m.logFloor && cursor.index <= end
		return nil
	})
	return ok, err
}
