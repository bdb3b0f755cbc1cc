//go:build !linux

package e2e

import "syscall"

// childAttr: other systems have no parent-death signal; the runner stops
// its children itself on every path out.
func childAttr() *syscall.SysProcAttr { return nil }
