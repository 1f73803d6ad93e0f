// Package controller is the indexgate controller: it commits change sets
// to its store, keeps them in a persisted typed change log, and streams them
// to edge routers over package wire; an admin HTTP API takes writes and
// reports status.
//
// The pieces are small seams so that HA mode (raft) can slot in later:
//
//   - the store (store.go) wraps a model.Store and owns the controller's
//     meta (index per type, timeline, mode, cluster id, counters, logFloor)
//     and the change log keyed by (index, sub); every engine commits through
//     it so a change set, its index and its log entry land in one bbolt
//     transaction;
//   - an engine (engine.go) turns write requests into committed change sets
//     and says which index space they live in. The legacy engine is a
//     persisted counter behind a single group-committing writer goroutine;
//     a raft FSM will be the second engine;
//   - the hub (hub.go) is what every engine publishes to: an in-memory ring
//     of recent log entries and a broadcast wake-up, never a per-session
//     queue;
//   - sessions (session.go) only read the log, each at its own pace, from
//     the ring or, below it, from bbolt; a slow router therefore never
//     blocks writers or other routers;
//   - the resume decision, the log retention and the framing of log entries
//     into Batch frames are pure functions (resume.go), table-tested.
//
// docs/controller.md describes the store layout, the write path, group
// commit, distribution, the status fields and the command-line flags;
// docs/architecture.md ("Session semantics") and docs/protocol.md are the
// contract with the router.
package controller
