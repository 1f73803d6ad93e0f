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
	"github.com/indexgate/indexgate/trust"
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
	auth   *adminAuth
	app    *applier
	cl     *client
	watch  *dirWatcher // nil without Config.FilterDir
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
	// Security first: a router that would run with certificates, tokens or
	// a trust policy it cannot use must not open its store or connect.
	if r.cfg.TLS.Logger == nil {
		r.cfg.TLS.Logger = log // certificate reloads
	}
	conn, err := newConnector(&r.cfg)
	if err != nil {
		return nil, err
	}
	if r.auth, err = newAdminAuth(c.AdminTokenFile, c.Insecure, log); err != nil {
		return nil, err
	}
	policy, err := trust.NewPolicy(c.Trust)
	if err != nil {
		return nil, fmt.Errorf("%w: trust policy: %w", ErrInvalidConfig, err)
	}
	r.logSecurity(policy)
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
	r.fstore = &filterStore{dir: filterDir, log: log, policy: policy, h: r.host}
	if err := r.fstore.loadFilters(ctx, &r.cfg); err != nil {
		return nil, err
	}
	var dec decider = r.host
	if c.NativeFilters {
		dec = newNativeFilters()
		log.Warn("filters: deciding with the native Go reference filters, not the wasm modules (NativeFilters)")
	}
	if r.app, err = newApplier(ctx, r.store, dec, log, r.met); err != nil {
		return nil, err
	}
	r.cl = &client{cfg: &r.cfg, log: log, app: r.app, met: r.met, dial: conn}
	if c.FilterDir != "" {
		if r.watch, err = newDirWatcher(c.FilterDir, c.FilterDirSettle, r.fstore, log, r.met); err != nil {
			return nil, err
		}
	}
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

// logSecurity says at every start how the router is protected, loudly
// where it is not.
func (r *Router) logSecurity(policy *trust.Policy) {
	c := &r.cfg
	if c.Insecure {
		r.log.Warn("INSECURE: connecting to controllers over plaintext TCP (--insecure): anyone on the network path can read the change sets and feed this router forged ones; use --tls-cert/--tls-key/--tls-ca or --pki-dir in production")
	} else {
		r.log.Info("controller connections use mutual TLS 1.3", "cert", c.TLS.CertFile, "ca", c.TLS.CAFile)
	}
	switch {
	case r.auth.open:
		r.log.Warn("INSECURE: the admin API's mutating endpoints (filter swap, shadow, promote, rollback) are open to anyone who can reach it (--insecure without --admin-token-file)",
			"admin", c.AdminAddr)
	case c.AdminTokenFile == "":
		r.log.Info("the admin API's mutating endpoints are disabled: no --admin-token-file")
	default:
		r.log.Info("the admin API's mutating endpoints require the bearer token", "token_file", c.AdminTokenFile)
	}
	if host, _, err := net.SplitHostPort(c.AdminAddr); err == nil {
		if ip := net.ParseIP(host); (ip == nil && host != "localhost") || (ip != nil && !ip.IsLoopback()) {
			r.log.Warn("the admin API listens beyond loopback; its read-only endpoints (status, entities, metrics) need no token", "admin", c.AdminAddr)
		}
	}
	lvl := slog.LevelInfo
	if c.Trust.AllowUnsigned {
		lvl = slog.LevelWarn
	}
	r.log.Log(context.Background(), lvl, "filter module trust policy", "policy", policy.String(), "allow_unsigned", c.Trust.AllowUnsigned)
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
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		if r.watch != nil {
			r.watch.run(ctx)
		}
	}()

	var err error
	select {
	case <-ctx.Done():
	case err = <-srvErr:
		err = fmt.Errorf("router: admin API: %w", err)
	}
	cancel()
	<-clientDone
	<-watchDone
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
	if r.watch != nil {
		errs = append(errs, r.watch.close())
	}
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
