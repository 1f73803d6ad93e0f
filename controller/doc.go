// Package controller is the indexgate controller: it commits change sets
// to its store, keeps them in a persisted typed change log, and streams them
// to edge routers over package wire; an admin HTTP API takes writes and
// reports status. It runs as a single legacy controller or as a member of
// an HA cluster on raft (package raftnode), and migrates live from one to
// the other and back.
//
// The pieces are small seams:
//
//   - the store (store.go) wraps a model.Store and owns the controller's
//     meta (index per type, timeline, mode, cluster id, counters, logFloor,
//     applied raft index, migration record), the change log keyed by
//     (index, sub) and the HA node directory; every engine commits through
//     it so a change set, its index and its log entry land in one bbolt
//     transaction;
//   - an engine turns write requests into committed change sets and says
//     which index space they live in: the legacy engine (engine.go) is a
//     persisted counter behind a single group-committing writer goroutine;
//     the HA engine (ha.go) merges waiting requests into one raft entry,
//     and the state machine (fsm.go) commits each entry on every member
//     through the same store functions;
//   - the gate (gate.go) is the way every write takes to the current
//     engine; a migration pauses it, swaps the engine and resumes it, so no
//     write is lost or served by a stopped engine;
//   - the hub (hub.go) is what every engine publishes to: an in-memory ring
//     of recent log entries and a broadcast wake-up, never a per-session
//     queue;
//   - sessions (session.go) only read the log, each at its own pace, from
//     the ring or, below it, from bbolt; a slow router therefore never
//     blocks writers or other routers;
//   - the resume decision, the log retention and the framing of log entries
//     into Batch frames are pure functions (resume.go), table-tested;
//   - security.go is the controller's side of mutual TLS (router
//     certificates must name the Hello's RouterID; raft runs over
//     raftnode.TLSStreamLayer) and the admin API's bearer token;
//     validate.go compares every connected router's model digest with
//     the controller's (GET /v1/validate);
//   - cluster.go and migrate.go hold the roles (legacy, HA member, retired),
//     forwarding, joining, the migrations and the start-up recovery of an
//     interrupted one.
//
// docs/controller.md describes the store layout, the write paths, group
// commit, distribution, the status fields and the command-line flags;
// docs/migration.md the migrations and their crash behaviour;
// docs/architecture.md ("Session semantics") and docs/protocol.md are the
// contract with the router.
package controller
