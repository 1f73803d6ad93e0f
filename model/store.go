package model

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DefaultOpenTimeout is how long Open waits for the file lock when
// Options.Timeout is zero. bbolt's own default is to wait forever, which
// turns "another process already uses this data directory" into a hang.
const DefaultOpenTimeout = 5 * time.Second

// schemaVersion is the layout of the buckets below. Open refuses a file
// written with another layout rather than misreading it.
const schemaVersion = 1

// Bucket names the store reserves; Tx.Bucket refuses any name that starts
// with reservedPrefix so callers cannot bypass validation and counting.
var (
	reservedPrefix = []byte("ig.model.")
	bucketState    = []byte("ig.model.state")
	bucketMeta     = []byte("ig.model.meta")
	bucketEntities = [2][]byte{[]byte("ig.model.entities.0"), []byte("ig.model.entities.1")}
)

// Keys of the state bucket.
var (
	keySchema     = []byte("schema")
	keyCount      = []byte("count")       // live entity count
	keyGen        = []byte("gen")         // bumped by every commit that changed entities
	keyLive       = []byte("live")        // 0 or 1: which entities bucket is live
	keyStageCount = []byte("stage.count") // entities in the staging bucket
)

// Sentinel errors callers act on.
var (
	// ErrLocked reports that Open timed out waiting for the file lock:
	// another process has the store open.
	ErrLocked = errors.New("model: store is locked by another process")
	// ErrClosed reports use of a closed Store.
	ErrClosed = errors.New("model: store closed")
	// ErrCorrupt reports stored bytes the store did not write: a foreign or
	// damaged file.
	ErrCorrupt = errors.New("model: store corrupt")
	// ErrReservedBucket reports a bucket name in the store's own namespace
	// ("ig.model." prefix).
	ErrReservedBucket = errors.New("model: reserved bucket name")
	// ErrBucketNotFound reports a caller bucket that does not exist.
	ErrBucketNotFound = errors.New("model: bucket not found")
	// ErrNoStage reports StagePut or StageCommit without a StageReset first.
	ErrNoStage = errors.New("model: no staged full state")
	// ErrTxFailed reports an Update whose function returned nil although an
	// Apply or Stage call inside it had failed after writing: committing
	// would store half a change set, so the store rolls back instead.
	ErrTxFailed = errors.New("model: transaction had a failed write; rolled back")
)

// Options configure Open.
type Options struct {
	// Timeout bounds the wait for the file lock; zero means
	// DefaultOpenTimeout.
	Timeout time.Duration
	// NoSync skips fsync on commit. Only for tests and benchmarks: after a
	// power loss committed transactions may be lost or the file damaged.
	NoSync bool
	// InitialMmapSize pre-sizes the memory map (bytes) so that a growing
	// store does not remap, which blocks writers while readers are open.
	InitialMmapSize int
	// FileMode is the permission of a new file; zero means 0600.
	FileMode os.FileMode
}

// Store is the entity store. It is safe for concurrent use: any number of
// View calls run in parallel with at most one Update.
type Store struct {
	db *bbolt.DB
	// writer serialises Update before bbolt does, so that a caller waiting
	// for the write lock can give up when its context ends; bbolt's own lock
	// cannot be abandoned.
	writer chan struct{}

	mu    sync.Mutex
	cache digestCache
}

// digestCache is the digest of the live entities at generation gen.
type digestCache struct {
	ok     bool
	gen    uint64
	digest string
}

// Open opens or creates the store at path.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultOpenTimeout
	}
	mode := opts.FileMode
	if mode == 0 {
		mode = 0o600
	}
	db, err := bbolt.Open(path, mode, &bbolt.Options{
		Timeout:         timeout,
		NoSync:          opts.NoSync,
		InitialMmapSize: opts.InitialMmapSize,
		FreelistType:    bbolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %v): %w", ErrLocked, path, timeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("model: open %s: %w", path, err)
	}
	if err := db.Update(initLayout); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("model: open %s: %w", path, err)
	}
	return &Store{db: db, writer: make(chan struct{}, 1)}, nil
}

// initLayout creates the store's buckets in a new file and checks the
// layout version of an existing one.
func initLayout(tx *bbolt.Tx) error {
	st, err := tx.CreateBucketIfNotExists(bucketState)
	if err != nil {
		return err
	}
	if v := st.Get(keySchema); v != nil {
		if got, err := decodeUint64(v); err != nil || got != schemaVersion {
			return fmt.Errorf("%w: schema version %x, want %d", ErrCorrupt, v, schemaVersion)
		}
	} else if err := PutUint64(st, keySchema, schemaVersion); err != nil {
		return err
	}
	live := st.Get(keyLive)
	if live == nil {
		if err := st.Put(keyLive, []byte{0}); err != nil {
			return err
		}
		live = []byte{0}
	}
	if len(live) != 1 || live[0] > 1 {
		return fmt.Errorf("%w: live bucket selector %x", ErrCorrupt, live)
	}
	if _, err := tx.CreateBucketIfNotExists(bucketEntities[live[0]]); err != nil {
		return err
	}
	_, err = tx.CreateBucketIfNotExists(bucketMeta)
	return err
}

// Close closes the store. It waits for running transactions.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("model: close: %w", err)
	}
	return nil
}

// Path is the file the store lives in.
func (s *Store) Path() string { return s.db.Path() }

// Update runs fn in a read-write transaction and commits it if fn returns
// nil. An error from fn is returned unchanged after rollback. ctx bounds the
// wait for the write lock and is checked by long loops inside the Tx.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	select {
	case s.writer <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("model: update: waiting for the write lock: %w", ctx.Err())
	}
	defer func() { <-s.writer }()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("model: update: %w", err)
	}
	var fnErr error
	err := s.db.Update(func(btx *bbolt.Tx) error {
		tx, err := newTx(ctx, s, btx)
		if err != nil {
			return err
		}
		if fnErr = fn(tx); fnErr != nil {
			return fnErr
		}
		if tx.failed {
			return ErrTxFailed
		}
		if tx.dirty {
			return PutUint64(tx.state, keyGen, tx.gen()+1)
		}
		return nil
	})
	switch {
	case err == nil:
		return nil
	case fnErr != nil:
		// The caller's own error, untouched so it can match its sentinels.
		return fnErr
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return fmt.Errorf("model: update: %w", err)
}

// View runs fn in a read-only transaction on a consistent snapshot.
func (s *Store) View(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("model: view: %w", err)
	}
	var fnErr error
	err := s.db.View(func(btx *bbolt.Tx) error {
		tx, err := newTx(ctx, s, btx)
		if err != nil {
			return err
		}
		fnErr = fn(tx)
		return fnErr
	})
	switch {
	case err == nil:
		return nil
	case fnErr != nil:
		// The caller's own error, untouched so it can match its sentinels.
		return fnErr
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return fmt.Errorf("model: view: %w", err)
}

// cachedDigest returns the cached digest if it was computed at gen.
func (s *Store) cachedDigest(gen uint64) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cache.ok && s.cache.gen == gen {
		return s.cache.digest, true
	}
	return "", false
}

// storeDigest caches digest for gen. The generation is read from the same
// snapshot the digest was computed on, so a reader on an older snapshot can
// never overwrite a newer entry with a stale digest that matches the
// current generation.
func (s *Store) storeDigest(gen uint64, digest string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cache.ok || gen >= s.cache.gen {
		s.cache = digestCache{ok: true, gen: gen, digest: digest}
	}
}

// Uint64 reads a big-endian uint64 stored by PutUint64; a missing key reads
// as 0.
func Uint64(b *bbolt.Bucket, key []byte) (uint64, error) {
	v := b.Get(key)
	if v == nil {
		return 0, nil
	}
	n, err := decodeUint64(v)
	if err != nil {
		return 0, fmt.Errorf("%w: key %q: %w", ErrCorrupt, key, err)
	}
	return n, nil
}

// PutUint64 stores v under key as 8 big-endian bytes.
func PutUint64(b *bbolt.Bucket, key []byte, v uint64) error {
	if err := b.Put(key, binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)); err != nil {
		return fmt.Errorf("model: put %q: %w", key, err)
	}
	return nil
}

func decodeUint64(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("uint64 of %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
