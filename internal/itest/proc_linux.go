package itest

import "syscall"

// childAttr makes the kernel SIGKILL a child when the test process dies
// (a test timeout exits without running cleanups).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
