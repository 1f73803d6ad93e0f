package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/controller/raftnode"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

// Commands of the HA state machine: one kind byte, then the body. The raft
// log holds them; the FSM turns each into a store transaction.
const (
	// cmdChangeSet: a wire ChangeSet frame whose header is left zero; the
	// FSM gives it the entry's raft index and term.
	cmdChangeSet byte = 1
	// cmdMigrate: JSON migrateCmd, the mode change legacy → ha.
	cmdMigrate byte = 2
	// cmdRollback: JSON rollbackCmd, the mode change ha → legacy.
	cmdRollback byte = 3
	// cmdJoin: JSON nodeInfo, a node directory entry.
	cmdJoin byte = 4
)

// nodeInfo is one HA member's addresses in the node directory.
type nodeInfo struct {
	ID string `json:"nodeId"`
	// RaftAddr is the member's raft transport address.
	RaftAddr string `json:"raftAddr"`
	// AdminAddr is its admin API (host:port): writes are forwarded there.
	AdminAddr string `json:"adminAddr"`
	// ListenAddr is its router-facing address: routers are redirected
	// there.
	ListenAddr string `json:"listenAddr"`
}

// migrateCmd switches the store from legacy to HA mode: the mode change
// goes into the log at (LastIndex, 1) and the migrating node into the node
// directory.
type migrateCmd struct {
	// LastIndex is the last legacy index the migration paused at; the
	// FSM refuses the command if the store is elsewhere.
	LastIndex uint64    `json:"lastIndex"`
	Node      nodeInfo  `json:"node"`
	StartedAt time.Time `json:"startedAt"`
}

// rollbackCmd switches the store from HA back to legacy mode; NodeID is the
// node that continues as the legacy controller.
type rollbackCmd struct {
	NodeID    string    `json:"nodeId"`
	StartedAt time.Time `json:"startedAt"`
}

// applyResult is the FSM's answer to one command: the header a change set
// got, or why the command was refused (refusals are deterministic, so
// every node refuses alike and the stores stay equal).
type applyResult struct {
	hdr abi.Header
	err error
}

// errReplayed answers a command at or below the store's applied raft
// index: raft replays the log after its newest snapshot on a restart, and
// the store already holds these (OpenZiti #4439: the index comes from the
// applied index, never from the raft log tip).
var errReplayed = errors.New("controller: raft entry already applied")

// errFSMFailed answers every command after a storage failure: applying
// later entries on top of a missing one would make this store diverge.
var errFSMFailed = errors.New("controller: the HA state machine failed after a storage error; restart the node")

func encodeChangeSetCmd(changes []model.Change) ([]byte, error) {
	return wire.EncodeFrame([]byte{cmdChangeSet}, &wire.ChangeSet{Changes: changes})
}

func encodeJSONCmd(kind byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte{kind}, b...), nil
}

// fsmHooks is how the state machine tells the controller that the store's
// mode or migration record changed (a mode change applied, a snapshot
// restored); it is called after the commit, before the entries are
// published.
type fsmHooks interface {
	storeChanged(m meta)
}

// haFSM is the HA controller's raftnode.StateMachine: it commits every
// command to the same store, log and hub as the legacy engine, through the
// same functions, with the raft index as the change set's index and the
// applied raft index in the same transaction.
type haFSM struct {
	st    *store
	hub   *hub
	met   *metrics
	log   *slog.Logger
	hooks fsmHooks

	failed atomic.Bool

	// pinned are the snapshots whose read transactions are open and not
	// yet written out or released. Restore abandons them before it swaps
	// the store: see abandonSnapshots.
	pinMu  sync.Mutex
	pinned map[*fsmSnapshot]struct{}
}

var _ raftnode.StateMachine = (*haFSM)(nil)

// Apply commits one command. It runs on raft's FSM goroutine only.
func (f *haFSM) Apply(index, term uint64, cmd []byte) any {
	if f.failed.Load() {
		return applyResult{err: errFSMFailed}
	}
	var (
		res     applyResult
		entries []*logEntry
		after   meta
		changed bool
	)
	start := time.Now()
	err := f.st.update(context.Background(), func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		if index <= m.raftApplied {
			return errReplayed
		}
		res, entries = applyResult{}, entries[:0]
		mode, rec := m.mode, m.migration
		if err := f.apply(tx, &m, index, term, cmd, &res, &entries); err != nil {
			return err
		}
		m.raftApplied = index
		if err := f.st.trim(tx, &m); err != nil {
			return err
		}
		after, changed = m, m.mode != mode || m.migration != rec
		return writeMeta(tx, &m)
	})
	if errors.Is(err, errReplayed) {
		return applyResult{err: errReplayed}
	}
	if err != nil {
		f.failed.Store(true)
		f.met.commitFailures.Inc()
		f.log.Error("HA state machine: storage failure; this node stops applying raft entries until it is restarted",
			"raftIndex", index, "err", err)
		return applyResult{err: fmt.Errorf("%w: entry %d: %w", errFSMFailed, index, err)}
	}
	f.met.commitDuration.Observe(time.Since(start).Seconds())
	if changed {
		f.hooks.storeChanged(after)
	}
	if len(entries) > 0 {
		f.met.committed.Add(float64(len(entries)))
		f.hub.publish(entries, after.index())
	}
	return res
}

// apply dispatches one command inside the transaction. A refused command
// sets res.err and writes nothing; a returned error is a storage failure.
func (f *haFSM) apply(tx *model.Tx, m *meta, index, term uint64, cmd []byte, res *applyResult, entries *[]*logEntry) error {
	if len(cmd) == 0 {
		res.err = fmt.Errorf("%w: empty raft command", ErrInvalidRequest)
		return nil
	}
	body := cmd[1:]
	switch cmd[0] {
	case cmdChangeSet:
		msg, n, err := wire.DecodeFrame(body, len(body))
		cs, ok := msg.(*wire.ChangeSet)
		if err != nil || !ok || n != len(body) {
			res.err = fmt.Errorf("%w: raft entry %d is not a change set: %v", ErrInvalidRequest, index, err)
			return nil
		}
		if m.mode != abi.IndexHA {
			res.err = fmt.Errorf("%w: %s, change sets through raft need ha mode", ErrWrongMode, m.mode)
			return nil
		}
		cs.Header = abi.Header{Index: index, PrevIndex: m.last[abi.IndexHA], Type: abi.IndexHA, Term: term, Timeline: m.timeline}
		le, err := f.st.appendChangeSet(tx, m, cs)
		if errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrChangeSetTooLarge) {
			res.err = err
			return nil
		}
		if err != nil {
			return err
		}
		*entries = append(*entries, le)
		res.hdr = cs.Header
	case cmdMigrate:
		var c migrateCmd
		if err := json.Unmarshal(body, &c); err != nil {
			res.err = fmt.Errorf("%w: migrate command: %v", ErrInvalidRequest, err)
			return nil
		}
		if m.mode != abi.IndexLegacy || c.LastIndex != m.last[abi.IndexLegacy] {
			res.err = fmt.Errorf("%w: the store is at %s@%d, the migration paused at legacy@%d", ErrMigration, m.mode, m.index(), c.LastIndex)
			return nil
		}
		L := m.last[abi.IndexLegacy]
		le, err := f.st.appendModeChange(tx, m, abi.ModeChange{From: abi.IndexLegacy, To: abi.IndexHA, LastIndex: L, BaseIndex: L, Timeline: m.timeline})
		if err != nil {
			return err
		}
		m.migration = &migrationRecord{Step: recHA, NodeID: c.Node.ID, RaftAddr: c.Node.RaftAddr, LastIndex: L, StartedAt: c.StartedAt}
		// A new cluster: members of an earlier one (before a rollback)
		// are gone.
		if err := clearNodes(tx); err != nil {
			return err
		}
		if err := putNode(tx, c.Node); err != nil {
			return err
		}
		*entries = append(*entries, le)
		res.hdr = abi.Header{Index: L, Type: abi.IndexHA, Timeline: m.timeline}
	case cmdRollback:
		var c rollbackCmd
		if err := json.Unmarshal(body, &c); err != nil {
			res.err = fmt.Errorf("%w: rollback command: %v", ErrInvalidRequest, err)
			return nil
		}
		if m.mode != abi.IndexHA {
			res.err = fmt.Errorf("%w: the store is in %s mode", ErrMigration, m.mode)
			return nil
		}
		H := m.last[abi.IndexHA]
		if taken, err := logHas(tx, logKey{index: H, sub: subModeChange}); err != nil || taken {
			if err != nil {
				return err
			}
			res.err = fmt.Errorf("%w: no HA change set since the migration at %d; commit one before rolling back", ErrMigration, H)
			return nil
		}
		le, err := f.st.appendModeChange(tx, m, abi.ModeChange{From: abi.IndexHA, To: abi.IndexLegacy, LastIndex: H, BaseIndex: H, Timeline: m.timeline})
		if err != nil {
			return err
		}
		m.migration = &migrationRecord{Step: recRolledBack, NodeID: c.NodeID, LastIndex: H, StartedAt: c.StartedAt}
		*entries = append(*entries, le)
		res.hdr = abi.Header{Index: H, Type: abi.IndexLegacy, Timeline: m.timeline}
	case cmdJoin:
		var n nodeInfo
		if err := json.Unmarshal(body, &n); err != nil || n.ID == "" {
			res.err = fmt.Errorf("%w: join command: %v", ErrInvalidRequest, err)
			return nil
		}
		return putNode(tx, n)
	default:
		res.err = fmt.Errorf("%w: unknown raft command kind %d", ErrInvalidRequest, cmd[0])
	}
	return nil
}

// logHas reports whether the log holds an entry at k.
func logHas(tx *model.Tx, k logKey) (bool, error) {
	lb, err := tx.Bucket(bucketLog)
	if err != nil {
		return false, err
	}
	return lb.Get(k.bytes()) != nil, nil
}

// putNode stores a node directory entry.
func putNode(tx *model.Tx, n nodeInfo) error {
	nb, err := tx.CreateBucketIfNotExists(bucketNodes)
	if err != nil {
		return err
	}
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	return nb.Put([]byte(n.ID), b)
}

// clearNodes empties the node directory.
func clearNodes(tx *model.Tx) error {
	nb, err := tx.CreateBucketIfNotExists(bucketNodes)
	if err != nil {
		return err
	}
	var keys [][]byte
	c := nb.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := nb.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// readNodes returns the node directory.
func readNodes(tx *model.Tx) (map[string]nodeInfo, error) {
	out := map[string]nodeInfo{}
	nb, err := tx.Bucket(bucketNodes)
	if errors.Is(err, model.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	err = nb.ForEach(func(k, v []byte) error {
		var n nodeInfo
		if err := json.Unmarshal(v, &n); err != nil {
			return fmt.Errorf("%w: node directory entry %q: %v", model.ErrCorrupt, k, err)
		}
		out[string(k)] = n
		return nil
	})
	return out, err
}

// Snapshot pins the store in a read transaction, opened before it returns
// (so the image is the state after the last applied entry), and leaves
// the copying to WriteSnapshot, which raft runs while Apply goes on.
func (f *haFSM) Snapshot() (raftnode.SnapshotWriter, error) {
	if f.failed.Load() {
		return nil, errFSMFailed
	}
	s := &fsmSnapshot{write: make(chan io.Writer), done: make(chan error, 1)}
	opened := make(chan error, 1)
	// Pinned before the goroutine starts, so its unpin (after the view
	// returns) always comes after.
	f.pin(s)
	go func() {
		inside := false
		err := f.st.view(context.Background(), func(tx *model.Tx) error {
			inside = true
			opened <- nil
			w, ok := <-s.write
			if !ok {
				return nil // released without writing
			}
			_, err := tx.WriteTo(w)
			return err
		})
		if !inside {
			opened <- err
		}
		f.unpin(s)
		s.done <- err
	}()
	if err := <-opened; err != nil {
		return nil, fmt.Errorf("controller: snapshot: %w", err)
	}
	return s, nil
}

func (f *haFSM) pin(s *fsmSnapshot) {
	f.pinMu.Lock()
	defer f.pinMu.Unlock()
	if f.pinned == nil {
		f.pinned = map[*fsmSnapshot]struct{}{}
	}
	f.pinned[s] = struct{}{}
}

func (f *haFSM) unpin(s *fsmSnapshot) {
	f.pinMu.Lock()
	defer f.pinMu.Unlock()
	delete(f.pinned, s)
}

// abandonSnapshots releases every pinned snapshot that raft has not
// started writing, so that Restore can take the store's swap lock.
//
// A pinned snapshot holds a read transaction, hence swap shared, until
// raft writes or releases it; store.replace needs swap exclusively. raft
// does not write a snapshot right after Snapshot returns: takeSnapshot
// first asks raft's main loop for the committed configuration. On a
// follower that main loop may at that moment be installing a snapshot
// from the leader, waiting for this Restore on the FSM goroutine, so
// waiting for the pinned snapshot here would deadlock all three (the
// follower stops answering RPCs and never catches up). The abandoned
// snapshot is stale anyway, the store is about to be replaced: its
// WriteSnapshot fails, raft logs "failed to take snapshot" and takes a
// new one at the next threshold. A snapshot raft is already writing is
// left alone: the write needs nothing from raft, and replace waits for it.
func (f *haFSM) abandonSnapshots() {
	f.pinMu.Lock()
	snaps := make([]*fsmSnapshot, 0, len(f.pinned))
	for s := range f.pinned {
		snaps = append(snaps, s)
	}
	f.pinMu.Unlock()
	for _, s := range snaps {
		s.abandon()
	}
}

// fsmSnapshot is a pinned read transaction waiting to be written out.
// Whichever of WriteSnapshot, Release and abandon comes first ends it.
type fsmSnapshot struct {
	write     chan io.Writer
	done      chan error
	once      sync.Once
	abandoned atomic.Bool
}

func (s *fsmSnapshot) WriteSnapshot(w io.Writer) error {
	err := errors.New("controller: snapshot already released")
	if s.abandoned.Load() {
		err = errors.New("controller: snapshot abandoned: a restore replaced the store")
	}
	s.once.Do(func() {
		s.write <- w
		close(s.write)
		err = <-s.done
	})
	return err
}

func (s *fsmSnapshot) Release() {
	s.once.Do(func() {
		close(s.write)
		<-s.done
	})
}

// abandon releases s for Restore (see haFSM.abandonSnapshots).
func (s *fsmSnapshot) abandon() {
	s.abandoned.Store(true)
	s.Release()
}

// Restore replaces the store with a snapshot image (a follower catching
// up, a new member, the seed of a migration): the image is written to a
// temporary file and synced, checked to be a controller store, and renamed
// over the store while sessions wait (store.replace). The hub then starts
// over at the new log's end and sessions re-check their cursors.
func (f *haFSM) Restore(r io.Reader) error {
	tmp := f.st.path + ".restoring"
	if err := writeSynced(tmp, r); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("controller: restore snapshot: %w", err)
	}
	if err := checkStoreFile(tmp); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("controller: restore snapshot: %w", err)
	}
	f.abandonSnapshots()
	if err := f.st.replace(tmp); err != nil {
		f.failed.Store(true)
		return err
	}
	var m meta
	var last logKey
	err := f.st.view(context.Background(), func(tx *model.Tx) error {
		var err error
		if m, err = readMeta(tx); err != nil {
			return err
		}
		last, err = lastLogKey(tx)
		return err
	})
	if err != nil {
		f.failed.Store(true)
		return fmt.Errorf("controller: restore snapshot: %w", err)
	}
	f.failed.Store(false)
	f.log.Info("store replaced by a raft snapshot", "mode", m.mode.String(), "index", m.index(),
		"raftApplied", m.raftApplied, "timeline", m.timeline.String())
	f.hooks.storeChanged(m)
	f.hub.reset(last, m.index())
	return nil
}

// writeSynced writes r to path and syncs it.
func writeSynced(path string, r io.Reader) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// checkStoreFile opens path as a store and reads the controller's meta.
func checkStoreFile(path string) error {
	db, err := model.Open(path, model.Options{Timeout: lockProbeTimeout})
	if err != nil {
		return fmt.Errorf("not a usable store: %w", err)
	}
	defer db.Close()
	return db.View(context.Background(), func(tx *model.Tx) error {
		_, err := readMeta(tx)
		return err
	})
}

// imageOf writes a consistent image of the store to a temporary file in
// the data directory and returns it opened at the start, with its size:
// the seed of a migration.
func (s *store) imageOf(ctx context.Context) (*os.File, int64, error) {
	f, err := os.CreateTemp(filepath.Dir(s.path), "seed-*.db")
	if err != nil {
		return nil, 0, err
	}
	_ = os.Remove(f.Name()) // unlinked: the file goes away when closed
	var n int64
	err = s.view(ctx, func(tx *model.Tx) (err error) {
		n, err = tx.WriteTo(f)
		return err
	})
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		_ = f.Close()
		return nil, 0, err
	}
	return f, n, nil
}
