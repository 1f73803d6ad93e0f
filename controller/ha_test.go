package controller

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
)

// TestHAMigrateJoinReplicate migrates a legacy controller with a router to
// HA mode, joins two members and writes through every node: followers
// forward to the leader, every node commits the same change sets, and
// routers on every node follow without a full state.
func TestHAMigrateJoinReplicate(t *testing.T) {
	net := newRaftNet()
	c1 := startController(t, haTestConfig(t, net))
	r1 := startWireRouter(t, "r1", c1.RouterAddr().String())
	waitRouterAt(t, r1, status(t, c1)) // an empty full state first
	L := commitN(t, c1, "legacy", 5)
	waitRouterAt(t, r1, status(t, c1))
	if err := c1.Migrate(ctxT(t), MigrateRequest{To: abi.IndexHA, NodeID: "n1", RaftAddr: raftAddr("n1")}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	st := status(t, c1)
	if st.Mode != abi.IndexHA || st.Index != L || st.Role != "ha" || !st.Leader || st.Migration.Step != StepDone {
		t.Fatalf("after migration: %+v", st)
	}
	c2 := joinNode(t, net, "n2", c1)
	c3 := joinNode(t, net, "n3", c2) // through a follower: forwarded
	r2 := startWireRouter(t, "r2", c2.RouterAddr().String())
	r3 := startWireRouter(t, "r3", c3.RouterAddr().String())

	first := commit(t, c2, put("svc", "a", "1")) // forwarded to the leader
	if first <= L+2 {
		t.Fatalf("first HA index %d, want above the seed at %d+2", first, L)
	}
	commit(t, c3, put("svc", "b", "2"))
	commit(t, c1, put("svc", "c", "3"), del("svc", "a"))
	st = waitConverged(t, c1, c2, c3)
	if st.Mode != abi.IndexHA || st.Entities != 5+2+1 { // + the fence
		t.Fatalf("converged status %+v", st)
	}
	checkRouter(t, r1, c1, st, 1) // its first full state, as a fresh router
	checkRouter(t, r2, c2, st, 1)
	checkRouter(t, r3, c3, st, 1)
	if s := r1.state(); s.applied != 5+3+1 {
		t.Fatalf("r1 applied %d change sets, want 9", s.applied)
	}
	if len(st.Peers) != 3 {
		t.Fatalf("peers %+v", st.Peers)
	}
}

// threeNodes migrates a legacy controller with n change sets and joins two
// members.
func threeNodes(t *testing.T, net *raftNet, n int) (c1, c2, c3 *running) {
	t.Helper()
	c1 = newLegacyMigrated(t, net, "n1", n)
	c2 = joinNode(t, net, "n2", c1)
	c3 = joinNode(t, net, "n3", c1)
	return c1, c2, c3
}

func addrs(cs ...*running) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.RouterAddr().String())
	}
	return out
}

// TestMigrationUnderContinuousWrites migrates while a writer commits as
// fast as it can: every acknowledged write is on every node and router,
// routers apply every change set exactly once (their applied counter is
// the number of change sets committed) and never need a full state after
// their first.
func TestMigrationUnderContinuousWrites(t *testing.T) {
	net := newRaftNet()
	c1 := startController(t, haTestConfig(t, net))
	var routers []*wireRouter
	for i := range 3 {
		r := startWireRouter(t, "r"+string(rune('a'+i)), c1.RouterAddr().String())
		waitRouterAt(t, r, status(t, c1))
		routers = append(routers, r)
	}
	var mu sync.Mutex
	targets := []*running{c1}
	stopW := startWriter(t, "w", func() []*running { mu.Lock(); defer mu.Unlock(); return slices.Clone(targets) })
	waitFor(t, "some legacy writes", func() bool { return status(t, c1).Index >= 20 })
	if err := c1.Migrate(ctxT(t), MigrateRequest{To: abi.IndexHA, NodeID: "n1", RaftAddr: raftAddr("n1")}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	mst := status(t, c1).Migration
	if mst.Step != StepDone || mst.RoutersAcked != 3 || mst.RoutersTotal != 3 || mst.PauseMs <= 0 {
		t.Fatalf("migration status %+v", mst)
	}
	c2 := joinNode(t, net, "n2", c1)
	c3 := joinNode(t, net, "n3", c1)
	mu.Lock()
	targets = []*running{c1, c2, c3}
	mu.Unlock()
	at := status(t, c1).ChangeSets
	waitFor(t, "some HA writes", func() bool { return status(t, c1).ChangeSets >= at+20 })
	acked := stopW()
	st := waitConverged(t, c1, c2, c3)
	for _, c := range []*running{c1, c2, c3} {
		checkAcked(t, c.nodeID(), acked, entitiesOf(t, c, ""))
	}
	for _, r := range routers {
		checkRouter(t, r, c1, st, 1)
		s := r.state()
		checkAcked(t, r.id, acked, s.entities)
		if s.applied != st.ChangeSets {
			t.Fatalf("router %s applied %d change sets, the controllers committed %d", r.id, s.applied, st.ChangeSets)
		}
	}
}

// TestLeaderKillRoutersConverge kills the leader under routers that know
// every node: they fail over to the survivors and resume by replay, and
// writes go on through the new leader.
func TestLeaderKillRoutersConverge(t *testing.T) {
	net := newRaftNet()
	c1, c2, c3 := threeNodes(t, net, 3)
	all := addrs(c1, c2, c3)
	var routers []*wireRouter
	for i := range 3 {
		routers = append(routers, startWireRouter(t, "r"+string(rune('a'+i)), all...))
	}
	commit(t, c1, put("svc", "before", "1"))
	st := waitConverged(t, c1, c2, c3)
	for _, r := range routers {
		waitRouterAt(t, r, st)
	}
	old := st.Index
	kill(t, net, leaderOf(t, c1, c2, c3))
	survivors := []*running{}
	for _, c := range []*running{c1, c2, c3} {
		if c.cancel != nil {
			survivors = append(survivors, c)
		}
	}
	var idx uint64
	waitFor(t, "a write through the survivors", func() bool {
		res, err := survivors[0].Commit(ctxT(t), []model.Change{put("svc", "after", "2")})
		idx = res.Index
		return err == nil
	})
	if idx <= old {
		t.Fatalf("index after failover %d, before %d", idx, old)
	}
	st = waitConverged(t, survivors...)
	for _, r := range routers {
		checkRouter(t, r, survivors[0], st, 1)
		if s := r.state(); s.connected == c1.RouterAddr().String() && c1.cancel == nil {
			t.Fatalf("router %s still on the killed node", r.id)
		}
	}
}

// TestRollbackToLegacy rolls a three-node cluster back to legacy mode on
// its leader: followers retire and redirect their routers, which converge
// on the legacy controller without a full state; the legacy counter
// continues at the last HA index.
func TestRollbackToLegacy(t *testing.T) {
	net := newRaftNet()
	c1, c2, c3 := threeNodes(t, net, 3)
	cs := []*running{c1, c2, c3}
	var routers []*wireRouter
	for i, c := range cs {
		routers = append(routers, startWireRouter(t, "r"+string(rune('a'+i)), c.RouterAddr().String()))
	}
	commit(t, c2, put("svc", "ha1", "1"))
	commit(t, c3, put("svc", "ha2", "2"))
	st := waitConverged(t, cs...)
	H := st.Index
	for _, r := range routers {
		waitRouterAt(t, r, st)
	}
	leader := leaderOf(t, cs...)
	// On a follower the request is forwarded to the leader.
	follower := c2
	if leader == c2 {
		follower = c3
	}
	if code, body := httpPost(t, follower, "/v1/migrate", `{"to":"legacy"}`); code != http.StatusAccepted {
		t.Fatalf("POST /v1/migrate: %d %s", code, body)
	}
	waitFor(t, "the rollback", func() bool {
		m := status(t, leader).Migration
		return m.To == abi.IndexLegacy && (m.Step == StepDone || m.Step == StepFailed)
	})
	lst := status(t, leader)
	if lst.Mode != abi.IndexLegacy || lst.Role != "legacy" || lst.Index != H || leader.ha.Load() != nil {
		t.Fatalf("leader after rollback: %+v", lst)
	}
	if _, err := os.Stat(filepath.Join(leader.cfg.DataDir, RaftDir)); !os.IsNotExist(err) {
		t.Fatalf("raft dir of the legacy controller: %v", err)
	}
	var retired []*running
	for _, c := range cs {
		if c != leader {
			retired = append(retired, c)
			waitFor(t, "a follower to retire", func() bool { return status(t, c).Role == "retired" })
		}
	}
	// Writes continue on the legacy counter, also through a retired node.
	res, err := retired[0].Commit(ctxT(t), []model.Change{put("svc", "legacy1", "3")})
	if err != nil || res.Index != H+1 || res.IndexType != abi.IndexLegacy {
		t.Fatalf("legacy write after rollback: %+v, %v", res, err)
	}
	st = status(t, leader)
	for _, r := range routers {
		checkRouter(t, r, leader, st, 1)
		if s := r.state(); s.connected != leader.RouterAddr().String() {
			t.Fatalf("router %s on %s, want the legacy controller %s", r.id, s.connected, leader.RouterAddr())
		}
	}
	// A retired member refuses to start again; the legacy controller
	// restarts as a legacy controller.
	for _, c := range retired {
		c.stop(t)
		cfg := c.cfg
		if _, err := New(cfg); !errors.Is(err, ErrRetired) {
			t.Fatalf("restart of a retired member: %v", err)
		}
	}
	leader.stop(t)
	cfg := leader.cfg
	cfg.HA = false
	c := startController(t, cfg)
	if st := status(t, c); st.Role != "legacy" || st.Mode != abi.IndexLegacy || st.Index != H+1 {
		t.Fatalf("legacy controller after restart: %+v", st)
	}
	if got := commit(t, c, put("svc", "legacy2", "4")); got != H+2 {
		t.Fatalf("legacy index after restart %d, want %d", got, H+2)
	}
}

// TestRouterAheadOfAMember: a router that fails over to a member further
// behind than itself is not given a full state. The member waits a little
// for the committed entries to arrive and, if they do not, redirects the
// router to the leader.
func TestRouterAheadOfAMember(t *testing.T) {
	net := newRaftNet()
	c1, c2, c3 := threeNodes(t, net, 3)
	leader := leaderOf(t, c1, c2, c3)
	behind := c3
	if behind == leader {
		behind = c2
	}
	r := startWireRouter(t, "r", leader.RouterAddr().String())
	waitRouterAt(t, r, waitConverged(t, c1, c2, c3))
	raddr := behind.ha.Load().node.Addr()
	net.partition(raddr)
	for i := range 5 {
		commit(t, leader, put("svc", fmt.Sprint(i), "v"))
	}
	st := status(t, leader)
	waitRouterAt(t, r, st)
	if b := status(t, behind); b.Index >= st.Index {
		t.Fatalf("the partitioned member is at %d, not behind %d", b.Index, st.Index)
	}
	// The partitioned member cannot catch up: it redirects to the leader.
	r.moveTo(t, behind.RouterAddr().String(), leader.RouterAddr().String())
	waitFor(t, "the router back on the leader", func() bool {
		s := r.state()
		return s.connected == leader.RouterAddr().String() && s.sessions >= 2
	})
	net.heal(raddr)
	st = waitConverged(t, c1, c2, c3)
	// Caught up, it serves the router by replay.
	r.moveTo(t, behind.RouterAddr().String())
	checkRouter(t, r, behind, st, 1)
}
