package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/controller/raftnode"
	"github.com/indexgate/indexgate/controller/raftnode/rafttest"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

// fsmBox is one rafttest node's state machine: an haFSM on a store that
// survives the node's restarts (it is reopened from the same file).
type fsmBox struct {
	*haFSM
}

// Close closes the store when rafttest kills the node.
func (b fsmBox) Close() error { return b.st.close() }

type nopHooks struct{}

func (nopHooks) storeChanged(meta) {}

// fsmCluster builds state machines for rafttest: one store file per node
// id, kept across restarts.
type fsmCluster struct {
	t     *testing.T
	dir   string
	mu    sync.Mutex
	boxes map[string]fsmBox
}

func (fc *fsmCluster) newSM(id string) raftnode.StateMachine {
	st, err := openStore(context.Background(), filepath.Join(fc.dir, id+".db"), model.Options{NoSync: true}, 100_000, wire.DefaultMaxFrame)
	if err != nil {
		fc.t.Fatalf("open store %s: %v", id, err)
	}
	var m meta
	var last logKey
	if err := st.view(context.Background(), func(tx *model.Tx) (err error) {
		if m, err = readMeta(tx); err != nil {
			return err
		}
		last, err = lastLogKey(tx)
		return err
	}); err != nil {
		fc.t.Fatal(err)
	}
	met, err := newMetrics(prometheus.NewRegistry(), &Controller{routers: newRegistry()})
	if err != nil {
		fc.t.Fatal(err)
	}
	b := fsmBox{&haFSM{st: st, hub: newHub(64, last, m.index()), met: met, log: slog.New(slog.DiscardHandler), hooks: nopHooks{}}}
	fc.mu.Lock()
	fc.boxes[id] = b
	fc.mu.Unlock()
	return b
}

func (fc *fsmCluster) meta(id string) meta {
	fc.mu.Lock()
	b := fc.boxes[id]
	fc.mu.Unlock()
	return storeMeta(fc.t, b.st)
}

func (fc *fsmCluster) digest(id string) string {
	fc.mu.Lock()
	b := fc.boxes[id]
	fc.mu.Unlock()
	var d string
	if err := b.st.view(context.Background(), func(tx *model.Tx) (err error) { d, err = tx.Digest(); return err }); err != nil {
		fc.t.Fatal(err)
	}
	return d
}

// TestFSMOnRaftCluster runs the HA state machine on a three-node rafttest
// cluster (InmemTransport, raft-boltdb): seeded from a legacy store image,
// migrated, joined by members that install the snapshot, restarted. Every
// change set's index is its raft index, prevIndex chains the change sets
// (not the raft log, which has other entries in between), restarts replay
// nothing twice, and all stores end identical.
func TestFSMOnRaftCluster(t *testing.T) {
	ctx := ctxT(t)
	fc := &fsmCluster{t: t, dir: t.TempDir(), boxes: map[string]fsmBox{}}
	// The legacy store the cluster starts from: 10 change sets.
	legacy := openTestStore(t, 100_000)
	appendSets(t, legacy, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	lm := storeMeta(t, legacy)
	img, size, err := legacy.imageOf(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()

	c := rafttest.NewCluster(t, 1, fc.newSM, rafttest.WithConfig(func(rc *raftnode.Config) {
		rc.SnapshotThreshold, rc.TrailingLogs, rc.SnapshotInterval = 16, 8, 50e6
	}))
	n1 := c.WaitLeader(ctx)
	if err := n1.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n1.SeedFromSnapshot(ctx, 10, img, size); err != nil {
		t.Fatalf("seed: %v", err)
	}
	if m := fc.meta("n1"); m.timeline != lm.timeline || m.index() != 10 || m.mode != abi.IndexLegacy {
		t.Fatalf("seeded store: %+v", m)
	}
	apply := func(cmd []byte) (uint64, applyResult) {
		t.Helper()
		idx, resp, err := c.Apply(ctx, cmd)
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		return idx, resp.(applyResult)
	}
	mc, _ := encodeJSONCmd(cmdMigrate, migrateCmd{LastIndex: 10, Node: nodeInfo{ID: "n1"}})
	if _, res := apply(mc); res.err != nil {
		t.Fatalf("migrate: %v", res.err)
	}
	c.Join(ctx, "n2")
	c.Join(ctx, "n3")
	prev := uint64(10)
	var last uint64
	for i := range 60 {
		cmd, err := encodeChangeSetCmd([]model.Change{put("svc", fmt.Sprint(i%7), fmt.Sprint(i))})
		if err != nil {
			t.Fatal(err)
		}
		idx, res := apply(cmd)
		if res.err != nil || res.hdr.Index != idx || res.hdr.PrevIndex != prev || res.hdr.Type != abi.IndexHA || res.hdr.Term == 0 {
			t.Fatalf("change set %d: raft index %d, header %+v, err %v (prev %d)", i, idx, res.hdr, res.err, prev)
		}
		prev, last = idx, idx
		if i == 20 {
			c.Kill("n2")
		}
		if i == 40 {
			c.Restart("n2")
		}
	}
	// A refused command is refused alike everywhere and still advances
	// the applied index.
	bad := append([]byte{cmdChangeSet}, 0xff)
	badIdx, res := apply(bad)
	if !errors.Is(res.err, ErrInvalidRequest) {
		t.Fatalf("bad command: %v", res.err)
	}
	c.WaitApplied(ctx, badIdx)
	for _, id := range []string{"n1", "n2", "n3"} {
		m := fc.meta(id)
		if m.mode != abi.IndexHA || m.index() != last || m.changeSets != 10+60 || m.raftApplied != badIdx || m.timeline != lm.timeline {
			t.Fatalf("%s: mode %s index %d changeSets %d raftApplied %d (want ha, %d, 70, %d)", id, m.mode, m.index(), m.changeSets, m.raftApplied, last, badIdx)
		}
		if d := fc.digest(id); d != fc.digest("n1") {
			t.Fatalf("%s digest %s, n1 %s", id, d, fc.digest("n1"))
		}
	}
	// OpenZiti #4439: after a restart the controller's index is the last
	// applied change set, not raft's log tip (no-ops, barriers,
	// configuration entries sit above it), and the next change set
	// continues it.
	c.Kill("n1")
	c.Restart("n1")
	leader := c.WaitLeader(ctx)
	if tip := leader.LastIndex(); tip <= last {
		t.Fatalf("raft tip %d not above the last change set %d: the test proves nothing", tip, last)
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		if m := fc.meta(id); m.index() != last {
			t.Fatalf("%s index after restarts %d, want %d", id, m.index(), last)
		}
	}
	cmd, _ := encodeChangeSetCmd([]model.Change{put("svc", "x", "y")})
	idx, res := apply(cmd)
	if res.err != nil || res.hdr.PrevIndex != last || res.hdr.Index != idx {
		t.Fatalf("change set after restart: %+v %v, want prev %d", res.hdr, res.err, last)
	}
}

// TestChangeSetIndexZeroRefused: OpenZiti #2932, a change set with index 0
// is never stored, by either engine's path.
func TestChangeSetIndexZeroRefused(t *testing.T) {
	st := openTestStore(t, 100)
	err := st.update(context.Background(), func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		_, err = st.appendChangeSet(tx, &m, &wire.ChangeSet{
			Header:  abi.Header{Index: 0, Type: m.mode, Timeline: m.timeline},
			Changes: []model.Change{put("k", "i", "v")},
		})
		return err
	})
	if !errors.Is(err, abi.ErrMalformed) {
		t.Fatalf("index 0: %v", err)
	}
}

// TestRestoreAbandonsPinnedSnapshot: raft's takeSnapshot pins a snapshot
// (Snapshot, on the FSM goroutine) and then needs its main loop before it
// writes it; on a follower that loop may be installing the leader's
// snapshot, waiting for Restore. Restore must therefore not wait for the
// pinned snapshot's read transaction: it did, and under load a restarted
// follower deadlocked (the leader's InstallSnapshot and heartbeats to it
// timed out until the node was shut down).
func TestRestoreAbandonsPinnedSnapshot(t *testing.T) {
	fc := &fsmCluster{t: t, dir: t.TempDir(), boxes: map[string]fsmBox{}}
	f := fc.newSM("n1").(fsmBox).haFSM
	t.Cleanup(func() { _ = f.st.close() })
	appendSets(t, f.st, 1, 2, 3)
	img, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := img.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	img.Release()

	pinned, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Restore(bytes.NewReader(buf.Bytes())) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("restore: %v", err)
		}
	case <-time.After(guard):
		pinned.Release() // unblocks Restore so the test can end
		t.Fatal("Restore waited for a pinned snapshot")
	}
	if err := pinned.WriteSnapshot(io.Discard); err == nil {
		t.Fatal("abandoned snapshot written")
	}
	pinned.Release()
	if m := fc.meta("n1"); m.index() != 3 {
		t.Fatalf("restored index %d, want 3", m.index())
	}
	// Snapshots after the restore work.
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if err := s.WriteSnapshot(io.Discard); err != nil {
		t.Fatal(err)
	}
}
