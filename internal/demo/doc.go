// Package demo runs indexgate end to end on one machine with real processes
// on 127.0.0.1, under a continuous write load: a legacy controller and three
// routers; a router killed with SIGKILL and restarted; a live migration of
// the controller to a 3-node raft cluster; a hot swap of every router's HA
// filter (a pinned example module); the raft leader killed with SIGKILL while
// writes continue on the survivors; and a convergence check that compares
// every router's model with what the controllers acknowledged.
//
// It drives the binaries only through their command lines and admin HTTP
// APIs, exactly as an operator would, so it doubles as a smoke test of the
// operator surface.
package demo
