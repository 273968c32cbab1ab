package claudepool

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"time"
)

// Nothing a chat starts outlives its reset. Each process runs in a process
// group of its own (its pgid is its pid). When a warm process is ready,
// the pool records its baseline: the other members of its group and its
// other descendants at that moment, which are the MCP servers the CLI
// started with it (Config.MCPServers). At every reset, before the /clear,
// the members and descendants that are not in the baseline are killed
// with SIGKILL, and the reset fails unless they are gone within
// Config.StopGrace. A process that left the group and whose parent died
// (a double fork into a session of its own) is out of reach: the CLI's
// Bash tool ends those itself when its call ends.
//
// A cold process is spawned on a chat's path and never probed: it has no
// moment of readiness before its first chat, so its first reset takes its
// baseline and kills nothing; from its second reset on it is treated as a
// warm one. What its first chat left running stays until it exits.
//
// The processes are read from /proc (Linux). Without /proc the pool keeps
// no baseline and a reset kills nothing.

// procEntry is what the pool reads of one process in /proc/PID/stat.
type procEntry struct {
	pid, ppid, pgrp int
	state           byte   // R, S, D, Z (zombie), ...
	start           uint64 // start time after boot, in clock ticks
	// mark is the value of processMark in its environment: the pool
	// gives each CLI process one of its own, which whatever it starts
	// inherits, also what left its group and its tree (setsid, a double
	// fork). "" when unreadable or absent.
	mark string
}

// processMark names the environment variable that marks every process a
// CLI process starts as its own.
const processMark = "CLAUDEPOOL_PROCESS"

// procID names one process: a PID with its start time, so that a PID
// reused by a later process names another one.
type procID struct {
	pid   int
	start uint64
}

func (e procEntry) id() procID { return procID{e.pid, e.start} }

// exited reports whether the process has exited and only waits to be
// reaped: a zombie runs nothing and holds no file. Its parent reaps it in
// its own time (the CLI, which may never wait for a child its own child
// left behind, or init after a reparenting).
func (e procEntry) exited() bool { return e.state == 'Z' || e.state == 'X' }

// procSet is a set of processes.
type procSet map[procID]struct{}

// readProcs returns every process of the machine, read from /proc; ok is
// false where there is no /proc to read (not Linux, or not mounted). A
// process that ends while it is read is left out.
func readProcs() (procs []procEntry, ok bool) {
	if runtime.GOOS != "linux" {
		return nil, false
	}
	dir, err := os.Open("/proc")
	if err != nil {
		return nil, false
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, false
	}
	procs = make([]procEntry, 0, len(names))
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if e, ok := readStat(pid); ok {
			e.mark = readMark(pid)
			procs = append(procs, e)
		}
	}
	return procs, true
}

// readMark reads processMark from /proc/PID/environ, "" when the process
// has none or is not the pool's to read.
func readMark(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return ""
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(processMark+"=")); ok {
			return string(v)
		}
	}
	return ""
}

// readStat reads /proc/PID/stat.
func readStat(pid int) (procEntry, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procEntry{}, false
	}
	return parseStat(pid, data)
}

// parseStat parses a /proc/PID/stat line: "pid (comm) state ppid pgrp
// session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
// cutime cstime priority nice num_threads itrealvalue starttime ...".
// comm may hold spaces and parentheses; the last ')' ends it.
func parseStat(pid int, data []byte) (procEntry, bool) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procEntry{}, false
	}
	f := bytes.Fields(data[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return procEntry{}, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	start, err3 := strconv.ParseUint(string(f[19]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procEntry{}, false
	}
	return procEntry{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0][0], start: start}, true
}

// family returns the members of root's process group, the processes
// that carry root's mark, and their descendants and root's (found through
// their parents), root excluded.
func family(procs []procEntry, root int) []procEntry {
	children := make(map[int][]int)
	byPID := make(map[int]procEntry, len(procs))
	in := make(map[int]bool)
	queue := []int{root}
	rootMark := ""
	for _, e := range procs {
		if e.pid == root {
			rootMark = e.mark
		}
	}
	for _, e := range procs {
		byPID[e.pid] = e
		children[e.ppid] = append(children[e.ppid], e.pid)
		if e.pid != root && (e.pgrp == root || (rootMark != "" && e.mark == rootMark)) {
			// A member's descendants may have left the group.
			in[e.pid] = true
			queue = append(queue, e.pid)
		}
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			if c != root && !in[c] {
				in[c] = true
				queue = append(queue, c)
			}
		}
	}
	out := make([]procEntry, 0, len(in))
	for pid := range in {
		out = append(out, byPID[pid])
	}
	slices.SortFunc(out, func(a, b procEntry) int { return a.pid - b.pid })
	return out
}

// baselineOf is the set of root and its family in procs.
func baselineOf(procs []procEntry, root int) procSet {
	base := make(procSet)
	for _, e := range procs {
		if e.pid == root {
			base[e.id()] = struct{}{}
		}
	}
	for _, e := range family(procs, root) {
		base[e.id()] = struct{}{}
	}
	return base
}

// leftovers returns the processes of root's family that are not in base.
// It returns none unless root is the process base was taken of: once the
// CLI has exited, its PID may name an unrelated process.
func leftovers(procs []procEntry, root int, base procSet) []procEntry {
	i := slices.IndexFunc(procs, func(e procEntry) bool { return e.pid == root })
	if i < 0 {
		return nil
	}
	if _, ok := base[procs[i].id()]; !ok {
		return nil
	}
	var out []procEntry
	for _, e := range family(procs, root) {
		if _, ok := base[e.id()]; !ok {
			out = append(out, e)
		}
	}
	return out
}

// takeBaseline reads root's family now; nil without /proc.
func takeBaseline(root int) procSet {
	procs, ok := readProcs()
	if !ok {
		return nil
	}
	return baselineOf(procs, root)
}

// killLeftovers sends SIGKILL to the processes of root's family that are
// not in base, and waits until they have exited, at most wait (or until
// ctx ends). Each look at /proc kills what it finds, so that a process
// started by one being killed goes too. It returns how many it killed, and
// an error naming those that did not exit. Without /proc it does nothing.
func killLeftovers(ctx context.Context, root int, base procSet, wait time.Duration) (killed int, err error) {
	deadline := time.Now().Add(wait)
	seen := make(map[procID]bool)
	poll := time.Millisecond
	for {
		procs, ok := readProcs()
		if !ok {
			return len(seen), nil
		}
		var alive []int
		for _, e := range leftovers(procs, root, base) {
			if !e.exited() {
				alive = append(alive, e.pid)
			}
			// A zombie too: a process whose first thread exited shows as
			// one while its other threads run.
			if !seen[e.id()] || !e.exited() {
				seen[e.id()] = true
				killProc(e)
			}
		}
		if len(alive) == 0 {
			return len(seen), nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return len(seen), fmt.Errorf("%d processes it started outlived the reset (pids %v)", len(alive), alive)
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		poll = min(2*poll, 20*time.Millisecond)
	}
}

// killProc sends SIGKILL to e, unless its PID now names another process.
func killProc(e procEntry) {
	p, err := os.FindProcess(e.pid)
	if err != nil {
		return
	}
	defer p.Release()
	// On Linux p holds a pidfd, which keeps naming the process it was
	// opened for: check that it is still the one read.
	if now, ok := readStat(e.pid); !ok || now.start != e.start {
		return
	}
	_ = p.Signal(sigKill)
}
