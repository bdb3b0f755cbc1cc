//go:build unix

package conformance

import (
	"os/exec"
	"syscall"
)

// killProcessGroupOnCancel puts cmd in its own process group and makes
// cancellation kill the whole group: node's test runner runs each test
// file in a child process, which would otherwise outlive a killed parent
// and keep the output pipes open.
func killProcessGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
