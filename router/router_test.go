package router

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/host"
	"github.com/indexgate/indexgate/pki"
	"github.com/indexgate/indexgate/wire"
)

// testRouter is a Router running in the test process.
type testRouter struct {
	*Router
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
}

func testConfig(dir string, controllers ...string) Config {
	return Config{
		ID: "r1", DataDir: dir, Controllers: controllers, Insecure: true,
		CacheDir: testCacheDir, NoSync: true, Logger: testLogger(),
		// Untrusted modules instantiate under -race on a loaded machine:
		// the default second is a deadline for production, not for this.
		CallTimeout: 30 * time.Second,
		BackoffMin:  2 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		HeartbeatInterval: 50 * time.Millisecond, IdleTimeout: 10 * time.Second,
	}
}

// startRouter creates and runs a router; hook, if set, is the applier's
// beforeCommit.
func startRouter(t testing.TB, cfg Config, hook func(context.Context, string) error) *testRouter {
	t.Helper()
	r, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.app.beforeCommit = hook
	ctx, cancel := context.WithCancel(context.Background())
	tr := &testRouter{Router: r, cancel: cancel, done: make(chan error, 1)}
	go func() { tr.done <- r.Run(ctx) }()
	t.Cleanup(func() { tr.stop(t) })
	return tr
}

// stop ends Run and closes the router, like a SIGTERM.
func (tr *testRouter) stop(t testing.TB) {
	tr.stopOnce.Do(func() {
		tr.cancel()
		if err := <-tr.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

func (tr *testRouter) status(t testing.TB) Status {
	t.Helper()
	s, err := tr.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitConverged waits until the router has the controller's model at the
// controller's positions.
func waitConverged(t testing.TB, tr *testRouter, fc *fakeController) Status {
	t.Helper()
	var s Status
	waitFor(t, "the router to converge on the controller's model", func() bool {
		s = tr.status(t)
		d, n := fc.digest()
		for _, typ := range abi.IndexTypes {
			if s.LastIndex[typ.String()] != fc.position(typ) {
				return false
			}
		}
		return s.Digest == d && s.Entities == n && s.Connected
	})
	return s
}

// waitFirstFullState waits for the router's first full state, so that the
// change sets a test appends afterwards are all applied one by one.
func waitFirstFullState(t testing.TB, tr *testRouter) {
	t.Helper()
	waitFor(t, "the first full state", func() bool { return tr.status(t).Counters.InitialSyncs >= 1 })
}

func TestRouterFullStateThenStream(t *testing.T) {
	fc := newFakeController(t)
	fc.appendN(7)
	addr := fc.listen()
	tr := startRouter(t, testConfig(t.TempDir(), addr), nil)
	s := waitConverged(t, tr, fc)
	if s.Counters.InitialSyncs != 1 || s.Counters.FullResyncs != 0 || s.Counters.Applied != 0 {
		t.Fatalf("after the first full state: counters %+v", s.Counters)
	}
	fc.appendN(10)
	s = waitConverged(t, tr, fc)
	if s.Counters != (Counters{Applied: 10, InitialSyncs: 1}) {
		t.Errorf("counters %+v, want 10 applied after one full state", s.Counters)
	}
	if s.Controller != addr || s.Mode != abi.IndexLegacy || s.ID != "r1" {
		t.Errorf("status %+v", s)
	}
	h := fc.helloList()[0]
	if len(h.Positions) != 0 || h.Current != abi.IndexNone || h.RouterID != "r1" ||
		!slices.Equal(h.IndexTypes, abi.IndexTypes[:]) || !slices.Equal(h.ABIVersions, []uint32{abi.Version}) ||
		h.ProtoMin != wire.MinProtocol || h.ProtoMax != wire.MaxProtocol {
		t.Errorf("first hello %+v", h)
	}
	if w := fc.welcomes()[0]; w.Resume != wire.ResumeFullState {
		t.Errorf("fresh router got %s, want a full state", w.Resume)
	}
	waitFor(t, "an ack for every frame", func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return fc.lastAck != nil && len(fc.lastAck.Positions) == 1 && fc.lastAck.Positions[0].Index == 17
	})
}

func TestRouterResumesAfterRestart(t *testing.T) {
	fc := newFakeController(t)
	addr := fc.listen()
	dir := t.TempDir()
	tr := startRouter(t, testConfig(dir, addr), nil)
	waitFirstFullState(t, tr)
	fc.appendN(5)
	waitConverged(t, tr, fc)
	tr.stop(t)

	fc.appendN(5)
	tr = startRouter(t, testConfig(dir, addr), nil)
	s := waitConverged(t, tr, fc)
	if s.Counters != (Counters{Applied: 10, InitialSyncs: 1}) {
		t.Errorf("counters %+v, want 10 applied, only the first full state", s.Counters)
	}
	hs := fc.helloList()
	last := hs[len(hs)-1]
	want := []wire.Position{{Type: abi.IndexLegacy, Index: 5, Timeline: fc.tl}}
	if !slices.Equal(last.Positions, want) || last.Current != abi.IndexLegacy {
		t.Errorf("hello after restart carries %v/%s, want %v/legacy", last.Positions, last.Current, want)
	}
	ws := fc.welcomes()
	if w := ws[len(ws)-1]; w.Resume != wire.ResumeReplay {
		t.Errorf("restarted router got %s, want replay", w.Resume)
	}
}

func TestRouterModeChanges(t *testing.T) {
	fc := newFakeController(t)
	tr := startRouter(t, testConfig(t.TempDir(), fc.listen()), nil)
	waitFirstFullState(t, tr)
	fc.appendN(5)
	fc.switchMode(abi.IndexHA)
	fc.appendN(6)
	s := waitConverged(t, tr, fc)
	if s.Mode != abi.IndexHA {
		t.Errorf("mode %s after the migration, want ha", s.Mode)
	}
	fc.switchMode(abi.IndexLegacy)
	fc.appendN(2)
	s = waitConverged(t, tr, fc)
	if s.Mode != abi.IndexLegacy || s.LastIndex["legacy"] != 13 || s.LastIndex["ha"] != 11 {
		t.Errorf("after the rollback: mode %s lastIndex %v, want legacy, legacy 13, ha 11", s.Mode, s.LastIndex)
	}
	if s.Counters != (Counters{Applied: 13, InitialSyncs: 1}) {
		t.Errorf("counters %+v", s.Counters)
	}
}

func TestRouterReconnectsWithBackoff(t *testing.T) {
	fc := newFakeController(t)
	fc.onHello = func(n int, _ *wire.Hello) (wire.Message, bool) {
		switch n {
		case 0, 1, 2:
			return nil, true // accept, then hang up
		case 3:
			return &wire.Error{Code: wire.ErrCodeVersion, Message: "no common version: controller [2, 2], router [1, 1]"}, false
		}
		return nil, false
	}
	tr := startRouter(t, testConfig(t.TempDir(), fc.listen()), nil)
	fc.appendN(3)
	waitConverged(t, tr, fc)
	if n := len(fc.helloList()); n < 5 {
		t.Errorf("%d hellos, want at least 5", n)
	}
	if got := counterValue(tr.met.connects.WithLabelValues("handshake_error")); got < 3 {
		t.Errorf("%v handshake errors counted, want 3", got)
	}
	if got := counterValue(tr.met.connects.WithLabelValues("refused")); got != 1 {
		t.Errorf("%v refusals counted, want 1", got)
	}
}

func TestRouterFailsOverToTheNextAddress(t *testing.T) {
	fc := newFakeController(t)
	a1, a2 := fc.listen(), fc.listen()
	tr := startRouter(t, testConfig(t.TempDir(), a1, a2), nil)
	waitFirstFullState(t, tr)
	fc.appendN(3)
	if s := waitConverged(t, tr, fc); s.Controller != a1 {
		t.Fatalf("connected to %s, want the first address %s", s.Controller, a1)
	}
	fc.closeListener(a1)
	fc.appendN(4)
	s := waitConverged(t, tr, fc)
	if s.Controller != a2 {
		t.Errorf("connected to %s, want %s", s.Controller, a2)
	}
	if s.Counters != (Counters{Applied: 7, InitialSyncs: 1}) {
		t.Errorf("counters %+v: the failover must resume, not resync", s.Counters)
	}
}

func TestRouterFollowsRedirects(t *testing.T) {
	fc := newFakeController(t)
	leader := fc.listen()
	follower := fc.listenRedirect(leader)
	tr := startRouter(t, testConfig(t.TempDir(), follower), nil)
	fc.appendN(2)
	s := waitConverged(t, tr, fc)
	if s.Controller != leader {
		t.Errorf("connected to %s, want the leader %s", s.Controller, leader)
	}
	if got := counterValue(tr.met.connects.WithLabelValues("redirect")); got < 1 {
		t.Errorf("%v redirects counted", got)
	}
}

func TestRouterGapLeadsToFullState(t *testing.T) {
	fc := newFakeController(t)
	tr := startRouter(t, testConfig(t.TempDir(), fc.listen()), nil)
	waitFirstFullState(t, tr)
	fc.appendN(3)
	waitConverged(t, tr, fc)
	fc.mu.Lock()
	fc.skipOnce[5] = true
	fc.mu.Unlock()
	fc.appendAtOnce(5) // 4..8, 5 is never sent: 6 arrives after 4
	s := waitConverged(t, tr, fc)
	if s.Counters != (Counters{Applied: 4, FullResyncs: 1, InitialSyncs: 1, Gaps: 1}) {
		t.Errorf("counters %+v, want 4 applied (1-4), a gap and a second full state", s.Counters)
	}
	hs := fc.helloList()
	if last := hs[len(hs)-1]; len(last.Positions) != 0 || last.Current != abi.IndexNone {
		t.Errorf("hello after the gap carries %v/%s, want none (a full state request)", last.Positions, last.Current)
	}
	if s.WantFullState {
		t.Error("still wants a full state after receiving one")
	}
	if got := counterValue(tr.met.resyncs.WithLabelValues("legacy", "gap")); got != 1 {
		t.Errorf("%v gap resyncs counted", got)
	}
}

func TestRouterSurvivesDroppedConnections(t *testing.T) {
	fc := newFakeController(t)
	tr := startRouter(t, testConfig(t.TempDir(), fc.listen()), nil)
	waitFirstFullState(t, tr)
	fc.mu.Lock()
	fc.dropAfter = 2
	fc.mu.Unlock()
	fc.appendN(15)
	fc.switchMode(abi.IndexHA)
	fc.appendN(15)
	s := waitConverged(t, tr, fc)
	if s.Counters != (Counters{Applied: 30, InitialSyncs: 1}) {
		t.Errorf("counters %+v: every change set exactly once, no extra full state", s.Counters)
	}
	if n := len(fc.helloList()); n < 5 {
		t.Errorf("%d sessions; the test did not drop connections", n)
	}
}

func TestRouterHeartbeatsAndIdleTimeout(t *testing.T) {
	fc := newFakeController(t)
	fc.heartbeat = time.Hour // a controller that never speaks when idle
	cfg := testConfig(t.TempDir(), fc.listen())
	cfg.IdleTimeout = 200 * time.Millisecond
	tr := startRouter(t, cfg, nil)
	waitFor(t, "a heartbeat from the router", func() bool { return fc.heartbeats.Load() > 0 })
	waitFor(t, "the router to drop the silent connection and reconnect", func() bool { return len(fc.helloList()) >= 2 })
	waitFor(t, "the router to say why", func() bool {
		return strings.Contains(tr.status(t).LastError, "timeout")
	})
}

// TestRouterCrashBetweenDecideAndCommit crashes the router at the n-th
// commit of a kind, after the filters decided and the writes were made,
// before the transaction committed. "crash" restarts a new router on the
// data dir (kill -9: nothing after the hook runs); "fail" lets the same
// router go on (a failed fsync). Either way every change set the
// controller sent is applied exactly once and the digest matches.
func TestRouterCrashBetweenDecideAndCommit(t *testing.T) {
	tests := []struct {
		name  string
		op    string
		nth   int
		crash bool
	}{
		{"first full state, killed", "full state", 1, true},
		{"first batch, killed", "batch", 1, true},
		{"fourth batch, killed", "batch", 4, true},
		{"mode change, killed", "mode change", 1, true},
		{"sixth batch, killed", "batch", 6, true},
		{"first full state, commit fails", "full state", 1, false},
		{"third batch, commit fails", "batch", 3, false},
		{"mode change, commit fails", "mode change", 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fc := newFakeController(t)
			addr := fc.listen()
			dir := t.TempDir()
			crashed := make(chan struct{})
			var mu sync.Mutex
			seen := 0
			hook := func(ctx context.Context, op string) error {
				mu.Lock()
				defer mu.Unlock()
				if op != tc.op {
					return nil
				}
				if seen++; seen != tc.nth {
					return nil
				}
				if !tc.crash {
					return errInjected
				}
				close(crashed)
				<-ctx.Done() // the process is gone: nothing after this point runs
				return ctx.Err()
			}
			tr := startRouter(t, testConfig(dir, addr), hook)
			restartAfterCrash := func() {
				select {
				case <-crashed:
				case <-time.After(time.Minute):
					t.Fatal("the crash point was never reached")
				}
				tr.stop(t)
				tr = startRouter(t, testConfig(dir, addr), nil)
			}
			if tc.crash && tc.op == "full state" {
				restartAfterCrash()
			}
			// Change sets only after the first full state, so that every one
			// of them has to be applied (none is covered by a full state).
			waitFirstFullState(t, tr)
			fc.appendN(10)
			fc.switchMode(abi.IndexHA)
			fc.appendN(10)
			if tc.crash && tc.op != "full state" {
				restartAfterCrash()
			}
			s := waitConverged(t, tr, fc)
			if want := (Counters{Applied: fc.changeSets(), InitialSyncs: 1}); s.Counters != want {
				t.Errorf("counters %+v, want %+v: each change set applied exactly once", s.Counters, want)
			}
			mu.Lock()
			defer mu.Unlock()
			if seen < tc.nth {
				t.Errorf("only %d %s commits; the crash point was never reached", seen, tc.op)
			}
		})
	}
}

func TestRouterAnswersDigestRequests(t *testing.T) {
	fc := newFakeController(t)
	tr := startRouter(t, testConfig(t.TempDir(), fc.listen()), nil)
	waitFirstFullState(t, tr)
	fc.appendN(3)
	waitConverged(t, tr, fc)
	fc.askDigest.Store(true)
	var r *wire.DigestReply
	waitFor(t, "a digest reply", func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		r = fc.digestReply
		return r != nil
	})
	d, n := fc.digest()
	want := wire.Position{Type: abi.IndexLegacy, Index: 3, Timeline: fc.tl}
	if r.Digest != d || r.Entities != n || r.Position != want {
		t.Errorf("digest reply %+v, want %s/%d at %s", r, d, n, want)
	}
}

func TestRouterRunTwiceAndClose(t *testing.T) {
	fc := newFakeController(t)
	tr := startRouter(t, testConfig(t.TempDir(), fc.listen()), nil)
	waitConverged(t, tr, fc)
	if err := tr.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("second Run: %v, want ErrClosed", err)
	}
	// Close while Run runs stops it.
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-tr.done; err != nil {
		t.Errorf("Run after Close: %v", err)
	}
	tr.done <- nil
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

func TestBackoff(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 30 * time.Second
	tests := []struct {
		n    int
		want time.Duration // the delay before jitter
	}{
		{1, lo}, {2, 2 * lo}, {3, 4 * lo}, {9, 256 * lo}, {10, hi}, {1000, hi},
	}
	for _, tc := range tests {
		for range 100 {
			if d := backoff(lo, hi, tc.n); d < tc.want/2 || d > tc.want {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", tc.n, d, tc.want/2, tc.want)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{ID: "r", DataDir: "d", Controllers: []string{"127.0.0.1:7000"}, Insecure: true}
	tests := []struct {
		name string
		mod  func(*Config)
		want error
	}{
		{"valid", func(*Config) {}, nil},
		{"neither TLS nor insecure", func(c *Config) { c.Insecure = false }, ErrTLSRequired},
		{"TLS", func(c *Config) { c.Insecure, c.TLS = false, pki.IdentityFor("pki", pki.Router, "r") }, nil},
		{"TLS and insecure", func(c *Config) { c.TLS = pki.IdentityFor("pki", pki.Router, "r") }, ErrInvalidConfig},
		{"TLS without CA", func(c *Config) { c.Insecure, c.TLS = false, pki.Identity{CertFile: "c", KeyFile: "k"} }, ErrInvalidConfig},
		{"TLS with an id no certificate can have", func(c *Config) {
			c.Insecure, c.ID, c.TLS = false, "r 1", pki.IdentityFor("pki", pki.Router, "r")
		}, ErrInvalidConfig},
		{"bad pin", func(c *Config) { c.Trust.Pins = []string{"abc"} }, ErrInvalidConfig},
		{"signature without module", func(c *Config) { c.FilterSignatures = map[abi.IndexType][]byte{abi.IndexHA: []byte("x")} }, ErrInvalidConfig},
		{"negative settle", func(c *Config) { c.FilterDirSettle = -1 }, ErrInvalidConfig},
		{"no id", func(c *Config) { c.ID = "" }, ErrInvalidConfig},
		{"no data dir", func(c *Config) { c.DataDir = "" }, ErrInvalidConfig},
		{"no controller", func(c *Config) { c.Controllers = nil }, ErrInvalidConfig},
		{"controller port 0", func(c *Config) { c.Controllers = []string{"127.0.0.1:0"} }, ErrInvalidConfig},
		{"admin without port", func(c *Config) { c.AdminAddr = "127.0.0.1" }, ErrInvalidConfig},
		{"admin port 0", func(c *Config) { c.AdminAddr = "127.0.0.1:0" }, nil},
		{"filter of unknown type", func(c *Config) { c.Filters = map[abi.IndexType]host.Module{7: {Bytes: []byte{0}}} }, ErrInvalidConfig},
		{"empty filter", func(c *Config) { c.Filters = map[abi.IndexType]host.Module{abi.IndexHA: {}} }, ErrInvalidConfig},
		{"memory not in pages", func(c *Config) { c.MemoryLimitBytes = 1000 }, ErrInvalidConfig},
		{"idle below heartbeat", func(c *Config) { c.HeartbeatInterval, c.IdleTimeout = time.Second, time.Second }, ErrInvalidConfig},
		{"backoff max below min", func(c *Config) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond }, ErrInvalidConfig},
		{"negative timeout", func(c *Config) { c.DialTimeout = -1 }, ErrInvalidConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			if err := c.Validate(); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Errorf("Validate: %v, want %v", err, tc.want)
			}
		})
	}
}
