// Package raftnode is the hashicorp/raft plumbing of the HA controller: it
// runs one raft server with its stores and transport and adapts the
// controller's state machine to raft. It knows nothing of change sets;
// commands are opaque bytes.
//
// # Seams
//
// Each dependency sits behind a small interface, as in hashicorp/raft:
//
//   - StateMachine (Apply, Snapshot, Restore) is what the controller
//     implements; Node adapts it to raft.FSM. Apply receives the raft
//     (index, term) of the entry, which the controller uses as the change
//     set's header index and term.
//   - Config.Transport takes any raft.Transport (tests pass an
//     InmemTransport, see package rafttest); Config.StreamLayer takes a
//     raft.StreamLayer to run raft's network transport over something other
//     than plain TCP: TLSStreamLayer runs it over mutual TLS (package pki
//     builds the configurations); by default Node listens on Config.RaftAddr.
//   - Config.Logger takes a *slog.Logger; raft's hclog output is adapted to
//     it, with raft's info chatter demoted to debug and its errors to warn.
//   - Config.Registerer takes a Prometheus registerer for indexgate_raft_*.
//
// Storage is fixed: raft.db in Config.DataDir (raft-boltdb: log and stable
// store, behind a 512-entry in-memory log cache) and snapshots/ (raft's
// file snapshot store, newest two retained).
//
// # A durable state machine
//
// The controller's state lives in its own bbolt store, which survives a
// restart. So by default raft does not restore the newest snapshot when a
// node starts (raft's NoSnapshotRestoreOnStart): it only replays the log
// after that snapshot, and StateMachine.Apply skips indexes it has already
// applied. That is why Apply must be idempotent for index <= the persisted
// applied index, why Snapshot must only image durable state, and why
// Restore must be durable when it returns. In-memory state machines set
// Config.RestoreSnapshotOnStart.
//
// # Leadership
//
// raft declares a new leader before that leader knows which earlier
// entries are committed and applied. A new leader must therefore call
// Barrier before it publishes anything derived from the state machine (for
// the controller: before it serves routers); Consul and Nomad do the same
// on every leadership acquisition. LeaderChanges reports the acquisitions
// and losses without ever blocking raft, coalescing to the newest state
// (see its comment for why raft's own channels will not do).
//
// Apply, Barrier, AddVoter and RemoveServer are leader-only; elsewhere they
// fail with a *NotLeaderError that names the leader (errors.Is
// ErrNotLeader), and the command was not appended. ErrLeadershipLost and a
// context that ends during Apply leave the outcome unknown.
//
// # Seeding from the legacy store
//
// Migrating from the legacy controller seeds a fresh single-voter cluster
// with SeedFromSnapshot(L, image): raft's Restore stores the image as a
// snapshot at L+1 (max(L, last index)+1), leaving a hole in the log, then
// commits a no-op at L+2; the first command after seeding gets L+3 or more.
// So raft indexes continue above the last legacy index. The hole makes
// every follower that joins afterwards install the snapshot (raft logs
// harmless "failed to get log" errors about it). This is only valid on a
// fresh cluster, and SeedFromSnapshot checks that.
//
// # Defaults and why
//
// Timeouts are hashicorp/raft's defaults: 1 s heartbeat and election
// timeouts, 500 ms leader lease, 50 ms commit timeout. They are sane on a
// LAN and hold up on a loaded two-core CI machine; tighter timeouts cause
// spurious elections under load (and raft's InmemTransport gives up on an
// RPC after 500 ms, so tests need them too).
//
// MaxAppendEntries (64) bounds both an AppendEntries RPC and the leader's
// group commit: raft writes every entry queued since the last write in one
// raft-boltdb transaction, one fsync. On the reference machine three nodes
// commit on the order of 1 000 entries/s with one writer and about 6 000/s
// with 64 concurrent writers (BenchmarkRawApply measures it; the one-writer
// figure drops to a few hundred when the machine is busy), so throughput
// comes from concurrency or from batching several changes into one
// command, not from shorter timeouts. raft's BatchApplyCh stays off: with
// it, an Apply racing shutdown can be buffered where nobody answers it, and
// group commit works without it.
//
// Node.AppliedIndex is exact (every command at or below it has been
// applied by the state machine), unlike raft's applied index, which counts
// entries handed to the FSM goroutine before they are applied.
//
// TrailingLogs (65 536) must outlast a snapshot transfer. When a follower
// falls behind the leader's log, it is sent a snapshot; if, by the time the
// follower has received and restored it, the leader has written more than
// TrailingLogs entries and compacted its log past the snapshot's index, the
// follower needs yet another snapshot, and never catches up
// (hashicorp/consul#9609). Size it as peak entries/s × (snapshot transfer +
// restore time) with a safety factor: 65 536 entries cover about ten
// seconds at the 6 000 entries/s peak above, i.e. a gigabyte-sized image at
// 100 MB/s, for a few tens of megabytes of log on disk. SnapshotThreshold
// (16 384 new entries, checked every SnapshotInterval, 120 s) keeps
// snapshots, which copy the whole store, infrequent while bounding replay
// after a restart; a larger store calls for a larger TrailingLogs, not a
// smaller threshold.
package raftnode
