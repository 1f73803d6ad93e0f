package controller

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
)

// restartAt starts a new controller on c's data directory and addresses
// (routers find it where they left it).
func restartAt(t *testing.T, c *running, ha bool) (*running, error) {
	t.Helper()
	cfg := c.cfg
	cfg.ListenAddr, cfg.AdminAddr = c.RouterAddr().String(), c.AdminAddr().String()
	cfg.HA = ha
	if ha {
		cfg.NodeID = c.nodeID()
	}
	ctl, err := New(cfg)
	if err != nil {
		return nil, err
	}
	return runController(t, ctl), nil
}

// TestMigrationCrashAtEachStep stops a migration dead at every step, as a
// crash would, and restarts the controller on the same data directory: it
// rolls back to legacy mode while the mode change is not applied, and
// completes the migration (HA mode, raft state kept) once it is. Either way
// its router converges without a full state and writes continue on the
// right counter.
func TestMigrationCrashAtEachStep(t *testing.T) {
	tests := []struct {
		point string
		ha    bool // the restarted controller runs HA mode
	}{
		{"recorded", false},
		{"bootstrapped", false},
		{"acked", false},
		{"seeded", false},
		{"mode-changed", true},
	}
	for _, tt := range tests {
		t.Run(tt.point, func(t *testing.T) {
			net := newRaftNet()
			c := startController(t, haTestConfig(t, net))
			r := startWireRouter(t, "r", c.RouterAddr().String())
			waitRouterAt(t, r, status(t, c))
			L := commitN(t, c, "a", 5)
			waitRouterAt(t, r, status(t, c))
			c.crashPoint = func(step string) bool { return step == tt.point }
			err := c.Migrate(ctxT(t), MigrateRequest{To: abi.IndexHA, NodeID: "n1", RaftAddr: raftAddr("n1")})
			if !errors.Is(err, errCrashPoint) {
				t.Fatalf("migrate: %v, want the crash point", err)
			}
			kill(t, net, c)

			c2, err := restartAt(t, c, false)
			if err != nil {
				t.Fatalf("restart: %v", err)
			}
			st := status(t, c2)
			_, raftErr := os.Stat(filepath.Join(c.cfg.DataDir, RaftDir))
			want := abi.IndexLegacy
			if tt.ha {
				want = abi.IndexHA
			}
			if st.Mode != want || (raftErr == nil) != tt.ha || st.Index != L {
				t.Fatalf("after restart: mode %s index %d (want %s@%d), raft dir: %v", st.Mode, st.Index, want, L, raftErr)
			}
			got := commit(t, c2, put("svc", "after", "1"))
			if !tt.ha && got != L+1 || tt.ha && got <= L+2 {
				t.Fatalf("index after restart %d (last legacy %d, ha %v)", got, L, tt.ha)
			}
			checkRouter(t, r, c2, status(t, c2), 1)
			if !tt.ha {
				// The rolled-back controller can migrate again.
				if err := c2.Migrate(ctxT(t), MigrateRequest{To: abi.IndexHA, NodeID: "n1", RaftAddr: raftAddr("n1")}); err != nil {
					t.Fatalf("second migration: %v", err)
				}
				commit(t, c2, put("svc", "ha", "1"))
				checkRouter(t, r, c2, status(t, c2), 1)
			}
		})
	}
}

// TestRollbackCrashFinishesOnRestart stops a rollback right after the
// rollback entry was applied: the restarted node finishes it (legacy mode,
// raft state removed) and continues the legacy counter at the last HA
// index.
func TestRollbackCrashFinishesOnRestart(t *testing.T) {
	net := newRaftNet()
	c := newLegacyMigrated(t, net, "n1", 3)
	r := startWireRouter(t, "r", c.RouterAddr().String())
	H := commit(t, c, put("svc", "ha", "1"))
	waitRouterAt(t, r, status(t, c))
	c.crashPoint = func(step string) bool { return step == "rolled-back" }
	if err := c.Migrate(ctxT(t), MigrateRequest{To: abi.IndexLegacy}); !errors.Is(err, errCrashPoint) {
		t.Fatalf("rollback: %v", err)
	}
	kill(t, net, c)
	c2, err := restartAt(t, c, false)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	st := status(t, c2)
	if st.Mode != abi.IndexLegacy || st.Role != "legacy" || st.Index != H {
		t.Fatalf("after restart: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(c.cfg.DataDir, RaftDir)); !os.IsNotExist(err) {
		t.Fatalf("raft dir after the finished rollback: %v", err)
	}
	if got := commit(t, c2, put("svc", "legacy", "1")); got != H+1 {
		t.Fatalf("legacy index %d, want %d", got, H+1)
	}
	checkRouter(t, r, c2, status(t, c2), 1)
}

// TestRollbackRefusedWithoutHAChangeSet: with no HA change set since the
// migration, the rollback's mode change would take the migration's log
// key; it is refused and HA mode goes on.
func TestRollbackRefusedWithoutHAChangeSet(t *testing.T) {
	net := newRaftNet()
	c := newLegacyMigrated(t, net, "n1", 3)
	leaderOf(t, c)
	err := c.Migrate(ctxT(t), MigrateRequest{To: abi.IndexLegacy})
	if !errors.Is(err, ErrMigration) {
		t.Fatalf("rollback without an HA change set: %v", err)
	}
	if st := status(t, c); st.Mode != abi.IndexHA || st.Migration.Step != StepFailed {
		t.Fatalf("after the refused rollback: %+v", st)
	}
	if got := commit(t, c, put("svc", "ha", "1")); got <= 3 {
		t.Fatalf("HA write after the refused rollback: %d", got)
	}
}

// TestHAIndexSurvivesRestart: OpenZiti #3860 in HA mode. Every member,
// follower and leader, restarts at its last committed index (read from the
// store, never 0, never the raft log tip), and the change sets after the
// restarts continue it without a gap for the routers.
func TestHAIndexSurvivesRestart(t *testing.T) {
	net := newRaftNet()
	c1, c2, c3 := threeNodes(t, net, 3)
	cs := []*running{c1, c2, c3}
	r := startWireRouter(t, "r", addrs(cs...)...)
	commit(t, c1, put("svc", "a", "1"))
	st := waitConverged(t, cs...)
	waitRouterAt(t, r, st)
	for i := range cs {
		old := cs[i]
		kill(t, net, old)
		nc, err := restartAt(t, old, true)
		if err != nil {
			t.Fatalf("restart %s: %v", old.nodeID(), err)
		}
		if got := status(t, nc); got.Index != st.Index || got.Mode != abi.IndexHA {
			t.Fatalf("%s after restart: %s@%d, want ha@%d", nc.nodeID(), got.Mode, got.Index, st.Index)
		}
		cs[i] = nc
		st = waitConverged(t, cs...)
	}
	var got uint64
	waitFor(t, "a write after the restarts", func() bool {
		res, err := cs[0].Commit(ctxT(t), []model.Change{put("svc", "b", "2")})
		got = res.Index
		return err == nil
	})
	if got <= st.Index {
		t.Fatalf("index after restarts %d, before %d", got, st.Index)
	}
	st = waitConverged(t, cs...)
	checkRouter(t, r, cs[0], st, 1)
}
