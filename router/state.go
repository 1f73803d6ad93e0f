package router

import (
	"encoding/binary"
	"errors"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

// numTypes sizes arrays indexed by abi.IndexType; only the valid types'
// slots are used.
const numTypes = int(abi.IndexHA) + 1

// The router's own bucket in the model store. Everything in it commits in
// the same transaction as the entity changes it describes; docs/router.md
// lists the keys.
var bucketRouter = []byte("ig.router")

var (
	keyCurrent     = []byte("current")
	keyWantFull    = []byte("wantFullState")
	keyApplied     = []byte("counters/applied")
	keySkipped     = []byte("counters/skipped")
	keyFullResyncs = []byte("counters/fullResyncs")
	keyInitial     = []byte("counters/initialSyncs")
	keyGaps        = []byte("counters/gaps")
)

func positionKey(t abi.IndexType) []byte { return []byte("position/" + t.String()) }
func filterKey(t abi.IndexType) []byte   { return []byte("filter/" + t.String()) }

// positionSize is type (1) + index (8) + timeline (16).
const positionSize = 1 + 8 + 16

// Counters are the router's totals since its data directory was created;
// they are committed with the change sets they count, so they survive
// restarts and never count a change set twice.
type Counters struct {
	// Applied counts change sets committed to the model.
	Applied uint64 `json:"applied"`
	// Skipped counts change sets a filter skipped (duplicate or stale).
	Skipped uint64 `json:"skipped"`
	// FullResyncs counts full states committed over a model that already
	// had a position: the expensive event operators watch for.
	FullResyncs uint64 `json:"fullResyncs"`
	// InitialSyncs counts full states that bootstrapped a router with no
	// position yet (a new data directory); they are not resyncs.
	InitialSyncs uint64 `json:"initialSyncs"`
	// Gaps counts Resync verdicts whose reason was a gap.
	Gaps uint64 `json:"gaps"`
}

// routerState is the router's committed state besides its entities.
// Arrays rather than maps so a copy is a value copy: the applier builds the
// next state on a copy and publishes it only after the commit.
type routerState struct {
	// positions[t].Type == t when the router has a position for t.
	positions [numTypes]wire.Position
	// current is the type of the last applied change set or mode change.
	current abi.IndexType
	// filters[t].Version != 0 when a filter state is stored for t.
	filters  [numTypes]abi.State
	counters Counters
	// wantFull: the last session ended with a Resync verdict, so the next
	// Hello carries no positions. Persisted, so a restart asks too.
	wantFull bool
}

// position returns the router's position for t.
func (s *routerState) position(t abi.IndexType) (wire.Position, bool) {
	if !t.Valid() || s.positions[t].Type != t {
		return wire.Position{}, false
	}
	return s.positions[t], true
}

func (s *routerState) setPosition(p wire.Position) { s.positions[p.Type] = p }

// positionList lists the positions in the order of abi.IndexTypes, as Hello
// and Ack carry them.
func (s *routerState) positionList() []wire.Position {
	var out []wire.Position
	for _, t := range abi.IndexTypes {
		if p, ok := s.position(t); ok {
			out = append(out, p)
		}
	}
	return out
}

// loadState reads the router's bucket; a store without one is a fresh
// router.
func loadState(tx *model.Tx) (routerState, error) {
	var s routerState
	b, err := tx.Bucket(bucketRouter)
	if errors.Is(err, model.ErrBucketNotFound) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	for _, t := range abi.IndexTypes {
		if v := b.Get(positionKey(t)); v != nil {
			p, err := decodePosition(v)
			if err != nil || p.Type != t {
				return s, fmt.Errorf("%w: router position for %s: %x", model.ErrCorrupt, t, v)
			}
			s.positions[t] = p
		}
		if v := b.Get(filterKey(t)); v != nil {
			st, err := abi.DecodeState(v)
			if err != nil {
				return s, fmt.Errorf("%w: router filter state for %s: %w", model.ErrCorrupt, t, err)
			}
			s.filters[t] = st
		}
	}
	if v := b.Get(keyCurrent); v != nil {
		if len(v) != 1 || (abi.IndexType(v[0]) != abi.IndexNone && !abi.IndexType(v[0]).Valid()) {
			return s, fmt.Errorf("%w: router current type %x", model.ErrCorrupt, v)
		}
		s.current = abi.IndexType(v[0])
	}
	if v := b.Get(keyWantFull); len(v) == 1 {
		s.wantFull = v[0] == 1
	}
	for _, c := range []struct {
		key []byte
		dst *uint64
	}{
		{keyApplied, &s.counters.Applied}, {keySkipped, &s.counters.Skipped},
		{keyFullResyncs, &s.counters.FullResyncs}, {keyGaps, &s.counters.Gaps},
		{keyInitial, &s.counters.InitialSyncs},
	} {
		if *c.dst, err = model.Uint64(b, c.key); err != nil {
			return s, err
		}
	}
	return s, nil
}

// saveState writes s over the router's bucket.
func saveState(tx *model.Tx, s *routerState) error {
	b, err := tx.CreateBucketIfNotExists(bucketRouter)
	if err != nil {
		return err
	}
	for _, t := range abi.IndexTypes {
		if err := putOrDelete(b, positionKey(t), s.positions[t].Type == t, func() []byte { return encodePosition(s.positions[t]) }); err != nil {
			return err
		}
		st := &s.filters[t]
		if err := putOrDelete(b, filterKey(t), st.Version != 0, func() []byte { return abi.AppendState(nil, st) }); err != nil {
			return err
		}
	}
	want := byte(0)
	if s.wantFull {
		want = 1
	}
	if err := b.Put(keyCurrent, []byte{byte(s.current)}); err != nil {
		return fmt.Errorf("router: save state: %w", err)
	}
	if err := b.Put(keyWantFull, []byte{want}); err != nil {
		return fmt.Errorf("router: save state: %w", err)
	}
	for _, c := range []struct {
		key []byte
		v   uint64
	}{
		{keyApplied, s.counters.Applied}, {keySkipped, s.counters.Skipped},
		{keyFullResyncs, s.counters.FullResyncs}, {keyGaps, s.counters.Gaps},
		{keyInitial, s.counters.InitialSyncs},
	} {
		if err := model.PutUint64(b, c.key, c.v); err != nil {
			return err
		}
	}
	return nil
}

func putOrDelete(b *bbolt.Bucket, key []byte, present bool, value func() []byte) error {
	var err error
	if present {
		err = b.Put(key, value())
	} else {
		err = b.Delete(key)
	}
	if err != nil {
		return fmt.Errorf("router: save state %q: %w", key, err)
	}
	return nil
}

func encodePosition(p wire.Position) []byte {
	b := make([]byte, 0, positionSize)
	b = append(b, byte(p.Type))
	b = binary.BigEndian.AppendUint64(b, p.Index)
	return append(b, p.Timeline[:]...)
}

func decodePosition(v []byte) (wire.Position, error) {
	if len(v) != positionSize {
		return wire.Position{}, fmt.Errorf("position of %d bytes, want %d", len(v), positionSize)
	}
	p := wire.Position{Type: abi.IndexType(v[0]), Index: binary.BigEndian.Uint64(v[1:9])}
	copy(p.Timeline[:], v[9:])
	return p, nil
}
