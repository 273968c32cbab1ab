package claudepool

import "syscall"

// sysProcAttr puts the child in its own process group, so that a stop
// reaches the tools it starts too, and asks the kernel to kill it if the
// thread that started it dies. Pdeathsig is tied to the spawning OS thread
// (golang/go#27505): the pool spawns only from the spawner's locked
// thread, which lives as long as the pool (see spawner).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
