package rafttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/indexgate/indexgate/controller/raftnode"
)

// setupTimeout bounds each helper's internal waits (elections, joins,
// shutdowns). It is a safety net against a hung test, not an assertion: a
// healthy cluster needs a few seconds at most.
const setupTimeout = time.Minute

// pollInterval is how often waits look at the nodes again.
const pollInterval = 5 * time.Millisecond

// Option adjusts a cluster.
type Option func(*options)

type options struct {
	configure []func(*raftnode.Config)
}

// WithConfig lets f adjust every node's Config before the node starts (on
// restarts too). NodeID, DataDir and Transport are already set; f may set
// anything else (timeouts, a Logger, a Registerer, snapshot settings).
func WithConfig(f func(*raftnode.Config)) Option {
	return func(o *options) { o.configure = append(o.configure, f) }
}

// Cluster is a set of in-process raft nodes named n1, n2, ...
type Cluster struct {
	t     testing.TB
	newSM func(id string) raftnode.StateMachine
	opts  options

	mu      sync.Mutex
	members map[string]*member
	ids     []string
}

type member struct {
	id, dir string
	addr    raft.ServerAddress
	trans   *raft.InmemTransport
	node    *raftnode.Node // nil while killed
	sm      raftnode.StateMachine
}

// NewCluster starts n nodes: n1 bootstraps a single-voter cluster and, once
// it leads, adds the others as voters; NewCluster returns when every node
// has applied the resulting configuration. newSM is called once per node
// start (again on Restart). n may be 0 for a cluster built with Join. The
// cluster is shut down when the test ends.
func NewCluster(t testing.TB, n int, newSM func(id string) raftnode.StateMachine, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, newSM: newSM, members: map[string]*member{}}
	for _, o := range opts {
		o(&c.opts)
	}
	t.Cleanup(c.Close)
	if n == 0 {
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	first := c.start("n1", "")
	if err := first.Bootstrap(ctx); err != nil {
		t.Fatalf("rafttest: bootstrap n1: %v", err)
	}
	c.WaitLeader(ctx)
	for i := 2; i <= n; i++ {
		c.Join(ctx, fmt.Sprintf("n%d", i))
	}
	c.WaitApplied(ctx, c.WaitLeader(ctx).LastIndex())
	return c
}

// start launches node id on dir (a new temporary directory if dir is "")
// and connects its transport with every live node.
func (c *Cluster) start(id, dir string) *raftnode.Node {
	c.t.Helper()
	if dir == "" {
		dir = c.t.TempDir()
	}
	addr, trans := raft.NewInmemTransport(raft.ServerAddress("inmem-" + id))
	cfg := raftnode.Config{NodeID: id, DataDir: dir, Transport: trans}
	for _, f := range c.opts.configure {
		f(&cfg)
	}
	sm := c.newSM(id)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	n, err := raftnode.New(ctx, cfg, sm)
	if err != nil {
		c.t.Fatalf("rafttest: start %s: %v", id, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.node == nil || m.id == id {
			continue
		}
		trans.Connect(m.addr, m.trans)
		m.trans.Connect(addr, trans)
	}
	m := c.members[id]
	if m == nil {
		m = &member{id: id, dir: dir, addr: addr}
		c.members[id] = m
		c.ids = append(c.ids, id)
	}
	m.trans, m.node, m.sm = trans, n, sm
	return n
}

// IDs returns the IDs of every node ever started, live or killed, in the
// order they were started.
func (c *Cluster) IDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ids)
}

// Node returns node id, or nil if it is killed or unknown.
func (c *Cluster) Node(id string) *raftnode.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.members[id]; m != nil {
		return m.node
	}
	return nil
}

// StateMachine returns the state machine node id was last started with.
func (c *Cluster) StateMachine(id string) raftnode.StateMachine {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.members[id]; m != nil {
		return m.sm
	}
	return nil
}

// Live returns the running nodes in start order.
func (c *Cluster) Live() []*raftnode.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*raftnode.Node
	for _, id := range c.ids {
		if n := c.members[id].node; n != nil {
			out = append(out, n)
		}
	}
	return out
}

// Leader returns the live node that leads in the highest term, or nil if
// none does right now.
func (c *Cluster) Leader() *raftnode.Node {
	var leader *raftnode.Node
	for _, n := range c.Live() {
		if n.IsLeader() && (leader == nil || n.Term() > leader.Term()) {
			leader = n
		}
	}
	return leader
}

// WaitLeader waits until a live node leads and returns it; it fails the
// test if ctx ends first.
func (c *Cluster) WaitLeader(ctx context.Context) *raftnode.Node {
	c.t.Helper()
	for {
		if l := c.Leader(); l != nil {
			return l
		}
		if !sleep(ctx) {
			c.t.Fatalf("rafttest: no leader: %v", ctx.Err())
			return nil
		}
	}
}

// WaitApplied waits until every live node has applied index; it fails the
// test if ctx ends first.
func (c *Cluster) WaitApplied(ctx context.Context, index uint64) {
	c.t.Helper()
	for {
		behind := ""
		for _, n := range c.Live() {
			if n.AppliedIndex() < index {
				behind = fmt.Sprintf("%s at %d", n.ID(), n.AppliedIndex())
				break
			}
		}
		if behind == "" {
			return
		}
		if !sleep(ctx) {
			c.t.Fatalf("rafttest: waiting for index %d: %s: %v", index, behind, ctx.Err())
			return
		}
	}
}

// Apply applies cmd through whichever node leads, retrying while the
// command is refused with ErrNotLeader (then it was not appended, so the
// retry cannot duplicate it). Other errors are returned.
func (c *Cluster) Apply(ctx context.Context, cmd []byte) (index uint64, resp any, err error) {
	c.t.Helper()
	for {
		index, resp, err = c.WaitLeader(ctx).Apply(ctx, cmd)
		if !errors.Is(err, raftnode.ErrNotLeader) {
			return index, resp, err
		}
		if !sleep(ctx) {
			return 0, nil, err
		}
	}
}

// Join starts a new node id with an empty data directory and adds it as a
// voter through the leader. It returns once the leader has committed the
// configuration change; the new node may still be catching up.
func (c *Cluster) Join(ctx context.Context, id string) *raftnode.Node {
	c.t.Helper()
	c.mu.Lock()
	_, exists := c.members[id]
	c.mu.Unlock()
	if exists {
		c.t.Fatalf("rafttest: join %s: node exists", id)
	}
	n := c.start(id, "")
	for {
		err := c.WaitLeader(ctx).AddVoter(ctx, id, n.Addr())
		if err == nil {
			return n
		}
		if !errors.Is(err, raftnode.ErrNotLeader) || !sleep(ctx) {
			c.t.Fatalf("rafttest: join %s: %v", id, err)
			return nil
		}
	}
}

// Kill shuts node id down (its raft state stays on disk) and cuts it off
// from the others. A state machine that is an io.Closer is closed after the
// node has stopped.
func (c *Cluster) Kill(id string) {
	c.t.Helper()
	c.mu.Lock()
	m := c.members[id]
	if m == nil || m.node == nil {
		c.mu.Unlock()
		c.t.Fatalf("rafttest: kill %s: not running", id)
		return
	}
	n, sm := m.node, m.sm
	m.node = nil
	for _, o := range c.members {
		if o != m && o.trans != nil {
			o.trans.Disconnect(m.addr)
		}
	}
	c.mu.Unlock()
	if err := c.stop(n, sm); err != nil {
		c.t.Errorf("rafttest: kill %s: %v", id, err)
	}
}

func (c *Cluster) stop(n *raftnode.Node, sm raftnode.StateMachine) error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	err := n.Shutdown(ctx)
	if cl, ok := sm.(io.Closer); ok {
		err = errors.Join(err, cl.Close())
	}
	return err
}

// Restart starts the killed node id again on its data directory, with a
// fresh state machine from newSM.
func (c *Cluster) Restart(id string) *raftnode.Node {
	c.t.Helper()
	c.mu.Lock()
	m := c.members[id]
	c.mu.Unlock()
	if m == nil || m.node != nil {
		c.t.Fatalf("rafttest: restart %s: not killed", id)
		return nil
	}
	return c.start(id, m.dir)
}

// Close shuts every live node down. It is registered with t.Cleanup by
// NewCluster, and safe to call more than once.
func (c *Cluster) Close() {
	c.mu.Lock()
	var live []*member
	for _, id := range c.ids {
		if m := c.members[id]; m.node != nil {
			live = append(live, m)
		}
	}
	c.mu.Unlock()
	// Followers first, so the leader does not spend the shutdown electing.
	slices.SortStableFunc(live, func(a, b *member) int {
		switch {
		case a.node.IsLeader() == b.node.IsLeader():
			return 0
		case b.node.IsLeader():
			return -1
		default:
			return 1
		}
	})
	for _, m := range live {
		c.Kill(m.id)
	}
}

// sleep waits one poll interval; false means ctx ended.
func sleep(ctx context.Context) bool {
	t := time.NewTimer(pollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
