//go:build unix

package main

import "syscall"

// openFileLimit returns the process's soft RLIMIT_NOFILE, which the Go
// runtime raised to the hard limit at start-up, and whether it is known.
func openFileLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return uint64(rl.Cur), true // a no-op here, but int64 on some BSDs
}
