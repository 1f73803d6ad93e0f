package controller

import (
	"context"
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
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
)

// Controller is a legacy-mode controller: its store, its write engine, the
// router-facing server and the admin HTTP server. New binds both
// listeners, Run serves until its context ends, Close releases everything.
type Controller struct {
	cfg     Config
	log     *slog.Logger
	st      *store
	hub     *hub
	eng     engine
	reg     *prometheus.Registry
	met     *metrics
	routers *registry

	routerLn net.Listener
	adminLn  net.Listener

	mu      sync.Mutex
	started bool
	stop    context.CancelFunc // ends Run; set while Run runs
	done    chan struct{}      // closed when Run returns
	closed  bool
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
}

// New opens (or creates) the store in cfg.DataDir and binds the router and
// admin listeners, so RouterAddr and AdminAddr are known before Run.
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
	c := &Controller{cfg: cfg, log: cfg.Logger, st: st, reg: prometheus.NewRegistry(), routers: newRegistry(), done: make(chan struct{})}
	var m meta
	var last logKey
	err = st.db.View(context.Background(), func(tx *model.Tx) error {
		if m, err = readMeta(tx); err != nil {
			return err
		}
		last, err = lastLogKey(tx)
		return err
	})
	if err != nil {
		_ = st.close()
		return nil, fmt.Errorf("controller: read store: %w", err)
	}
	c.hub = newHub(cfg.RingSize, last, m.index())
	if c.met, err = newMetrics(c.reg, c); err != nil {
		_ = st.close()
		return nil, fmt.Errorf("controller: metrics: %w", err)
	}
	if m.mode != abi.IndexLegacy {
		_ = st.close()
		return nil, fmt.Errorf("%w: the store is in %s mode; this controller runs legacy mode only", ErrWrongMode, m.mode)
	}
	c.eng = newLegacyEngine(st, c.hub, c.met, c.log, cfg.MaxCommitBatch)
	if c.routerLn, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
		_ = st.close()
		return nil, fmt.Errorf("controller: router listener: %w", err)
	}
	if c.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		_ = c.routerLn.Close()
		_ = st.close()
		return nil, fmt.Errorf("controller: admin listener: %w", err)
	}
	return c, nil
}

// RouterAddr is the bound router-facing address.
func (c *Controller) RouterAddr() net.Addr { return c.routerLn.Addr() }

// AdminAddr is the bound admin HTTP address.
func (c *Controller) AdminAddr() net.Addr { return c.adminLn.Addr() }

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
	c.stop = stop
	c.mu.Unlock()
	defer close(c.done)
	defer stop()

	var m meta
	if err := c.st.db.View(context.Background(), func(tx *model.Tx) (err error) { m, err = readMeta(tx); return err }); err != nil {
		return fmt.Errorf("controller: read store: %w", err)
	}
	c.log.Info("controller running", "routers", c.RouterAddr().String(), "admin", c.AdminAddr().String(),
		"mode", m.mode.String(), "index", m.index(), "timeline", m.timeline.String(), "clusterId", m.clusterID,
		"logFloor", m.logFloor, "retention", c.cfg.Retention)

	// The engine outlives ctx until the admin server has drained, so that
	// writes accepted before the shutdown still commit and answer.
	engCtx, engStop := context.WithCancel(context.WithoutCancel(ctx))
	defer engStop()
	engDone := make(chan struct{})
	go func() { defer close(engDone); c.eng.run(engCtx) }()

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
	engStop()
	<-engDone
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
		c.eng.run(ctx)
	}
	_ = c.routerLn.Close()
	_ = c.adminLn.Close()
	return c.st.close()
}

// Commit commits changes as one change set, as POST /v1/changes does, and
// returns once the commit is durable. A Commit made before Run starts waits
// for it (bounded by ctx); after Run has ended it fails with ErrNotServing.
// Invalid changes fail with ErrInvalidRequest and nothing is applied.
func (c *Controller) Commit(ctx context.Context, changes []model.Change) (CommitResult, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return CommitResult{}, ErrNotServing
	}
	// The engine keeps the slice until the change set leaves the ring.
	h, err := c.eng.submit(ctx, slices.Clone(changes))
	if err != nil {
		return CommitResult{}, err
	}
	return CommitResult{Index: h.Index, IndexType: h.Type, Timeline: h.Timeline}, nil
}

// Status reports the controller's state from one read transaction, and its
// routers.
func (c *Controller) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.st.db.View(ctx, func(tx *model.Tx) error {
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
			ChangeSets: m.changeSets, ClusterID: m.clusterID, NodeID: c.cfg.NodeID,
			LogFloor: m.logFloor, LogChangeSets: m.logCount, Retention: c.cfg.Retention,
		}
		return nil
	})
	if err != nil {
		return Status{}, fmt.Errorf("controller: status: %w", err)
	}
	st.Routers = c.routers.snapshot(st.Index)
	return st, nil
}

// Backup writes a consistent copy of the running store to w (a store file
// that Restore installs) and returns its size.
func (c *Controller) Backup(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	err := c.st.db.View(ctx, func(tx *model.Tx) (err error) {
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}
