package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/indexgate/indexgate/host"
	"github.com/indexgate/indexgate/model"
)

// shutdownTimeout bounds how long Run waits for admin requests in flight
// when it stops.
const shutdownTimeout = 5 * time.Second

// ErrClosed reports Run on a closed Router, or on one whose Run is already
// running.
var ErrClosed = errors.New("router: closed")

// Router is one edge router: its store, filter host, controller client and
// admin API. Create it with New, run it with Run, release it with Close.
type Router struct {
	cfg    Config
	log    *slog.Logger
	reg    *prometheus.Registry
	met    *metrics
	store  *model.Store
	host   *host.Host
	fstore *filterStore
	app    *applier
	cl     *client
	ln     net.Listener
	srv    *http.Server

	mu      sync.Mutex
	closed  bool
	stopRun context.CancelFunc // non-nil while Run runs
	runDone chan struct{}
}

// New opens the router's store in cfg.DataDir, loads its filters, restores
// their committed states and binds the admin API's address. Nothing
// connects to a controller before Run.
func New(ctx context.Context, cfg Config) (_ *Router, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	log := c.Logger.With("router", c.ID)
	r := &Router{cfg: c, log: log, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			r.release()
		}
	}()
	filterDir := filepath.Join(c.DataDir, "filters")
	if err := os.MkdirAll(filterDir, 0o700); err != nil {
		return nil, fmt.Errorf("router: data dir: %w", err)
	}
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if r.met, err = newMetrics(r.reg); err != nil {
		return nil, fmt.Errorf("router: metrics: %w", err)
	}
	if r.store, err = model.Open(filepath.Join(c.DataDir, "router.db"), model.Options{NoSync: c.NoSync}); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	r.host, err = host.New(ctx, host.Config{
		CacheDir:         c.CacheDir,
		MemoryLimitBytes: c.MemoryLimitBytes,
		CallTimeout:      c.CallTimeout,
		FailPolicy:       host.FailClosed,
		Logger:           log,
		Registerer:       r.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	r.fstore = &filterStore{dir: filterDir, log: log}
	if err := r.fstore.loadFilters(ctx, r.host, &r.cfg); err != nil {
		return nil, err
	}
	if r.app, err = newApplier(ctx, r.store, r.host, log, r.met); err != nil {
		return nil, err
	}
	r.cl = &client{cfg: &r.cfg, log: log, app: r.app, met: r.met}
	if r.ln, err = net.Listen("tcp", c.AdminAddr); err != nil {
		return nil, fmt.Errorf("router: admin API: %w", err)
	}
	r.srv = &http.Server{
		Handler:           r.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	st := r.app.st
	log.Info("router ready", "data_dir", c.DataDir, "admin", r.AdminAddr(), "controllers", c.Controllers,
		"positions", st.positionList(), "current", st.current.String(), "want_full_state", st.wantFull)
	return r, nil
}

// AdminAddr is the admin API's address (host:port), with the port chosen
// when Config.AdminAddr asked for port 0.
func (r *Router) AdminAddr() string { return r.ln.Addr().String() }

// Run serves the admin API and keeps a session with a controller until ctx
// ends (or Close is called), then stops both and returns nil. It returns
// an error only when the admin server fails.
func (r *Router) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.closed || r.stopRun != nil {
		r.mu.Unlock()
		return fmt.Errorf("%w (or already running)", ErrClosed)
	}
	ctx, cancel := context.WithCancel(ctx)
	r.stopRun, r.runDone = cancel, make(chan struct{})
	done := r.runDone
	r.mu.Unlock()
	defer close(done)
	defer cancel()

	srvErr := make(chan error, 1)
	go func() { srvErr <- r.srv.Serve(r.ln) }()
	r.log.Info("admin API listening", "addr", r.AdminAddr())
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		r.cl.run(ctx)
	}()

	var err error
	select {
	case <-ctx.Done():
	case err = <-srvErr:
		err = fmt.Errorf("router: admin API: %w", err)
	}
	cancel()
	<-clientDone
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer scancel()
	if serr := r.srv.Shutdown(sctx); serr != nil && err == nil && !errors.Is(serr, http.ErrServerClosed) {
		r.log.Warn("admin API did not shut down cleanly", "err", serr)
	}
	r.log.Info("router stopped")
	return err
}

// Close stops Run if it is running, waits for it, and releases the
// filters, the store and the admin listener. It is safe to call more than
// once.
func (r *Router) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	stop, done := r.stopRun, r.runDone
	r.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	return r.release()
}

// release frees what New acquired, in reverse order.
func (r *Router) release() error {
	var errs []error
	if r.srv != nil {
		errs = append(errs, ignoreClosed(r.srv.Close()))
	}
	if r.ln != nil {
		errs = append(errs, ignoreClosed(r.ln.Close()))
	}
	if r.host != nil {
		errs = append(errs, r.host.Close(context.Background()))
	}
	if r.store != nil {
		errs = append(errs, r.store.Close())
	}
	return errors.Join(errs...)
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
