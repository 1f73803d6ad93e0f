package wire

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Protocol timing defaults (docs/protocol.md, "Heartbeats").
const (
	// DefaultHeartbeatInterval: a side that has written nothing for this
	// long sends a Heartbeat.
	DefaultHeartbeatInterval = 5 * time.Second
	// DefaultIdleTimeout: a side that has read nothing for this long
	// closes the connection (three missed heartbeats).
	DefaultIdleTimeout = 3 * DefaultHeartbeatInterval
	// DefaultHandshakeTimeout: the controller closes a connection whose
	// Hello has not arrived within this time, and the router one whose
	// Welcome has not.
	DefaultHandshakeTimeout = 10 * time.Second
)

// ErrTimeout reports a Read that got no complete frame within
// ConnOptions.ReadTimeout or a Write that did not finish within
// ConnOptions.WriteTimeout. A context deadline reports
// context.DeadlineExceeded instead.
var ErrTimeout = errors.New("wire: timeout")

// Buffers above this size are dropped after use rather than kept for the
// next frame, so one full-state chunk does not pin megabytes per
// connection.
const keepBuffer = 1 << 20

// readBufferSize is the bufio size in front of the socket: big enough that
// streams of small frames (acks, heartbeats) cost one syscall per buffer,
// not two per frame.
const readBufferSize = 32 << 10

// ConnOptions configure a Conn. The zero value is usable: default frame
// limit, no timeouts beyond the contexts'.
type ConnOptions struct {
	// MaxFrame is the largest payload Read accepts and Write sends; 0 means
	// DefaultMaxFrame.
	MaxFrame int
	// ReadTimeout bounds how long Read waits for the next complete frame
	// (the idle timeout; heartbeats keep a healthy connection below it);
	// 0 means no limit.
	ReadTimeout time.Duration
	// WriteTimeout bounds each Write; 0 means no limit.
	WriteTimeout time.Duration
}

// Conn reads and writes frames on a net.Conn. One goroutine may Read while
// any number Write; Writes are serialised, one frame each. After a Read or
// Write error that left a frame half done the direction stays failed and
// the caller should Close.
type Conn struct {
	nc   net.Conn
	opts ConnOptions

	rmu  sync.Mutex
	br   *bufio.Reader
	rbuf []byte
	rerr error // sticky: the stream is no longer at a frame boundary

	// wsem serialises writers; a channel rather than a mutex so a writer
	// waiting behind a slow one can give up when its context ends.
	wsem chan struct{}
	wbuf []byte
	werr error

	closeOnce sync.Once
	closeErr  error
}

// NewConn wraps c. The Conn owns c: Close closes it.
func NewConn(c net.Conn, opts ConnOptions) *Conn {
	if opts.MaxFrame <= 0 {
		opts.MaxFrame = DefaultMaxFrame
	}
	return &Conn{nc: c, opts: opts, br: bufio.NewReaderSize(c, readBufferSize), wsem: make(chan struct{}, 1)}
}

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// MaxFrame is the payload limit in effect.
func (c *Conn) MaxFrame() int { return c.opts.MaxFrame }

// Close closes the connection; blocked Reads and Writes return. Repeated
// calls return the first result.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		if err := c.nc.Close(); err != nil {
			c.closeErr = fmt.Errorf("wire: close: %w", err)
		}
	})
	return c.closeErr
}

// past is a deadline that has already expired: setting it interrupts a
// blocked Read or Write.
var past = time.Unix(1, 0)

// deadline is the earlier of now+timeout (if timeout > 0) and ctx's
// deadline; zero means none. fromCtx reports that ctx's deadline won.
func deadline(ctx context.Context, timeout time.Duration) (d time.Time, fromCtx bool) {
	if timeout > 0 {
		d = time.Now().Add(timeout)
	}
	if cd, ok := ctx.Deadline(); ok && (d.IsZero() || cd.Before(d)) {
		return cd, true
	}
	return d, false
}

// interrupt arranges for set(past) when ctx is cancelled and returns a
// function that undoes the arrangement and waits until a running set has
// finished, so it cannot clobber the deadline of a later call.
func interrupt(ctx context.Context, set func(time.Time) error) (stop func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	done := make(chan struct{})
	stopFn := context.AfterFunc(ctx, func() {
		_ = set(past)
		close(done)
	})
	return func() {
		if !stopFn() {
			<-done
		}
	}
}

// ioError turns a net error into the error Read or Write reports.
func ioError(ctx context.Context, op string, err error, ctxDeadline bool, timeout time.Duration) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("wire: %s: %w", op, cerr)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if ctxDeadline {
			return fmt.Errorf("wire: %s: %w", op, context.DeadlineExceeded)
		}
		return fmt.Errorf("%w: %s: nothing for %v: %w", ErrTimeout, op, timeout, err)
	}
	return fmt.Errorf("wire: %s: %w", op, err)
}

// Read returns the next message. It returns when a frame arrived, ctx
// ended, ReadTimeout passed or the connection failed. A peer that closed
// between frames gives an error wrapping io.EOF; a frame over the limit
// ErrFrameTooLarge (the body is not read); a bad frame ErrMalformed. Only
// one goroutine may Read at a time.
func (c *Conn) Read(ctx context.Context) (Message, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rerr != nil {
		return nil, c.rerr
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("wire: read: %w", err)
	}
	dl, fromCtx := deadline(ctx, c.opts.ReadTimeout)
	// The standard library's conns refuse a deadline only once closed (a
	// net.Pipe also once the peer closed); the read then returns at once
	// with the precise state (io.EOF, net.ErrClosed), so that error is the
	// one to report.
	_ = c.nc.SetReadDeadline(dl)
	stop := interrupt(ctx, c.nc.SetReadDeadline)
	m, consumed, err := c.readFrame()
	stop()
	if err == nil {
		return m, nil
	}
	if consumed == 0 && c.br.Buffered() == 0 {
		// Nothing of the next frame was read: the stream is still at a frame
		// boundary and a later Read may try again, unless the peer is gone.
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("wire: read: peer closed the connection: %w", err)
			c.rerr = err
			return nil, err
		}
		return nil, ioError(ctx, "read", err, fromCtx, c.opts.ReadTimeout)
	}
	switch {
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrFrameTooLarge):
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		err = fmt.Errorf("wire: read: peer closed the connection inside a frame: %w", io.ErrUnexpectedEOF)
	default:
		err = ioError(ctx, "read", err, fromCtx, c.opts.ReadTimeout)
	}
	c.rerr = fmt.Errorf("%w (connection unusable after this error)", err)
	return nil, err
}

// readFrame reads one frame; consumed counts the bytes of it read so far.
func (c *Conn) readFrame() (Message, int, error) {
	var hdr [FrameHeaderSize]byte
	n, err := io.ReadFull(c.br, hdr[:])
	if err != nil {
		return nil, n, err
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if err := checkLength(size, c.opts.MaxFrame); err != nil {
		return nil, n, err
	}
	if cap(c.rbuf) < int(size) {
		c.rbuf = make([]byte, size)
	}
	buf := c.rbuf[:size]
	if cap(c.rbuf) > keepBuffer {
		c.rbuf = nil
	}
	m, err := io.ReadFull(c.br, buf)
	if err != nil {
		return nil, n + m, err
	}
	msg, err := decodePayload(buf)
	return msg, n + m, err
}

// Write sends m as one frame. Writes from several goroutines are sent one
// after the other, never interleaved. A message that cannot be encoded or
// exceeds MaxFrame fails without writing anything (ErrFrameTooLarge) and
// the Conn stays usable.
func (c *Conn) Write(ctx context.Context, m Message) error {
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("wire: write: waiting for another writer: %w", ctx.Err())
	}
	defer func() { <-c.wsem }()
	if c.werr != nil {
		return c.werr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("wire: write: %w", err)
	}
	buf, err := EncodeFrame(c.wbuf[:0], m)
	if err != nil {
		return err
	}
	if cap(buf) <= keepBuffer {
		c.wbuf = buf
	}
	if n := len(buf) - FrameHeaderSize; n > c.opts.MaxFrame {
		return fmt.Errorf("%w: %s payload of %d bytes, limit %d", ErrFrameTooLarge, m.Type(), n, c.opts.MaxFrame)
	}
	dl, fromCtx := deadline(ctx, c.opts.WriteTimeout)
	_ = c.nc.SetWriteDeadline(dl) // see Read
	stop := interrupt(ctx, c.nc.SetWriteDeadline)
	n, err := c.nc.Write(buf)
	stop()
	if err == nil {
		return nil
	}
	err = ioError(ctx, "write", err, fromCtx, c.opts.WriteTimeout)
	if n > 0 {
		// Part of the frame is on the wire; anything written after it would
		// be read as the rest of this frame.
		c.werr = fmt.Errorf("%w (connection unusable after this error)", err)
	}
	return err
}
