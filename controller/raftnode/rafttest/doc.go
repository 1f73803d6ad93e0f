// Package rafttest runs in-process raftnode clusters for tests: every node
// has its own raft-boltdb store in a temporary directory and talks to the
// others over raft's InmemTransport, connected all to all. Nodes can be
// killed and restarted on the same data directory, and new nodes joined,
// which is all the fault injection the controller's tests need; there is
// deliberately no network partitioning.
//
// The helpers fail the test (t.Fatal) when a bounded wait runs out, so call
// them from the test's goroutine. Recorder is a small in-memory
// StateMachine that records what it is given.
package rafttest
