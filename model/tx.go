package model

import (
	"bytes"
	"context"
	"fmt"

	"go.etcd.io/bbolt"
)

// Tx is one store transaction. It is only valid inside the function given
// to Store.Update or Store.View and must not be used from other goroutines.
type Tx struct {
	ctx   context.Context
	s     *Store
	tx    *bbolt.Tx
	state *bbolt.Bucket
	live  *bbolt.Bucket
	// liveIdx selects bucketEntities; the other one is the staging bucket.
	liveIdx byte
	// dirty: entities changed, so the commit bumps the generation and the
	// digest cache must not be used or filled by this transaction.
	dirty bool
	// failed: a write failed after validation; committing is refused.
	failed bool
	key    []byte
}

func newTx(ctx context.Context, s *Store, btx *bbolt.Tx) (*Tx, error) {
	st := btx.Bucket(bucketState)
	if st == nil {
		return nil, fmt.Errorf("%w: state bucket missing", ErrCorrupt)
	}
	v := st.Get(keyLive)
	if len(v) != 1 || v[0] > 1 {
		return nil, fmt.Errorf("%w: live bucket selector %x", ErrCorrupt, v)
	}
	live := btx.Bucket(bucketEntities[v[0]])
	if live == nil {
		return nil, fmt.Errorf("%w: live entities bucket missing", ErrCorrupt)
	}
	return &Tx{ctx: ctx, s: s, tx: btx, state: st, live: live, liveIdx: v[0]}, nil
}

// Writable reports whether this is an Update transaction.
func (t *Tx) Writable() bool { return t.tx.Writable() }

func (t *Tx) checkWritable(op string) error {
	if !t.tx.Writable() {
		return fmt.Errorf("model: %s: read-only transaction", op)
	}
	return nil
}

// gen is the entity generation of this snapshot.
func (t *Tx) gen() uint64 {
	// A damaged counter only costs a cache miss, never a wrong digest: the
	// digest is recomputed from the entities.
	n, _ := Uint64(t.state, keyGen)
	return n
}

// Apply validates changes and applies them in order. Nothing is written if
// any change is invalid. If Apply fails after validation (an I/O error) the
// transaction can no longer commit: return the error from the Update
// function.
func (t *Tx) Apply(changes []Change) error {
	if err := t.checkWritable("apply"); err != nil {
		return err
	}
	if err := t.ctx.Err(); err != nil {
		return fmt.Errorf("model: apply: %w", err)
	}
	if err := ValidateChanges(changes); err != nil {
		return err
	}
	count0 := t.Count()
	count := count0
	c := t.live.Cursor()
	for i := range changes {
		ch := &changes[i]
		t.key = appendKey(t.key[:0], ch.Kind, ch.ID)
		// Seek rather than Get: bbolt may return nil for an empty value,
		// which would miscount an entity stored with "".
		k, _ := c.Seek(t.key)
		exists := k != nil && bytes.Equal(k, t.key)
		switch ch.Op {
		case OpPut:
			// bbolt keeps the value slice until commit; []byte(string)
			// makes a copy the caller cannot change.
			if err := t.live.Put(t.key, []byte(ch.Value)); err != nil {
				t.failed = true
				return fmt.Errorf("model: change %d: put: %w", i, err)
			}
			if !exists {
				count++
			}
			t.dirty = true
		case OpDelete:
			if !exists {
				continue
			}
			if err := t.live.Delete(t.key); err != nil {
				t.failed = true
				return fmt.Errorf("model: change %d: delete: %w", i, err)
			}
			count--
			t.dirty = true
		}
	}
	if count == count0 {
		return nil
	}
	if err := PutUint64(t.state, keyCount, count); err != nil {
		t.failed = true
		return err
	}
	return nil
}

// Get returns the value of (kind, id) and whether the entity exists.
func (t *Tx) Get(kind, id string) (string, bool) {
	t.key = appendKey(t.key[:0], kind, id)
	k, v := t.live.Cursor().Seek(t.key)
	if k == nil || !bytes.Equal(k, t.key) {
		return "", false
	}
	return string(v), true
}

// Count is the number of live entities, read from a counter in O(1).
func (t *Tx) Count() uint64 {
	n, _ := Uint64(t.state, keyCount)
	return n
}

// ForEach calls fn for every live entity in digest order (kind, then id)
// and stops at the first error, which it returns. fn must not write
// entities.
func (t *Tx) ForEach(fn func(Entity) error) error {
	return forEach(t.ctx, t.live, fn)
}

func forEach(ctx context.Context, b *bbolt.Bucket, fn func(Entity) error) error {
	c := b.Cursor()
	n := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if n++; n%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("model: for each: %w", err)
			}
		}
		kind, id, err := splitKey(k)
		if err != nil {
			return err
		}
		if err := fn(Entity{Kind: string(kind), ID: string(id), Value: string(v)}); err != nil {
			return err
		}
	}
	return nil
}

// Digest is the model digest of the live entities (definition:
// docs/protocol.md, "Digest"). Unchanged snapshots are served from a
// cache.
func (t *Tx) Digest() (string, error) {
	// A transaction that changed entities sees a state that may still be
	// rolled back, so it neither reads nor fills the cache.
	cacheable := !t.dirty
	var gen uint64
	if cacheable {
		gen = t.gen()
		if d, ok := t.s.cachedDigest(gen); ok {
			return d, nil
		}
	}
	d, err := digestBucket(t.ctx, t.live)
	if err != nil {
		return "", err
	}
	if cacheable {
		t.s.storeDigest(gen, d)
	}
	return d, nil
}

func checkBucketName(name []byte) error {
	if len(name) == 0 {
		return fmt.Errorf("model: bucket name is empty")
	}
	if bytes.HasPrefix(name, reservedPrefix) {
		return fmt.Errorf("%w: %q", ErrReservedBucket, name)
	}
	return nil
}

// Bucket returns the caller's top-level bucket name, so that caller data
// commits together with entity changes.
func (t *Tx) Bucket(name []byte) (*bbolt.Bucket, error) {
	if err := checkBucketName(name); err != nil {
		return nil, err
	}
	b := t.tx.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("%w: %q", ErrBucketNotFound, name)
	}
	return b, nil
}

// CreateBucketIfNotExists returns the caller's top-level bucket name,
// creating it if needed (Update only).
func (t *Tx) CreateBucketIfNotExists(name []byte) (*bbolt.Bucket, error) {
	if err := checkBucketName(name); err != nil {
		return nil, err
	}
	if err := t.checkWritable("create bucket"); err != nil {
		return nil, err
	}
	b, err := t.tx.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, fmt.Errorf("model: create bucket %q: %w", name, err)
	}
	return b, nil
}

// Meta returns a copy of the value stored under key in the store's meta
// bucket; nil means missing or empty.
func (t *Tx) Meta(key []byte) []byte {
	v := t.tx.Bucket(bucketMeta).Get(key)
	if v == nil {
		return nil
	}
	return bytes.Clone(v)
}

// PutMeta stores value under key in the meta bucket (Update only).
func (t *Tx) PutMeta(key, value []byte) error {
	if err := t.checkWritable("put meta"); err != nil {
		return err
	}
	// Copied because bbolt keeps the slice until commit and the caller may
	// reuse it.
	if err := t.tx.Bucket(bucketMeta).Put(key, bytes.Clone(value)); err != nil {
		return fmt.Errorf("model: put meta %q: %w", key, err)
	}
	return nil
}

// MetaUint64 reads a counter stored with PutMetaUint64; missing reads as 0.
func (t *Tx) MetaUint64(key []byte) (uint64, error) {
	return Uint64(t.tx.Bucket(bucketMeta), key)
}

// PutMetaUint64 stores a counter in the meta bucket (Update only).
func (t *Tx) PutMetaUint64(key []byte, v uint64) error {
	if err := t.checkWritable("put meta"); err != nil {
		return err
	}
	return PutUint64(t.tx.Bucket(bucketMeta), key, v)
}
