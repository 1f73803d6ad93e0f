package model_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/indexgate/indexgate/model"
)

func stageUpdate(t testing.TB, s *model.Store, fn func(tx *model.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

func entitiesN(prefix string, n int) []model.Entity {
	es := make([]model.Entity, n)
	for i := range es {
		es[i] = model.Entity{Kind: "k", ID: fmt.Sprintf("%s%03d", prefix, i), Value: prefix}
	}
	return es
}

func TestStage(t *testing.T) {
	old := []model.Change{put("k", "old1", "a"), put("k", "old2", "b"), put("j", "x", "c")}
	incoming := entitiesN("new", 10)
	tests := []struct {
		name string
		// chunks are staged in separate transactions after StageReset.
		chunks [][]model.Entity
		finish func(tx *model.Tx) error
		// want is the live entity set afterwards; nil means the old one.
		want []model.Entity
		// restages: finish stages again, so the pre-finish stage digest is
		// not the final one.
		restages bool
	}{
		{"commit", [][]model.Entity{incoming[:4], incoming[4:]}, (*model.Tx).StageCommit, incoming, false},
		{"commit with duplicates", [][]model.Entity{incoming[:6], incoming[3:]}, (*model.Tx).StageCommit, incoming, false},
		{"commit empty", nil, (*model.Tx).StageCommit, []model.Entity{}, false},
		{"discard", [][]model.Entity{incoming}, (*model.Tx).StageDiscard, nil, false},
		{"reset drops earlier chunks", [][]model.Entity{incoming}, func(tx *model.Tx) error {
			if err := tx.StageReset(); err != nil {
				return err
			}
			if err := tx.StagePut(incoming[:2]); err != nil {
				return err
			}
			return tx.StageCommit()
		}, incoming[:2], true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTemp(t)
			apply(t, s, old...)
			oldCount, oldDigest, oldEntities := state(t, s)
			stageUpdate(t, s, (*model.Tx).StageReset)
			for _, chunk := range tt.chunks {
				stageUpdate(t, s, func(tx *model.Tx) error { return tx.StagePut(chunk) })
				// Staging never shows in the live model.
				if c, d, _ := state(t, s); c != oldCount || d != oldDigest {
					t.Fatalf("live model changed while staging")
				}
			}
			var stagedDigest string
			var stagedCount uint64
			stageUpdate(t, s, func(tx *model.Tx) error {
				var err error
				stagedCount = tx.StageCount()
				if stagedDigest, err = tx.StageDigest(); err != nil {
					return err
				}
				return tt.finish(tx)
			})
			want := tt.want
			if want == nil {
				want = oldEntities
			}
			count, digest, got := state(t, s)
			if count != uint64(len(want)) || len(got) != len(want) {
				t.Fatalf("count %d, ForEach %d, want %d", count, len(got), len(want))
			}
			if ref := referenceDigest(t, want); digest != ref {
				t.Fatalf("digest %s, want %s", digest, ref)
			}
			if tt.want != nil && !tt.restages && (stagedDigest != digest || stagedCount != count) {
				t.Fatalf("StageDigest/StageCount %s/%d before commit, live %s/%d after", stagedDigest, stagedCount, digest, count)
			}
			// The staging area is empty afterwards either way.
			err := s.Update(context.Background(), func(tx *model.Tx) error {
				if n := tx.StageCount(); n != 0 {
					t.Errorf("StageCount after finish = %d", n)
				}
				if err := tx.StagePut(incoming[:1]); !errors.Is(err, model.ErrNoStage) {
					t.Errorf("StagePut after finish = %v, want ErrNoStage", err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// Ordinary changes keep working on the new live set.
			apply(t, s, put("after", "1", "z"))
			if c, _, _ := state(t, s); c != count+1 {
				t.Fatalf("count after a later put = %d, want %d", c, count+1)
			}
		})
	}
}

func TestStageErrors(t *testing.T) {
	s, _ := openTemp(t)
	tests := []struct {
		name    string
		fn      func(tx *model.Tx) error
		wantErr error
	}{
		{"put without reset", func(tx *model.Tx) error { return tx.StagePut(entitiesN("a", 1)) }, model.ErrNoStage},
		{"commit without reset", (*model.Tx).StageCommit, model.ErrNoStage},
		{"digest without reset", func(tx *model.Tx) error { _, err := tx.StageDigest(); return err }, model.ErrNoStage},
		{"invalid entity", func(tx *model.Tx) error {
			if err := tx.StageReset(); err != nil {
				return err
			}
			return tx.StagePut([]model.Entity{{Kind: "k", ID: "1"}, {Kind: "k", ID: "a\x00b"}})
		}, model.ErrInvalidChange},
		{"discard without stage is fine", (*model.Tx).StageDiscard, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Update(context.Background(), tt.fn)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestStageInterruptedTransfer: a process that stops mid-transfer leaves
// the live model intact, and the next transfer starts clean.
func TestStageInterruptedTransfer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.db")
	s, err := model.Open(path, model.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, put("k", "live", "v"))
	_, liveDigest, _ := state(t, s)
	stageUpdate(t, s, (*model.Tx).StageReset)
	stageUpdate(t, s, func(tx *model.Tx) error { return tx.StagePut(entitiesN("half", 50)) })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = model.Open(path, model.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if c, d, _ := state(t, s); c != 1 || d != liveDigest {
		t.Fatalf("after restart mid-transfer: count %d digest %s, want the old live model", c, d)
	}
	stageUpdate(t, s, func(tx *model.Tx) error {
		if err := tx.StageReset(); err != nil {
			return err
		}
		if err := tx.StagePut(entitiesN("full", 3)); err != nil {
			return err
		}
		return tx.StageCommit()
	})
	count, digest, _ := state(t, s)
	if want := referenceDigest(t, entitiesN("full", 3)); count != 3 || digest != want {
		t.Fatalf("after a clean transfer: count %d digest %s, want 3 %s (leftovers of the interrupted one?)", count, digest, want)
	}
}

// TestStageCommitWithCallerData: the swap and the caller's own bucket
// writes commit or roll back together.
func TestStageCommitWithCallerData(t *testing.T) {
	s, _ := openTemp(t)
	apply(t, s, put("k", "old", "v"))
	_, oldDigest, _ := state(t, s)
	stageUpdate(t, s, func(tx *model.Tx) error {
		if err := tx.StageReset(); err != nil {
			return err
		}
		return tx.StagePut(entitiesN("n", 2))
	})
	errAbort := errors.New("abort")
	err := s.Update(context.Background(), func(tx *model.Tx) error {
		if err := tx.StageCommit(); err != nil {
			return err
		}
		if err := tx.PutMetaUint64([]byte("position"), 99); err != nil {
			return err
		}
		return errAbort
	})
	if !errors.Is(err, errAbort) {
		t.Fatalf("Update = %v", err)
	}
	if c, d, _ := state(t, s); c != 1 || d != oldDigest {
		t.Fatalf("rolled-back swap is visible: count %d", c)
	}
	err = s.View(context.Background(), func(tx *model.Tx) error {
		if n, _ := tx.MetaUint64([]byte("position")); n != 0 {
			t.Errorf("rolled-back position = %d", n)
		}
		if n := tx.StageCount(); n != 2 {
			t.Errorf("staged count after rollback = %d, want 2 (stage kept)", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
