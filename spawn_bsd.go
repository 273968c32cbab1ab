//go:build unix && !linux

package claudepool

import "syscall"

// sysProcAttr puts the child in its own process group, so that a stop
// reaches the tools it starts too.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
