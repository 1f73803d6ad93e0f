package model

import (
	"bytes"
	"fmt"
)

// A full state arrives in chunks over several transactions. It is written to
// the staging bucket (the entities bucket that is not live) and becomes live
// in StageCommit by flipping the live selector, so the swap is O(1) in the
// number of entities and a crash at any point leaves either the old or the
// new entity set, never a mix.

func (t *Tx) stageBucketName() []byte { return bucketEntities[1-t.liveIdx] }

// StageReset empties the staging area and starts a new staged full state.
// Call it before the first StagePut of a transfer; it also discards what an
// interrupted transfer left behind.
func (t *Tx) StageReset() error {
	if err := t.checkWritable("stage reset"); err != nil {
		return err
	}
	if err := t.StageDiscard(); err != nil {
		return err
	}
	if _, err := t.tx.CreateBucket(t.stageBucketName()); err != nil {
		t.failed = true
		return fmt.Errorf("model: stage reset: %w", err)
	}
	if err := PutUint64(t.state, keyStageCount, 0); err != nil {
		t.failed = true
		return err
	}
	return nil
}

// StagePut adds entities to the staged full state; an entity given twice
// keeps the last value. Invalid entities are refused (ErrInvalidChange)
// before anything is written.
func (t *Tx) StagePut(entities []Entity) error {
	if err := t.checkWritable("stage put"); err != nil {
		return err
	}
	b := t.tx.Bucket(t.stageBucketName())
	if b == nil {
		return fmt.Errorf("model: stage put: %w", ErrNoStage)
	}
	for i := range entities {
		if err := entities[i].Validate(); err != nil {
			return fmt.Errorf("entity %d: %w", i, err)
		}
	}
	n, err := Uint64(t.state, keyStageCount)
	if err != nil {
		return err
	}
	c := b.Cursor()
	for i := range entities {
		e := &entities[i]
		t.key = appendKey(t.key[:0], e.Kind, e.ID)
		if k, _ := c.Seek(t.key); k == nil || !bytes.Equal(k, t.key) {
			n++
		}
		if err := b.Put(t.key, []byte(e.Value)); err != nil {
			t.failed = true
			return fmt.Errorf("model: stage put: entity %d: %w", i, err)
		}
	}
	if err := PutUint64(t.state, keyStageCount, n); err != nil {
		t.failed = true
		return err
	}
	return nil
}

// StageCount is the number of staged entities (0 without a stage).
func (t *Tx) StageCount() uint64 {
	n, _ := Uint64(t.state, keyStageCount)
	return n
}

// StageDigest is the digest the staged entities would have once live, so a
// router can check a transfer against the sender's digest before
// committing it.
func (t *Tx) StageDigest() (string, error) {
	b := t.tx.Bucket(t.stageBucketName())
	if b == nil {
		return "", fmt.Errorf("model: stage digest: %w", ErrNoStage)
	}
	return digestBucket(t.ctx, b)
}

// StageCommit makes the staged entities the live ones, replacing all live
// entities, and empties the staging area.
func (t *Tx) StageCommit() error {
	if err := t.checkWritable("stage commit"); err != nil {
		return err
	}
	if err := t.ctx.Err(); err != nil {
		return fmt.Errorf("model: stage commit: %w", err)
	}
	next := 1 - t.liveIdx
	staged := t.tx.Bucket(bucketEntities[next])
	if staged == nil {
		return fmt.Errorf("model: stage commit: %w", ErrNoStage)
	}
	n, err := Uint64(t.state, keyStageCount)
	if err != nil {
		return err
	}
	// From here on every failure leaves a half-done swap in this
	// transaction, so it must not commit.
	t.failed = true
	if err := t.state.Put(keyLive, []byte{next}); err != nil {
		return fmt.Errorf("model: stage commit: %w", err)
	}
	if err := t.tx.DeleteBucket(bucketEntities[t.liveIdx]); err != nil {
		return fmt.Errorf("model: stage commit: drop old entities: %w", err)
	}
	if err := PutUint64(t.state, keyCount, n); err != nil {
		return err
	}
	if err := t.state.Delete(keyStageCount); err != nil {
		return fmt.Errorf("model: stage commit: %w", err)
	}
	t.liveIdx, t.live = next, staged
	t.dirty = true
	t.failed = false
	return nil
}

// StageDiscard drops the staged full state, if any.
func (t *Tx) StageDiscard() error {
	if err := t.checkWritable("stage discard"); err != nil {
		return err
	}
	name := t.stageBucketName()
	if t.tx.Bucket(name) != nil {
		if err := t.tx.DeleteBucket(name); err != nil {
			t.failed = true
			return fmt.Errorf("model: stage discard: %w", err)
		}
	}
	if err := t.state.Delete(keyStageCount); err != nil {
		t.failed = true
		return fmt.Errorf("model: stage discard: %w", err)
	}
	return nil
}
