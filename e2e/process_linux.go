package e2e

import "syscall"

// childAttr makes the kernel send SIGTERM to a child whose parent dies, so
// a runner killed with SIGKILL leaves no simulator or server behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
