package router

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/host"
	"github.com/indexgate/indexgate/pki"
	"github.com/indexgate/indexgate/trust"
	"github.com/indexgate/indexgate/wire"
)

// Defaults applied to the zero fields of a Config.
const (
	// DefaultAdminAddr serves the admin API on a free loopback port; the
	// command line uses a fixed port instead (docs/router.md).
	DefaultAdminAddr = "127.0.0.1:0"
	// DefaultDialTimeout bounds one TCP connect to a controller.
	DefaultDialTimeout = 5 * time.Second
	// DefaultWriteTimeout bounds one frame write. A controller that does
	// not read an ack for this long is treated as gone.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultBackoffMin is the first delay after a failed connection
	// attempt; it doubles per further failure up to DefaultBackoffMax.
	DefaultBackoffMin = 100 * time.Millisecond
	// DefaultBackoffMax caps the reconnect delay (docs/protocol.md §11):
	// a router whose controller is back finds it again within this time.
	DefaultBackoffMax = 30 * time.Second
	// DefaultMaxModuleBytes bounds a module uploaded to the admin API. A
	// Go filter is about 3 MB; 32 MiB leaves room for larger toolchains.
	DefaultMaxModuleBytes = 32 << 20
	// DefaultFilterDirSettle is how long a module file in FilterDir must
	// go without a change before the router reads it: long enough for a
	// copy in progress to finish writing, short enough to feel immediate.
	DefaultFilterDirSettle = 500 * time.Millisecond
)

// ErrInvalidConfig reports a Config that cannot work: a missing or
// malformed field, or a filter module given in Filters that the host
// refuses. A command line maps it to a usage error.
var ErrInvalidConfig = errors.New("router: invalid configuration")

// ErrTLSRequired reports a Config with neither a TLS identity nor
// Insecure: the controller connection is mutual TLS unless the operator
// asked for plaintext explicitly. A command line maps it to a usage error.
var ErrTLSRequired = errors.New("router: a TLS identity is required (--tls-cert, --tls-key and --tls-ca, or --pki-dir); --insecure runs over plaintext TCP instead")

// Config configures a Router.
type Config struct {
	// ID names the router in the controller's logs, status and metrics.
	// Required.
	ID string
	// DataDir holds the router's store (router.db), the compilation cache
	// and hot-swapped filter modules (filters/). Required; created if
	// missing.
	DataDir string
	// Controllers are controller addresses (host:port), tried in order.
	// Required.
	Controllers []string
	// AdminAddr is the admin API's listen address. Default
	// DefaultAdminAddr.
	AdminAddr string

	// TLS is the router's identity for mutual TLS 1.3 with its
	// controllers: its certificate and key (issued by "controller pki issue
	// --router ID"; pki.IdentityFor names the files) and the CA that the
	// controller's certificate must chain to. The certificate must be a
	// router certificate named ID, and ID must then be a valid certificate
	// name (pki.ValidateName). Required unless Insecure.
	TLS pki.Identity
	// Insecure runs the controller connection over plaintext TCP and,
	// when AdminTokenFile is empty, leaves the mutating admin endpoints
	// open. For development only: New logs a warning every time. It
	// excludes TLS.
	Insecure bool
	// AdminTokenFile holds the bearer token (at least 16 bytes, surrounding
	// white space ignored) that the mutating admin endpoints require (hot
	// swap, shadow, promote, rollback). The file is read again when it
	// changes, so a token rotates without a restart. Without it those
	// endpoints answer 401, unless Insecure. Read-only endpoints are open.
	AdminTokenFile string

	// Trust decides which filter modules may serve besides the built-ins:
	// pinned digests, modules signed by a trusted key, or (AllowUnsigned)
	// anything. It applies to Filters, to modules hot-swapped earlier and
	// persisted in DataDir, to admin API swaps and shadow candidates and
	// to FilterDir. The zero value trusts only the built-ins. Pinned and
	// signed modules run as host.Trusted, the others as host.Untrusted.
	Trust trust.Config
	// FilterSignatures are the detached signatures (trust.Sign, the
	// FILE.wasm.sig files) of the modules in Filters, by index type.
	FilterSignatures map[abi.IndexType][]byte
	// FilterDir, if set, is an existing directory the router watches for
	// TYPE.wasm files (legacy.wasm, ha.wasm) and their signatures
	// (TYPE.wasm.sig): a new or changed module is verified and hot-swapped
	// in as through the admin API. A module already in the directory at
	// start is swapped in then, unless it is the one serving.
	FilterDir string
	// FilterDirSettle is how long a file in FilterDir must stay unchanged
	// before the router acts on it, so a module still being written is not
	// read half-way. Default DefaultFilterDirSettle.
	FilterDirSettle time.Duration

	// Filters overrides the module of an index type. Without an entry the
	// router loads the module last hot-swapped into that type (persisted
	// in DataDir/filters) or else the embedded built-in. A module given
	// here must pass Trust (with its FilterSignatures entry, if any); its
	// own Trust field is ignored, the policy's decision sets it.
	Filters map[abi.IndexType]host.Module
	// CacheDir is the compilation cache. Default DataDir/cache.
	CacheDir string
	// MemoryLimitBytes caps each filter instance's memory (a multiple of
	// 64 KiB). Default host.DefaultMemoryLimitBytes.
	MemoryLimitBytes uint64
	// CallTimeout bounds each call into an untrusted filter. Default
	// host.DefaultCallTimeout.
	CallTimeout time.Duration
	// NativeFilters decides change sets with the reference Go strategies
	// of package filters/native instead of the wasm host: for benchmarks
	// and tests that measure what wasm costs. The wasm modules are still
	// loaded and reported by the admin API, but they decide nothing and a
	// hot swap has no effect. Default false: the wasm host decides.
	NativeFilters bool

	// DialTimeout bounds one connect. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the wait for the controller's Welcome.
	// Default wire.DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// HeartbeatInterval: the router sends a Heartbeat after writing
	// nothing for this long. Default wire.DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// IdleTimeout: the router drops a connection on which it read nothing
	// for this long. Default wire.DefaultIdleTimeout; it must exceed
	// HeartbeatInterval.
	IdleTimeout time.Duration
	// WriteTimeout bounds each frame write. Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// BackoffMin and BackoffMax bound the reconnect delay (exponential,
	// with jitter). Defaults DefaultBackoffMin and DefaultBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// MaxFrame is the largest frame payload the router reads; the
	// controller is told in Hello. Default wire.DefaultMaxFrame.
	MaxFrame int
	// MaxModuleBytes bounds a module uploaded to the admin API. Default
	// DefaultMaxModuleBytes.
	MaxModuleBytes int64

	// Logger receives the router's logs. Default: discard.
	Logger *slog.Logger
	// NoSync skips fsync on commit: tests and benchmarks only, a power
	// loss may then lose committed change sets.
	NoSync bool
}

// Validate reports the first invalid field, wrapping ErrInvalidConfig (or
// ErrTLSRequired). It reads no files: New does.
func (c *Config) Validate() error {
	if c.ID == "" {
		return fmt.Errorf("%w: ID is required", ErrInvalidConfig)
	}
	if err := c.validateSecurity(); err != nil {
		return err
	}
	if c.DataDir == "" {
		return fmt.Errorf("%w: DataDir is required", ErrInvalidConfig)
	}
	if len(c.Controllers) == 0 {
		return fmt.Errorf("%w: at least one controller address is required", ErrInvalidConfig)
	}
	for _, a := range c.Controllers {
		if err := checkHostPort(a, false); err != nil {
			return fmt.Errorf("%w: controller address %q: %v", ErrInvalidConfig, a, err)
		}
	}
	if c.AdminAddr != "" {
		if err := checkHostPort(c.AdminAddr, true); err != nil {
			return fmt.Errorf("%w: admin address %q: %v", ErrInvalidConfig, c.AdminAddr, err)
		}
	}
	for t, m := range c.Filters {
		if !t.Valid() {
			return fmt.Errorf("%w: filter for unknown index type %d", ErrInvalidConfig, uint8(t))
		}
		if len(m.Bytes) == 0 {
			return fmt.Errorf("%w: filter module for %s is empty", ErrInvalidConfig, t)
		}
	}
	for t := range c.FilterSignatures {
		if _, ok := c.Filters[t]; !ok {
			return fmt.Errorf("%w: a filter signature for %s without a filter module for it", ErrInvalidConfig, t)
		}
	}
	if err := c.Trust.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.FilterDirSettle < 0 {
		return fmt.Errorf("%w: negative FilterDirSettle %v", ErrInvalidConfig, c.FilterDirSettle)
	}
	hc := host.Config{MemoryLimitBytes: c.MemoryLimitBytes, CallTimeout: c.CallTimeout}
	if err := hc.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"DialTimeout", c.DialTimeout}, {"HandshakeTimeout", c.HandshakeTimeout},
		{"HeartbeatInterval", c.HeartbeatInterval}, {"IdleTimeout", c.IdleTimeout},
		{"WriteTimeout", c.WriteTimeout}, {"BackoffMin", c.BackoffMin}, {"BackoffMax", c.BackoffMax},
	} {
		if d.v < 0 {
			return fmt.Errorf("%w: negative %s %v", ErrInvalidConfig, d.name, d.v)
		}
	}
	d := c.withDefaults()
	if d.IdleTimeout <= d.HeartbeatInterval {
		return fmt.Errorf("%w: IdleTimeout %v must exceed HeartbeatInterval %v", ErrInvalidConfig, d.IdleTimeout, d.HeartbeatInterval)
	}
	if d.BackoffMax < d.BackoffMin {
		return fmt.Errorf("%w: BackoffMax %v below BackoffMin %v", ErrInvalidConfig, d.BackoffMax, d.BackoffMin)
	}
	if c.MaxFrame < 0 || c.MaxFrame > 1<<31-1 {
		return fmt.Errorf("%w: MaxFrame %d out of range", ErrInvalidConfig, c.MaxFrame)
	}
	if c.MaxModuleBytes < 0 {
		return fmt.Errorf("%w: negative MaxModuleBytes %d", ErrInvalidConfig, c.MaxModuleBytes)
	}
	return nil
}

// validateSecurity checks the transport choice: TLS or Insecure, not both
// and not neither.
func (c *Config) validateSecurity() error {
	anyTLS := c.TLS.CertFile != "" || c.TLS.KeyFile != "" || c.TLS.CAFile != ""
	switch {
	case c.Insecure && anyTLS:
		return fmt.Errorf("%w: Insecure (--insecure) and a TLS identity exclude each other", ErrInvalidConfig)
	case c.Insecure:
		return nil
	case !anyTLS:
		return ErrTLSRequired
	}
	if err := c.TLS.Validate(); err != nil {
		return fmt.Errorf("%w: TLS identity: %w", ErrInvalidConfig, err)
	}
	if err := pki.ValidateName(c.ID); err != nil {
		return fmt.Errorf("%w: ID must name the router's certificate: %w", ErrInvalidConfig, err)
	}
	return nil
}

// withDefaults returns a copy with every zero field set to its default.
func (c *Config) withDefaults() Config {
	d := *c
	if d.AdminAddr == "" {
		d.AdminAddr = DefaultAdminAddr
	}
	if d.CacheDir == "" && d.DataDir != "" {
		d.CacheDir = filepath.Join(d.DataDir, "cache")
	}
	if d.DialTimeout == 0 {
		d.DialTimeout = DefaultDialTimeout
	}
	if d.HandshakeTimeout == 0 {
		d.HandshakeTimeout = wire.DefaultHandshakeTimeout
	}
	if d.HeartbeatInterval == 0 {
		d.HeartbeatInterval = wire.DefaultHeartbeatInterval
	}
	if d.IdleTimeout == 0 {
		d.IdleTimeout = wire.DefaultIdleTimeout
	}
	if d.WriteTimeout == 0 {
		d.WriteTimeout = DefaultWriteTimeout
	}
	if d.BackoffMin == 0 {
		d.BackoffMin = DefaultBackoffMin
	}
	if d.BackoffMax == 0 {
		d.BackoffMax = DefaultBackoffMax
	}
	if d.MaxFrame == 0 {
		d.MaxFrame = wire.DefaultMaxFrame
	}
	if d.MaxModuleBytes == 0 {
		d.MaxModuleBytes = DefaultMaxModuleBytes
	}
	if d.FilterDirSettle == 0 {
		d.FilterDirSettle = DefaultFilterDirSettle
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return d
}

// checkHostPort accepts host:port; port 0 (any free port) only where
// listening, never where dialing.
func checkHostPort(addr string, listen bool) error {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	lo := 1
	if listen {
		lo = 0
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < lo || n > 65535 {
		return fmt.Errorf("port %q is not a number from %d to 65535", p, lo)
	}
	return nil
}
