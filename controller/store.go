package controller

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

// The controller's own buckets, next to the model's entity buckets in the
// same file so that a change set, its index and its log entry commit in
// one transaction.
var (
	bucketMeta = []byte("ig.controller.meta")
	bucketLog  = []byte("ig.controller.log")
	// bucketNodes is the HA node directory: node id → nodeInfo (JSON),
	// written through raft so every member knows every member's addresses.
	bucketNodes = []byte("ig.controller.nodes")
)

// Keys of bucketMeta. Counters are 8-byte big-endian (model.PutUint64).
var (
	keyLayout     = []byte("layout")     // layoutVersion
	keyMode       = []byte("mode")       // 1 byte: abi.IndexType
	keyTimeline   = []byte("timeline")   // 16 bytes
	keyClusterID  = []byte("clusterId")  // 32 hex digits
	keyChangeSets = []byte("changeSets") // change sets ever committed
	keyLogFloor   = []byte("logFloor")   // highest trimmed index
	keyLogCount   = []byte("logCount")   // change sets held in the log
	// keyRaftApplied is the raft index of the last command the HA state
	// machine applied, written in the transaction that applied it, so a
	// replay after a restart skips what the store already holds.
	keyRaftApplied = []byte("raftApplied")
	// keyMigration is the migration record (JSON migrationRecord).
	keyMigration = []byte("migration")
	keyIndex     = [...][]byte{abi.IndexLegacy: []byte("index.legacy"), abi.IndexHA: []byte("index.ha")}
)

// layoutVersion is the layout of the controller's buckets; openStore
// refuses another.
const layoutVersion = 1

// Sub-keys of a log entry: at one index a change set sorts before a mode
// change recorded at that index (docs/architecture.md).
const (
	subChangeSet  uint8 = 0
	subModeChange uint8 = 1
)

// errBelowFloor reports a log read that starts below logFloor: the entries
// the reader needs next have been trimmed.
var errBelowFloor = errors.New("controller: position below the log floor")

// logKey is a log entry's position: (index, sub), ordered by index, then
// sub.
type logKey struct {
	index uint64
	sub   uint8
}

// cmp orders keys like their bbolt encoding does.
func (k logKey) cmp(o logKey) int {
	switch {
	case k.index < o.index:
		return -1
	case k.index > o.index:
		return 1
	case k.sub < o.sub:
		return -1
	case k.sub > o.sub:
		return 1
	}
	return 0
}

func (k logKey) bytes() []byte {
	b := make([]byte, 9)
	binary.BigEndian.PutUint64(b, k.index)
	b[8] = k.sub
	return b
}

func parseLogKey(b []byte) (logKey, error) {
	if len(b) != 9 {
		return logKey{}, fmt.Errorf("%w: log key %x", model.ErrCorrupt, b)
	}
	return logKey{index: binary.BigEndian.Uint64(b), sub: b[8]}, nil
}

// logEntry is one log record, decoded. Published entries are shared by
// every session and never modified.
type logEntry struct {
	key logKey
	// set is the change set of a sub 0 entry.
	set *wire.ChangeSet
	// mode is the mode change of a sub 1 entry.
	mode *abi.ModeChange
	// size is the length of the stored frame: what the entry costs inside a
	// frame, give or take the few bytes of framing.
	size int
}

// meta is the controller's state in bucketMeta.
type meta struct {
	mode      abi.IndexType
	timeline  abi.Timeline
	clusterID string
	// last is the last committed index per index type on this timeline
	// (the base index for the new type right after a mode change).
	last       [3]uint64
	changeSets uint64
	logFloor   uint64
	logCount   uint64
	// raftApplied is the raft index of the last command the HA state
	// machine applied to this store (0: none).
	raftApplied uint64
	// migration is the persisted migration record, nil if none.
	migration *migrationRecord
}

// index is the last committed index of the current mode.
func (m *meta) index() uint64 { return m.last[m.mode] }

// positions are the controller's positions on this timeline, one per index
// type it has committed (the current mode always), sorted by type: what a
// router adopts with a full state.
func (m *meta) positions() []wire.Position {
	var ps []wire.Position
	for _, t := range abi.IndexTypes {
		if t == m.mode || m.last[t] != 0 {
			ps = append(ps, wire.Position{Type: t, Index: m.last[t], Timeline: m.timeline})
		}
	}
	return ps
}

// store is the controller's persistence on top of a model.Store: meta,
// entities and the change log. Every engine commits through it.
type store struct {
	// swap guards db against replace: every transaction holds it shared,
	// replace (the HA state machine's Restore) holds it exclusively while
	// it swaps the file, so sessions pause instead of reading a closed
	// store. Use view and update, not db directly.
	swap      sync.RWMutex
	db        *model.Store
	path      string
	opts      model.Options
	retention uint64
	// maxSetFrame is the largest stored change set frame: it must fit a
	// Batch of one within every router's frame limit.
	maxSetFrame int
}

// view runs fn in a read transaction of the current store file.
func (s *store) view(ctx context.Context, fn func(*model.Tx) error) error {
	s.swap.RLock()
	defer s.swap.RUnlock()
	return s.db.View(ctx, fn)
}

// update runs fn in a write transaction of the current store file.
func (s *store) update(ctx context.Context, fn func(*model.Tx) error) error {
	s.swap.RLock()
	defer s.swap.RUnlock()
	return s.db.Update(ctx, fn)
}

// replace makes the store file at img (a complete controller store,
// synced) the store: close, rename over, sync the directory, reopen, all
// while holding swap exclusively. A failure to reopen leaves the store
// unusable (ErrClosed on every call), which the caller reports.
func (s *store) replace(img string) error {
	s.swap.Lock()
	defer s.swap.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("controller: close store for replacement: %w", err)
	}
	if err := os.Rename(img, s.path); err != nil {
		// The old file is still in place: reopen it.
		db, oerr := model.Open(s.path, s.opts)
		if oerr == nil {
			s.db = db
		}
		return fmt.Errorf("controller: replace store: %w", err)
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		return fmt.Errorf("controller: replace store: %w", err)
	}
	db, err := model.Open(s.path, s.opts)
	if err != nil {
		return fmt.Errorf("controller: reopen replaced store: %w", err)
	}
	s.db = db
	return nil
}

// newRandomID returns 32 hex digits from crypto/rand.
func newRandomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// openStore opens (or creates) the store at path and initialises the
// controller's buckets: a new store gets a random timeline and cluster id
// and starts in legacy mode.
func openStore(ctx context.Context, path string, opts model.Options, retention uint64, maxFrame int) (*store, error) {
	db, err := model.Open(path, opts)
	if err != nil {
		return nil, err
	}
	s := &store{db: db, path: path, opts: opts, retention: retention, maxSetFrame: maxSetFrame(maxFrame)}
	if err := db.Update(ctx, initMeta); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("controller: init store %s: %w", path, err)
	}
	return s, nil
}

// maxSetFrame is the largest change set frame (prefix included) that still
// fits a Batch of one within maxFrame: a Batch payload is the type byte,
// a fixarray byte, an array header (at most 5 bytes) and the change set
// body, which is the change set frame minus its prefix and type byte.
func maxSetFrame(maxFrame int) int {
	return min(maxFrame, wire.DefaultMaxFrame) - 7 + wire.FrameHeaderSize + 1
}

func initMeta(tx *model.Tx) error {
	mb, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists(bucketLog); err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists(bucketNodes); err != nil {
		return err
	}
	if v := mb.Get(keyLayout); v != nil {
		n, err := model.Uint64(mb, keyLayout)
		if err != nil || n != layoutVersion {
			return fmt.Errorf("%w: controller layout %x, want %d", model.ErrCorrupt, v, layoutVersion)
		}
		return nil
	}
	if err := model.PutUint64(mb, keyLayout, layoutVersion); err != nil {
		return err
	}
	if err := mb.Put(keyMode, []byte{byte(abi.IndexLegacy)}); err != nil {
		return err
	}
	tl := abi.NewTimeline()
	if err := mb.Put(keyTimeline, bytes.Clone(tl[:])); err != nil {
		return err
	}
	return mb.Put(keyClusterID, []byte(newRandomID()))
}

func (s *store) close() error {
	s.swap.Lock()
	defer s.swap.Unlock()
	return s.db.Close()
}

// readMeta reads the controller's meta in tx.
func readMeta(tx *model.Tx) (meta, error) {
	var m meta
	mb, err := tx.Bucket(bucketMeta)
	if err != nil {
		return m, fmt.Errorf("%w: %w", ErrNotControllerStore, err)
	}
	mode := mb.Get(keyMode)
	if len(mode) != 1 || !abi.IndexType(mode[0]).Valid() {
		return m, fmt.Errorf("%w: mode %x", model.ErrCorrupt, mode)
	}
	m.mode = abi.IndexType(mode[0])
	tl := mb.Get(keyTimeline)
	if len(tl) != len(m.timeline) {
		return m, fmt.Errorf("%w: timeline %x", model.ErrCorrupt, tl)
	}
	copy(m.timeline[:], tl)
	m.clusterID = string(mb.Get(keyClusterID))
	for _, t := range abi.IndexTypes {
		if m.last[t], err = model.Uint64(mb, keyIndex[t]); err != nil {
			return m, err
		}
	}
	for _, f := range []struct {
		key []byte
		dst *uint64
	}{{keyChangeSets, &m.changeSets}, {keyLogFloor, &m.logFloor}, {keyLogCount, &m.logCount}, {keyRaftApplied, &m.raftApplied}} {
		if *f.dst, err = model.Uint64(mb, f.key); err != nil {
			return m, err
		}
	}
	if v := mb.Get(keyMigration); len(v) > 0 {
		m.migration = &migrationRecord{}
		if err := json.Unmarshal(v, m.migration); err != nil {
			return m, fmt.Errorf("%w: migration record: %v", model.ErrCorrupt, err)
		}
	}
	return m, nil
}

// writeMeta stores m in tx (Update only).
func writeMeta(tx *model.Tx, m *meta) error {
	mb, err := tx.Bucket(bucketMeta)
	if err != nil {
		return err
	}
	if err := mb.Put(keyMode, []byte{byte(m.mode)}); err != nil {
		return err
	}
	if err := mb.Put(keyTimeline, bytes.Clone(m.timeline[:])); err != nil {
		return err
	}
	for _, t := range abi.IndexTypes {
		if err := model.PutUint64(mb, keyIndex[t], m.last[t]); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		key []byte
		v   uint64
	}{{keyChangeSets, m.changeSets}, {keyLogFloor, m.logFloor}, {keyLogCount, m.logCount}, {keyRaftApplied, m.raftApplied}} {
		if err := model.PutUint64(mb, f.key, f.v); err != nil {
			return err
		}
	}
	if m.migration == nil {
		return mb.Delete(keyMigration)
	}
	b, err := json.Marshal(m.migration)
	if err != nil {
		return err
	}
	return mb.Put(keyMigration, b)
}

// encodeChangeSet returns the stored form of cs: its wire frame, so that
// the log is read back with the wire's bounded decoder.
func encodeChangeSet(cs *wire.ChangeSet) ([]byte, error) {
	return wire.EncodeFrame(nil, cs)
}

// worstCaseSetFrame is the size of cs's frame with the largest possible
// header, so that a change set checked at ingestion still fits once its
// real index is known.
func worstCaseSetFrame(changes []model.Change) (int, error) {
	var tl abi.Timeline
	b, err := wire.EncodeFrame(nil, &wire.ChangeSet{
		Header:  abi.Header{Index: math.MaxUint64, PrevIndex: math.MaxUint64, Type: abi.IndexHA, Term: math.MaxUint64, Timeline: tl},
		Changes: changes,
	})
	return len(b), err
}

// appendChangeSet commits cs in tx: applies its changes to the entities,
// stores it in the log and advances m. The header must continue m: the
// current mode and timeline, prevIndex = the last index of its type. A
// change set that is invalid or too large wraps ErrInvalidRequest or
// ErrChangeSetTooLarge and nothing is written, so the caller may go on
// with other change sets in the same transaction; any other error leaves
// tx unable to commit.
func (s *store) appendChangeSet(tx *model.Tx, m *meta, cs *wire.ChangeSet) (*logEntry, error) {
	h := &cs.Header
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("controller: change set header: %w", err)
	}
	if h.Type != m.mode || h.Timeline != m.timeline || h.PrevIndex != m.last[h.Type] {
		return nil, fmt.Errorf("controller: change set %d (%s, prev %d, timeline %s) does not continue %s@%d/%s",
			h.Index, h.Type, h.PrevIndex, h.Timeline, m.mode, m.last[m.mode], m.timeline)
	}
	if len(cs.Changes) == 0 {
		return nil, fmt.Errorf("%w: no changes", ErrInvalidRequest)
	}
	if err := model.ValidateChanges(cs.Changes); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	enc, err := encodeChangeSet(cs)
	if err != nil {
		return nil, err
	}
	if len(enc) > s.maxSetFrame {
		return nil, fmt.Errorf("%w: frame of %d bytes, limit %d", ErrChangeSetTooLarge, len(enc), s.maxSetFrame)
	}
	lb, err := tx.Bucket(bucketLog)
	if err != nil {
		return nil, err
	}
	if err := tx.Apply(cs.Changes); err != nil {
		return nil, err
	}
	key := logKey{index: h.Index, sub: subChangeSet}
	if err := lb.Put(key.bytes(), enc); err != nil {
		return nil, fmt.Errorf("controller: log put %d: %w", h.Index, err)
	}
	m.last[h.Type] = h.Index
	m.changeSets++
	m.logCount++
	return &logEntry{key: key, set: cs, size: len(enc)}, nil
}

// appendModeChange records mc in the log at (BaseIndex, 1) and switches m
// to mc.To with mc.BaseIndex as the new type's last index, so the next
// change set of that type has prevIndex BaseIndex. mc must continue m: from
// the current mode at its last index, on its timeline. The legacy
// controller never calls it; migration (HA mode) does, and the session code
// that forwards mode changes is tested with it.
func (s *store) appendModeChange(tx *model.Tx, m *meta, mc abi.ModeChange) (*logEntry, error) {
	if err := mc.Validate(); err != nil {
		return nil, fmt.Errorf("controller: mode change: %w", err)
	}
	if mc.From != m.mode || mc.LastIndex != m.index() || mc.Timeline != m.timeline {
		return nil, fmt.Errorf("controller: mode change %s@%d -> %s on %s does not continue %s@%d/%s",
			mc.From, mc.LastIndex, mc.To, mc.Timeline, m.mode, m.index(), m.timeline)
	}
	if mc.BaseIndex < m.last[mc.To] {
		return nil, fmt.Errorf("controller: mode change base %d below the last %s index %d", mc.BaseIndex, mc.To, m.last[mc.To])
	}
	enc, err := wire.EncodeFrame(nil, &wire.ModeChange{Change: mc})
	if err != nil {
		return nil, err
	}
	lb, err := tx.Bucket(bucketLog)
	if err != nil {
		return nil, err
	}
	key := logKey{index: mc.BaseIndex, sub: subModeChange}
	if err := lb.Put(key.bytes(), enc); err != nil {
		return nil, fmt.Errorf("controller: log put mode change at %d: %w", mc.BaseIndex, err)
	}
	m.mode = mc.To
	m.last[mc.To] = mc.BaseIndex
	return &logEntry{key: key, mode: &mc, size: len(enc)}, nil
}

// trim drops the oldest log entries until at most retention change sets
// remain, and raises logFloor to the highest trimmed index.
func (s *store) trim(tx *model.Tx, m *meta) error {
	drop := trimCount(m.logCount, s.retention)
	if drop == 0 {
		return nil
	}
	lb, err := tx.Bucket(bucketLog)
	if err != nil {
		return err
	}
	// Collect first: deleting under a bbolt cursor can skip the next key.
	var keys [][]byte
	c := lb.Cursor()
	for k, _ := c.First(); k != nil && drop > 0; k, _ = c.Next() {
		key, err := parseLogKey(k)
		if err != nil {
			return err
		}
		keys = append(keys, bytes.Clone(k))
		if key.sub == subChangeSet {
			drop--
			m.logCount--
			m.logFloor = max(m.logFloor, key.index)
		}
	}
	for _, k := range keys {
		if err := lb.Delete(k); err != nil {
			return fmt.Errorf("controller: log trim: %w", err)
		}
	}
	return nil
}

// lastLogKey is the key of the newest log entry, or the zero key.
func lastLogKey(tx *model.Tx) (logKey, error) {
	lb, err := tx.Bucket(bucketLog)
	if err != nil {
		return logKey{}, err
	}
	k, _ := lb.Cursor().Last()
	if k == nil {
		return logKey{}, nil
	}
	return parseLogKey(k)
}

// decodeEntry decodes a stored log record.
func decodeEntry(k, v []byte) (*logEntry, error) {
	key, err := parseLogKey(k)
	if err != nil {
		return nil, err
	}
	msg, n, err := wire.DecodeFrame(v, len(v))
	if err != nil || n != len(v) {
		return nil, fmt.Errorf("%w: log entry %d/%d: %v", model.ErrCorrupt, key.index, key.sub, err)
	}
	e := &logEntry{key: key, size: len(v)}
	switch msg := msg.(type) {
	case *wire.ChangeSet:
		if key.sub != subChangeSet || msg.Header.Index != key.index {
			return nil, fmt.Errorf("%w: log entry %d/%d holds change set %d", model.ErrCorrupt, key.index, key.sub, msg.Header.Index)
		}
		e.set = msg
	case *wire.ModeChange:
		if key.sub != subModeChange {
			return nil, fmt.Errorf("%w: log entry %d/%d holds a mode change", model.ErrCorrupt, key.index, key.sub)
		}
		e.mode = &msg.Change
	default:
		return nil, fmt.Errorf("%w: log entry %d/%d holds a %s frame", model.ErrCorrupt, key.index, key.sub, msg.Type())
	}
	return e, nil
}

// readLog returns the log entries after `after`, at most maxEntries and
// about maxBytes (at least one entry). It fails with errBelowFloor when
// entries after `after` have been trimmed.
func readLog(tx *model.Tx, m *meta, after logKey, maxEntries, maxBytes int) ([]*logEntry, error) {
	if after.index < m.logFloor {
		return nil, fmt.Errorf("%w: reading after %d, floor %d", errBelowFloor, after.index, m.logFloor)
	}
	lb, err := tx.Bucket(bucketLog)
	if err != nil {
		return nil, err
	}
	var out []*logEntry
	size := 0
	c := lb.Cursor()
	k, v := c.Seek(after.bytes())
	if k != nil && bytes.Equal(k, after.bytes()) {
		k, v = c.Next()
	}
	for ; k != nil && len(out) < maxEntries && size < maxBytes; k, v = c.Next() {
		e, err := decodeEntry(k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
		size += e.size
	}
	return out, nil
}

// follows reports whether the log, above its floor, holds the entry that
// comes right after position p: the change set of p's type whose prevIndex
// is p.Index, or a mode change away from p's type recorded at p.Index.
// Either proves that p lies on this log's history and that every entry
// after it is still there. A mode change *to* p's type based at p.Index is
// one the router has already applied; the entry after it decides.
func follows(tx *model.Tx, m *meta, p wire.Position) (bool, error) {
	es, err := readLog(tx, m, logKey{index: p.Index, sub: subChangeSet}, 2, math.MaxInt)
	if errors.Is(err, errBelowFloor) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, e := range es {
		switch {
		case e.set != nil:
			return e.set.Header.Type == p.Type && e.set.Header.PrevIndex == p.Index, nil
		case e.key.index != p.Index:
			return false, nil
		case e.mode.From == p.Type && e.mode.LastIndex == p.Index:
			return true, nil
		case e.mode.To == p.Type && e.mode.BaseIndex == p.Index:
			continue
		default:
			return false, nil
		}
	}
	return false, nil
}
