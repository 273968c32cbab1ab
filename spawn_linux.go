package claudepool

import "syscall"

// sysProcAttr puts the child in its own process group, so that a stop
// reaches the tools it starts too, and asks the kernel to kill it if the
// thread that started it dies. Pdeathsig is tied to the spawning OS thread
// (golang/go#27505): the pool spawns only from its own goroutines, which
// never lock their thread, so the thread lives as long as the Go process.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
