package raftnode

import (
	"errors"
	"fmt"
)

// Sentinel errors callers act on. Errors returned by Node wrap them (and the
// underlying raft error, when there is one), so test with errors.Is.
var (
	// ErrNotLeader: the call needs the leader and this node is not it. The
	// command was not appended; it is safe to send it to the leader named by
	// the *NotLeaderError that wraps this sentinel.
	ErrNotLeader = errors.New("raftnode: not the leader")

	// ErrLeadershipLost: this node lost leadership after appending the
	// command but before it was committed. The command may or may not be
	// committed by the next leader: the outcome is unknown, so the caller
	// must not blindly retry a non-idempotent command.
	ErrLeadershipLost = errors.New("raftnode: leadership lost, outcome unknown")

	// ErrShutdown: the node is shut down (or shutting down).
	ErrShutdown = errors.New("raftnode: node is shut down")

	// ErrNotFresh: SeedFromSnapshot was called on a node that is not the
	// single voter of a freshly bootstrapped cluster, or whose raft log is
	// already at or above the seed index.
	ErrNotFresh = errors.New("raftnode: cluster is not fresh")

	// ErrSeedFailed: the state machine refused the seed image. The data
	// directory now holds a raft snapshot the state machine could not take;
	// it must be wiped before seeding again.
	ErrSeedFailed = errors.New("raftnode: seeding failed")

	// ErrInvalidConfig: Config.Validate rejected the configuration.
	ErrInvalidConfig = errors.New("raftnode: invalid config")
)

// NotLeaderError is returned for leader-only calls on a follower or
// candidate. It names the leader this node knows of, if any, so the caller
// can redirect. errors.Is(err, ErrNotLeader) holds.
type NotLeaderError struct {
	// LeaderID and LeaderAddr are the known leader's server ID and raft
	// address; both are empty while no leader is known (an election is in
	// progress or this node is partitioned).
	LeaderID, LeaderAddr string
}

// Error implements error.
func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" && e.LeaderAddr == "" {
		return ErrNotLeader.Error() + " (leader unknown)"
	}
	return fmt.Sprintf("%s (leader is %s at %s)", ErrNotLeader, e.LeaderID, e.LeaderAddr)
}

// Is reports whether target is ErrNotLeader, so that callers need not know
// about the concrete type unless they want the leader's address.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
