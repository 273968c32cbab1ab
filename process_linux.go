package claudepool

import "syscall"

// sysProcAttr puts the child in its own process group, so that a stop
// reaches the tools it starts too, and asks the kernel to kill it if the
// thread that started it dies. Pdeathsig is tied to the spawning OS thread
// (golang/go#27505): the pool never spawns from a goroutine locked to its
// thread, so the thread lives as long as the Go process.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
