package raftnode_test

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/indexgate/indexgate/controller/raftnode"
	"github.com/indexgate/indexgate/controller/raftnode/rafttest"
)

// countSM counts commands and keeps nothing else, so that the benchmark
// measures raft and raft-boltdb, not the state machine.
type countSM struct{ n atomic.Uint64 }

func (s *countSM) Apply(uint64, uint64, []byte) any { s.n.Add(1); return nil }

func (s *countSM) Snapshot() (raftnode.SnapshotWriter, error) {
	n := s.n.Load()
	return raftnode.SnapshotFunc(func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%d", n)
		return err
	}), nil
}

func (s *countSM) Restore(r io.Reader) error {
	var n uint64
	if _, err := fmt.Fscan(r, &n); err != nil {
		return err
	}
	s.n.Store(n)
	return nil
}

// BenchmarkRawApply is the raw raft baseline: Apply of 256-byte entries on a
// three-node cluster (InmemTransport, raft-boltdb with fsync, default
// Config), by one writer and by 64 concurrent writers. entries/s is what the
// controller's batched HA path is compared against.
//
//	go test -run '^$' -bench RawApply -benchtime 3000x ./controller/raftnode/
func BenchmarkRawApply(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := rafttest.NewCluster(b, 3, func(string) raftnode.StateMachine { return &countSM{} })
	payload := make([]byte, 256)
	for i := range payload {
		payload[i] = byte(i)
	}
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			leader := c.WaitLeader(ctx)
			var (
				next     atomic.Int64
				firstErr atomic.Pointer[error]
				wg       sync.WaitGroup
			)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			start := time.Now()
			for range writers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if _, _, err := leader.Apply(ctx, payload); err != nil {
							firstErr.CompareAndSwap(nil, &err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if err := firstErr.Load(); err != nil {
				b.Fatalf("apply: %v", *err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "entries/s")
		})
	}
}
