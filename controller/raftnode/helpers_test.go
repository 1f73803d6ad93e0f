package raftnode_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/indexgate/indexgate/controller/raftnode"
	"github.com/indexgate/indexgate/controller/raftnode/rafttest"
)

// testTimeout bounds every wait of a test. It only guards against a hang;
// nothing asserts on how long anything takes.
const testTimeout = 2 * time.Minute

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// withLogs sends the nodes' logs to the test log when RAFTNODE_TEST_LOG is
// set, which is what one wants when a test fails.
func withLogs(t testing.TB) rafttest.Option {
	return rafttest.WithConfig(func(c *raftnode.Config) {
		if os.Getenv("RAFTNODE_TEST_LOG") != "" {
			c.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	})
}

func recorder(t testing.TB, c *rafttest.Cluster, id string) *rafttest.Recorder {
	t.Helper()
	r, ok := c.StateMachine(id).(*rafttest.Recorder)
	if !ok {
		t.Fatalf("%s has no Recorder", id)
	}
	return r
}

func cmd(i int) []byte { return fmt.Appendf(nil, "cmd-%04d", i) }

// applyN applies cmd(from)..cmd(from+n-1) in order and returns the last
// index.
func applyN(t testing.TB, ctx context.Context, c *rafttest.Cluster, from, n int) uint64 {
	t.Helper()
	var last uint64
	for i := from; i < from+n; i++ {
		idx, resp, err := c.Apply(ctx, cmd(i))
		if err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
		if idx <= last {
			t.Fatalf("apply %d: index %d not above previous %d", i, idx, last)
		}
		if resp != idx {
			t.Fatalf("apply %d: response %v, want the index %d", i, resp, idx)
		}
		last = idx
	}
	return last
}

// boltSM is a durable StateMachine, like the controller's: it keeps its
// applied index and the number of commands it applied in bbolt, in the same
// transaction, and skips replayed indexes.
type boltSM struct {
	db *bbolt.DB

	mu      sync.Mutex
	replays int // Apply calls for already applied indexes, since open
}

var smBucket = []byte("sm")

func openBoltSM(path string) (*boltSM, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(smBucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &boltSM{db: db}, nil
}

// newBoltSMs returns a NewCluster factory whose state machines keep their
// files in one directory per node, so that a restarted node reopens its
// state.
func newBoltSMs(t testing.TB) func(id string) raftnode.StateMachine {
	root := t.TempDir()
	return func(id string) raftnode.StateMachine {
		dir := filepath.Join(root, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		sm, err := openBoltSM(filepath.Join(dir, "sm.db"))
		if err != nil {
			t.Fatal(err)
		}
		return sm
	}
}

func getU64(b *bbolt.Bucket, k string) uint64 {
	if v := b.Get([]byte(k)); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func putU64(b *bbolt.Bucket, k string, v uint64) error {
	return b.Put([]byte(k), binary.BigEndian.AppendUint64(nil, v))
}

func (s *boltSM) Apply(index, term uint64, cmd []byte) any {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(smBucket)
		if index <= getU64(b, "applied") {
			s.mu.Lock()
			s.replays++
			s.mu.Unlock()
			return nil
		}
		if err := putU64(b, "applied", index); err != nil {
			return err
		}
		return putU64(b, "count", getU64(b, "count")+1)
	})
	if err != nil {
		// A real state machine cannot go on after a failed commit.
		panic(err)
	}
	return index
}

// state returns the persisted applied index and command count.
func (s *boltSM) state() (applied, count uint64) {
	_ = s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(smBucket)
		applied, count = getU64(b, "applied"), getU64(b, "count")
		return nil
	})
	return applied, count
}

func (s *boltSM) Replays() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replays
}

func (s *boltSM) Snapshot() (raftnode.SnapshotWriter, error) {
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, err
	}
	return &boltSnapshot{tx: tx}, nil
}

// boltSnapshot streams from a read transaction pinned by Snapshot, the way
// the controller's store will.
type boltSnapshot struct{ tx *bbolt.Tx }

func (s *boltSnapshot) WriteSnapshot(w io.Writer) error {
	b := s.tx.Bucket(smBucket)
	img := binary.BigEndian.AppendUint64(nil, getU64(b, "applied"))
	img = binary.BigEndian.AppendUint64(img, getU64(b, "count"))
	_, err := w.Write(img)
	return err
}

func (s *boltSnapshot) Release() { _ = s.tx.Rollback() }

func (s *boltSM) Restore(r io.Reader) error {
	var img [16]byte
	if _, err := io.ReadFull(r, img[:]); err != nil {
		return fmt.Errorf("boltSM image: %w", err)
	}
	return s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(smBucket)
		if err := putU64(b, "applied", binary.BigEndian.Uint64(img[:])); err != nil {
			return err
		}
		return putU64(b, "count", binary.BigEndian.Uint64(img[8:]))
	})
}

func (s *boltSM) Close() error { return s.db.Close() }

// failingSM refuses every image.
type failingSM struct{ rafttest.Recorder }

func (*failingSM) Restore(io.Reader) error { return errors.New("image refused") }

// waitABit pauses one poll interval (or until ctx ends).
func waitABit(ctx context.Context) {
	t := time.NewTimer(5 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// gaugeValue returns the value of the single series of a gauge or counter
// family.
func gaugeValue(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name || len(f.GetMetric()) != 1 {
			continue
		}
		m := f.GetMetric()[0]
		if m.GetGauge() != nil {
			return m.GetGauge().GetValue()
		}
		return m.GetCounter().GetValue()
	}
	t.Fatalf("no single-series metric %s", name)
	return 0
}

// histogramCount returns the sample count of a single-series histogram.
func histogramCount(t testing.TB, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no single-series histogram %s", name)
	return 0
}
