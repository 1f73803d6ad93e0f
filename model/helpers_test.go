package model_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/indexgate/indexgate/model"
)

func openTemp(t testing.TB) (*model.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.db")
	s, err := model.Open(path, model.Options{NoSync: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func apply(t testing.TB, s *model.Store, changes ...model.Change) {
	t.Helper()
	if err := s.Update(context.Background(), func(tx *model.Tx) error { return tx.Apply(changes) }); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func put(kind, id, value string) model.Change {
	return model.Change{Op: model.OpPut, Kind: kind, ID: id, Value: value}
}

func del(kind, id string) model.Change {
	return model.Change{Op: model.OpDelete, Kind: kind, ID: id}
}

// state reads count, digest and all entities in one snapshot.
func state(t testing.TB, s *model.Store) (uint64, string, []model.Entity) {
	t.Helper()
	var (
		count    uint64
		digest   string
		entities []model.Entity
	)
	err := s.View(context.Background(), func(tx *model.Tx) error {
		count = tx.Count()
		var err error
		if digest, err = tx.Digest(); err != nil {
			return err
		}
		return tx.ForEach(func(e model.Entity) error {
			entities = append(entities, e)
			return nil
		})
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	return count, digest, entities
}

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }
