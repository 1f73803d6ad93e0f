package model

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkApply commits one change set of 16 puts per iteration (NoSync:
// this measures the store, not the disk's fsync).
func BenchmarkApply(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	set := make([]Change, 16)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for j := range set {
			n++
			set[j] = Change{Op: OpPut, Kind: "service", ID: fmt.Sprintf("svc-%08d", n%50000), Value: `{"name":"svc","port":443,"tls":true}`}
		}
		if err := s.Update(ctx, func(tx *Tx) error { return tx.Apply(set) }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDigest hashes 100k entities per iteration, bypassing the cache;
// the cached variant is what a status endpoint pays on an unchanged store.
func BenchmarkDigest(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	const n = 100_000
	err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.StageReset(); err != nil {
			return err
		}
		chunk := make([]Entity, 0, 1000)
		for i := range n {
			chunk = append(chunk, Entity{Kind: fmt.Sprintf("kind%d", i%8), ID: fmt.Sprintf("id-%08d", i), Value: `{"name":"svc","port":443,"tls":true}`})
			if len(chunk) == cap(chunk) {
				if err := tx.StagePut(chunk); err != nil {
					return err
				}
				chunk = chunk[:0]
			}
		}
		return tx.StageCommit()
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			err := s.View(ctx, func(tx *Tx) error {
				if tx.Count() != n {
					return fmt.Errorf("count %d", tx.Count())
				}
				_, err := digestBucket(ctx, tx.live)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			err := s.View(ctx, func(tx *Tx) error { _, err := tx.Digest(); return err })
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
