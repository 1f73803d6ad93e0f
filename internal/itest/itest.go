package itest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/indexgate/indexgate/controller"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/router"
)

// Guard bounds every wait of this package.
const Guard = 60 * time.Second

// Logger discards unless ITEST_LOG is set: in-process servers log after a
// test's end, which t.Log does not allow.
func Logger() *slog.Logger {
	if os.Getenv("ITEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// WasmCacheDir is the compilation cache every in-process router shares, so
// the built-in filters compile once per machine (tens of seconds under
// -race): $INDEXGATE_TEST_WASM_CACHE, else the user cache directory (the
// router package's tests use the same one), else a temporary directory.
func WasmCacheDir(t testing.TB) string {
	dir := os.Getenv("INDEXGATE_TEST_WASM_CACHE")
	if dir == "" {
		if ucd, err := os.UserCacheDir(); err == nil {
			dir = filepath.Join(ucd, "indexgate", "test-wasm-cache")
		}
	}
	if dir != "" && os.MkdirAll(dir, 0o700) == nil {
		return dir
	}
	return t.TempDir()
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago, for servers whose address others must know before they start (raft
// peers, router controller lists). Another process could take the port in
// between; on a test machine that is rare enough.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// WaitFor polls cond until it holds, failing the test after Guard.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("itest: gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Controller is a controller running in the test process.
type Controller struct {
	*controller.Controller
	// Config is what it was started with (addresses resolved).
	Config controller.Config

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// ControllerConfig is a plaintext, fsync-less Config on dir with
// 127.0.0.1:0 addresses and the test logger.
func ControllerConfig(dir string) controller.Config {
	return controller.Config{DataDir: dir, ListenAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Insecure: true, NoSync: true, Logger: Logger()}
}

// StartController creates and runs a controller; it is stopped when the
// test ends.
func StartController(t testing.TB, cfg controller.Config) *Controller {
	t.Helper()
	c, err := controller.New(cfg)
	if err != nil {
		t.Fatalf("itest: controller.New: %v", err)
	}
	cfg.ListenAddr, cfg.AdminAddr = c.RouterAddr().String(), c.AdminAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	ic := &Controller{Controller: c, Config: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { ic.done <- c.Run(ctx) }()
	t.Cleanup(func() { ic.Stop(t) })
	return ic
}

// Stop ends Run and closes the controller (its raft node stops with it);
// repeated calls do nothing.
func (c *Controller) Stop(t testing.TB) {
	c.once.Do(func() {
		c.cancel()
		if err := <-c.done; err != nil {
			t.Errorf("itest: controller Run: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("itest: controller Close: %v", err)
		}
	})
}

// MustStatus is Controller.Status, failing the test on error.
func (c *Controller) MustStatus(t testing.TB) controller.Status {
	t.Helper()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatalf("itest: controller status: %v", err)
	}
	return st
}

// Router is a router running in the test process.
type Router struct {
	*router.Router
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// RouterConfig is a plaintext, fsync-less router Config with fast
// reconnects and the shared wasm cache.
func RouterConfig(t testing.TB, id, dir string, controllers ...string) router.Config {
	return router.Config{
		ID: id, DataDir: dir, Controllers: controllers, Insecure: true, NoSync: true,
		CacheDir: WasmCacheDir(t), Logger: Logger(),
		BackoffMin: 5 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	}
}

// StartRouter creates and runs a router; it is stopped when the test ends.
func StartRouter(t testing.TB, cfg router.Config) *Router {
	t.Helper()
	r, err := router.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("itest: router.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ir := &Router{Router: r, cancel: cancel, done: make(chan error, 1)}
	go func() { ir.done <- r.Run(ctx) }()
	t.Cleanup(func() { ir.Stop(t) })
	return ir
}

// Stop ends Run and closes the router; repeated calls do nothing.
func (r *Router) Stop(t testing.TB) {
	r.once.Do(func() {
		r.cancel()
		if err := <-r.done; err != nil {
			t.Errorf("itest: router Run: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Errorf("itest: router Close: %v", err)
		}
	})
}

// MustStatus is Router.Status, failing the test on error.
func (r *Router) MustStatus(t testing.TB) router.Status {
	t.Helper()
	st, err := r.Status(context.Background())
	if err != nil {
		t.Fatalf("itest: router status: %v", err)
	}
	return st
}

// WaitRouterAt waits until r has applied the controller status st: same
// mode, index on that mode, timeline and digest.
func WaitRouterAt(t testing.TB, r *Router, st controller.Status) router.Status {
	t.Helper()
	var rs router.Status
	deadline := time.Now().Add(Guard)
	for {
		rs = r.MustStatus(t)
		if rs.Mode == st.Mode && rs.LastIndex[st.Mode.String()] == st.Index &&
			rs.Timeline == st.Timeline.String() && rs.Digest == st.Digest {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("itest: router %s never reached the controller's %s@%d (digest %s): it is at %s %v, digest %s, connected %v to %s, counters %+v, last error %q",
				rs.ID, st.Mode, st.Index, st.Digest, rs.Mode, rs.LastIndex, rs.Digest, rs.Connected, rs.Controller, rs.Counters, rs.LastError)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Put is a one-put change.
func Put(kind, id, value string) model.Change {
	return model.Change{Op: model.OpPut, Kind: kind, ID: id, Value: value}
}
