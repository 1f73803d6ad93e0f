package controller

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/indexgate/indexgate/controller/raftnode"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/pki"
	"github.com/indexgate/indexgate/wire"
)

// Defaults applied by New to the zero fields of a Config.
const (
	// DefaultListenAddr is the router-facing address. Routers are remote,
	// so it listens on every interface.
	DefaultListenAddr = ":7070"
	// DefaultAdminAddr is the admin HTTP address: loopback only, because
	// the admin API takes writes and serves backups.
	DefaultAdminAddr = "127.0.0.1:7071"
	// DefaultRetention is how many change sets the log keeps. Routers that
	// fall further behind get a full state instead of a replay.
	DefaultRetention = 100_000
	// DefaultRingSize is how many recent log entries stay in memory, so
	// that routers near the head never touch bbolt.
	DefaultRingSize = 8192
	// DefaultMaxRequestBytes bounds a POST /v1/changes body. A change set's
	// frame must fit wire.DefaultMaxFrame (16 MiB); its JSON is somewhat
	// larger, so twice that leaves room for escaping.
	DefaultMaxRequestBytes = 2 * wire.DefaultMaxFrame
	// DefaultMaxCommitBatch is the largest number of write requests the
	// writer commits in one bbolt transaction.
	DefaultMaxCommitBatch = 1024
	// DefaultWriteTimeout bounds every frame written to a router. A
	// router that takes longer is dropped (it reconnects and resumes), so
	// a stalled one cannot hold a full state's read transaction forever.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultShutdownTimeout bounds the graceful shutdown of the admin
	// server: in-flight writes get this long to commit and answer.
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultInitialMmapSize pre-sizes bbolt's memory map. A writer that
	// must grow the map waits for every open read transaction, and a full
	// state holds one for the whole transfer; a map sized above the store
	// makes that wait rare. It is address space, not memory.
	DefaultInitialMmapSize = 1 << 30
	// DefaultFullStateChunkBytes is the target payload of one
	// FullStateChunk (docs/protocol.md suggests about 1 MiB).
	DefaultFullStateChunkBytes = 1 << 20
	// DefaultAckTimeout bounds a migration's wait for every connected
	// router to acknowledge the last index of the old mode. Stragglers
	// are reported and catch up later by replay.
	DefaultAckTimeout = 10 * time.Second
	// DefaultPauseTimeout bounds how long a write waits while a migration
	// has paused writes; after it the write fails with ErrPaused (503) and
	// the client retries.
	DefaultPauseTimeout = time.Minute
	// DefaultApplyPipeline is how many raft entries the HA engine keeps in
	// flight: raft group-commits concurrent entries, so a few in flight
	// keep the log busy while the state machine applies the previous ones.
	DefaultApplyPipeline = 4
)

// Files and directories inside Config.DataDir in HA mode.
const (
	// RaftDir holds the raft node's state (raft.db, snapshots/).
	RaftDir = "raft"
	// MemberFile records this data directory's HA membership (node id and
	// raft address): a restart finds its node identity there, and the
	// raft state belongs to it.
	MemberFile = "ha-member.json"
)

// StoreFile is the name of the store file inside Config.DataDir.
const StoreFile = "controller.db"

// Sentinel errors callers act on.
var (
	// ErrTLSNotConfigured reports a Config without TLS that does not opt
	// into plaintext with Insecure.
	ErrTLSNotConfigured = errors.New("controller: TLS is not configured: pass --tls-cert, --tls-key and --tls-ca (or --pki-dir), or --insecure to run plaintext")
	// ErrInvalidConfig reports a Config field out of range.
	ErrInvalidConfig = errors.New("controller: invalid config")
	// ErrInvalidRequest reports a write request that must not be committed:
	// an invalid change, an empty change list, a body that does not parse.
	// Nothing of it was applied.
	ErrInvalidRequest = errors.New("controller: invalid request")
	// ErrChangeSetTooLarge reports a change set whose frame would exceed
	// the wire's frame limit, so no router could ever receive it.
	ErrChangeSetTooLarge = errors.New("controller: change set too large")
	// ErrNotServing reports a write while the controller is not running
	// (not started yet, or shutting down).
	ErrNotServing = errors.New("controller: not serving")
	// ErrWrongMode reports a write the current engine cannot take because
	// the store is in another mode (an HA store opened in legacy mode).
	ErrWrongMode = errors.New("controller: store is in another mode")
	// ErrNotControllerStore reports a file that is not a controller store
	// (a restore from a router's store, or from something else entirely).
	ErrNotControllerStore = errors.New("controller: not a controller store")
	// ErrInUse reports a data directory whose store a running controller
	// holds; backups then go through the admin API, restores wait.
	ErrInUse = errors.New("controller: store is in use by a running controller")
	// ErrNotLeader reports a write or cluster change that needs the raft
	// leader while none is known (an election is running) or it could not
	// be reached. Nothing was applied; retry.
	ErrNotLeader = errors.New("controller: no reachable leader")
	// ErrPaused reports a write that waited for a migration's pause longer
	// than Config.PauseTimeout. Nothing was applied; retry.
	ErrPaused = errors.New("controller: writes are paused by a migration")
	// ErrMigration reports a migration request that cannot run now: wrong
	// mode, another migration in progress, not the leader, bad arguments.
	ErrMigration = errors.New("controller: migration refused")
	// ErrRetired reports a data directory of an HA member that was retired
	// when its cluster rolled back to legacy mode on another node: its
	// store is a stale copy and must not serve.
	ErrRetired = errors.New("controller: node retired by a rollback to legacy mode")
)

// Config configures a Controller. Zero fields take the documented defaults;
// DataDir is required, and TLS unless Insecure is set.
type Config struct {
	// DataDir holds the store file (StoreFile). It is created if missing.
	DataDir string
	// ListenAddr is the router-facing TCP address. Default
	// DefaultListenAddr; port 0 picks a free port (see RouterAddr).
	ListenAddr string
	// AdminAddr is the admin HTTP address. Default DefaultAdminAddr; port 0
	// picks a free port (see AdminAddr).
	AdminAddr string
	// TLS is this controller's certificate, key and CA (package pki). The
	// router listener then speaks mutual TLS 1.3 and accepts only router
	// certificates from the CA whose name is the RouterID of the router's
	// Hello; raft links between HA members are mutual TLS with controller
	// certificates (whose Hosts must cover the raft addresses). Required
	// unless Insecure.
	TLS pki.Identity
	// Insecure runs the router listener and raft in plaintext and, without
	// AdminTokenFile, leaves the admin API's mutating endpoints open. For
	// demos and tests only; exclusive with TLS.
	Insecure bool
	// AdminTokenFile holds the bearer token (surrounding white space
	// ignored) the admin API's mutating endpoints require: POST
	// /v1/changes, /v1/migrate, /v1/cluster/join and GET /v1/backup. It is
	// also the token this node sends when it forwards a write or joins a
	// cluster, so all members share it. Without it those endpoints answer
	// 401, unless Insecure.
	AdminTokenFile string
	// NodeID names this controller in Welcome frames and logs. Default:
	// the host name.
	NodeID string
	// Retention is how many change sets the log keeps (at least 1).
	// Default DefaultRetention.
	Retention uint64
	// RingSize is how many recent log entries stay in memory. Default
	// DefaultRingSize; it never exceeds Retention.
	RingSize int
	// MaxRequestBytes bounds a POST /v1/changes body. Default
	// DefaultMaxRequestBytes.
	MaxRequestBytes int64
	// MaxCommitBatch is the largest number of write requests committed in
	// one transaction. Default DefaultMaxCommitBatch.
	MaxCommitBatch int
	// MaxFrame is the largest frame payload read from a router and the
	// upper bound of what is sent (a router's Hello.MaxFrame may lower it
	// for that router). At least MinMaxFrame. Default wire.DefaultMaxFrame.
	MaxFrame int
	// FullStateChunkBytes is the target payload of a FullStateChunk.
	// Default DefaultFullStateChunkBytes.
	FullStateChunkBytes int
	// HeartbeatInterval: a session that has written nothing for this long
	// sends a Heartbeat. Default wire.DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// IdleTimeout: a session that has read nothing for this long is
	// closed. Default wire.DefaultIdleTimeout.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the wait for a router's Hello. Default
	// wire.DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds each frame written to a router. Default
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// ShutdownTimeout bounds the admin server's graceful shutdown. Default
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// InitialMmapSize pre-sizes bbolt's memory map. Default
	// DefaultInitialMmapSize.
	InitialMmapSize int
	// NoSync skips fsync on commit. Only for tests and benchmarks: a power
	// loss may lose acknowledged writes or damage the store.
	NoSync bool
	// Logger receives the controller's events. Default: discard.
	Logger *slog.Logger

	// HA runs this controller as a member of an HA cluster on raft
	// (docs/migration.md). NodeID is then required: it is the raft server
	// id and must never change. A data directory that already holds an
	// HA membership (MemberFile) or an HA store runs HA mode even without
	// it.
	HA bool
	// RaftAddr is the raft transport address (host:port; port 0 picks a
	// free one) of a new HA member. A restart defaults to the address in
	// MemberFile.
	RaftAddr string
	// Bootstrap starts a new HA cluster with this node as its only voter,
	// from this data directory's store: a legacy store is migrated offline
	// (its last legacy index seeds raft). Only for a data directory that
	// is not an HA member yet; exclusive with Join.
	Bootstrap bool
	// Join is the admin URL (http://host:port) of any member of the HA
	// cluster this new node joins. Exclusive with Bootstrap.
	Join string
	// AckTimeout bounds a migration's wait for router acks. Default
	// DefaultAckTimeout.
	AckTimeout time.Duration
	// PauseTimeout bounds a write's wait during a migration's pause.
	// Default DefaultPauseTimeout.
	PauseTimeout time.Duration
	// ApplyPipeline is how many raft entries the HA engine keeps in
	// flight. Default DefaultApplyPipeline.
	ApplyPipeline int
	// RaftTransport, if set, makes the raft transport for a node at the
	// given address instead of listening on TCP (tests: connected
	// raft.InmemTransports). It is called once per raft node start.
	RaftTransport func(addr string) (raft.Transport, error)
	// RaftConfig, if set, adjusts each raft node's configuration after the
	// controller filled it in (timeouts, snapshot thresholds).
	RaftConfig func(*raftnode.Config)
}

// MinMaxFrame is the smallest Config.MaxFrame: a change of the largest
// size model allows must fit one frame.
const MinMaxFrame = 2 << 20

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.ListenAddr == "" {
		c.ListenAddr = DefaultListenAddr
	}
	if c.AdminAddr == "" {
		c.AdminAddr = DefaultAdminAddr
	}
	if c.NodeID == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			c.NodeID = h
		} else {
			c.NodeID = "controller"
		}
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.RingSize == 0 {
		c.RingSize = DefaultRingSize
	}
	if c.RingSize > 0 && uint64(c.RingSize) > c.Retention {
		// Entries the log has trimmed must not be served from memory:
		// replay and full-state decisions go by the log floor.
		c.RingSize = int(c.Retention)
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxCommitBatch == 0 {
		c.MaxCommitBatch = DefaultMaxCommitBatch
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = wire.DefaultMaxFrame
	}
	if c.FullStateChunkBytes == 0 {
		c.FullStateChunkBytes = DefaultFullStateChunkBytes
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = wire.DefaultHeartbeatInterval
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = wire.DefaultIdleTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = wire.DefaultHandshakeTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.InitialMmapSize == 0 {
		c.InitialMmapSize = DefaultInitialMmapSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.PauseTimeout == 0 {
		c.PauseTimeout = DefaultPauseTimeout
	}
	if c.ApplyPipeline == 0 {
		c.ApplyPipeline = DefaultApplyPipeline
	}
	return c
}

// joinURL normalises Config.Join: "host:port" gets the http scheme.
func joinURL(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	raw := s
	if !strings.Contains(s, "://") {
		raw = "http://" + s
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return "", fmt.Errorf("%w: join address %q is not http://host:port", ErrInvalidConfig, s)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", fmt.Errorf("%w: join address %q: %v", ErrInvalidConfig, s, err)
	}
	return u.Scheme + "://" + u.Host, nil
}

// Validate reports the first invalid field. Zero fields are valid (they
// take defaults) except DataDir, and TLS unless Insecure.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return fmt.Errorf("%w: data dir is required", ErrInvalidConfig)
	}
	switch {
	case c.Insecure && (c.TLS.CertFile != "" || c.TLS.KeyFile != "" || c.TLS.CAFile != ""):
		return fmt.Errorf("%w: --insecure and TLS certificates are exclusive", ErrInvalidConfig)
	case !c.Insecure && c.TLS.Validate() != nil:
		return fmt.Errorf("%w (%v)", ErrTLSNotConfigured, c.TLS.Validate())
	}
	if c.RingSize < 0 {
		return fmt.Errorf("%w: ring size %d is negative", ErrInvalidConfig, c.RingSize)
	}
	if c.MaxRequestBytes < 0 {
		return fmt.Errorf("%w: max request bytes %d is negative", ErrInvalidConfig, c.MaxRequestBytes)
	}
	if c.MaxCommitBatch < 0 {
		return fmt.Errorf("%w: max commit batch %d is negative", ErrInvalidConfig, c.MaxCommitBatch)
	}
	if c.MaxFrame != 0 && c.MaxFrame < MinMaxFrame {
		return fmt.Errorf("%w: max frame %d is below %d bytes (a single change of %d bytes must fit)",
			ErrInvalidConfig, c.MaxFrame, MinMaxFrame, model.MaxValueLen)
	}
	if c.FullStateChunkBytes < 0 {
		return fmt.Errorf("%w: full state chunk bytes %d is negative", ErrInvalidConfig, c.FullStateChunkBytes)
	}
	if c.InitialMmapSize < 0 {
		return fmt.Errorf("%w: initial mmap size %d is negative", ErrInvalidConfig, c.InitialMmapSize)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"heartbeat interval", c.HeartbeatInterval},
		{"idle timeout", c.IdleTimeout},
		{"handshake timeout", c.HandshakeTimeout},
		{"write timeout", c.WriteTimeout},
		{"shutdown timeout", c.ShutdownTimeout},
		{"ack timeout", c.AckTimeout},
		{"pause timeout", c.PauseTimeout},
	} {
		if d.v < 0 {
			return fmt.Errorf("%w: %s %v is negative", ErrInvalidConfig, d.name, d.v)
		}
	}
	if c.ApplyPipeline < 0 {
		return fmt.Errorf("%w: apply pipeline %d is negative", ErrInvalidConfig, c.ApplyPipeline)
	}
	if !c.HA {
		if c.Bootstrap || c.Join != "" {
			return fmt.Errorf("%w: --bootstrap and --join need --ha", ErrInvalidConfig)
		}
		return nil
	}
	if c.NodeID == "" {
		return fmt.Errorf("%w: HA mode needs a node id (--node-id): it is the raft server id and must never change", ErrInvalidConfig)
	}
	if c.Bootstrap && c.Join != "" {
		return fmt.Errorf("%w: pass --bootstrap (new cluster) or --join (existing cluster), not both", ErrInvalidConfig)
	}
	if _, err := joinURL(c.Join); err != nil {
		return err
	}
	if c.RaftAddr != "" {
		if _, _, err := net.SplitHostPort(c.RaftAddr); err != nil {
			return fmt.Errorf("%w: raft address %q: %v", ErrInvalidConfig, c.RaftAddr, err)
		}
	}
	return nil
}
