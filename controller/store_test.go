package controller

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

func openTestStore(t *testing.T, retention uint64) *store {
	t.Helper()
	st, err := openStore(context.Background(), filepath.Join(t.TempDir(), StoreFile), model.Options{NoSync: true}, retention, wire.DefaultMaxFrame)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.close() })
	return st
}

// appendSets commits change sets of the store's current mode at the given
// indexes (each continuing the previous one) in one transaction.
func appendSets(t *testing.T, st *store, indexes ...uint64) []*logEntry {
	t.Helper()
	var out []*logEntry
	err := st.db.Update(context.Background(), func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		for _, i := range indexes {
			cs := &wire.ChangeSet{
				Header:  abi.Header{Index: i, PrevIndex: m.index(), Type: m.mode, Timeline: m.timeline},
				Changes: []model.Change{put("k", "id", "v")},
			}
			e, err := st.appendChangeSet(tx, &m, cs)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		if err := st.trim(tx, &m); err != nil {
			return err
		}
		return writeMeta(tx, &m)
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func migrate(t *testing.T, st *store) *logEntry {
	t.Helper()
	var e *logEntry
	err := st.db.Update(context.Background(), func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		e, err = st.appendModeChange(tx, &m, abi.ModeChange{
			From: abi.IndexLegacy, To: abi.IndexHA, LastIndex: m.index(), BaseIndex: m.index(), Timeline: m.timeline,
		})
		if err != nil {
			return err
		}
		return writeMeta(tx, &m)
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func storeMeta(t *testing.T, st *store) meta {
	t.Helper()
	var m meta
	if err := st.db.View(context.Background(), func(tx *model.Tx) (err error) { m, err = readMeta(tx); return err }); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestStoreAppendRefusesNonContinuation(t *testing.T) {
	st := openTestStore(t, 100)
	appendSets(t, st, 1, 2)
	m := storeMeta(t, st)
	tests := []struct {
		name string
		h    abi.Header
	}{
		{"gap", abi.Header{Index: 4, PrevIndex: 3, Type: abi.IndexLegacy, Timeline: m.timeline}},
		{"repeat", abi.Header{Index: 2, PrevIndex: 1, Type: abi.IndexLegacy, Timeline: m.timeline}},
		{"other timeline", abi.Header{Index: 3, PrevIndex: 2, Type: abi.IndexLegacy, Timeline: abi.NewTimeline()}},
		{"other type", abi.Header{Index: 3, PrevIndex: 2, Type: abi.IndexHA, Timeline: m.timeline}},
		{"index 0", abi.Header{Index: 0, PrevIndex: 0, Type: abi.IndexLegacy, Timeline: m.timeline}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := st.db.Update(context.Background(), func(tx *model.Tx) error {
				m, err := readMeta(tx)
				if err != nil {
					return err
				}
				_, err = st.appendChangeSet(tx, &m, &wire.ChangeSet{Header: tt.h, Changes: []model.Change{put("k", "i", "v")}})
				return err
			})
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if got := storeMeta(t, st); got.index() != 2 || got.changeSets != 2 {
		t.Fatalf("meta after refusals %+v", got)
	}
}

func TestStoreTrimAndReadLog(t *testing.T) {
	st := openTestStore(t, 3)
	appendSets(t, st, 1, 2, 3, 4, 5)
	m := storeMeta(t, st)
	if m.logFloor != 2 || m.logCount != 3 || m.changeSets != 5 {
		t.Fatalf("meta %+v", m)
	}
	err := st.db.View(context.Background(), func(tx *model.Tx) error {
		if _, err := readLog(tx, &m, logKey{index: 1}, 10, 1<<20); !errors.Is(err, errBelowFloor) {
			t.Errorf("read below the floor: %v", err)
		}
		es, err := readLog(tx, &m, logKey{index: 2}, 10, 1<<20)
		if err != nil || len(es) != 3 || es[0].key.index != 3 || es[0].set.Header.PrevIndex != 2 {
			t.Errorf("read from the floor: %d entries, %v", len(es), err)
		}
		if es, err := readLog(tx, &m, logKey{index: 3}, 1, 1<<20); err != nil || len(es) != 1 || es[0].key.index != 4 {
			t.Errorf("read one after 3: %v", err)
		}
		if es, err := readLog(tx, &m, logKey{index: 5}, 10, 1<<20); err != nil || len(es) != 0 {
			t.Errorf("read at the head: %d, %v", len(es), err)
		}
		last, err := lastLogKey(tx)
		if err != nil || last != (logKey{index: 5}) {
			t.Errorf("last key %v, %v", last, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFollowsAcrossAModeChange(t *testing.T) {
	st := openTestStore(t, 100)
	appendSets(t, st, 1, 2, 3)
	migrate(t, st) // legacy -> ha at 3
	appendSets(t, st, 7, 9)
	m := storeMeta(t, st)
	if m.mode != abi.IndexHA || m.index() != 9 || m.last[abi.IndexLegacy] != 3 {
		t.Fatalf("meta %+v", m)
	}
	if ps := m.positions(); len(ps) != 2 || ps[0].Index != 3 || ps[1].Index != 9 {
		t.Fatalf("positions %v", ps)
	}
	T := m.timeline
	ha := func(i uint64) wire.Position { return wire.Position{Type: abi.IndexHA, Index: i, Timeline: T} }
	tests := []struct {
		name string
		p    wire.Position
		want bool
	}{
		{"legacy mid-log", legacyAt(1, T), true},
		{"legacy from zero", legacyAt(0, T), true},
		{"legacy at the mode change", legacyAt(3, T), true},
		{"ha at the base (mode change applied)", ha(3), true},
		{"ha mid-log", ha(7), true},
		{"ha at an index raft skipped", ha(8), false},
		{"ha at the head", ha(9), false},
		{"legacy past the mode change", legacyAt(4, T), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := st.db.View(context.Background(), func(tx *model.Tx) error {
				got, err := follows(tx, &m, tt.p)
				if err != nil {
					return err
				}
				if got != tt.want {
					t.Errorf("follows(%s) = %v, want %v", tt.p, got, tt.want)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSessionForwardsModeChange writes a legacy -> ha mode change into a
// running controller's log, as migration will, and checks that a replaying
// router gets the change sets and the ModeChange in stream order, the
// ModeChange in a frame of its own.
func TestSessionForwardsModeChange(t *testing.T) {
	c := startController(t, testConfig(t))
	last := commitN(t, c, "x", 3)
	T := status(t, c).Timeline
	var es []*logEntry
	err := c.st.db.Update(context.Background(), func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		e, err := c.st.appendModeChange(tx, &m, abi.ModeChange{From: abi.IndexLegacy, To: abi.IndexHA, LastIndex: last, BaseIndex: last, Timeline: T})
		if err != nil {
			return err
		}
		es = append(es, e)
		e, err = c.st.appendChangeSet(tx, &m, &wire.ChangeSet{
			Header:  abi.Header{Index: last + 2, PrevIndex: last, Type: abi.IndexHA, Term: 1, Timeline: T},
			Changes: []model.Change{put("svc", "ha", "1")},
		})
		if err != nil {
			return err
		}
		es = append(es, e)
		return writeMeta(tx, &m)
	})
	if err != nil {
		t.Fatal(err)
	}
	c.hub.publish(es, last+2)

	r := connect(t, c, hello("r", legacyAt(1, T)))
	if r.welcome.Resume != wire.ResumeReplay || r.welcome.Mode != abi.IndexHA || r.welcome.Index != last+2 {
		t.Fatalf("welcome %+v", r.welcome)
	}
	var got []string
	for len(got) < 4 {
		switch m := r.read().(type) {
		case *wire.Batch:
			for _, cs := range m.Sets {
				got = append(got, cs.Header.Type.String())
			}
		case *wire.ModeChange:
			if m.Change.BaseIndex != last {
				t.Fatalf("mode change %+v", m.Change)
			}
			got = append(got, "mode-change")
		default:
			t.Fatalf("unexpected %T", m)
		}
	}
	want := []string{"legacy", "legacy", "mode-change", "ha"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("stream %v, want %v", got, want)
		}
	}
	// The legacy engine refuses to write in HA mode rather than corrupt
	// the log.
	if _, err := c.Commit(ctxT(t), []model.Change{put("a", "b", "c")}); !errors.Is(err, ErrWrongMode) {
		t.Fatalf("legacy commit in ha mode = %v", err)
	}
	// A full state in HA mode carries both positions.
	r2 := connect(t, c, hello("fresh"))
	begin, _, _ := r2.fullState()
	if begin.Mode != abi.IndexHA || len(begin.Positions) != 2 || begin.Positions[0] != legacyAt(last, T) {
		t.Fatalf("full state begin %+v", begin)
	}
}
