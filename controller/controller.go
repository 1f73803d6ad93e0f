package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/pki"
)

// Controller is one indexgate controller: its store, its write engine
// (legacy counter or HA raft), the router-facing server and the admin HTTP
// server, and in HA mode its raft node. New binds both listeners (and
// starts raft), Run serves until its context ends, Close releases
// everything. A legacy controller migrates to HA mode and an HA leader
// rolls back to legacy mode while running (Migrate, docs/migration.md).
type Controller struct {
	cfg     Config
	log     *slog.Logger
	st      *store
	hub     *hub
	gate    *gate
	reg     *prometheus.Registry
	met     *metrics
	routers *registry
	httpc   *http.Client

	routerLn net.Listener
	adminLn  net.Listener

	// raftServerTLS and raftClientTLS carry raft between members (nil when
	// Insecure); adminToken guards the mutating admin endpoints (nil: none
	// configured).
	raftServerTLS, raftClientTLS *tls.Config
	tokMu                        sync.Mutex
	adminToken                   []byte    // guarded by tokMu
	tokenStamp                   fileStamp // guarded by tokMu

	// role and mode are read on every handshake; mode mirrors the store's.
	role atomic.Int32
	mode atomic.Uint32
	// ha is the raft membership, nil in legacy mode.
	ha atomic.Pointer[haNode]
	// joinURL is the member a new HA node asks to add it ("": none).
	joinURL string

	idMu sync.Mutex
	id   string // node id in Welcome frames, logs and the directory

	migMu sync.Mutex
	mig   MigrationStatus

	// engMu guards the running engine: engBase is Run's engine context,
	// engStop and engDone stop and await the current engine's run.
	engMu   sync.Mutex
	engBase context.Context
	engStop context.CancelFunc
	engDone chan struct{}

	// bg tracks background work started while running (migrations,
	// joining, retiring); Run waits for it.
	bg sync.WaitGroup

	mu        sync.Mutex
	started   bool
	migrating bool
	runCtx    context.Context    // Run's context, for background work
	stop      context.CancelFunc // ends Run; set while Run runs
	done      chan struct{}      // closed when Run returns
	closed    bool

	// crashPoint, if set (tests), makes a migration stop dead at a step,
	// as a crash would.
	crashPoint func(step string) bool
}

// CommitResult is the answer to a committed write.
type CommitResult struct {
	// Index is the change set's index.
	Index uint64 `json:"index"`
	// IndexType is the index space Index belongs to.
	IndexType abi.IndexType `json:"indexType"`
	// Timeline is the history Index belongs to.
	Timeline abi.Timeline `json:"timeline"`
}

// Status is the controller's state as the admin API reports it.
type Status struct {
	// Mode is the current index type: "legacy" or "ha".
	Mode abi.IndexType `json:"mode"`
	// Index is the last committed index of Mode.
	Index uint64 `json:"index"`
	// Timeline is the current history.
	Timeline abi.Timeline `json:"timeline"`
	// Entities is the number of live entities and Digest their model
	// digest, both at Index.
	Entities uint64 `json:"entities"`
	Digest   string `json:"digest"`
	// ChangeSets counts the change sets ever committed to this store.
	ChangeSets uint64 `json:"changeSets"`
	// ClusterID is the store's random id, created with it; NodeID this
	// controller's name.
	ClusterID string `json:"clusterId"`
	NodeID    string `json:"nodeId"`
	// LogFloor is the highest index trimmed from the change log: a router
	// at or above it can replay, one below it gets a full state.
	LogFloor uint64 `json:"logFloor"`
	// LogChangeSets is the number of change sets the log holds, at most
	// Retention.
	LogChangeSets uint64 `json:"logChangeSets"`
	Retention     uint64 `json:"retention"`
	// Routers are the routers seen since start, by id.
	Routers []RouterStatus `json:"routers"`
	// Role is "legacy", "ha" or "retired" (an HA member after its cluster
	// rolled back to legacy mode on another node).
	Role string `json:"role"`
	// Serving reports whether routers are served here (else redirected).
	Serving bool `json:"serving"`
	// Leader, Term and Peers describe the raft cluster (HA role only).
	Leader bool         `json:"leader"`
	Term   uint64       `json:"term"`
	Peers  []PeerStatus `json:"peers,omitempty"`
	// Migration is the current or last migration on this node.
	Migration MigrationStatus `json:"migration"`
}

// New opens (or creates) the store in cfg.DataDir, binds the router and
// admin listeners, so RouterAddr and AdminAddr are known before Run, and
// decides the mode: legacy, or HA when cfg.HA is set or the data directory
// is an HA member (then the raft node starts; with cfg.Bootstrap a new
// cluster is created from the store). A migration that a crash
// interrupted is finished or rolled back here (docs/migration.md).
func New(cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("controller: data dir: %w", err)
	}
	st, err := openStore(context.Background(), filepath.Join(cfg.DataDir, StoreFile),
		model.Options{NoSync: cfg.NoSync, InitialMmapSize: cfg.InitialMmapSize}, cfg.Retention, cfg.MaxFrame)
	if err != nil {
		return nil, err
	}
	c := &Controller{cfg: cfg, log: cfg.Logger, st: st, reg: prometheus.NewRegistry(), routers: newRegistry(),
		done: make(chan struct{}), id: cfg.NodeID, httpc: &http.Client{}}
	fail := func(err error) (*Controller, error) {
		if h := c.ha.Load(); h != nil {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			_ = h.shutdown(ctx)
			cancel()
		}
		if c.routerLn != nil {
			_ = c.routerLn.Close()
		}
		if c.adminLn != nil {
			_ = c.adminLn.Close()
		}
		_ = st.close()
		return nil, err
	}
	var m meta
	var last logKey
	err = st.view(context.Background(), func(tx *model.Tx) error {
		if m, err = readMeta(tx); err != nil {
			return err
		}
		last, err = lastLogKey(tx)
		return err
	})
	if err != nil {
		return fail(fmt.Errorf("controller: read store: %w", err))
	}
	c.mode.Store(uint32(m.mode))
	c.hub = newHub(cfg.RingSize, last, m.index())
	if c.met, err = newMetrics(c.reg, c); err != nil {
		return fail(fmt.Errorf("controller: metrics: %w", err))
	}
	if err := c.loadSecrets(); err != nil {
		return fail(err)
	}
	if c.routerLn, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
		return fail(fmt.Errorf("controller: router listener: %w", err))
	}
	if !cfg.Insecure {
		id := cfg.TLS
		if id.Logger == nil {
			id.Logger = c.log
		}
		srv, err := id.ServerTLS(pki.PeerPolicy{Kind: pki.Router})
		if err != nil {
			return fail(fmt.Errorf("%w: router listener TLS: %w", ErrInvalidConfig, err))
		}
		c.routerLn = tls.NewListener(c.routerLn, srv)
	}
	if c.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		return fail(fmt.Errorf("controller: admin listener: %w", err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := c.initMode(ctx, m); err != nil {
		return fail(err)
	}
	return c, nil
}

// startTimeout bounds what New does with raft: opening its store, and for
// a bootstrap the election and seeding.
const startTimeout = 5 * time.Minute

// RouterAddr is the bound router-facing address.
func (c *Controller) RouterAddr() net.Addr { return c.routerLn.Addr() }

// AdminAddr is the bound admin HTTP address.
func (c *Controller) AdminAddr() net.Addr { return c.adminLn.Addr() }

func (c *Controller) nodeID() string {
	c.idMu.Lock()
	defer c.idMu.Unlock()
	return c.id
}

func (c *Controller) setNodeID(id string) {
	c.idMu.Lock()
	defer c.idMu.Unlock()
	c.id = id
}

// readMeta reads the controller's meta in its own read transaction.
func (c *Controller) readMeta(ctx context.Context) (meta, error) {
	var m meta
	err := c.st.view(ctx, func(tx *model.Tx) (err error) { m, err = readMeta(tx); return err })
	return m, err
}

// startEngine makes e the gate's engine and, while Run runs, starts it.
func (c *Controller) startEngine(e engine) {
	c.gate.setEngine(e)
	c.engMu.Lock()
	defer c.engMu.Unlock()
	if c.engBase == nil {
		return // Run starts it
	}
	ctx, stop := context.WithCancel(c.engBase)
	done := make(chan struct{})
	c.engStop, c.engDone = stop, done
	go func() { defer close(done); e.run(ctx) }()
}

// stopEngine stops the running engine and waits until it has answered
// every request it took.
func (c *Controller) stopEngine() {
	c.engMu.Lock()
	stop, done := c.engStop, c.engDone
	c.engStop, c.engDone = nil, nil
	c.engMu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// Run serves routers and the admin API until ctx ends (or Close), then
// shuts down gracefully: no new connections, in-flight writes commit and
// answer (within Config.ShutdownTimeout), sessions close. It may be called
// once.
func (c *Controller) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.started || c.closed {
		c.mu.Unlock()
		return errors.New("controller: Run called twice or after Close")
	}
	c.started = true
	ctx, stop := context.WithCancel(ctx)
	c.stop, c.runCtx = stop, ctx
	c.mu.Unlock()
	defer close(c.done)
	defer stop()

	m, err := c.readMeta(context.Background())
	if err != nil {
		return fmt.Errorf("controller: read store: %w", err)
	}
	c.log.Info("controller running", "routers", c.RouterAddr().String(), "admin", c.AdminAddr().String(),
		"role", role(c.role.Load()).String(), "node", c.nodeID(),
		"mode", m.mode.String(), "index", m.index(), "timeline", m.timeline.String(), "clusterId", m.clusterID,
		"logFloor", m.logFloor, "retention", c.cfg.Retention, "tls", !c.cfg.Insecure, "adminToken", c.token() != nil)
	c.warnInsecure()

	// The engine outlives ctx until the admin server has drained, so that
	// writes accepted before the shutdown still commit and answer.
	engCtx, engStop := context.WithCancel(context.WithoutCancel(ctx))
	defer engStop()
	c.engMu.Lock()
	c.engBase = engCtx
	c.engMu.Unlock()
	c.startEngine(c.gate.engine())
	if c.joinURL != "" {
		c.bg.Go(func() { c.joinLoop(ctx) })
	}

	srv := &http.Server{
		Handler:           c.adminHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return engCtx },
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- srv.Serve(c.adminLn) }()

	var conns sync.WaitGroup
	acceptDone := make(chan struct{})
	go func() { defer close(acceptDone); c.acceptRouters(ctx, &conns) }()

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-httpErr:
		runErr = fmt.Errorf("controller: admin server: %w", err)
		stop()
	}
	c.log.Info("controller shutting down")
	_ = c.routerLn.Close()
	<-acceptDone
	sctx, cancel := context.WithTimeout(context.Background(), c.cfg.ShutdownTimeout)
	if err := srv.Shutdown(sctx); err != nil {
		c.log.Warn("admin server shutdown", "err", err)
		_ = srv.Close()
	}
	cancel()
	c.bg.Wait()
	c.stopEngine()
	c.engMu.Lock()
	c.engBase = nil
	c.engMu.Unlock()
	conns.Wait()
	c.log.Info("controller stopped")
	return runErr
}

// acceptRouters accepts router connections until the listener closes.
func (c *Controller) acceptRouters(ctx context.Context, conns *sync.WaitGroup) {
	backoff := 5 * time.Millisecond
	for {
		nc, err := c.routerLn.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Running out of file descriptors and the like: wait a little
			// rather than spin (net/http does the same).
			c.log.Warn("accepting a router connection failed", "err", err, "retryIn", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		conns.Add(1)
		go func() {
			defer conns.Done()
			c.serveConn(ctx, nc)
		}()
	}
}

// Close stops Run if it is running, waits for it, and closes the
// listeners and the store.
func (c *Controller) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	started, stop := c.started, c.stop
	c.mu.Unlock()
	if started {
		stop()
		<-c.done
	} else {
		// Fail the Commits waiting for a Run that will never come.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		c.gate.engine().run(ctx)
	}
	_ = c.routerLn.Close()
	_ = c.adminLn.Close()
	var errs []error
	if h := c.ha.Swap(nil); h != nil {
		// Raft first: its state machine writes to the store.
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ShutdownTimeout)
		errs = append(errs, h.shutdown(ctx))
		cancel()
	}
	errs = append(errs, c.st.close())
	return errors.Join(errs...)
}

// Commit commits changes as one change set, as POST /v1/changes does, and
// returns once the commit is durable. A Commit made before Run starts waits
// for it (bounded by ctx); after Run has ended it fails with ErrNotServing.
// Invalid changes fail with ErrInvalidRequest and nothing is applied. On
// an HA follower (or a retired member) the write is forwarded to the node
// that takes writes.
func (c *Controller) Commit(ctx context.Context, changes []model.Change) (CommitResult, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return CommitResult{}, ErrNotServing
	}
	// The engine keeps the slice until the change set leaves the ring.
	res, err := c.commit(ctx, slices.Clone(changes))
	if errors.Is(err, errFollower) {
		return c.forwardCommit(ctx, changes)
	}
	return res, err
}

// commit submits changes to the current engine through the gate. It
// returns errFollower when this node does not take writes.
func (c *Controller) commit(ctx context.Context, changes []model.Change) (CommitResult, error) {
	if role(c.role.Load()) == roleRetired {
		return CommitResult{}, errFollower
	}
	eng, leave, err := c.gate.enter(ctx)
	if err != nil {
		return CommitResult{}, err
	}
	h, err := eng.submit(ctx, changes)
	leave()
	if err != nil {
		return CommitResult{}, err
	}
	return CommitResult{Index: h.Index, IndexType: h.Type, Timeline: h.Timeline}, nil
}

// Status reports the controller's state from one read transaction, and its
// routers.
func (c *Controller) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.st.view(ctx, func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		d, err := tx.Digest()
		if err != nil {
			return err
		}
		st = Status{
			Mode: m.mode, Index: m.index(), Timeline: m.timeline, Entities: tx.Count(), Digest: d,
			ChangeSets: m.changeSets, ClusterID: m.clusterID, NodeID: c.nodeID(),
			LogFloor: m.logFloor, LogChangeSets: m.logCount, Retention: c.cfg.Retention,
		}
		return nil
	})
	if err != nil {
		return Status{}, fmt.Errorf("controller: status: %w", err)
	}
	st.Routers = c.routers.snapshot(st.Index)
	st.Role = role(c.role.Load()).String()
	st.Serving = c.serving()
	if h := c.ha.Load(); h != nil {
		st.Leader = h.node.IsLeader()
		st.Term = h.node.Term()
		st.Peers = c.peers(ctx, h)
	}
	st.Migration = c.migration()
	return st, nil
}

// Backup writes a consistent copy of the running store to w (a store file
// that Restore installs) and returns its size.
func (c *Controller) Backup(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	err := c.st.view(ctx, func(tx *model.Tx) (err error) {
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}
