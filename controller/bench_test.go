package controller

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/indexgate/indexgate/model"
)

// BenchmarkCommit measures the write path (Controller.Commit: validation,
// group commit, fsync, publish) with 1 and 64 concurrent writers. With one
// writer every change set pays its own fsync; with 64 the writer goroutine
// commits whatever is waiting in one transaction. It reports change sets
// per second and the mean number of change sets per transaction.
func BenchmarkCommit(b *testing.B) {
	for _, sync := range []bool{true, false} {
		for _, writers := range []int{1, 64} {
			name := fmt.Sprintf("writers=%d/fsync=%v", writers, sync)
			b.Run(name, func(b *testing.B) { benchCommit(b, writers, sync) })
		}
	}
}

func benchCommit(b *testing.B, writers int, fsync bool) {
	cfg := testConfig(b)
	cfg.NoSync = !fsync
	ctl, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var txns atomic.Int64
	ctl.gate.engine().(*legacyEngine).beforeCommit = func(int) { txns.Add(1) }
	c := runController(b, ctl)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				_, err := c.Commit(context.Background(), []model.Change{
					{Op: model.OpPut, Kind: "service", ID: fmt.Sprintf("w%d-%d", w, i), Value: `{"name":"svc","port":443}`},
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changesets/s")
	if n := txns.Load(); n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "sets/txn")
	}
}
