package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

// maxQuickRetries bounds how many reconnects in a row skip the backoff
// (redirects, resync requests), so two controllers redirecting to each
// other cannot spin.
const maxQuickRetries = 8

// errResyncRequested ends a session after a Resync verdict: reconnect at
// once, asking for a full state.
var errResyncRequested = errors.New("router: full state needed")

// redirectError is an Error{NotServing} frame with addresses to try.
type redirectError struct {
	addrs []string
	err   *wire.Error
}

func (e *redirectError) Error() string { return e.err.Error() }
func (e *redirectError) Unwrap() error { return e.err }

// client owns the connection to the controller: which address to try,
// backoff, handshake, heartbeats and the frame loop. Everything the frames
// mean is the applier's.
type client struct {
	cfg  *Config
	log  *slog.Logger
	app  *applier
	met  *metrics
	dial *connector

	mu     sync.Mutex
	conn   connStatus
	queue  []string // addresses to try before the configured ones
	cursor int      // next configured address
}

// connStatus is what the status API reports about the connection.
type connStatus struct {
	connected       bool
	addr            string
	nodeID          string
	since           time.Time
	controllerIndex uint64
	lastErr         string
}

func (c *client) status() connStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

func (c *client) setStatus(f func(*connStatus)) {
	c.mu.Lock()
	f(&c.conn)
	c.mu.Unlock()
}

// run connects and reconnects until ctx ends.
func (c *client) run(ctx context.Context) {
	failures, quick := 0, 0
	for {
		addr := c.nextAddr()
		welcomed, err := c.session(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		c.setStatus(func(s *connStatus) {
			s.connected = false
			s.lastErr = err.Error()
		})
		c.met.connected.Set(0)

		var rd *redirectError
		switch {
		case errors.As(err, &rd) && len(rd.addrs) > 0 && quick < maxQuickRetries:
			c.log.Info("controller redirected", "controller", addr, "to", rd.addrs, "message", rd.err.Message)
			c.redirect(rd.addrs)
			quick++
			continue
		case errors.Is(err, errResyncRequested) && quick < maxQuickRetries:
			c.redirect([]string{addr})
			quick++
			continue
		}
		quick = 0
		if welcomed {
			failures = 0
		}
		failures++
		delay := backoff(c.cfg.BackoffMin, c.cfg.BackoffMax, failures)
		if persistentRefusal(err) {
			// Only a changed deployment fixes these (docs/protocol.md §11).
			delay = backoff(c.cfg.BackoffMax, c.cfg.BackoffMax, 1)
		}
		c.log.Warn("controller session ended; reconnecting", "controller", addr, "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// persistentRefusal reports an error no retry soon will cure: no common
// protocol version, a controller refusing this router, or certificates
// that do not fit (the router's or the controller's).
func persistentRefusal(err error) bool {
	var e *wire.Error
	if errors.As(err, &e) && (e.Code == wire.ErrCodeVersion || e.Code == wire.ErrCodeUnauthorized) {
		return true
	}
	return errors.Is(err, wire.ErrVersionMismatch) || tlsRefusal(err)
}

// backoff is the delay before retry number n (1, 2, ...): min doubled per
// failure up to max, with jitter in [d/2, d] so routers that lost the same
// controller do not reconnect in lockstep.
func backoff(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// nextAddr returns the next address: a redirect target first, else the
// configured addresses in turn.
func (c *client) nextAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) > 0 {
		a := c.queue[0]
		c.queue = c.queue[1:]
		return a
	}
	a := c.cfg.Controllers[c.cursor%len(c.cfg.Controllers)]
	c.cursor++
	return a
}

func (c *client) redirect(addrs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queue = append(slices.Clone(addrs), c.queue...)
}

// session runs one connection to addr until it fails or ctx ends.
// welcomed reports that the handshake succeeded, which resets the backoff.
func (c *client) session(ctx context.Context, addr string) (welcomed bool, err error) {
	nc, err := c.dial.dial(ctx, addr)
	if err != nil {
		result := "dial_error"
		if tlsRefusal(err) {
			result = "tls_error"
		}
		c.met.connects.WithLabelValues(result).Inc()
		return false, fmt.Errorf("router: dial %s: %w", addr, err)
	}
	conn := wire.NewConn(nc, wire.ConnOptions{
		MaxFrame:     c.cfg.MaxFrame,
		ReadTimeout:  c.cfg.IdleTimeout,
		WriteTimeout: c.cfg.WriteTimeout,
	})
	defer conn.Close()

	welcome, err := c.handshake(ctx, conn)
	if err != nil {
		result := "handshake_error"
		var rd *redirectError
		switch {
		case errors.As(err, &rd):
			result = "redirect"
		case errors.As(err, new(*wire.Error)):
			result = "refused"
		case tlsRefusal(err):
			// TLS 1.3: a controller refusing the router's certificate
			// says so at the first read, after the TLS handshake.
			result = "tls_error"
		}
		c.met.connects.WithLabelValues(result).Inc()
		return false, fmt.Errorf("router: handshake with %s: %w", addr, err)
	}
	if err := c.app.beginSession(ctx); err != nil {
		c.sendError(ctx, conn, wire.ErrCodeInternal, err)
		return true, err
	}
	welcomed = true
	c.met.connects.WithLabelValues("ok").Inc()
	c.met.connected.Set(1)
	c.met.controllerIndex.Set(float64(welcome.Index))
	c.setStatus(func(s *connStatus) {
		// lastErr stays: why the previous session ended is still worth
		// seeing after a failover.
		s.connected, s.addr, s.nodeID, s.since, s.controllerIndex = true, addr, welcome.NodeID, time.Now(), welcome.Index
	})
	c.log.Info("connected to controller", "controller", addr, "node", welcome.NodeID, "proto", welcome.Proto,
		"mode", welcome.Mode.String(), "index", welcome.Index, "resume", welcome.Resume.String())

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lastWrite atomic.Int64
	lastWrite.Store(time.Now().UnixNano())
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		c.heartbeats(sctx, conn, &lastWrite)
	}()
	defer func() {
		cancel()
		conn.Close()
		<-hbDone
	}()

	write := func(m wire.Message) error {
		err := conn.Write(sctx, m)
		lastWrite.Store(time.Now().UnixNano())
		return err
	}
	for {
		m, err := conn.Read(sctx)
		if err != nil {
			switch {
			case errors.Is(err, wire.ErrFrameTooLarge):
				c.sendError(ctx, conn, wire.ErrCodeFrameTooLarge, err)
			case errors.Is(err, wire.ErrMalformed):
				c.sendError(ctx, conn, wire.ErrCodeMalformed, err)
			}
			return welcomed, fmt.Errorf("router: read from %s: %w", addr, err)
		}
		switch m := m.(type) {
		case *wire.Heartbeat:
			c.met.controllerIndex.Set(float64(m.Index))
			c.setStatus(func(s *connStatus) { s.controllerIndex = m.Index })
			continue
		case *wire.Error:
			return welcomed, peerError(m)
		case *wire.DigestRequest:
			reply, err := c.digest(sctx)
			if err != nil {
				c.sendError(ctx, conn, wire.ErrCodeInternal, err)
				return welcomed, err
			}
			if err := write(reply); err != nil {
				return welcomed, err
			}
			continue
		}
		res, err := c.app.handle(sctx, m)
		if err != nil {
			code := wire.ErrCodeInternal
			if errors.Is(err, errProtocol) || errors.Is(err, errFullStateMismatch) {
				code = wire.ErrCodeProtocol
			}
			c.sendError(ctx, conn, code, err)
			return welcomed, err
		}
		if res.ack {
			if err := write(c.app.ack()); err != nil {
				return welcomed, fmt.Errorf("router: ack to %s: %w", addr, err)
			}
		}
		if res.resync {
			return welcomed, errResyncRequested
		}
	}
}

// handshake sends Hello and waits for Welcome.
func (c *client) handshake(ctx context.Context, conn *wire.Conn) (*wire.Welcome, error) {
	hctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	positions, current := c.app.hello()
	hello := &wire.Hello{
		ProtoMin:    wire.MinProtocol,
		ProtoMax:    wire.MaxProtocol,
		RouterID:    c.cfg.ID,
		IndexTypes:  abi.IndexTypes[:],
		ABIVersions: []uint32{abi.Version},
		Positions:   positions,
		Current:     current,
		MaxFrame:    uint32(c.cfg.MaxFrame),
	}
	if err := conn.Write(hctx, hello); err != nil {
		return nil, err
	}
	m, err := conn.Read(hctx)
	if err != nil {
		return nil, err
	}
	switch m := m.(type) {
	case *wire.Welcome:
		if m.Proto < wire.MinProtocol || m.Proto > wire.MaxProtocol {
			err := fmt.Errorf("%w: controller chose protocol %d, router speaks [%d, %d]",
				wire.ErrVersionMismatch, m.Proto, wire.MinProtocol, wire.MaxProtocol)
			c.sendError(ctx, conn, wire.ErrCodeVersion, err)
			return nil, err
		}
		return m, nil
	case *wire.Error:
		return nil, peerError(m)
	}
	err = fmt.Errorf("%w: %s frame instead of welcome", errProtocol, m.Type())
	c.sendError(ctx, conn, wire.ErrCodeProtocol, err)
	return nil, err
}

// peerError turns an Error frame into the error the session ends with.
func peerError(e *wire.Error) error {
	if e.Code == wire.ErrCodeNotServing {
		var addrs []string
		for _, a := range e.Redirect {
			if checkHostPort(a, false) == nil {
				addrs = append(addrs, a)
			}
		}
		return &redirectError{addrs: addrs, err: e}
	}
	return e
}

// sendError tells the controller why the router closes the connection.
// Best effort: the connection may already be gone.
func (c *client) sendError(ctx context.Context, conn *wire.Conn, code wire.ErrorCode, err error) {
	if ctx.Err() != nil {
		return // shutting down: nothing went wrong with the controller
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	msg := err.Error()
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	_ = conn.Write(wctx, &wire.Error{Code: code, Message: msg})
}

// heartbeats sends a Heartbeat whenever nothing was written for a
// heartbeat interval, until ctx ends or a write fails (which closes the
// connection, so the reader returns).
func (c *client) heartbeats(ctx context.Context, conn *wire.Conn, lastWrite *atomic.Int64) {
	iv := c.cfg.HeartbeatInterval
	tick := time.NewTicker(max(iv/4, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if now.Sub(time.Unix(0, lastWrite.Load())) < iv {
				continue
			}
			hb := &wire.Heartbeat{Index: c.app.heartbeatIndex(), UnixNano: now.UnixNano()}
			if err := conn.Write(ctx, hb); err != nil {
				if ctx.Err() == nil {
					c.log.Debug("heartbeat failed; closing the connection", "err", err)
					conn.Close()
				}
				return
			}
			lastWrite.Store(time.Now().UnixNano())
		}
	}
}

// digest answers a DigestRequest from one consistent snapshot.
func (c *client) digest(ctx context.Context) (*wire.DigestReply, error) {
	var r wire.DigestReply
	err := c.app.store.View(ctx, func(tx *model.Tx) error {
		st, err := loadState(tx)
		if err != nil {
			return err
		}
		r.Position, _ = st.position(st.current)
		r.Entities = tx.Count()
		r.Digest, err = tx.Digest()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("router: digest: %w", err)
	}
	return &r, nil
}
