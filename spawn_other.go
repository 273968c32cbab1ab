//go:build !unix

package claudepool

import (
	"errors"
	"os"
	"syscall"
)

// Process groups and POSIX signals are Unix features: on other systems
// the pool can only kill the CLI itself, and a stop skips straight to it.

func sysProcAttr() *syscall.SysProcAttr { return nil }

var errNoGroups = errors.New("claudepool: process groups are not supported on this system")

func signalGroup(int, syscall.Signal) error { return errNoGroups }

const (
	sigTerm = syscall.Signal(15)
	sigKill = syscall.Signal(9)
)

var sigInterrupt os.Signal = os.Kill
