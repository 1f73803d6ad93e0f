// Package demo runs indexgate end to end on one machine with real processes
// on 127.0.0.1: a controller, three routers, a write load, a router killed
// with SIGKILL and restarted, a filter hot swap, and a convergence check that
// compares every router's model with what the controller acknowledged.
//
// It drives the binaries only through their command lines and admin HTTP
// APIs, exactly as an operator would, so it doubles as a smoke test of the
// operator surface.
package demo
