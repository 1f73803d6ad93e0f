package raftnode

// ForceSnapshot makes n take a snapshot now, for tests of the snapshot path.
func ForceSnapshot(n *Node) error { return n.raft.Snapshot().Error() }
