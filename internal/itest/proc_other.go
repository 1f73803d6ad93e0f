//go:build !linux

package itest

import "syscall"

// childAttr: only Linux can tie a child's life to its parent's; elsewhere
// the test's cleanups kill the children.
func childAttr() *syscall.SysProcAttr { return nil }
