package raftnode_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/indexgate/indexgate/controller/raftnode"
	"github.com/indexgate/indexgate/controller/raftnode/rafttest"
)

// sameEntries fails unless every live node's Recorder holds want.
func sameEntries(t *testing.T, c *rafttest.Cluster, want []rafttest.Entry) {
	t.Helper()
	for _, n := range c.Live() {
		got := recorder(t, c, n.ID()).Entries()
		if !slices.EqualFunc(got, want, func(a, b rafttest.Entry) bool {
			return a.Index == b.Index && a.Term == b.Term && bytes.Equal(a.Cmd, b.Cmd)
		}) {
			t.Fatalf("%s recorded %d entries, differing from the leader's %d", n.ID(), len(got), len(want))
		}
	}
}

func TestBootstrapAndApply(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, 3} {
		t.Run(map[int]string{1: "single", 3: "three"}[size], func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			c := rafttest.NewCluster(t, size, rafttest.NewRecorder, withLogs(t))
			leader := c.WaitLeader(ctx)
			// Bootstrapping an existing cluster is a no-op, not an error.
			for _, n := range c.Live() {
				if err := n.Bootstrap(ctx); err != nil {
					t.Fatalf("%s: second Bootstrap: %v", n.ID(), err)
				}
			}
			last := applyN(t, ctx, c, 0, 40)
			c.WaitApplied(ctx, last)

			want := recorder(t, c, leader.ID()).Entries()
			if len(want) != 40 {
				t.Fatalf("leader recorded %d commands, want 40", len(want))
			}
			for i, e := range want {
				if !bytes.Equal(e.Cmd, cmd(i)) {
					t.Fatalf("entry %d is %q, want %q", i, e.Cmd, cmd(i))
				}
				if e.Term != leader.Term() && c.Leader() == leader {
					t.Fatalf("entry %d has term %d, leader is in term %d", i, e.Term, leader.Term())
				}
			}
			sameEntries(t, c, want)

			peers, err := leader.Peers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(peers) != size {
				t.Fatalf("Peers = %+v, want %d servers", peers, size)
			}
			leaders := 0
			for _, p := range peers {
				if p.Suffrage != "Voter" {
					t.Errorf("peer %s is %s, want Voter", p.ID, p.Suffrage)
				}
				if p.Leader {
					leaders++
					if p.ID != leader.ID() || p.Address != leader.Addr() {
						t.Errorf("leader peer %+v, want %s at %s", p, leader.ID(), leader.Addr())
					}
				}
			}
			if leaders != 1 {
				t.Errorf("%d peers marked leader", leaders)
			}
			if st := leader.Stats(); st["state"] != "Leader" || leader.State() != "Leader" {
				t.Errorf("leader State() = %s, Stats state = %s", leader.State(), st["state"])
			}
		})
	}
}

func TestConcurrentApplyOrder(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := rafttest.NewCluster(t, 3, rafttest.NewRecorder, withLogs(t))
	leader := c.WaitLeader(ctx)
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, _, err := leader.Apply(ctx, cmd(w*each+i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("apply: %v", err)
	}
	c.WaitApplied(ctx, leader.LastIndex())
	want := recorder(t, c, leader.ID()).Entries()
	if len(want) != writers*each {
		t.Fatalf("leader recorded %d commands, want %d", len(want), writers*each)
	}
	if !slices.IsSortedFunc(want, func(a, b rafttest.Entry) int { return int(a.Index) - int(b.Index) }) {
		t.Fatal("leader applied entries out of index order")
	}
	sameEntries(t, c, want)
}

func TestApplyOnFollowerNamesLeader(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := rafttest.NewCluster(t, 3, rafttest.NewRecorder, withLogs(t))
	leader := c.WaitLeader(ctx)
	applyN(t, ctx, c, 0, 1) // followers learn the leader from its appends
	c.WaitApplied(ctx, leader.LastIndex())
	for _, n := range c.Live() {
		if n == leader {
			continue
		}
		_, _, err := n.Apply(ctx, []byte("x"))
		var nl *raftnode.NotLeaderError
		if !errors.Is(err, raftnode.ErrNotLeader) || !errors.As(err, &nl) {
			t.Fatalf("%s: Apply error %v, want a NotLeaderError", n.ID(), err)
		}
		if nl.LeaderID != leader.ID() || nl.LeaderAddr != leader.Addr() {
			t.Fatalf("%s: NotLeaderError names %s at %s, want %s at %s", n.ID(), nl.LeaderID, nl.LeaderAddr, leader.ID(), leader.Addr())
		}
		if !strings.Contains(err.Error(), leader.ID()) {
			t.Errorf("error text %q does not name the leader", err)
		}
		for name, call := range map[string]func() error{
			"Barrier":      func() error { return n.Barrier(ctx) },
			"AddVoter":     func() error { return n.AddVoter(ctx, "n9", "inmem-n9") },
			"RemoveServer": func() error { return n.RemoveServer(ctx, leader.ID()) },
		} {
			if err := call(); !errors.Is(err, raftnode.ErrNotLeader) {
				t.Errorf("%s on follower %s: %v, want ErrNotLeader", name, n.ID(), err)
			}
		}
	}
	// Nothing reached a state machine.
	for _, n := range c.Live() {
		if got := len(recorder(t, c, n.ID()).Entries()); got != 1 {
			t.Errorf("%s recorded %d commands, want 1", n.ID(), got)
		}
	}
}

func TestLeaderKillFailover(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := rafttest.NewCluster(t, 3, rafttest.NewRecorder, withLogs(t))
	old := c.WaitLeader(ctx)
	oldID, oldTerm := old.ID(), old.Term()
	applyN(t, ctx, c, 0, 20)

	c.Kill(oldID)
	leader := c.WaitLeader(ctx)
	if leader.ID() == oldID || leader.Term() <= oldTerm {
		t.Fatalf("new leader %s in term %d, old was %s in term %d", leader.ID(), leader.Term(), oldID, oldTerm)
	}
	// The new leader's LeaderChanges reports it: coalesced, the newest
	// value is true while it leads.
	for v := false; !v; {
		select {
		case v = <-leader.LeaderChanges():
		case <-ctx.Done():
			t.Fatal("no LeaderChanges notification on the new leader")
		}
	}
	if err := leader.Barrier(ctx); err != nil {
		t.Fatalf("Barrier on new leader: %v", err)
	}
	last := applyN(t, ctx, c, 20, 20)
	c.WaitApplied(ctx, last)
	want := recorder(t, c, leader.ID()).Entries()
	if len(want) != 40 {
		t.Fatalf("new leader recorded %d commands, want 40", len(want))
	}
	sameEntries(t, c, want)

	// The old leader comes back as a follower and catches up; its fresh
	// Recorder is rebuilt by replaying the whole log.
	c.Restart(oldID)
	c.WaitApplied(ctx, last)
	sameEntries(t, c, want)
}

func TestRestartReplayIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := rafttest.NewCluster(t, 3, newBoltSMs(t), withLogs(t))
	last := applyN(t, ctx, c, 0, 20)
	c.WaitApplied(ctx, last)

	ids := c.IDs()
	for _, id := range ids {
		c.Kill(id)
	}
	for _, id := range ids {
		c.Restart(id)
	}
	c.WaitLeader(ctx)
	last = applyN(t, ctx, c, 20, 5)
	c.WaitApplied(ctx, last)
	for _, id := range ids {
		sm := c.StateMachine(id).(*boltSM)
		applied, count := sm.state()
		if count != 25 || applied != last {
			t.Errorf("%s: applied %d, count %d; want %d and 25 (a double apply counts more)", id, applied, count, last)
		}
		// raft did replay the log to the restarted state machine: the
		// skip path was exercised, not bypassed.
		if sm.Replays() == 0 {
			t.Errorf("%s: no replayed index reached the state machine", id)
		}
	}
}

func TestSeedFromSnapshot(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	const L = 1000
	legacy := make([]rafttest.Entry, 0, 50)
	for i := range 50 {
		legacy = append(legacy, rafttest.Entry{Index: L - 49 + uint64(i), Cmd: cmd(i)})
	}
	image := rafttest.EncodeEntries(legacy)

	c := rafttest.NewCluster(t, 1, rafttest.NewRecorder, withLogs(t))
	n1 := c.Node("n1")
	if err := n1.SeedFromSnapshot(ctx, L, bytes.NewReader(image), int64(len(image))); err != nil {
		t.Fatalf("SeedFromSnapshot: %v", err)
	}
	if li := n1.LastIndex(); li <= L {
		t.Fatalf("LastIndex %d after seeding at %d", li, L)
	}
	// Seeding twice is refused: the log is now above L.
	if err := n1.SeedFromSnapshot(ctx, L, bytes.NewReader(image), int64(len(image))); !errors.Is(err, raftnode.ErrNotFresh) {
		t.Fatalf("second seed: %v, want ErrNotFresh", err)
	}

	idx, _, err := c.Apply(ctx, []byte("first after seed"))
	if err != nil {
		t.Fatal(err)
	}
	if idx <= L {
		t.Fatalf("first entry after seeding at %d has index %d", L, idx)
	}
	t.Logf("seeded at %d: first command applied at %d", L, idx)

	c.Join(ctx, "n2")
	c.Join(ctx, "n3")
	last := applyN(t, ctx, c, 100, 10)
	c.WaitApplied(ctx, last)

	for _, id := range c.IDs() {
		restored := recorder(t, c, id).Restored()
		if len(restored) != 1 || !bytes.Equal(restored[0], image) {
			t.Fatalf("%s: restored %d images, want exactly the seed image", id, len(restored))
		}
	}
	want := recorder(t, c, "n1").Entries()
	if len(want) != 50+1+10 {
		t.Fatalf("leader holds %d entries, want 61", len(want))
	}
	for _, e := range want[50:] {
		if e.Index <= L {
			t.Fatalf("entry %q applied at %d, not above the seed index %d", e.Cmd, e.Index, L)
		}
	}
	sameEntries(t, c, want)
}

func TestSeedRefusals(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	image := rafttest.EncodeEntries(nil)

	t.Run("multi-node cluster", func(t *testing.T) {
		c := rafttest.NewCluster(t, 3, rafttest.NewRecorder, withLogs(t))
		err := c.WaitLeader(ctx).SeedFromSnapshot(ctx, 1000, bytes.NewReader(image), int64(len(image)))
		if !errors.Is(err, raftnode.ErrNotFresh) {
			t.Fatalf("seed on 3 nodes: %v, want ErrNotFresh", err)
		}
	})
	t.Run("index below log", func(t *testing.T) {
		c := rafttest.NewCluster(t, 1, rafttest.NewRecorder, withLogs(t))
		applyN(t, ctx, c, 0, 5)
		err := c.Node("n1").SeedFromSnapshot(ctx, 3, bytes.NewReader(image), int64(len(image)))
		if !errors.Is(err, raftnode.ErrNotFresh) {
			t.Fatalf("seed below the log: %v, want ErrNotFresh", err)
		}
	})
	t.Run("image refused", func(t *testing.T) {
		c := rafttest.NewCluster(t, 1, func(string) raftnode.StateMachine { return &failingSM{} }, withLogs(t))
		n := c.Node("n1")
		err := n.SeedFromSnapshot(ctx, 1000, bytes.NewReader(image), int64(len(image)))
		if !errors.Is(err, raftnode.ErrSeedFailed) {
			t.Fatalf("seed with a refused image: %v, want ErrSeedFailed", err)
		}
		if n.State() != "Shutdown" {
			t.Fatalf("node state %s after a failed seed, want Shutdown", n.State())
		}
		if _, _, err := n.Apply(ctx, []byte("x")); err == nil {
			t.Fatal("Apply succeeded on a node whose seed failed")
		}
	})
	t.Run("size mismatch", func(t *testing.T) {
		c := rafttest.NewCluster(t, 1, rafttest.NewRecorder, withLogs(t))
		n := c.Node("n1")
		if err := n.SeedFromSnapshot(ctx, 1000, bytes.NewReader(image), int64(len(image))+1); err == nil {
			t.Fatal("seed with a wrong size succeeded")
		}
		// Nothing was restored; the cluster still works.
		if got := recorder(t, c, "n1").Restored(); len(got) != 0 {
			t.Fatalf("restored %d images after a refused seed", len(got))
		}
		applyN(t, ctx, c, 0, 1)
	})
}

func TestSnapshotRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := rafttest.NewCluster(t, 3, rafttest.NewRecorder, withLogs(t), rafttest.WithConfig(func(cfg *raftnode.Config) {
		// Compact nearly everything at a snapshot, so that a new node can
		// only catch up by installing it; no automatic snapshots.
		cfg.TrailingLogs = 2
		cfg.SnapshotThreshold = 1 << 40
		cfg.RestoreSnapshotOnStart = true
	}))
	leader := c.WaitLeader(ctx)
	last := applyN(t, ctx, c, 0, 30)
	c.WaitApplied(ctx, last)
	if err := raftnode.ForceSnapshot(leader); err != nil {
		t.Fatalf("snapshot: %v", err)
	}

	c.Join(ctx, "n4")
	last = applyN(t, ctx, c, 30, 5)
	c.WaitApplied(ctx, last)
	want := recorder(t, c, leader.ID()).Entries()
	restored := recorder(t, c, "n4").Restored()
	if len(restored) != 1 {
		t.Fatalf("n4 restored %d snapshots, want 1 (it must catch up by snapshot)", len(restored))
	}
	if got, err := rafttest.DecodeEntries(restored[0]); err != nil || len(got) < 30 {
		t.Fatalf("n4's snapshot holds %d entries (%v), want the 30 before the snapshot", len(got), err)
	}
	sameEntries(t, c, want)

	// With RestoreSnapshotOnStart, a restarted in-memory state machine is
	// rebuilt from the snapshot plus the log after it.
	c.Kill(leader.ID())
	c.Restart(leader.ID())
	last = applyN(t, ctx, c, 35, 5)
	c.WaitApplied(ctx, last)
	if len(recorder(t, c, leader.ID()).Restored()) != 1 {
		t.Fatalf("restarted %s did not restore its snapshot", leader.ID())
	}
	sameEntries(t, c, recorder(t, c, c.WaitLeader(ctx).ID()).Entries())
}

func TestMembershipAndShutdown(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := rafttest.NewCluster(t, 3, rafttest.NewRecorder, withLogs(t))
	leader := c.WaitLeader(ctx)
	var victim *raftnode.Node
	for _, n := range c.Live() {
		if n != leader {
			victim = n
			break
		}
	}
	if err := leader.RemoveServer(ctx, victim.ID()); err != nil {
		t.Fatalf("RemoveServer: %v", err)
	}
	peers, err := leader.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.ID == victim.ID() {
			t.Fatalf("removed %s still in %+v", victim.ID(), peers)
		}
	}
	applyN(t, ctx, c, 0, 3)

	ch := leader.LeaderChanges()
	if err := leader.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := leader.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	for range ch { // drains the last state, then must be closed
	}
	if _, _, err := leader.Apply(ctx, []byte("x")); !errors.Is(err, raftnode.ErrShutdown) {
		t.Fatalf("Apply after Shutdown: %v, want ErrShutdown", err)
	}
	if err := leader.Barrier(ctx); !errors.Is(err, raftnode.ErrShutdown) {
		t.Fatalf("Barrier after Shutdown: %v, want ErrShutdown", err)
	}
}

func TestLeaderChangesSingleNode(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	_, trans := raft.NewInmemTransport("")
	n, err := raftnode.New(ctx, raftnode.Config{NodeID: "solo", DataDir: t.TempDir(), Transport: trans}, &rafttest.Recorder{})
	if err != nil {
		t.Fatal(err)
	}
	ch := n.LeaderChanges()
	if err := n.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-ch:
		if !v {
			t.Fatal("first leadership notification is false")
		}
	case <-ctx.Done():
		t.Fatal("no leadership notification")
	}
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for v := range ch {
		if v {
			t.Fatal("leadership acquired during shutdown")
		}
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	if _, err := raftnode.New(ctx, raftnode.Config{}, &rafttest.Recorder{}); !errors.Is(err, raftnode.ErrInvalidConfig) {
		t.Fatalf("New with an empty config: %v", err)
	}
	_, trans := raft.NewInmemTransport("")
	cfg := raftnode.Config{NodeID: "n1", DataDir: t.TempDir(), Transport: trans}
	if _, err := raftnode.New(ctx, cfg, nil); !errors.Is(err, raftnode.ErrInvalidConfig) {
		t.Fatalf("New with a nil StateMachine: %v", err)
	}
	n, err := raftnode.New(ctx, cfg, &rafttest.Recorder{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(ctx)
	// A second node on the same data directory fails instead of hanging.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, trans2 := raft.NewInmemTransport("")
	cfg.Transport = trans2
	if _, err := raftnode.New(short, cfg, &rafttest.Recorder{}); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second New on the same data dir: %v, want a lock error", err)
	}
	canceled, cancel2 := context.WithCancel(ctx)
	cancel2()
	if _, _, err := n.Apply(canceled, []byte("x")); err == nil {
		t.Fatal("Apply with a canceled context succeeded")
	}
}

func TestTCPTransportAndMetrics(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	reg := prometheus.NewRegistry()
	n1, err := raftnode.New(ctx, raftnode.Config{
		NodeID: "t1", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", Registerer: reg,
	}, &rafttest.Recorder{})
	if err != nil {
		t.Fatal(err)
	}
	defer n1.Shutdown(ctx)
	// n2 runs raft's network transport over a custom StreamLayer, the seam
	// a TLS layer will use.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	layer := &countingLayer{Listener: ln}
	sm2 := &rafttest.Recorder{}
	n2, err := raftnode.New(ctx, raftnode.Config{NodeID: "t2", DataDir: t.TempDir(), StreamLayer: layer}, sm2)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Shutdown(ctx)
	if !strings.HasPrefix(n1.Addr(), "127.0.0.1:") || strings.HasSuffix(n1.Addr(), ":0") {
		t.Fatalf("n1 advertises %q", n1.Addr())
	}
	if err := n1.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	for !n1.IsLeader() {
		if err := ctx.Err(); err != nil {
			t.Fatal("n1 never led")
		}
		waitABit(ctx)
	}
	if err := n1.AddVoter(ctx, "t2", n2.Addr()); err != nil {
		t.Fatal(err)
	}
	idx, _, err := n1.Apply(ctx, []byte("over tcp"))
	if err != nil {
		t.Fatal(err)
	}
	for n2.AppliedIndex() < idx {
		if err := ctx.Err(); err != nil {
			t.Fatal("n2 never applied the entry")
		}
		waitABit(ctx)
	}
	if e := sm2.Entries(); len(e) != 1 || string(e[0].Cmd) != "over tcp" {
		t.Fatalf("n2 recorded %+v", e)
	}
	if layer.accepted.Load() == 0 {
		t.Fatal("n2's StreamLayer accepted no connection")
	}
	if n2.Addr() != ln.Addr().String() {
		t.Fatalf("n2 advertises %s, its StreamLayer listens on %s", n2.Addr(), ln.Addr())
	}

	for name, want := range map[string]float64{
		"indexgate_raft_is_leader":                1,
		"indexgate_raft_leadership_changes_total": 1,
	} {
		if got := gaugeValue(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := gaugeValue(t, reg, "indexgate_raft_applied_index"); got < float64(idx) {
		t.Errorf("applied_index = %v, want >= %d", got, idx)
	}
	if got := histogramCount(t, reg, "indexgate_raft_apply_duration_seconds"); got != 1 {
		t.Errorf("apply_duration_seconds counted %d applies, want 1", got)
	}
	if err := n1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := reg.Gather(); err != nil || len(got) != 0 {
		t.Fatalf("after Shutdown the registry holds %d families (%v)", len(got), err)
	}
}

// gateSM blocks in Apply until released, so that a test can look at the
// node while raft has handed an entry over but the state machine has not
// applied it yet.
type gateSM struct {
	rafttest.Recorder
	entered chan uint64
	release chan struct{}
}

func (g *gateSM) Apply(index, term uint64, cmd []byte) any {
	if string(cmd) == "gated" {
		g.entered <- index
		<-g.release
	}
	return g.Recorder.Apply(index, term, cmd)
}

func TestAppliedIndexWaitsForTheStateMachine(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	g := &gateSM{entered: make(chan uint64, 1), release: make(chan struct{})}
	c := rafttest.NewCluster(t, 1, func(string) raftnode.StateMachine { return g }, withLogs(t))
	n := c.WaitLeader(ctx)
	before := applyN(t, ctx, c, 0, 1)
	if got := n.AppliedIndex(); got < before {
		t.Fatalf("AppliedIndex %d after Apply returned %d", got, before)
	}

	done := make(chan error, 1)
	go func() {
		_, _, err := n.Apply(ctx, []byte("gated"))
		done <- err
	}()
	var idx uint64
	select {
	case idx = <-g.entered:
	case <-ctx.Done():
		t.Fatal("gated command never reached the state machine")
	}
	// Once raft counts idx as applied (it has handed it to the state
	// machine, which is stuck inside Apply), AppliedIndex must not.
	for n.Stats()["applied_index"] != fmt.Sprint(idx) {
		if ctx.Err() != nil {
			t.Fatalf("raft never counted %d as applied: %v", idx, n.Stats()["applied_index"])
		}
		waitABit(ctx)
	}
	if got := n.AppliedIndex(); got >= idx {
		t.Fatalf("AppliedIndex %d while the state machine is still applying %d", got, idx)
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := n.AppliedIndex(); got < idx {
		t.Fatalf("AppliedIndex %d after the gated command %d was applied", got, idx)
	}
}

// countingLayer is a plain TCP raft.StreamLayer that counts accepted
// connections.
type countingLayer struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingLayer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

func (l *countingLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}
