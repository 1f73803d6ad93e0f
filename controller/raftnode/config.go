package raftnode

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for the zero fields of Config. doc.go explains how they were
// chosen; in short: hashicorp/raft's own timeouts (they are sane on a LAN and
// survive a loaded CI machine), and a log tail long enough that a follower
// can always catch up after installing a snapshot.
const (
	// DefaultHeartbeatTimeout is how long a follower waits without contact
	// from the leader before it starts an election (raft's default).
	DefaultHeartbeatTimeout = time.Second
	// DefaultElectionTimeout is how long a candidate waits for votes before
	// retrying (raft's default).
	DefaultElectionTimeout = time.Second
	// DefaultLeaderLeaseTimeout is how long a leader keeps leading without
	// hearing from a quorum (raft's default; must not exceed the heartbeat
	// timeout).
	DefaultLeaderLeaseTimeout = 500 * time.Millisecond
	// DefaultCommitTimeout bounds how long a follower may wait to learn a
	// new commit index when nothing else is sent (raft's default).
	DefaultCommitTimeout = 50 * time.Millisecond
	// DefaultMaxAppendEntries is the largest batch of entries per
	// AppendEntries RPC and per leader group commit (one fsync).
	DefaultMaxAppendEntries = 64
	// DefaultSnapshotInterval is how often raft checks whether to snapshot.
	DefaultSnapshotInterval = 120 * time.Second
	// DefaultSnapshotThreshold is how many new entries trigger a snapshot.
	DefaultSnapshotThreshold = 16384
	// DefaultTrailingLogs is how many entries stay in the log after a
	// snapshot, so that a follower that just installed a snapshot can
	// continue from the log (consul #9609).
	DefaultTrailingLogs = 65536
	// DefaultOpenTimeout bounds the wait for the lock on raft.db when the
	// context passed to New has no deadline: a second process on the same
	// data directory fails instead of hanging.
	DefaultOpenTimeout = 10 * time.Second
)

// Internal tuning that callers have had no reason to change.
const (
	// snapshotsRetained: the newest snapshot plus one fallback in case the
	// newest cannot be read.
	snapshotsRetained = 2
	// logCacheSize keeps the recent tail in memory so replication to
	// healthy followers never reads raft.db.
	logCacheSize = 512
	// netMaxPool and netTimeout are hashicorp/raft's TCP transport defaults
	// (Consul and Nomad use the same).
	netMaxPool = 3
	netTimeout = 10 * time.Second
)

// Config configures a Node. The zero value of every optional field selects
// the documented default.
type Config struct {
	// NodeID is this server's stable raft ID. Required. It must not change
	// across restarts: raft's configuration names servers by ID.
	NodeID string

	// RaftAddr is the TCP address the built-in transport binds to, e.g.
	// "10.0.0.5:7000" or "127.0.0.1:0". Required unless Transport or
	// StreamLayer is set.
	RaftAddr string
	// AdvertiseAddr is the address other servers dial (default: RaftAddr).
	// Required when RaftAddr binds all interfaces (0.0.0.0 or [::]).
	AdvertiseAddr string

	// DataDir holds raft.db (log and stable store, raft-boltdb) and
	// snapshots/ (file snapshot store, the newest two retained). Required;
	// created if missing.
	DataDir string

	// Transport, if set, is used as is (tests pass a raft.InmemTransport)
	// and RaftAddr and AdvertiseAddr are ignored. raft closes it on
	// Shutdown if it has a Close method (InmemTransport's only disconnects
	// it from its peers).
	Transport raft.Transport
	// StreamLayer, if set (and Transport is not), carries raft's network
	// transport instead of plain TCP: this is the seam for TLS. Its Addr is
	// the advertised address; RaftAddr and AdvertiseAddr are ignored.
	// Shutdown closes it.
	StreamLayer raft.StreamLayer

	// Logger receives raft's logs (its info and debug chatter at debug,
	// its warnings and errors at warn) and the node's own events
	// (leadership changes at info). Default: discard.
	Logger *slog.Logger
	// Registerer, if set, receives the node's Prometheus metrics
	// (indexgate_raft_*). They are unregistered by Shutdown.
	Registerer prometheus.Registerer

	// HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout and
	// CommitTimeout are raft's timing knobs; see the Default* constants.
	// LeaderLeaseTimeout must not exceed HeartbeatTimeout, and
	// ElectionTimeout must not be below it. When only HeartbeatTimeout is
	// set, ElectionTimeout defaults to at least it and LeaderLeaseTimeout
	// to at most half of it.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration

	// SnapshotThreshold, SnapshotInterval and TrailingLogs control
	// snapshotting and log compaction; see doc.go for how to size
	// TrailingLogs against the time it takes to ship a snapshot.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64

	// MaxAppendEntries caps the entries per AppendEntries RPC and per group
	// commit (1..1024, default 64).
	MaxAppendEntries int

	// RestoreSnapshotOnStart makes raft restore the newest snapshot into the
	// state machine when the node starts. Leave it false (the default) for a
	// durable state machine such as the controller's bbolt store: raft then
	// only replays the log after the newest snapshot, and the state machine
	// skips what it has already applied. Set it for in-memory state
	// machines, which start empty.
	RestoreSnapshotOnStart bool
}

// Validate reports whether c can start a Node. Errors wrap ErrInvalidConfig
// and name the offending field.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults returns c with its zero fields defaulted, or why it is
// invalid.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if c.NodeID == "" {
		return bad("NodeID is required")
	}
	if c.DataDir == "" {
		return bad("DataDir is required")
	}
	switch {
	case c.Transport != nil && c.StreamLayer != nil:
		return bad("set Transport or StreamLayer, not both")
	case c.Transport != nil, c.StreamLayer != nil:
	default:
		if c.RaftAddr == "" {
			return bad("RaftAddr is required without Transport or StreamLayer")
		}
		if _, _, err := net.SplitHostPort(c.RaftAddr); err != nil {
			return bad("RaftAddr %q: %v", c.RaftAddr, err)
		}
		adv := c.AdvertiseAddr
		if adv == "" {
			adv = c.RaftAddr
		}
		host, port, err := net.SplitHostPort(adv)
		if err != nil {
			return bad("AdvertiseAddr %q: %v", adv, err)
		}
		// Other servers store this address in the raft configuration and
		// dial it: an unspecified IP or port 0 would be undialable.
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			if c.AdvertiseAddr == "" {
				return bad("RaftAddr %q binds all interfaces: set AdvertiseAddr", c.RaftAddr)
			}
			return bad("AdvertiseAddr %q is not dialable", adv)
		}
		if port == "0" && c.AdvertiseAddr != "" {
			return bad("AdvertiseAddr %q has port 0", adv)
		}
	}
	if c.HeartbeatTimeout < 0 {
		return bad("HeartbeatTimeout must not be negative (got %v)", c.HeartbeatTimeout)
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	// The election and lease defaults follow a non-default heartbeat, so
	// that setting only HeartbeatTimeout satisfies raft's ordering rules.
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ElectionTimeout", &c.ElectionTimeout, max(DefaultElectionTimeout, c.HeartbeatTimeout)},
		{"LeaderLeaseTimeout", &c.LeaderLeaseTimeout, min(DefaultLeaderLeaseTimeout, c.HeartbeatTimeout/2)},
		{"CommitTimeout", &c.CommitTimeout, DefaultCommitTimeout},
		{"SnapshotInterval", &c.SnapshotInterval, DefaultSnapshotInterval},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return bad("%s must not be negative (got %v)", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.MaxAppendEntries < 0 || c.MaxAppendEntries > 1024 {
		return bad("MaxAppendEntries must be in 1..1024 (got %d)", c.MaxAppendEntries)
	}
	if c.MaxAppendEntries == 0 {
		c.MaxAppendEntries = DefaultMaxAppendEntries
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = DefaultTrailingLogs
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	// raft has its own rules (minimums, lease ≤ heartbeat ≤ election):
	// check them here so that a bad flag fails before anything is opened.
	if err := raft.ValidateConfig(c.raftConfig(nil)); err != nil {
		return bad("%v", err)
	}
	return c, nil
}

// raftConfig translates a defaulted Config into raft's.
func (c Config) raftConfig(notify chan<- bool) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.MaxAppendEntries = c.MaxAppendEntries
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	rc.NoSnapshotRestoreOnStart = !c.RestoreSnapshotOnStart
	// BatchApplyCh stays off: with a buffered applyCh, an Apply or Barrier
	// that races raft's shutdown can land in the buffer after the main loop
	// has exited and its future is never answered. Group commit does not
	// need it: the leader drains every writer blocked on applyCh, up to
	// MaxAppendEntries, into one log write.
	rc.BatchApplyCh = false
	rc.NotifyCh = notify
	return rc
}
