package raftnode

import (
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// StateMachine is what the controller implements; Node adapts it to
// raft.FSM. raft calls Apply, Snapshot and Restore from one goroutine, never
// concurrently with each other.
type StateMachine interface {
	// Apply applies one committed command at (index, term) and returns the
	// response the leader's Node.Apply hands back. It must be deterministic
	// and idempotent for index <= the state machine's persisted applied
	// index: raft replays the log after the newest snapshot when a node
	// restarts (see Config.RestoreSnapshotOnStart). Only commands reach
	// Apply; raft's own entries (no-ops, configuration changes) do not, so
	// indexes have gaps.
	Apply(index, term uint64, cmd []byte) any

	// Snapshot captures a consistent, self-contained image of the state.
	// It runs on raft's FSM goroutine, so it should only pin the state
	// (open a read transaction, say) and leave the writing to the returned
	// SnapshotWriter, which raft runs on another goroutine while Apply
	// continues. The image must only contain state that is durable.
	//
	// raft does not write the returned SnapshotWriter at once: it first
	// waits for its main loop, which on a follower may be installing a
	// leader's snapshot and so waiting for Restore. Restore may therefore
	// run while a SnapshotWriter is pinned and unwritten, and must not
	// wait for it to be written or released (abandon it instead).
	Snapshot() (SnapshotWriter, error)

	// Restore replaces the whole state with an image written by Snapshot
	// (or, through Node.SeedFromSnapshot, a legacy store image that seeds a
	// new cluster). The new state must be durable when Restore returns.
	Restore(r io.Reader) error
}

// SnapshotWriter streams one snapshot image, like raft.FSMSnapshot.
type SnapshotWriter interface {
	// WriteSnapshot writes the image to w. It is called at most once,
	// concurrently with StateMachine.Apply.
	WriteSnapshot(w io.Writer) error
	// Release frees what Snapshot pinned. It is called exactly once, after
	// WriteSnapshot or instead of it when raft gives up before writing.
	Release()
}

// SnapshotFunc adapts a function that needs no cleanup to SnapshotWriter.
type SnapshotFunc func(w io.Writer) error

// WriteSnapshot calls f(w).
func (f SnapshotFunc) WriteSnapshot(w io.Writer) error { return f(w) }

// Release does nothing.
func (SnapshotFunc) Release() {}

// fsm adapts a StateMachine to raft.FSM.
type fsm struct {
	sm    StateMachine
	snaps raft.SnapshotStore

	// applied is the index of the last entry the FSM goroutine has
	// finished with: a command, a configuration, or the snapshot a restore
	// installed. raft's own applied index moves when entries are handed to
	// that goroutine, before they are applied; Node.AppliedIndex combines
	// the two.
	applied atomic.Uint64

	// A user restore (SeedFromSnapshot) whose FSM restore fails makes raft
	// panic, because the leader has already committed to the new state. A
	// panic trace is not an acceptable way to report a bad seed image, so
	// while seeding, a Restore error is kept here and reported by
	// SeedFromSnapshot, which then shuts the node down.
	mu      sync.Mutex
	seeding bool
	seedErr error
}

var _ raft.ConfigurationStore = (*fsm)(nil)

func (f *fsm) Apply(l *raft.Log) any {
	resp := f.sm.Apply(l.Index, l.Term, l.Data)
	f.applied.Store(l.Index)
	return resp
}

// StoreConfiguration is called, on the FSM goroutine, for each committed
// configuration entry; implementing it is how the adapter learns that the
// FSM goroutine has got past one.
func (f *fsm) StoreConfiguration(index uint64, _ raft.Configuration) {
	f.applied.Store(index)
}

// newestSnapshot returns the index of the newest snapshot in the store, or
// 0. raft writes a snapshot to the store before restoring it (on install,
// on seed) and restores the newest at start, so right after a restore this
// is the index the state machine now stands at.
func (f *fsm) newestSnapshot() uint64 {
	metas, err := f.snaps.List()
	if err != nil || len(metas) == 0 {
		return 0
	}
	return metas[0].Index
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	w, err := f.sm.Snapshot()
	if err != nil {
		return nil, err
	}
	return fsmSnapshot{w}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	err := f.sm.Restore(rc)
	if err == nil {
		f.applied.Store(f.newestSnapshot())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil && f.seeding {
		f.seedErr = err
		return nil
	}
	return err
}

// beginSeed and endSeed bracket a user restore; endSeed returns the state
// machine's Restore error, if any.
func (f *fsm) beginSeed() {
	f.mu.Lock()
	f.seeding, f.seedErr = true, nil
	f.mu.Unlock()
}

func (f *fsm) endSeed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seeding = false
	return f.seedErr
}

type fsmSnapshot struct{ w SnapshotWriter }

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.w.WriteSnapshot(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() { s.w.Release() }
