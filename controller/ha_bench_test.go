package controller

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/controller/raftnode"
	"github.com/indexgate/indexgate/controller/raftnode/rafttest"
	"github.com/indexgate/indexgate/model"
)

// countSM counts commands and keeps nothing else, so that the raw
// baseline measures raft and raft-boltdb only (raftnode's
// BenchmarkRawApply does the same).
type countSM struct{ n atomic.Uint64 }

func (s *countSM) Apply(uint64, uint64, []byte) any { s.n.Add(1); return nil }

func (s *countSM) Snapshot() (raftnode.SnapshotWriter, error) {
	n := s.n.Load()
	return raftnode.SnapshotFunc(func(w io.Writer) error { _, err := fmt.Fprint(w, n); return err }), nil
}

func (s *countSM) Restore(r io.Reader) error {
	var n uint64
	_, err := fmt.Fscan(r, &n)
	s.n.Store(n)
	return err
}

// benchValue is the value of every benchmark write: a small JSON
// document, about the size of a service definition.
const benchValue = `{"name":"svc","port":443,"tags":["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]}`

// BenchmarkHAEvents compares, in one run, the HA write path with raw
// raft. raw-raft is a plain Apply loop of 256-byte entries on a three-node
// rafttest cluster (InmemTransport, raft-boltdb with fsync) by one writer:
// entries/s. ha is Controller.Commit of one change each by 256 concurrent
// submitters on a three-node HA cluster (same transport and raft storage,
// the controller stores with fsync), the HA engine merging waiting
// requests into raft entries: events/s, requests per entry, and x-raw =
// events/s ÷ the raw entries/s.
//
//	go test -run '^$' -bench HAEvents -benchtime 20000x ./controller/
func BenchmarkHAEvents(b *testing.B) {
	var raw float64
	b.Run("raw-raft", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		c := rafttest.NewCluster(b, 3, func(string) raftnode.StateMachine { return &countSM{} })
		leader := c.WaitLeader(ctx)
		payload := []byte(strings.Repeat("p", 256))
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if _, _, err := leader.Apply(ctx, payload); err != nil {
				b.Fatal(err)
			}
		}
		raw = float64(b.N) / time.Since(start).Seconds()
		b.ReportMetric(raw, "entries/s")
	})
	b.Run("ha", func(b *testing.B) {
		events, perEntry := benchHA(b, 256)
		b.ReportMetric(events, "events/s")
		b.ReportMetric(perEntry, "reqs/entry")
		if raw > 0 {
			b.ReportMetric(events/raw, "x-raw")
		}
	})
}

// benchHA runs b.N commits by submitters goroutines on a three-node HA
// cluster with fsync and returns events/s and requests per raft entry.
func benchHA(b *testing.B, submitters int) (float64, float64) {
	net := newRaftNet()
	cfg := haTestConfig(b, net)
	cfg.NoSync = false
	cfg.RaftConfig = nil
	c1 := startController(b, cfg)
	if err := c1.Migrate(ctxT(b), MigrateRequest{To: abi.IndexHA, NodeID: "n1", RaftAddr: raftAddr("n1")}); err != nil {
		b.Fatal(err)
	}
	for _, id := range []string{"n2", "n3"} {
		cfg := haTestConfig(b, net)
		cfg.NoSync, cfg.RaftConfig = false, nil
		cfg.HA, cfg.NodeID, cfg.RaftAddr, cfg.Join = true, id, raftAddr(id), c1.AdminAddr().String()
		c := startController(b, cfg)
		waitFor(b, id+" to serve", func() bool { return c.serving() })
	}
	leaderOf(b, c1)
	before := status(b, c1).ChangeSets
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	b.ResetTimer()
	start := time.Now()
	for w := range submitters {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				_, err := c1.Commit(context.Background(), []model.Change{put("svc", fmt.Sprintf("w%d-%d", w, i), benchValue)})
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	entries := status(b, c1).ChangeSets - before
	return float64(b.N) / elapsed.Seconds(), float64(b.N) / float64(max(entries, 1))
}

// BenchmarkMigrationPause measures how long a live legacy → HA migration
// pauses writes for a store of 100 000 entities with 50 connected routers
// (lite wire routers: positions and acks, no entities), fsync on. The pause
// runs from stopping writes to resuming them on the HA engine: in-flight
// writes drain, every router acks the last legacy index, raft is seeded
// with the store image, the mode change commits. Raft starts and wins its
// single-node election before the pause.
//
//	go test -run '^$' -bench MigrationPause -benchtime 3x ./controller/
func BenchmarkMigrationPause(b *testing.B) {
	const entities, routers, perCommit = 100_000, 50, 1000
	var total float64
	for range b.N {
		b.StopTimer()
		net := newRaftNet()
		cfg := haTestConfig(b, net)
		cfg.NoSync = false
		cfg.RaftConfig = nil
		c := startController(b, cfg)
		for i := 0; i < entities; i += perCommit {
			chs := make([]model.Change, 0, perCommit)
			for j := range perCommit {
				chs = append(chs, put("svc", fmt.Sprintf("e%07d", i+j), benchValue))
			}
			commit(b, c, chs...)
		}
		var rs []*wireRouter
		for i := range routers {
			r := newWireRouter(fmt.Sprintf("r%02d", i), c.RouterAddr().String())
			r.lite = true
			rs = append(rs, runWireRouter(b, r))
		}
		st := status(b, c)
		for _, r := range rs {
			waitRouterAt(b, r, st)
		}
		b.StartTimer()
		if err := c.Migrate(ctxT(b), MigrateRequest{To: abi.IndexHA, NodeID: "n1", RaftAddr: raftAddr("n1")}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		m := status(b, c).Migration
		if m.RoutersAcked != routers {
			b.Fatalf("%d of %d routers acked", m.RoutersAcked, routers)
		}
		total += m.PauseMs
		for _, r := range rs {
			r.stop()
		}
		c.stop(b)
	}
	b.ReportMetric(total/float64(b.N), "pause-ms")
}
