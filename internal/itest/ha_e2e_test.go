package itest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/controller"
	"github.com/indexgate/indexgate/model"
)

// writer commits as fast as it can through the current targets and keeps
// every acknowledged write.
type writer struct {
	mu      sync.Mutex
	targets []*Controller
	acked   map[string]string
	cancel  context.CancelFunc
	done    chan struct{}
}

func startWriter(targets ...*Controller) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{targets: targets, acked: map[string]string{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ctx.Err() == nil; i++ {
			w.mu.Lock()
			c := w.targets[i%len(w.targets)]
			w.mu.Unlock()
			id, v := fmt.Sprintf("w-%d", i), fmt.Sprint(i)
			wctx, wcancel := context.WithTimeout(ctx, Guard)
			_, err := c.Commit(wctx, []model.Change{Put("w", id, v)})
			wcancel()
			if err == nil {
				w.mu.Lock()
				w.acked[id] = v
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *writer) setTargets(cs ...*Controller) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.targets = cs
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *writer) stop() map[string]string {
	w.cancel()
	<-w.done
	return w.acked
}

// converged waits until the controllers agree, at or above index, and
// returns their status.
func converged(t *testing.T, index uint64, cs ...*Controller) controller.Status {
	t.Helper()
	var st controller.Status
	WaitFor(t, "controllers to converge", func() bool {
		st = cs[0].MustStatus(t)
		if st.Index < index {
			return false
		}
		for _, c := range cs[1:] {
			o := c.MustStatus(t)
			if o.Mode != st.Mode || o.Index != st.Index || o.Digest != st.Digest {
				return false
			}
		}
		return true
	})
	return st
}

// TestHAEndToEnd runs the whole story over real sockets: a legacy
// controller with two real routers (built-in wasm filters) migrates to HA
// mode under continuous writes (raft over TCP, raft-boltdb), two members
// join, the leader is killed, and writes go on through the survivors. No
// acknowledged write is lost, routers apply every change set exactly once
// (applied counter = change sets committed) and never need a full state
// beyond their first.
func TestHAEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	// The members' addresses are fixed up front: routers list every
	// controller, raft members dial each other.
	var router, admin, raftAddr [3]string
	for i := range 3 {
		router[i], admin[i], raftAddr[i] = FreeAddr(t), FreeAddr(t), FreeAddr(t)
	}
	cfg1 := ControllerConfig(t.TempDir())
	cfg1.ListenAddr, cfg1.AdminAddr = router[0], admin[0]
	c1 := StartController(t, cfg1)

	var routers []*Router
	for i := range 2 {
		r := StartRouter(t, RouterConfig(t, fmt.Sprintf("r%d", i+1), t.TempDir(), router[:]...))
		WaitRouterAt(t, r, c1.MustStatus(t))
		routers = append(routers, r)
	}
	w := startWriter(c1)
	WaitFor(t, "legacy writes", func() bool { return w.count() >= 30 })
	ctx, cancel := context.WithTimeout(context.Background(), 3*Guard)
	defer cancel()
	if err := c1.Migrate(ctx, controller.MigrateRequest{To: abi.IndexHA, NodeID: "n1", RaftAddr: raftAddr[0]}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	st := c1.MustStatus(t)
	if st.Mode != abi.IndexHA || st.Migration.Step != controller.StepDone {
		t.Fatalf("after the migration: mode %s, migration %+v", st.Mode, st.Migration)
	}
	t.Logf("migration: pause %.1f ms, %d/%d routers acked legacy index %d",
		st.Migration.PauseMs, st.Migration.RoutersAcked, st.Migration.RoutersTotal, st.Migration.LastIndex)

	members := []*Controller{c1}
	for i := 1; i < 3; i++ {
		cfg := ControllerConfig(t.TempDir())
		cfg.ListenAddr, cfg.AdminAddr = router[i], admin[i]
		cfg.HA, cfg.NodeID, cfg.RaftAddr, cfg.Join = true, fmt.Sprintf("n%d", i+1), raftAddr[i], admin[0]
		c := StartController(t, cfg)
		WaitFor(t, cfg.NodeID+" to serve", func() bool { return c.MustStatus(t).Serving })
		members = append(members, c)
	}
	w.setTargets(members...)
	at := w.count()
	WaitFor(t, "HA writes", func() bool { return w.count() >= at+30 })

	// Kill the leader; the survivors elect a new one and take the writes.
	var leader *Controller
	WaitFor(t, "a leader", func() bool {
		for _, c := range members {
			if c.MustStatus(t).Leader {
				leader = c
				return true
			}
		}
		return false
	})
	var survivors []*Controller
	for _, c := range members {
		if c != leader {
			survivors = append(survivors, c)
		}
	}
	w.setTargets(survivors...)
	leader.Stop(t)
	at = w.count()
	WaitFor(t, "writes after the leader's death", func() bool { return w.count() >= at+30 })
	acked := w.stop()
	// A last write fences the writer's cancelled ones: any of them that
	// still commits does so below it.
	var fence uint64
	WaitFor(t, "the fence write", func() bool {
		res, err := survivors[0].Commit(ctx, []model.Change{Put("fence", "f", "1")})
		fence = res.Index
		return err == nil
	})
	st = converged(t, fence, survivors...)
	for _, c := range survivors {
		got := map[string]bool{}
		for _, e := range entities(t, c) {
			got[e.ID] = true
		}
		for id := range acked {
			if !got[id] {
				t.Fatalf("%s lost acknowledged write %s", c.MustStatus(t).NodeID, id)
			}
		}
	}
	for _, r := range routers {
		rs := WaitRouterAt(t, r, st)
		t.Logf("router %s: %+v lastIndex %v; cluster changeSets %d index %d", rs.ID, rs.Counters, rs.LastIndex, st.ChangeSets, st.Index)
		if rs.Counters.Applied != st.ChangeSets {
			t.Fatalf("router %s applied %d change sets, the cluster committed %d", rs.ID, rs.Counters.Applied, st.ChangeSets)
		}
		if rs.Counters.FullResyncs != 0 || rs.Counters.InitialSyncs != 1 || rs.Counters.Gaps != 0 {
			t.Fatalf("router %s: want its initial full state only and no gap: %+v", rs.ID, rs.Counters)
		}
	}
}

// entities reads a controller's entities of kind "w" through its admin API.
func entities(t *testing.T, c *Controller) []model.Entity {
	t.Helper()
	var es []model.Entity
	if err := getJSON(c.AdminAddr().String(), "/v1/entities?kind=w", &es); err != nil {
		t.Fatalf("entities: %v", err)
	}
	return es
}

// TestRollbackEndToEnd rolls an HA cluster back to legacy mode over real
// sockets with real routers, one of them on a follower: the followers
// retire and redirect it, every router converges on the legacy controller
// (the former leader) without a full state, and the legacy counter goes on
// from the last HA index.
func TestRollbackEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	var router, admin, raftAddr [3]string
	for i := range 3 {
		router[i], admin[i], raftAddr[i] = FreeAddr(t), FreeAddr(t), FreeAddr(t)
	}
	cfg1 := ControllerConfig(t.TempDir())
	cfg1.ListenAddr, cfg1.AdminAddr = router[0], admin[0]
	c1 := StartController(t, cfg1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*Guard)
	defer cancel()
	for i := range 20 {
		if _, err := c1.Commit(ctx, []model.Change{Put("w", fmt.Sprint(i), "legacy")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c1.Migrate(ctx, controller.MigrateRequest{To: abi.IndexHA, NodeID: "n1", RaftAddr: raftAddr[0]}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	members := []*Controller{c1}
	for i := 1; i < 3; i++ {
		cfg := ControllerConfig(t.TempDir())
		cfg.ListenAddr, cfg.AdminAddr = router[i], admin[i]
		cfg.HA, cfg.NodeID, cfg.RaftAddr, cfg.Join = true, fmt.Sprintf("n%d", i+1), raftAddr[i], admin[0]
		c := StartController(t, cfg)
		WaitFor(t, cfg.NodeID+" to serve", func() bool { return c.MustStatus(t).Serving })
		members = append(members, c)
	}
	// One router per member, each knowing only its member: the followers'
	// routers reach the legacy controller through the redirect alone.
	var routers []*Router
	for i := range 3 {
		routers = append(routers, StartRouter(t, RouterConfig(t, fmt.Sprintf("r%d", i+1), t.TempDir(), router[i])))
	}
	for i := range 20 {
		if _, err := members[i%3].Commit(ctx, []model.Change{Put("w", fmt.Sprint(i), "ha")}); err != nil {
			t.Fatal(err)
		}
	}
	st := converged(t, 0, members...)
	for _, r := range routers {
		WaitRouterAt(t, r, st)
	}
	H := st.Index
	// Asked on a follower, forwarded to the leader (n1).
	if err := postJSON(admin[1], "/v1/migrate", `{"to":"legacy"}`); err != nil {
		t.Fatalf("POST /v1/migrate: %v", err)
	}
	WaitFor(t, "the rollback", func() bool {
		m := c1.MustStatus(t).Migration
		return m.To == abi.IndexLegacy && (m.Step == controller.StepDone || m.Step == controller.StepFailed)
	})
	if st := c1.MustStatus(t); st.Mode != abi.IndexLegacy || st.Role != "legacy" || st.Index != H {
		t.Fatalf("legacy controller after the rollback: mode %s role %s index %d (want legacy@%d), migration %+v",
			st.Mode, st.Role, st.Index, H, st.Migration)
	}
	res, err := members[2].Commit(ctx, []model.Change{Put("w", "after", "legacy")}) // forwarded by a retired member
	if err != nil || res.Index != H+1 || res.IndexType != abi.IndexLegacy {
		t.Fatalf("legacy write after the rollback: %+v, %v", res, err)
	}
	st = c1.MustStatus(t)
	for _, r := range routers {
		rs := WaitRouterAt(t, r, st)
		if rs.Counters.FullResyncs != 0 || rs.Counters.Gaps != 0 || rs.Controller != router[0] {
			t.Fatalf("router %s on %s: %+v", rs.ID, rs.Controller, rs.Counters)
		}
	}
}
