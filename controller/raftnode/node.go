package raftnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Node is one raft server: raft itself, its stores and transport, and the
// adapter to a StateMachine. Its methods are safe for concurrent use.
type Node struct {
	cfg   Config
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *fsm
	store *raftboltdb.BoltStore
	logs  raft.LogStore // store behind the log cache
	trans raft.Transport
	m     *metrics

	// leaderOut is what LeaderChanges returns; see forwardLeadership.
	leaderOut chan bool
	stop      chan struct{}
	fwdDone   chan struct{}

	shutdownOnce sync.Once
	shutdownDone chan struct{}
	shutdownErr  error
}

// Peer is one server of the raft configuration.
type Peer struct {
	// ID and Address are the server's raft ID and transport address.
	ID, Address string
	// Suffrage is "Voter", "Nonvoter" or "Staging".
	Suffrage string
	// Leader is true for the server this node believes leads.
	Leader bool
}

// New opens (or creates) the raft state in cfg.DataDir and starts the node.
// A node with no state waits, as a follower, to be bootstrapped (Bootstrap)
// or added to a cluster by its leader (AddVoter); a node with state rejoins
// its cluster. ctx bounds opening raft.db (without a deadline,
// DefaultOpenTimeout applies): another process holding the data directory
// makes New fail rather than hang.
func New(ctx context.Context, cfg Config, sm StateMachine) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if sm == nil {
		return nil, fmt.Errorf("%w: nil StateMachine", ErrInvalidConfig)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("raft_id", cfg.NodeID)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("raftnode: data dir: %w", err)
	}

	openTimeout := DefaultOpenTimeout
	if d, ok := ctx.Deadline(); ok {
		openTimeout = max(time.Until(d), time.Millisecond)
	}
	dbPath := filepath.Join(cfg.DataDir, "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{
		Path:        dbPath,
		BoltOptions: &bbolt.Options{Timeout: openTimeout},
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("raftnode: open %s: locked by another process (is another node using this data dir?): %w", dbPath, err)
	}
	if err != nil {
		return nil, fmt.Errorf("raftnode: open %s: %w", dbPath, err)
	}
	n := &Node{
		cfg:          cfg,
		log:          log,
		store:        store,
		leaderOut:    make(chan bool, 1),
		stop:         make(chan struct{}),
		fwdDone:      make(chan struct{}),
		shutdownDone: make(chan struct{}),
	}
	fail := func(err error) (*Node, error) {
		if c, ok := n.trans.(io.Closer); ok && cfg.Transport == nil {
			_ = c.Close()
		}
		_ = store.Close()
		return nil, err
	}

	if n.logs, err = raft.NewLogCache(logCacheSize, store); err != nil {
		return fail(fmt.Errorf("raftnode: log cache: %w", err))
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, snapshotsRetained, newHclog(log, "raft-snapshot"))
	if err != nil {
		return fail(fmt.Errorf("raftnode: snapshot store: %w", err))
	}
	// raft starts from the newest snapshot, restored into the state
	// machine or (by default) already reflected in it: either way the
	// state machine stands at its index.
	n.fsm = &fsm{sm: sm, snaps: snaps}
	n.fsm.applied.Store(n.fsm.newestSnapshot())
	if n.trans, err = newTransport(cfg, log); err != nil {
		return fail(err)
	}

	// raft blocks its main loop on NotifyCh: forwardLeadership drains it
	// at once, and the buffer absorbs the edge raft pushes while shutting
	// down.
	notify := make(chan bool, 8)
	rc := cfg.raftConfig(notify)
	rc.Logger = newHclog(log, "raft")
	if _, ok := n.trans.(raft.WithPreVote); !ok {
		// Pre-vote needs transport support (InmemTransport has none);
		// without this raft would warn about it on every start.
		rc.PreVoteDisabled = true
	}
	if n.raft, err = raft.NewRaft(rc, n.fsm, n.logs, store, snaps, n.trans); err != nil {
		return fail(fmt.Errorf("raftnode: start raft: %w", err))
	}
	if n.m, err = newMetrics(cfg.Registerer, n); err != nil {
		_ = n.raft.Shutdown().Error()
		return fail(err)
	}
	go n.forwardLeadership(notify)
	log.Info("raft node started", "addr", n.trans.LocalAddr(), "last_index", n.raft.LastIndex(),
		"data_dir", cfg.DataDir)
	return n, nil
}

// newTransport builds the transport cfg asks for.
func newTransport(cfg Config, log *slog.Logger) (raft.Transport, error) {
	if cfg.Transport != nil {
		return cfg.Transport, nil
	}
	ncfg := &raft.NetworkTransportConfig{
		Logger:  newHclog(log, "raft-net"),
		MaxPool: netMaxPool,
		Timeout: netTimeout,
	}
	if cfg.StreamLayer != nil {
		ncfg.Stream = cfg.StreamLayer
		return raft.NewNetworkTransportWithConfig(ncfg), nil
	}
	var adv net.Addr
	if cfg.AdvertiseAddr != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("raftnode: advertise address %q: %w", cfg.AdvertiseAddr, err)
		}
		adv = a
	}
	t, err := raft.NewTCPTransportWithConfig(cfg.RaftAddr, adv, ncfg)
	if err != nil {
		return nil, fmt.Errorf("raftnode: listen on %s: %w", cfg.RaftAddr, err)
	}
	return t, nil
}

// forwardLeadership turns raft's NotifyCh, which blocks raft while unread,
// into leaderOut, which never blocks: leaderOut holds at most one value, the
// newest, so a slow reader sees the current state rather than a backlog of
// stale edges.
func (n *Node) forwardLeadership(in <-chan bool) {
	defer close(n.fwdDone)
	defer close(n.leaderOut)
	deliver := func(v bool) {
		n.m.leaderChanges.Inc()
		if v {
			n.log.Info("raft leadership acquired", "term", n.raft.CurrentTerm())
		} else {
			n.log.Info("raft leadership lost", "term", n.raft.CurrentTerm())
		}
		select {
		case <-n.leaderOut: // replaced by the newer value
		default:
		}
		n.leaderOut <- v // only this goroutine sends, so there is room
	}
	for {
		select {
		case v := <-in:
			deliver(v)
		case <-n.stop:
			// raft has stopped: pass on the edge it pushed on the way out.
			for {
				select {
				case v := <-in:
					deliver(v)
				default:
					return
				}
			}
		}
	}
}

// LeaderChanges delivers true when this node becomes leader and false when
// it stops being leader. raft's own LeaderCh holds one value and drops
// edges a slow reader misses, and its NotifyCh blocks raft's main loop
// until read; this channel is fed from NotifyCh by a goroutine that never
// blocks and keeps only the newest value. So a reader always ends up seeing
// the current state, but may miss intermediate edges: receiving true while
// it believes it already leads means leadership was lost and regained in a
// new term, and leader-only setup (Barrier first) must be redone. The
// channel is closed by Shutdown. There is one channel per Node: give it to
// one reader.
func (n *Node) LeaderChanges() <-chan bool { return n.leaderOut }

// Bootstrap makes this node the single voter of a new cluster; it becomes
// leader after an election timeout. On a node that already has raft state
// (a restart, or a member of an existing cluster) it does nothing and
// returns nil, so it is safe to call on every start of the first server.
func (n *Node) Bootstrap(ctx context.Context) error {
	conf := raft.Configuration{Servers: []raft.Server{{
		Suffrage: raft.Voter,
		ID:       raft.ServerID(n.cfg.NodeID),
		Address:  n.trans.LocalAddr(),
	}}}
	err := wait(ctx, func() error { return n.raft.BootstrapCluster(conf).Error() })
	if errors.Is(err, raft.ErrCantBootstrap) {
		n.log.Debug("raft bootstrap skipped: node has state")
		return nil
	}
	if err != nil {
		return n.wrap("bootstrap", err)
	}
	n.log.Info("raft cluster bootstrapped", "addr", n.trans.LocalAddr())
	return nil
}

// SeedFromSnapshot makes the state machine image read from r (exactly size
// bytes) the state of a freshly bootstrapped cluster, with raft indexes
// continuing above index: this is how a migration carries the legacy store
// and its last legacy index L into raft. It waits (bounded by ctx) for this
// node to lead, then calls raft's Restore with SnapshotMeta.Index = L. raft
// stores the image as a snapshot at L+1 (leaving a hole in the log, which
// makes every follower install the snapshot), commits a no-op at L+2, and
// the first command after seeding gets L+3 or more. The state machine's
// Restore receives the image; it must itself know what index it ends at.
//
// Only on a fresh cluster: this node must be the only server in the
// configuration and its log must be below L, else ErrNotFresh. If the state
// machine rejects the image, the node is shut down and the error wraps
// ErrSeedFailed; the data directory must then be wiped. If ctx ends while
// the image is being copied, the copy fails and nothing changes; once raft
// has the image the restore completes even if ctx has ended.
func (n *Node) SeedFromSnapshot(ctx context.Context, index uint64, r io.Reader, size int64) error {
	if size < 0 {
		return fmt.Errorf("raftnode: seed: negative size %d", size)
	}
	peers, err := n.Peers(ctx)
	if err != nil {
		return err
	}
	if len(peers) != 1 || peers[0].ID != n.cfg.NodeID || peers[0].Suffrage != raft.Voter.String() {
		return fmt.Errorf("%w: seeding needs a single-voter cluster of this node, configuration has %d servers", ErrNotFresh, len(peers))
	}
	// Checked again after the barrier; checking first keeps a refused
	// seed from appending anything.
	if last := n.raft.LastIndex(); last >= index {
		return fmt.Errorf("%w: raft log is at %d, not below the seed index %d", ErrNotFresh, last, index)
	}
	if err := n.waitLeader(ctx); err != nil {
		return err
	}
	// The leader's configuration entry must be committed before raft
	// accepts a restore; the barrier also applies everything before it.
	if err := n.Barrier(ctx); err != nil {
		return err
	}
	if last := n.raft.LastIndex(); last >= index {
		return fmt.Errorf("%w: raft log is at %d, not below the seed index %d", ErrNotFresh, last, index)
	}
	timeout, err := timeoutOf(ctx)
	if err != nil {
		return err
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: index, Size: size}
	done := make(chan error, 1)
	n.fsm.beginSeed()
	go func() {
		err := n.raft.Restore(meta, &ctxReader{ctx: ctx, r: r}, timeout)
		if serr := n.fsm.endSeed(); serr != nil {
			n.log.Error("seed image rejected by the state machine; shutting down, wipe the data dir before seeding again",
				"error", serr, "data_dir", n.cfg.DataDir)
			_ = n.Shutdown(context.Background())
			err = fmt.Errorf("%w: state machine restore: %w", ErrSeedFailed, serr)
		} else if err != nil {
			err = n.wrap("seed", err)
		}
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		return fmt.Errorf("raftnode: seed: %w", ctx.Err())
	}
	if err != nil {
		return err
	}
	if last := n.raft.LastIndex(); last <= index {
		return fmt.Errorf("raftnode: seed: raft log at %d after seeding at %d, expected above it", last, index)
	}
	n.log.Info("raft cluster seeded from snapshot", "seed_index", index, "last_index", n.raft.LastIndex(), "bytes", size)
	return nil
}

// waitLeader polls until this node leads. It is only used where this node
// is the single voter, so leadership is a matter of one election timeout.
func (n *Node) waitLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for n.raft.State() != raft.Leader {
		if n.raft.State() == raft.Shutdown {
			return ErrShutdown
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("raftnode: waiting for leadership: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// ctxReader fails reads once ctx has ended, which is the only way to
// abandon a raft Restore that is still copying the image.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Apply replicates cmd and waits until it is committed and applied to the
// local state machine; it returns the entry's raft index and what
// StateMachine.Apply returned. Only the leader accepts commands: elsewhere
// the error is a *NotLeaderError naming the leader (errors.Is ErrNotLeader),
// and the command was not appended. ErrLeadershipLost and an ended ctx
// leave the outcome unknown: the command may still commit.
func (n *Node) Apply(ctx context.Context, cmd []byte) (index uint64, resp any, err error) {
	start := time.Now()
	defer func() {
		if err == nil {
			n.m.applyDuration.Observe(time.Since(start).Seconds())
		} else {
			n.m.applyFailures.WithLabelValues(failReason(err)).Inc()
		}
	}()
	switch n.raft.State() {
	case raft.Leader:
	case raft.Shutdown:
		return 0, nil, fmt.Errorf("%w (apply)", ErrShutdown)
	default:
		return 0, nil, n.notLeader()
	}
	timeout, err := timeoutOf(ctx)
	if err != nil {
		return 0, nil, err
	}
	type result struct {
		index uint64
		resp  any
		err   error
	}
	// raft's futures cannot be abandoned, so the wait runs on its own
	// goroutine; raft always answers (applied, lost, shut down), so it
	// ends even when ctx gives up first.
	done := make(chan result, 1)
	go func() {
		f := n.raft.Apply(cmd, timeout)
		if err := f.Error(); err != nil {
			done <- result{err: err}
			return
		}
		done <- result{index: f.Index(), resp: f.Response()}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return 0, nil, n.wrap("apply", r.err)
		}
		return r.index, r.resp, nil
	case <-ctx.Done():
		return 0, nil, fmt.Errorf("raftnode: apply: outcome unknown: %w", ctx.Err())
	}
}

func failReason(err error) string {
	switch {
	case errors.Is(err, ErrNotLeader):
		return failNotLeader
	case errors.Is(err, ErrLeadershipLost):
		return failLost
	case errors.Is(err, ErrShutdown):
		return failShutdown
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return failCanceled
	default:
		return failOther
	}
}

// Barrier waits until every entry appended before it is applied to the
// local state machine. A new leader must call it before it serves reads or
// publishes anything derived from the state machine: raft declares
// leadership before the entries of earlier terms are known to be committed
// and applied (Consul and Nomad do the same). Leader only.
func (n *Node) Barrier(ctx context.Context) error {
	timeout, err := timeoutOf(ctx)
	if err != nil {
		return err
	}
	if err := wait(ctx, func() error { return n.raft.Barrier(timeout).Error() }); err != nil {
		return n.wrap("barrier", err)
	}
	return nil
}

// AddVoter adds (or re-addresses) server id at addr as a voter and waits
// until the configuration change is committed. A new server catches up
// from the log, or by snapshot when the log no longer reaches back far
// enough. Leader only.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	if id == "" || addr == "" {
		return fmt.Errorf("raftnode: add voter: empty id or address")
	}
	timeout, err := timeoutOf(ctx)
	if err != nil {
		return err
	}
	err = wait(ctx, func() error {
		return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout).Error()
	})
	if err != nil {
		return n.wrap("add voter "+id, err)
	}
	n.log.Info("raft voter added", "id", id, "addr", addr)
	return nil
}

// RemoveServer removes server id from the configuration and waits until the
// change is committed. Removing the leader itself makes it step down (and,
// as raft's ShutdownOnRemove is set, shut down). Leader only.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	timeout, err := timeoutOf(ctx)
	if err != nil {
		return err
	}
	err = wait(ctx, func() error { return n.raft.RemoveServer(raft.ServerID(id), 0, timeout).Error() })
	if err != nil {
		return n.wrap("remove server "+id, err)
	}
	n.log.Info("raft server removed", "id", id)
	return nil
}

// Leader returns the ID and address of the leader this node knows of, or
// empty strings when it knows none.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node is the leader. Leadership can end at
// any moment; Apply and Barrier are the authoritative checks.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// State returns raft's state: "Follower", "Candidate", "Leader" or
// "Shutdown".
func (n *Node) State() string { return n.raft.State().String() }

// Term returns the current raft term.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// AppliedIndex returns the index up to which every entry is reflected in
// the state machine: StateMachine.Apply has returned for every command at
// or below it (or a restored snapshot covers it). raft's own applied index
// (Stats "applied_index") runs ahead of this: it moves when entries are
// handed to the FSM goroutine, not when they have been applied.
func (n *Node) AppliedIndex() uint64 {
	handed := n.raft.AppliedIndex()
	done := n.fsm.applied.Load()
	if done >= handed {
		// raft records the hand-over after the fact, so the FSM goroutine
		// can be ahead of it.
		return done
	}
	// Entries between what the FSM goroutine has finished and what raft
	// has handed it are either pending commands and configurations, or
	// entries the state machine never sees (no-ops, barriers) or that a
	// restored snapshot replaced (compacted, or the seed's hole).
	for i := done + 1; i <= handed; i++ {
		var l raft.Log
		err := n.logs.GetLog(i, &l)
		switch {
		case errors.Is(err, raft.ErrLogNotFound):
		case err != nil, l.Type == raft.LogCommand, l.Type == raft.LogConfiguration:
			return i - 1
		}
	}
	return handed
}

// LastIndex returns the index of the last entry in the local log (or of
// the newest snapshot, if that is higher).
func (n *Node) LastIndex() uint64 { return n.raft.LastIndex() }

// ID returns this node's raft ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// Addr returns this node's raft address as other servers dial it.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// Peers returns the latest raft configuration (committed or not) with the
// leader marked.
func (n *Node) Peers(ctx context.Context) ([]Peer, error) {
	var conf raft.Configuration
	err := wait(ctx, func() error {
		f := n.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return err
		}
		conf = f.Configuration()
		return nil
	})
	if err != nil {
		return nil, n.wrap("configuration", err)
	}
	leader, _ := n.Leader()
	peers := make([]Peer, 0, len(conf.Servers))
	for _, s := range conf.Servers {
		peers = append(peers, Peer{
			ID:       string(s.ID),
			Address:  string(s.Address),
			Suffrage: s.Suffrage.String(),
			Leader:   string(s.ID) == leader,
		})
	}
	return peers, nil
}

// Stats returns raft's own statistics (state, term, indexes, last contact,
// configuration, ...), for diagnostics.
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// Shutdown stops raft (pending Apply calls fail with ErrShutdown), closes
// the transport unless Config.Transport supplied one without a Close
// method, closes raft.db, unregisters the metrics and closes
// LeaderChanges. It is idempotent. If ctx ends first, the shutdown goes on
// in the background and Shutdown returns ctx's error.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() { go n.shutdown() })
	select {
	case <-n.shutdownDone:
		return n.shutdownErr
	case <-ctx.Done():
		return fmt.Errorf("raftnode: shutdown: %w", ctx.Err())
	}
}

func (n *Node) shutdown() {
	defer close(n.shutdownDone)
	// raft's shutdown future waits for raft's goroutines and closes the
	// transport if it has a Close method.
	errs := []error{n.raft.Shutdown().Error()}
	close(n.stop)
	<-n.fwdDone
	n.m.unregister()
	if err := n.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft.db: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		n.shutdownErr = fmt.Errorf("raftnode: shutdown: %w", err)
	}
	n.log.Info("raft node stopped")
}

// notLeader builds the error for leader-only calls on a non-leader.
func (n *Node) notLeader() error {
	id, addr := n.Leader()
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// wrap translates raft's errors into this package's sentinels.
func (n *Node) wrap(op string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w (%s: %w)", ErrLeadershipLost, op, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w (%s)", ErrShutdown, op)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("raftnode: %s: not accepted by raft before the deadline: %w", op, context.DeadlineExceeded)
	default:
		return fmt.Errorf("raftnode: %s: %w", op, err)
	}
}

// timeoutOf turns ctx's deadline into the timeout raft's calls take (0 is
// no timeout), or returns ctx's error if it has already ended.
func timeoutOf(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	d, ok := ctx.Deadline()
	if !ok {
		return 0, nil
	}
	t := time.Until(d)
	if t <= 0 {
		return 0, context.DeadlineExceeded
	}
	return t, nil
}

// wait runs f, which blocks on a raft future, and returns its error, or
// ctx's if ctx ends first (f then finishes in the background: raft answers
// every future eventually, at the latest on shutdown).
func wait(ctx context.Context, f func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
