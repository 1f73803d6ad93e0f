package wire_test

import (
	"context"
	"errors"
	"io"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/indexgate/indexgate/wire"
)

// pipe returns a Conn and the raw other end of an in-memory connection.
func pipe(t *testing.T, opts wire.ConnOptions) (*wire.Conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	c := wire.NewConn(a, opts)
	t.Cleanup(func() { _ = c.Close(); _ = b.Close() })
	return c, b
}

// rawWrite writes b to the raw end without blocking the test (net.Pipe is
// synchronous) and reports the result on the returned channel.
func rawWrite(raw net.Conn, b []byte) <-chan error {
	done := make(chan error, 1)
	if len(b) == 0 {
		// net.Pipe blocks even an empty write until the other side reads.
		done <- nil
		return done
	}
	go func() {
		_, err := raw.Write(b)
		done <- err
	}()
	return done
}

func TestConnTCPRoundTrip(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx := context.Background()
	msgs := fixtures()

	// The server echoes every message it reads.
	serverErr := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		c := wire.NewConn(nc, wire.ConnOptions{})
		defer c.Close()
		for range msgs {
			m, err := c.Read(ctx)
			if err != nil {
				serverErr <- err
				return
			}
			if err := c.Write(ctx, m); err != nil {
				serverErr <- err
				return
			}
		}
		serverErr <- nil
	}()

	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := wire.NewConn(nc, wire.ConnOptions{WriteTimeout: time.Minute, ReadTimeout: time.Minute})
	defer c.Close()
	if c.RemoteAddr().String() != ln.Addr().String() {
		t.Fatalf("RemoteAddr %s, want %s", c.RemoteAddr(), ln.Addr())
	}
	writeErr := make(chan error, 1)
	go func() {
		for _, tt := range msgs {
			if err := c.Write(ctx, tt.msg); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	}()
	for _, tt := range msgs {
		got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("%s: Read: %v", tt.name, err)
		}
		if !reflect.DeepEqual(got, tt.msg) {
			t.Fatalf("%s: echoed %+v, want %+v", tt.name, got, tt.msg)
		}
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if err := <-serverErr; err != nil {
		t.Fatal(err)
	}
	// The server closed after the last echo.
	if _, err := c.Read(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("Read after peer close = %v, want io.EOF", err)
	}
}

// TestConnConcurrentWrites: frames from concurrent writers never
// interleave, and each writer's frames keep their order.
func TestConnConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	a, b := net.Pipe()
	w := wire.NewConn(a, wire.ConnOptions{})
	r := wire.NewConn(b, wire.ConnOptions{})
	defer w.Close()
	defer r.Close()
	const writers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				if err := w.Write(ctx, &wire.Heartbeat{Index: uint64(g), UnixNano: int64(i)}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	next := make([]int64, writers)
	for range writers * each {
		m, err := r.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hb := m.(*wire.Heartbeat)
		if hb.UnixNano != next[hb.Index] {
			t.Fatalf("writer %d: frame %d arrived, want %d", hb.Index, hb.UnixNano, next[hb.Index])
		}
		next[hb.Index]++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestConnReadErrors(t *testing.T) {
	valid := encode(t, &wire.Heartbeat{Index: 1})
	tests := []struct {
		name   string
		opts   wire.ConnOptions
		send   []byte
		close  bool // close the raw end after sending
		want   error
		sticky bool // later Reads fail too
	}{
		{"eof between frames", wire.ConnOptions{}, nil, true, io.EOF, true},
		{"eof in length", wire.ConnOptions{}, valid[:2], true, io.ErrUnexpectedEOF, true},
		{"eof in body", wire.ConnOptions{}, valid[:len(valid)-1], true, io.ErrUnexpectedEOF, true},
		// The body never comes: Read must answer from the prefix alone.
		{"oversize default", wire.ConnOptions{}, []byte{0x01, 0x00, 0x00, 0x01}, false, wire.ErrFrameTooLarge, true},
		{"oversize configured", wire.ConnOptions{MaxFrame: 8}, []byte{0x00, 0x00, 0x00, 0x09}, false, wire.ErrFrameTooLarge, true},
		{"empty payload", wire.ConnOptions{}, []byte{0, 0, 0, 0}, false, wire.ErrMalformed, true},
		{"unknown type", wire.ConnOptions{}, frame("0e 90"), false, wire.ErrMalformed, true},
		{"garbage body", wire.ConnOptions{}, frame("0b 92 01"), false, wire.ErrMalformed, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, raw := pipe(t, tt.opts)
			var sent <-chan error
			if tt.close {
				done := make(chan error, 1)
				go func() {
					err := <-rawWrite(raw, tt.send)
					done <- errors.Join(err, raw.Close())
				}()
				sent = done
			} else {
				sent = rawWrite(raw, tt.send)
			}
			_, err := c.Read(context.Background())
			if !errors.Is(err, tt.want) {
				t.Fatalf("Read = %v, want %v", err, tt.want)
			}
			if tt.sticky {
				// A valid frame afterwards must not be read as if the stream
				// were still aligned.
				go func() { <-sent; _, _ = raw.Write(valid) }()
				if m, err := c.Read(context.Background()); err == nil {
					t.Fatalf("Read after a broken frame returned %+v", m)
				}
			}
		})
	}
}

// TestConnReadInterrupted: cancellation, deadlines and the idle timeout end
// a waiting Read; with nothing consumed the Conn stays usable.
func TestConnReadInterrupted(t *testing.T) {
	tests := []struct {
		name string
		opts wire.ConnOptions
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancel", wire.ConnOptions{}, func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			go cancel()
			return ctx, cancel
		}, context.Canceled},
		{"context deadline", wire.ConnOptions{ReadTimeout: time.Hour}, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Millisecond)
		}, context.DeadlineExceeded},
		{"idle timeout", wire.ConnOptions{ReadTimeout: time.Millisecond}, func() (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}, wire.ErrTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, raw := pipe(t, tt.opts)
			ctx, cancel := tt.ctx()
			defer cancel()
			if _, err := c.Read(ctx); !errors.Is(err, tt.want) {
				t.Fatalf("Read = %v, want %v", err, tt.want)
			}
			sent := rawWrite(raw, encode(t, &wire.Heartbeat{Index: 9}))
			// No timeout now: the frame is on its way.
			c2 := context.Background()
			m, err := readNoIdle(c2, c, tt.opts)
			if err != nil {
				t.Fatalf("Read after interruption: %v", err)
			}
			if hb, ok := m.(*wire.Heartbeat); !ok || hb.Index != 9 {
				t.Fatalf("Read after interruption = %+v", m)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// readNoIdle retries a Read that hit the (tiny) idle timeout of a test
// Conn before the peer's goroutine got to write.
func readNoIdle(ctx context.Context, c *wire.Conn, opts wire.ConnOptions) (wire.Message, error) {
	for {
		m, err := c.Read(ctx)
		if opts.ReadTimeout > 0 && opts.ReadTimeout < time.Second && errors.Is(err, wire.ErrTimeout) {
			continue
		}
		return m, err
	}
}

func TestConnWrite(t *testing.T) {
	ctx := context.Background()
	t.Run("too large leaves the conn usable", func(t *testing.T) {
		c, raw := pipe(t, wire.ConnOptions{MaxFrame: 64})
		big := &wire.FullStateEnd{Digest: string(make([]byte, 100))}
		if err := c.Write(ctx, big); !errors.Is(err, wire.ErrFrameTooLarge) {
			t.Fatalf("Write = %v, want ErrFrameTooLarge", err)
		}
		peer := wire.NewConn(raw, wire.ConnOptions{})
		got := make(chan wire.Message, 1)
		go func() { m, _ := peer.Read(ctx); got <- m }()
		if err := c.Write(ctx, &wire.Heartbeat{Index: 3}); err != nil {
			t.Fatal(err)
		}
		if hb, ok := (<-got).(*wire.Heartbeat); !ok || hb.Index != 3 {
			t.Fatalf("peer read %+v", hb)
		}
	})
	t.Run("encode error", func(t *testing.T) {
		c, _ := pipe(t, wire.ConnOptions{})
		if err := c.Write(ctx, nil); err == nil {
			t.Fatal("Write(nil) succeeded")
		}
	})
	t.Run("cancel while blocked", func(t *testing.T) {
		c, raw := pipe(t, wire.ConnOptions{})
		// Nobody reads the pipe, so the write blocks until cancelled.
		cctx, cancel := context.WithCancel(ctx)
		go cancel()
		if err := c.Write(cctx, &wire.Heartbeat{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Write = %v, want context.Canceled", err)
		}
		// Nothing reached the pipe, so the Conn is still usable.
		peer := wire.NewConn(raw, wire.ConnOptions{})
		got := make(chan wire.Message, 1)
		go func() { m, _ := peer.Read(ctx); got <- m }()
		if err := c.Write(ctx, &wire.Heartbeat{Index: 4}); err != nil {
			t.Fatal(err)
		}
		if hb, ok := (<-got).(*wire.Heartbeat); !ok || hb.Index != 4 {
			t.Fatalf("peer read %+v", hb)
		}
	})
	t.Run("write timeout", func(t *testing.T) {
		c, _ := pipe(t, wire.ConnOptions{WriteTimeout: time.Millisecond})
		if err := c.Write(ctx, &wire.Heartbeat{}); !errors.Is(err, wire.ErrTimeout) {
			t.Fatalf("Write = %v, want ErrTimeout", err)
		}
	})
	t.Run("waiting writer gives up", func(t *testing.T) {
		c, _ := pipe(t, wire.ConnOptions{})
		first := make(chan error, 1)
		firstCtx, stopFirst := context.WithCancel(ctx)
		go func() { first <- c.Write(firstCtx, &wire.Heartbeat{}) }()
		// The second writer either waits behind the first (blocked on the
		// unread pipe) or blocks on the pipe itself; cancelling ends both.
		secondCtx, stopSecond := context.WithCancel(ctx)
		go stopSecond()
		if err := c.Write(secondCtx, &wire.Heartbeat{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("second Write = %v, want context.Canceled", err)
		}
		stopFirst()
		if err := <-first; !errors.Is(err, context.Canceled) {
			t.Fatalf("first Write = %v, want context.Canceled", err)
		}
	})
}

func TestConnClose(t *testing.T) {
	c, _ := pipe(t, wire.ConnOptions{})
	blocked := make(chan error, 1)
	go func() { _, err := c.Read(context.Background()); blocked <- err }()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close = %v, want the first result", err)
	}
	if err := <-blocked; !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("blocked Read after Close = %v", err)
	}
	if err := c.Write(context.Background(), &wire.Heartbeat{}); err == nil {
		t.Fatal("Write after Close succeeded")
	}
}
