package model_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/indexgate/indexgate/model"
)

func TestCount(t *testing.T) {
	tests := []struct {
		name  string
		sets  [][]model.Change
		count uint64
		get   map[[2]string]string // expected values; "" with ok=false not listed
	}{
		{"empty set", [][]model.Change{{}}, 0, nil},
		{"puts", [][]model.Change{{put("k", "1", "a"), put("k", "2", "b")}}, 2, map[[2]string]string{{"k", "1"}: "a", {"k", "2"}: "b"}},
		{"overwrite", [][]model.Change{{put("k", "1", "a")}, {put("k", "1", "b")}, {put("k", "1", "c"), put("k", "1", "d")}}, 1, map[[2]string]string{{"k", "1"}: "d"}},
		{"delete", [][]model.Change{{put("k", "1", "a"), put("k", "2", "b")}, {del("k", "1")}}, 1, map[[2]string]string{{"k", "2"}: "b"}},
		{"delete missing", [][]model.Change{{put("k", "1", "a")}, {del("k", "2"), del("x", "1"), del("k", "2")}}, 1, nil},
		{"delete twice", [][]model.Change{{put("k", "1", "a")}, {del("k", "1"), del("k", "1")}, {del("k", "1")}}, 0, nil},
		{"put delete put in one set", [][]model.Change{{put("k", "1", "a"), del("k", "1"), put("k", "1", "b")}}, 1, map[[2]string]string{{"k", "1"}: "b"}},
		{"empty values count", [][]model.Change{{put("k", "1", ""), put("k", "2", "")}, {put("k", "1", "")}}, 2, map[[2]string]string{{"k", "1"}: "", {"k", "2"}: ""}},
		{"empty value deleted", [][]model.Change{{put("k", "1", "")}, {del("k", "1")}}, 0, nil},
		{"same id other kinds", [][]model.Change{{put("a", "1", "x"), put("ab", "1", "y"), put("b", "1", "z")}, {del("ab", "1")}}, 2, map[[2]string]string{{"a", "1"}: "x", {"b", "1"}: "z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTemp(t)
			for _, set := range tt.sets {
				apply(t, s, set...)
			}
			count, _, entities := state(t, s)
			if count != tt.count || uint64(len(entities)) != tt.count {
				t.Fatalf("Count() = %d, ForEach saw %d, want %d", count, len(entities), tt.count)
			}
			err := s.View(context.Background(), func(tx *model.Tx) error {
				for k, want := range tt.get {
					if got, ok := tx.Get(k[0], k[1]); !ok || got != want {
						t.Errorf("Get(%q, %q) = %q, %v; want %q, true", k[0], k[1], got, ok, want)
					}
				}
				if _, ok := tx.Get("k", "missing"); ok {
					t.Errorf("Get of a missing entity reported ok")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestApplyInvalidWritesNothing(t *testing.T) {
	s, _ := openTemp(t)
	apply(t, s, put("k", "1", "a"))
	_, before, _ := state(t, s)
	var applyErr error
	err := s.Update(context.Background(), func(tx *model.Tx) error {
		applyErr = tx.Apply([]model.Change{put("k", "2", "b"), {Op: model.OpDelete, Kind: "k", ID: "1", Value: "x"}})
		// Even if the caller ignores the error and commits, nothing of the
		// invalid set may be stored.
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if !errors.Is(applyErr, model.ErrInvalidChange) {
		t.Fatalf("Apply = %v, want ErrInvalidChange", applyErr)
	}
	if count, after, _ := state(t, s); count != 1 || after != before {
		t.Fatalf("invalid change set changed the store: count %d", count)
	}
}

// TestApplyMatchesReference applies random change sets and compares the
// store with a map after each one.
func TestApplyMatchesReference(t *testing.T) {
	s, _ := openTemp(t)
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		// Reset the store to the reference's starting point: empty.
		if err := s.Update(ctx, func(tx *model.Tx) error {
			if err := tx.StageReset(); err != nil {
				return err
			}
			return tx.StageCommit()
		}); err != nil {
			rt.Fatal(err)
		}
		ref := map[[2]string]string{}
		kind := rapid.SampledFrom([]string{"a", "ab", "b", "a\x01"})
		id := rapid.SampledFrom([]string{"1", "10", "2", "\x01"})
		value := rapid.SampledFrom([]string{"", "x", "yy"})
		for range rapid.IntRange(1, 20).Draw(rt, "sets") {
			var set []model.Change
			for range rapid.IntRange(0, 8).Draw(rt, "changes") {
				k, i := kind.Draw(rt, "kind"), id.Draw(rt, "id")
				if rapid.Bool().Draw(rt, "delete") {
					set = append(set, del(k, i))
					delete(ref, [2]string{k, i})
				} else {
					v := value.Draw(rt, "value")
					set = append(set, put(k, i, v))
					ref[[2]string{k, i}] = v
				}
			}
			apply(t, s, set...)
			var want []model.Entity
			for k, v := range ref {
				want = append(want, model.Entity{Kind: k[0], ID: k[1], Value: v})
			}
			count, digest, got := state(t, s)
			if count != uint64(len(ref)) || len(got) != len(ref) {
				rt.Fatalf("count %d, ForEach %d, reference %d", count, len(got), len(ref))
			}
			if wantDigest := referenceDigest(t, want); digest != wantDigest {
				rt.Fatalf("digest %s, reference %s", digest, wantDigest)
			}
		}
	})
}

func TestReopenPersists(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "model.db")
	s, err := model.Open(path, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, put("k", "1", "a"), put("k", "2", "b"), put("j", "1", "c"))
	apply(t, s, del("k", "2"))
	err = s.Update(ctx, func(tx *model.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("positions"))
		if err != nil {
			return err
		}
		if err := model.PutUint64(b, []byte("legacy"), 42); err != nil {
			return err
		}
		if err := tx.PutMeta([]byte("node"), []byte("r1")); err != nil {
			return err
		}
		return tx.PutMetaUint64([]byte("applied"), 7)
	})
	if err != nil {
		t.Fatal(err)
	}
	count, digest, entities := state(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = model.Open(path, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	count2, digest2, entities2 := state(t, s)
	if count2 != count || digest2 != digest || len(entities2) != len(entities) || count != 2 {
		t.Fatalf("after reopen count %d digest %s, before %d %s", count2, digest2, count, digest)
	}
	err = s.View(ctx, func(tx *model.Tx) error {
		b, err := tx.Bucket([]byte("positions"))
		if err != nil {
			return err
		}
		if n, err := model.Uint64(b, []byte("legacy")); err != nil || n != 42 {
			t.Errorf("position = %d, %v; want 42", n, err)
		}
		if v := tx.Meta([]byte("node")); string(v) != "r1" {
			t.Errorf("meta node = %q", v)
		}
		if n, err := tx.MetaUint64([]byte("applied")); err != nil || n != 7 {
			t.Errorf("meta applied = %d, %v", n, err)
		}
		if n, err := tx.MetaUint64([]byte("missing")); err != nil || n != 0 {
			t.Errorf("missing meta counter = %d, %v; want 0, nil", n, err)
		}
		if v := tx.Meta([]byte("missing")); v != nil {
			t.Errorf("missing meta = %q, want nil", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBuckets(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	tests := []struct {
		name    string
		bucket  string
		create  bool
		wantErr error
	}{
		{"reserved state", "ig.model.state", true, model.ErrReservedBucket},
		{"reserved entities", "ig.model.entities.0", false, model.ErrReservedBucket},
		{"reserved prefix", "ig.model.mine", true, model.ErrReservedBucket},
		{"missing", "positions", false, model.ErrBucketNotFound},
		{"create", "positions", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Update(ctx, func(tx *model.Tx) error {
				var err error
				if tt.create {
					_, err = tx.CreateBucketIfNotExists([]byte(tt.bucket))
				} else {
					_, err = tx.Bucket([]byte(tt.bucket))
				}
				return err
			})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestReadOnlyTxRefusesWrites(t *testing.T) {
	s, _ := openTemp(t)
	err := s.View(context.Background(), func(tx *model.Tx) error {
		if tx.Writable() {
			t.Errorf("View transaction reports writable")
		}
		for name, err := range map[string]error{
			"Apply":       tx.Apply([]model.Change{put("k", "1", "")}),
			"PutMeta":     tx.PutMeta([]byte("a"), nil),
			"StageReset":  tx.StageReset(),
			"StageCommit": tx.StageCommit(),
		} {
			if err == nil {
				t.Errorf("%s in a View succeeded", name)
			}
		}
		_, err := tx.CreateBucketIfNotExists([]byte("x"))
		if err == nil {
			t.Errorf("CreateBucketIfNotExists in a View succeeded")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestContext(t *testing.T) {
	s, _ := openTemp(t)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.View(canceled, func(*model.Tx) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("View with canceled ctx = %v", err)
	}
	if err := s.Update(canceled, func(*model.Tx) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Update with canceled ctx = %v", err)
	}

	// An Update waiting for the write lock gives up when its context ends.
	hold := make(chan struct{})
	held := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- s.Update(context.Background(), func(*model.Tx) error {
			close(held)
			<-hold
			return nil
		})
	}()
	<-held
	waitCtx, waitCancel := context.WithCancel(context.Background())
	waitErr := make(chan error)
	go func() {
		waitErr <- s.Update(waitCtx, func(*model.Tx) error { return nil })
	}()
	waitCancel()
	if err := <-waitErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting Update = %v, want context.Canceled", err)
	}
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestOpenLockedAndClosed(t *testing.T) {
	s, path := openTemp(t)
	// bbolt's flock is per open file, so a second Open in this process
	// contends like another process would.
	if _, err := model.Open(path, model.Options{Timeout: 10 * time.Millisecond}); !errors.Is(err, model.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.View(context.Background(), func(*model.Tx) error { return nil }); !errors.Is(err, model.ErrClosed) {
		t.Fatalf("View after Close = %v, want ErrClosed", err)
	}
	if err := s.Update(context.Background(), func(*model.Tx) error { return nil }); !errors.Is(err, model.ErrClosed) {
		t.Fatalf("Update after Close = %v, want ErrClosed", err)
	}
}

func TestOpenRejectsForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junk.db")
	if err := writeFile(path, []byte("not a bbolt file at all, just some text that is long enough")); err != nil {
		t.Fatal(err)
	}
	if s, err := model.Open(path, model.Options{}); err == nil {
		s.Close()
		t.Fatalf("Open of a non-bbolt file succeeded")
	}
}
