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
)

// ErrInvalidConfig reports a Config that cannot work: a missing or
// malformed field, or a filter module given in Filters that the host
// refuses. A command line maps it to a usage error.
var ErrInvalidConfig = errors.New("router: invalid configuration")

// ErrInsecureRequired reports a Config without Insecure. TLS between
// controller and router is not implemented yet, so a router only runs
// when its operator acknowledged plaintext explicitly.
var ErrInsecureRequired = errors.New("router: TLS is not implemented yet; set Insecure (--insecure) to run over plaintext TCP")

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
	// Insecure must be true: the controller connection is plaintext TCP
	// until TLS lands.
	Insecure bool

	// Filters overrides the module of an index type. Without an entry the
	// router loads the module last hot-swapped into that type (persisted
	// in DataDir/filters) or else the embedded built-in. A module given
	// here is Untrusted unless its Trust says otherwise.
	Filters map[abi.IndexType]host.Module
	// CacheDir is the compilation cache. Default DataDir/cache.
	CacheDir string
	// MemoryLimitBytes caps each filter instance's memory (a multiple of
	// 64 KiB). Default host.DefaultMemoryLimitBytes.
	MemoryLimitBytes uint64
	// CallTimeout bounds each call into an untrusted filter. Default
	// host.DefaultCallTimeout.
	CallTimeout time.Duration

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
// ErrInsecureRequired).
func (c *Config) Validate() error {
	if !c.Insecure {
		return ErrInsecureRequired
	}
	if c.ID == "" {
		return fmt.Errorf("%w: ID is required", ErrInvalidConfig)
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
