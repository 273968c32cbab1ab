package claudepool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Bounds of the fault matrix. They are generous upper bounds enforced
// through deadlines, not timings: the faults resolve in milliseconds.
const (
	// faultBound is the longest a caller may wait for the documented error
	// of a fault that does not hang (and, for one that hangs, beyond its
	// deadline).
	faultBound = 5 * time.Second
	// hangDeadline is the caller's deadline against a CLI that hangs.
	hangDeadline = 300 * time.Millisecond
	// closeDeadline is the ctx given to Close while a fault is in flight.
	closeDeadline = 300 * time.Millisecond
	// matrixGrace is the StopGrace of the matrix's pools.
	matrixGrace = 50 * time.Millisecond
	// huge32 is the size of the fault matrix's huge line mid-stream.
	huge32 = 32 << 20
	// hugeElsewhere is its size at the other moments: the fake takes
	// seconds to print 32 MB twice, and the line is read the same way
	// whatever the moment.
	hugeElsewhere = 4 << 20
)

// swapCLI is a claude executable that a test can break and repair between
// spawns: a shell script that execs the fake CLI (keeping its PID) with a
// fault's FAKE_* variables. Each change is an atomic rename, so a spawn
// sees either the old or the new file.
type swapCLI struct {
	path string
}

func newSwapCLI(t *testing.T) *swapCLI {
	t.Helper()
	c := &swapCLI{path: filepath.Join(t.TempDir(), "claude")}
	c.set(t, nil)
	return c
}

// set installs a working CLI that runs the fake with env (KEY=VALUE).
func (c *swapCLI) set(t *testing.T, env []string) {
	t.Helper()
	c.write(t, c.script(env), 0o755)
}

func (c *swapCLI) script(env []string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "%s='%s'; export %s\n", k, v, k)
	}
	fmt.Fprintf(&b, "exec '%s' \"$@\"\n", fakeCLI)
	return b.String()
}

func (c *swapCLI) write(t *testing.T, content string, mode os.FileMode) {
	t.Helper()
	tmp := c.path + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(content), mode))
	require.NoError(t, os.Chmod(tmp, mode))
	require.NoError(t, os.Rename(tmp, c.path))
}

// exeFault names the ways the executable itself can break.
type exeFault int

const (
	exeOK            exeFault = iota
	exeMissing                // removed from disk
	exeNotExecutable          // mode 0644
	exeBadFormat              // executable bit set, not a program
)

// breakExe breaks the executable the way f says.
func (c *swapCLI) breakExe(t *testing.T, f exeFault) {
	t.Helper()
	switch f {
	case exeMissing:
		require.NoError(t, os.Remove(c.path))
	case exeNotExecutable:
		c.write(t, c.script(nil), 0o644)
	case exeBadFormat:
		c.write(t, "\x7fELF but not really a program\n", 0o755)
	default:
		t.Fatalf("breakExe(%d)", f)
	}
}

// outcome is what a caller saw of one chat.
type outcome struct {
	startErr  error // StreamChat's error
	err       error // the stream's Err
	events    int
	types     []EventType
	text      string // the assistant message's text
	result    string // the result's text
	warm      bool
	pid       int
	took      time.Duration // from StreamChat to the end of the stream
	closeTook time.Duration // Stream.Close
}

// error returns the error the caller got, from StreamChat or the stream.
func (o outcome) error() error {
	if o.startErr != nil {
		return o.startErr
	}
	return o.err
}

// chat runs one chat to its end within ctx (bounded by timeout when it is
// not zero) and closes the stream.
func chat(t *testing.T, a *Adapter, text string, timeout time.Duration) outcome {
	t.Helper()
	ctx := testCtx(t)
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	start := time.Now()
	s, err := a.StreamChat(ctx, userMsg(text))
	if err != nil {
		return outcome{startErr: err, took: time.Since(start)}
	}
	o := outcome{warm: s.Acquire().Warm, pid: s.Acquire().PID}
	for s.Next() {
		ev := s.Event()
		o.events++
		o.types = append(o.types, ev.Type)
		if ev.Type == EventAssistant {
			o.text = ev.Text()
		}
	}
	o.err = s.Err()
	o.took = time.Since(start)
	closeStart := time.Now()
	require.NoError(t, s.Close())
	o.closeTook = time.Since(closeStart)
	if r := s.Result(); r != nil {
		o.result = r.Text
	}
	return o
}

// requireOK checks a successful chat that echoed text.
func requireOK(t *testing.T, o outcome, text string) {
	t.Helper()
	require.NoError(t, o.error())
	require.Equal(t, "echo: "+text, o.text)
	require.Equal(t, "echo: "+text, o.result)
}

// requireDocumented fails unless err is one of the errors the library
// documents for a stream: nil, *ExitError, *ResultError, ErrLineTooLong,
// ErrNotReady, ErrCLINotFound, ErrClosed or a context error.
func requireDocumented(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var ee *ExitError
	var re *ResultError
	for _, target := range []error{ErrLineTooLong, ErrNotReady, ErrCLINotFound, ErrClosed,
		context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, target) {
			return
		}
	}
	if errors.As(err, &ee) || errors.As(err, &re) {
		return
	}
	t.Fatalf("undocumented error %T: %v", err, err)
}

// fdSet maps this process's open file descriptors to what they point to.
type fdSet map[string]string

// fdBaseline snapshots this process's file descriptors once the runtime's
// poller exists, so that its lazily opened descriptors are not taken for
// a leak. Comparing what each descriptor points to (a pipe has a new
// inode each time) keeps descriptors that another test leaked, and that
// the garbage collector closes meanwhile, from hiding or faking a leak.
func fdBaseline(t *testing.T) fdSet {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	_ = r.Close()
	_ = w.Close()
	return openFDSet(t)
}

func openFDSet(t *testing.T) fdSet {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	fds := make(fdSet, len(entries))
	for _, e := range entries {
		// The directory read itself has a descriptor that is gone now.
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			fds[e.Name()] = target
		}
	}
	return fds
}

// requireNoNewFDs fails if a descriptor is open now that was not in before.
func requireNoNewFDs(t *testing.T, before fdSet) {
	t.Helper()
	for fd, target := range openFDSet(t) {
		if before[fd] != target {
			t.Errorf("file descriptor %s -> %s left open", fd, target)
		}
	}
}

// strays lists the processes that a pool of fakes may have left: children
// of this process (zombies included), and any process in the group of a
// CLI the fake recorded (the CLI's own tools and grandchildren, which the
// fake does not record).
func strays(t *testing.T, cliPIDs []int) []procEntry {
	t.Helper()
	groups := make(map[int]bool, len(cliPIDs))
	for _, pid := range cliPIDs {
		groups[pid] = true
	}
	self := os.Getpid()
	var out []procEntry
	for _, p := range procTable(t) {
		if p.ppid == self || groups[p.pgrp] {
			out = append(out, p)
		}
	}
	return out
}

// requireClean closes the pool (if not yet) and checks that nothing it
// ever started is left: no process, no child, no file descriptor beyond
// fds, no goroutine.
func requireClean(t *testing.T, fp *fakePool, fds fdSet) {
	t.Helper()
	ctx := testCtx(t)
	_ = fp.Close(ctx)
	pids := fp.pids()
	requireGone(t, pids)
	for _, p := range strays(t, pids) {
		// A reparented grandchild's exit is awaited, never slept for.
		if !waitExited(p.pid, 5*time.Second) {
			t.Errorf("process %d (ppid %d, group %d, state %c) left behind", p.pid, p.ppid, p.pgrp, p.state)
		}
	}
	require.Zero(t, fp.Stats().Live, "processes still tracked after Close")
	requireNoNewFDs(t, fds)
	goleak.VerifyNone(t)
}

// fault is one row of the fault matrix: a way the CLI misbehaves, how to
// cause it, and what the caller must get.
type fault struct {
	name string
	// base is the environment of every process of the pool: properties of
	// the CLI that are not faults by themselves.
	base []string
	// hugeBytes is the size of the fake's huge reply (FAKE_HUGE_BYTES).
	hugeBytes int
	// spawnEnv makes a spawned CLI fail before it can serve a request:
	// its probe or its initialize fails. Used while idle and at acquire.
	spawnEnv []string
	// turnEnv makes every turn of a spawned CLI fail. Used while idle and
	// at acquire when spawnEnv is nil.
	turnEnv []string
	// marker is the fake's mode for one turn, used mid-stream and during
	// Close; "" when the fault cannot happen in a turn.
	marker string
	// exe breaks the executable instead.
	exe exeFault
	// hangs says that the turn never ends by itself: the caller runs it
	// with hangDeadline, and Close has to kill it.
	hangs bool
	// slow is the caller's deadline for a fault that takes long to play
	// out (0: faultBound).
	slow time.Duration
	// firstEvent says that the faulty turn prints an event before the
	// fault, so that the test can wait until the turn is mid-stream.
	firstEvent bool
	cfg        func(*Config)
	// spawnLog is part of the logged error of a failed warm spawn.
	spawnLog string
	// wantSpawn checks what a caller gets from a cold CLI with spawnEnv.
	wantSpawn func(t *testing.T, o outcome)
	// wantTurn checks what a caller gets from a turn with the fault.
	wantTurn func(t *testing.T, fp *fakePool, o outcome)
	// crashIdle also crashes a warm process while it waits in the pool.
	crashIdle bool
	// skipMid explains why the fault has no mid-stream case.
	skipMid string
	// reset is the fake's reset mode that brings the fault into the reset
	// of a process between two chats; "" when it has no counterpart there.
	reset string
}

func wantExit(code int, stderr string) func(t *testing.T, o outcome) {
	return func(t *testing.T, o outcome) {
		t.Helper()
		require.NoError(t, o.startErr)
		var ee *ExitError
		require.ErrorAs(t, o.err, &ee)
		require.Equal(t, code, ee.Code, "exit code")
		require.Contains(t, ee.Stderr, stderr)
	}
}

func wantDeadline(t *testing.T, _ *fakePool, o outcome) {
	t.Helper()
	require.NoError(t, o.startErr)
	requireErrorIs(t, o.err, context.DeadlineExceeded)
}

func faults() []fault {
	mode := func(m string) string { return fakecli.EnvMode + "=" + m }
	return []fault{
		{
			name:     "exits before reading stdin",
			spawnEnv: []string{mode(fakecli.ModeExitEarly), fakecli.EnvExitCode + "=0"},
			spawnLog: "exited before answering mcp_status",
			// Exit code 0 without having answered anything is still an
			// exit without a result.
			wantSpawn: wantExit(0, "fatal: fake start-up failure"),
			skipMid:   "a process that exits before reading stdin never reaches a stream; a process that dies mid-stream is the crash row",
		},
		{
			name:      "exits 1 with stderr",
			reset:     fakecli.ResetExit,
			spawnEnv:  []string{mode(fakecli.ModeExitEarly)},
			spawnLog:  "fatal: fake start-up failure",
			wantSpawn: wantExit(1, "fatal: fake start-up failure"),
			skipMid:   "the CLI's exit 1 after a turn is the error-result row; without a result it is the crash row",
		},
		{
			name:       "reports is_error and exits 1",
			turnEnv:    []string{mode(fakecli.ModeErrorResult)},
			marker:     fakecli.ModeErrorResult,
			firstEvent: true,
			wantTurn: func(t *testing.T, _ *fakePool, o outcome) {
				var re *ResultError
				require.ErrorAs(t, o.error(), &re)
				require.Equal(t, 401, re.APIErrorStatus)
				require.Contains(t, re.Message, "API error 401")
			},
		},
		{
			name:       "crashes mid-stream",
			reset:      fakecli.ResetExit,
			crashIdle:  true,
			turnEnv:    []string{mode(fakecli.ModeCrash)},
			marker:     fakecli.ModeCrash,
			firstEvent: true,
			wantTurn: func(t *testing.T, _ *fakePool, o outcome) {
				wantExit(2, "panic: fake crash")(t, o)
				require.Equal(t, []EventType{EventInit}, o.types, "events before the crash")
			},
		},
		{
			name: "hangs before output",
			// A CLI that never answers: its probe, or the caller's
			// initialize, times out after ReadyTimeout.
			spawnEnv: []string{mode(fakecli.ModeNoReady)},
			cfg:      func(c *Config) { c.ReadyTimeout = 200 * time.Millisecond },
			spawnLog: "did not answer mcp_status",
			wantSpawn: func(t *testing.T, o outcome) {
				require.NoError(t, o.startErr)
				requireErrorIs(t, o.err, ErrNotReady)
				require.ErrorContains(t, o.err, "did not answer initialize")
			},
			// In a turn: nothing after the user line.
			marker:   fakecli.ModeHang,
			hangs:    true,
			wantTurn: wantDeadline,
		},
		{
			name:       "hangs mid-stream",
			reset:      fakecli.ResetHang,
			turnEnv:    []string{mode(fakecli.ModeHangMid)},
			marker:     fakecli.ModeHangMid,
			hangs:      true,
			firstEvent: true,
			wantTurn: func(t *testing.T, fp *fakePool, o outcome) {
				wantDeadline(t, fp, o)
				require.Equal(t, []EventType{EventInit}, o.types, "events before the hang")
			},
		},
		{
			name:       "emits garbage lines",
			reset:      fakecli.ResetGarbage,
			turnEnv:    []string{mode(fakecli.ModeGarbage)},
			marker:     fakecli.ModeGarbage,
			firstEvent: true,
			wantTurn: func(t *testing.T, fp *fakePool, o outcome) {
				require.NoError(t, o.error())
				require.Equal(t, []EventType{EventInit, EventAssistant, EventResult}, o.types)
				require.Equal(t, o.text, o.result)
				require.GreaterOrEqual(t, fp.Stats().MalformedLines, int64(1))
			},
		},
		{
			name:       "emits a 32 MB line",
			hugeBytes:  huge32,
			turnEnv:    []string{mode(fakecli.ModeHuge)},
			marker:     fakecli.ModeHuge,
			slow:       testWait,
			firstEvent: true,
			wantTurn: func(t *testing.T, fp *fakePool, o outcome) {
				// Under the default MaxLineBytes (64 MiB) the whole text
				// arrives.
				require.NoError(t, o.error())
				require.Len(t, o.text, fp.hugeBytes(t))
				require.Len(t, o.result, fp.hugeBytes(t))
				require.Equal(t, strings.Repeat("abcdefghijklmnopqrstuvwxyz", 2)[:52], o.text[:52])
			},
		},
		{
			name:       "emits a 32 MB line over MaxLineBytes",
			hugeBytes:  huge32,
			cfg:        func(c *Config) { c.MaxLineBytes = 1 << 20 },
			turnEnv:    []string{mode(fakecli.ModeHuge)},
			marker:     fakecli.ModeHuge,
			slow:       testWait,
			firstEvent: true,
			wantTurn: func(t *testing.T, _ *fakePool, o outcome) {
				requireErrorIs(t, o.error(), ErrLineTooLong)
				require.Equal(t, []EventType{EventInit}, o.types)
			},
		},
		{
			name:  "ignores SIGTERM",
			reset: fakecli.ResetHang,
			// Every process ignores SIGINT and SIGTERM; the faulty turn
			// also hangs, so only SIGKILL ends it.
			base:       []string{fakecli.EnvIgnoreSIGTERM + "=1"},
			turnEnv:    []string{mode(fakecli.ModeHangMid)},
			marker:     fakecli.ModeHangMid,
			hangs:      true,
			firstEvent: true,
			wantTurn: func(t *testing.T, fp *fakePool, o outcome) {
				wantDeadline(t, fp, o)
				recs := fp.logs.waitFor(t, "claudepool: process did not stop, sending SIGKILL", 1)
				require.EqualValues(t, o.pid, attr(recs[len(recs)-1], "pid").Int64())
			},
		},
		{
			name:       "leaves a grandchild holding stdout",
			turnEnv:    []string{mode(fakecli.ModeGrandchild)},
			marker:     fakecli.ModeGrandchild,
			firstEvent: true,
			wantTurn: func(t *testing.T, _ *fakePool, o outcome) {
				require.NoError(t, o.error())
				require.Equal(t, o.text, o.result)
				require.NotEmpty(t, o.text)
			},
		},
		{
			name:    "closes stdout early and keeps running",
			turnEnv: []string{mode(fakecli.ModeCloseStdout)},
			marker:  fakecli.ModeCloseStdout,
			wantTurn: func(t *testing.T, _ *fakePool, o outcome) {
				require.NoError(t, o.startErr)
				var ee *ExitError
				require.ErrorAs(t, o.err, &ee)
				require.Zero(t, o.events)
			},
		},
		{name: "executable disappears", exe: exeMissing},
		{name: "executable is not executable", exe: exeNotExecutable},
		{name: "executable is not a program", exe: exeBadFormat},
	}
}

// newMatrixPool starts a pool of size processes running c.
func (f fault) newPool(t *testing.T, c *swapCLI, size int, edit func(*Config)) *fakePool {
	t.Helper()
	// One chat a process: a fault set in a CLI's environment stays with
	// it, and must not follow the pool into the next chat. Reuse has a
	// moment of its own (faultDuringReset).
	cfg := Config{Command: c.path, Size: size, StopGrace: matrixGrace, ReadyTimeout: faultBound, MaxUses: 1}
	if f.cfg != nil {
		f.cfg(&cfg)
	}
	if edit != nil {
		edit(&cfg)
	}
	env := f.base
	if f.hugeBytes > 0 {
		env = append(env[:len(env):len(env)], fakecli.EnvHugeBytes+"="+strconv.Itoa(f.hugeBytes))
	}
	return newFakePool(t, cfg, env...)
}

// hugeBytes is the size of the fake's huge reply in this pool.
func (fp *fakePool) hugeBytes(t *testing.T) int {
	t.Helper()
	for _, kv := range fp.cfg.Env {
		if v, ok := strings.CutPrefix(kv, fakecli.EnvHugeBytes+"="); ok {
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no " + fakecli.EnvHugeBytes + " in the pool's environment")
	return 0
}

// timeout is the caller's deadline for a turn with the fault.
func (f fault) timeout() time.Duration {
	switch {
	case f.hangs:
		return hangDeadline
	case f.slow > 0:
		return f.slow
	}
	return faultBound
}

// requireBounded checks that the caller got its answer, and its Close,
// within the matrix's bounds.
func (f fault) requireBounded(t *testing.T, o outcome) {
	t.Helper()
	requireDocumented(t, o.error())
	require.Less(t, o.took, f.timeout()+faultBound, "caller waited too long")
	require.Less(t, o.closeTook, 2*matrixGrace+faultBound, "Stream.Close took too long")
}

// serves checks that the pool still answers a healthy chat, warm when it
// has warm processes.
func serves(t *testing.T, fp *fakePool, a *Adapter) {
	t.Helper()
	if fp.cfg.Size > 0 {
		require.NoError(t, fp.WaitReady(testCtx(t)))
	}
	o := chat(t, a, "still serving", faultBound)
	requireOK(t, o, "still serving")
	require.Equal(t, fp.cfg.Size > 0, o.warm)

	// Among the chats, a text the CLI would run as a command reaches the
	// model as text, and a model the API rejects fails its chat alone.
	requireOK(t, chat(t, a, "/model claude-haiku-5-5", faultBound), "/model claude-haiku-5-5")
	req := userMsg("x")
	req.Model = "claude-" + fakecli.RejectedModel + "-1"
	s, err := a.StreamChat(testCtx(t), req)
	require.NoError(t, err)
	drain(t, s)
	var re *ResultError
	require.ErrorAs(t, s.Err(), &re)
	require.Equal(t, 404, re.APIErrorStatus)
	require.NoError(t, s.Close())
	o = chat(t, a, "after", faultBound)
	requireOK(t, o, "after")
}

// TestFaultMatrix injects each fault at each moment of a process's life
// (idle in the pool, at acquire, mid-stream, during Close) and checks that
// the caller gets the documented error within a bound, that the pool goes
// on serving, and that no process, file descriptor or goroutine is left.
func TestFaultMatrix(t *testing.T) {
	moments := []struct {
		name string
		run  func(t *testing.T, f fault, fds fdSet)
	}{
		{"idle", faultIdle},
		{"acquire", faultAtAcquire},
		{"mid-stream", faultMidStream},
		{"close", faultDuringClose},
		{"reset", faultDuringReset},
	}
	for _, f := range faults() {
		t.Run(f.name, func(t *testing.T) {
			for _, m := range moments {
				t.Run(m.name, func(t *testing.T) {
					f := f
					if f.hugeBytes > 0 && m.name != "mid-stream" {
						f.hugeBytes = hugeElsewhere
					}
					m.run(t, f, fdBaseline(t))
				})
			}
		})
	}
}

// faultIdle: the fault is in the CLI while the pool fills. The pool sees
// spawn failures (logged, counted, retried) and the caller meanwhile gets
// a cold process; a process that passed its probe and carries a fault
// into the caller's turn gives the documented error.
func faultIdle(t *testing.T, f fault, fds fdSet) {
	c := newSwapCLI(t)
	var fp *fakePool
	switch {
	case f.exe != exeOK:
		fp = f.newPool(t, c, 1, nil)
		a := NewAdapter(fp.Pool)
		require.NoError(t, fp.WaitReady(testCtx(t)))
		c.breakExe(t, f.exe)
		// The warm process started from the old file and still serves.
		o := chat(t, a, "warm", faultBound)
		requireOK(t, o, "warm")
		require.True(t, o.warm)
		// The refill that acquire asked for fails; it is logged and counted.
		recs := fp.logs.waitFor(t, "claudepool: spawn failed", 1)
		requireSpawnLog(t, recs[0], "claude CLI not found")
		require.GreaterOrEqual(t, fp.Stats().SpawnFailures, int64(1))
		// Callers get the error at once.
		o = chat(t, a, "x", faultBound)
		requireErrorIs(t, o.startErr, ErrCLINotFound)
		f.requireBounded(t, o)
		// The CLI comes back: the refill recovers by itself.
		c.set(t, nil)
		serves(t, fp, a)
	case f.spawnEnv != nil:
		c.set(t, f.spawnEnv)
		fp = f.newPool(t, c, 1, nil)
		a := NewAdapter(fp.Pool)
		recs := fp.logs.waitFor(t, "claudepool: spawn failed", 1)
		requireSpawnLog(t, recs[0], f.spawnLog)
		require.GreaterOrEqual(t, fp.Stats().SpawnFailures, int64(1))
		o := chat(t, a, "x", faultBound)
		require.False(t, o.warm, "no warm process can be ready")
		f.wantSpawn(t, o)
		f.requireBounded(t, o)
		c.set(t, nil)
		serves(t, fp, a)
	default:
		c.set(t, f.turnEnv)
		fp = f.newPool(t, c, 1, nil)
		a := NewAdapter(fp.Pool)
		require.NoError(t, fp.WaitReady(testCtx(t)))
		if f.crashIdle {
			// The warm process dies in the pool: the pool logs it, counts
			// it, and spawns another.
			victim := fp.pids()[0]
			require.NoError(t, syscall.Kill(victim, syscall.SIGKILL))
			recs := fp.logs.waitFor(t, "claudepool: idle process exited", 1)
			require.EqualValues(t, victim, attr(recs[0], "pid").Int64())
			require.Contains(t, attr(recs[0], "err").String(), "signal killed")
			require.EqualValues(t, 1, fp.Stats().DeadIdle)
			require.NoError(t, fp.WaitReady(testCtx(t)))
		}
		// Repaired before the faulty warm process is taken: the refill
		// that acquire starts spawns a healthy one.
		c.set(t, nil)
		o := chat(t, a, "x", f.timeout())
		require.True(t, o.warm)
		f.wantTurn(t, fp, o)
		f.requireBounded(t, o)
		serves(t, fp, a)
	}
	requireClean(t, fp, fds)
}

// faultAtAcquire: the fault is in the CLI when a caller's acquire spawns
// a cold process.
func faultAtAcquire(t *testing.T, f fault, fds fdSet) {
	c := newSwapCLI(t)
	fp := f.newPool(t, c, 0, nil)
	a := NewAdapter(fp.Pool)
	switch {
	case f.exe != exeOK:
		c.breakExe(t, f.exe)
		o := chat(t, a, "x", faultBound)
		requireErrorIs(t, o.startErr, ErrCLINotFound)
		f.requireBounded(t, o)
		require.EqualValues(t, 1, fp.Stats().SpawnFailures)
	case f.spawnEnv != nil:
		c.set(t, f.spawnEnv)
		o := chat(t, a, "x", faultBound)
		f.wantSpawn(t, o)
		f.requireBounded(t, o)
	default:
		c.set(t, f.turnEnv)
		o := chat(t, a, "x", f.timeout())
		require.False(t, o.warm)
		f.wantTurn(t, fp, o)
		f.requireBounded(t, o)
	}
	c.set(t, nil)
	serves(t, fp, a)
	requireClean(t, fp, fds)
}

// faultMidStream: the fault strikes in the turn of a healthy warm process.
func faultMidStream(t *testing.T, f fault, fds fdSet) {
	if f.skipMid != "" {
		t.Skip(f.skipMid)
	}
	c := newSwapCLI(t)
	if f.exe != exeOK {
		// A cold process, so that no refill races with the breakage.
		fp := f.newPool(t, c, 0, nil)
		a := NewAdapter(fp.Pool)
		s, err := a.StreamChat(testCtx(t), userMsg("mid"))
		require.NoError(t, err)
		require.True(t, s.Next(), "first event: %v", s.Err())
		c.breakExe(t, f.exe)
		// The running process is not affected.
		for s.Next() {
		}
		require.NoError(t, s.Err())
		require.Equal(t, "echo: mid", s.Result().Text)
		require.NoError(t, s.Close())
		o := chat(t, a, "x", faultBound)
		requireErrorIs(t, o.startErr, ErrCLINotFound)
		f.requireBounded(t, o)
		c.set(t, nil)
		serves(t, fp, a)
		requireClean(t, fp, fds)
		return
	}
	fp := f.newPool(t, c, 1, nil)
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(testCtx(t)))
	o := chat(t, a, "x "+fakecli.Marker(f.marker), f.timeout())
	require.True(t, o.warm)
	f.wantTurn(t, fp, o)
	f.requireBounded(t, o)
	serves(t, fp, a)
	requireClean(t, fp, fds)
}

// faultDuringClose: the fault is in flight when Close starts. Close must
// return within its ctx (plus the stop grace), with an error wrapping
// ctx.Err() only when it had to kill a busy process.
func faultDuringClose(t *testing.T, f fault, fds fdSet) {
	c := newSwapCLI(t)
	// A turn that ends by itself gets the time it needs; one that hangs
	// holds Close until closeDeadline.
	closeCtx := f.timeout()
	if f.hangs {
		closeCtx = closeDeadline
	}
	closeBounded := func(fp *fakePool) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(testCtx(t), closeCtx)
		defer cancel()
		start := time.Now()
		err := fp.Close(ctx)
		require.Less(t, time.Since(start), closeCtx+faultBound, "Close outlived its ctx")
		return err
	}
	switch {
	case f.exe != exeOK:
		fp := f.newPool(t, c, 1, nil)
		require.NoError(t, fp.WaitReady(testCtx(t)))
		c.breakExe(t, f.exe)
		// Take the warm process: the refill now fails and backs off.
		requireOK(t, chat(t, NewAdapter(fp.Pool), "x", faultBound), "x")
		fp.logs.waitFor(t, "claudepool: spawn failed", 1)
		require.NoError(t, closeBounded(fp))
		requireClean(t, fp, fds)
	case f.marker == "":
		// Spawns keep failing while Close runs.
		c.set(t, f.spawnEnv)
		fp := f.newPool(t, c, 2, nil)
		fp.logs.waitFor(t, "claudepool: spawn failed", 1)
		require.NoError(t, closeBounded(fp))
		requireClean(t, fp, fds)
	default:
		if f.spawnEnv != nil {
			// Spawns whose probe is pending when Close starts: Close
			// aborts them, and that is not a spawn failure.
			t.Run("pending probes", func(t *testing.T) {
				fds := fdBaseline(t)
				c := newSwapCLI(t)
				c.set(t, f.spawnEnv)
				fp := f.newPool(t, c, 2, func(c *Config) { c.ReadyTimeout = time.Hour })
				fp.logs.waitFor(t, "claudepool: process started", 2)
				require.NoError(t, closeBounded(fp))
				require.Zero(t, fp.Stats().SpawnFailures)
				requireClean(t, fp, fds)
			})
		}
		fp := f.newPool(t, c, 1, nil)
		require.NoError(t, fp.WaitReady(testCtx(t)))
		s, err := NewAdapter(fp.Pool).StreamChat(testCtx(t), userMsg("x "+fakecli.Marker(f.marker)))
		require.NoError(t, err)
		o := outcome{warm: s.Acquire().Warm, pid: s.Acquire().PID}
		if f.firstEvent {
			// The turn is under way before Close starts.
			require.True(t, s.Next(), "first event: %v", s.Err())
			o.events, o.types = 1, []EventType{s.Event().Type}
		}
		closed := make(chan error, 1)
		go func() { closed <- closeBounded(fp) }()
		for s.Next() {
			ev := s.Event()
			o.events++
			o.types = append(o.types, ev.Type)
			if ev.Type == EventAssistant {
				o.text = ev.Text()
			}
		}
		o.err = s.Err()
		require.NoError(t, s.Close())
		if r := s.Result(); r != nil {
			o.result = r.Text
		}
		closeErr := <-closed
		requireDocumented(t, o.err)
		if f.hangs {
			// Close waited for the busy process until its ctx ended, then
			// killed it; the caller's stream says so, with the exit.
			requireErrorIs(t, closeErr, context.DeadlineExceeded)
			require.ErrorContains(t, closeErr, "killed 1 busy processes")
			requireErrorIs(t, o.err, ErrClosed)
			var ee *ExitError
			require.ErrorAs(t, o.err, &ee)
			require.Equal(t, "killed", ee.Signal)
		} else {
			require.NoError(t, closeErr)
			f.wantTurn(t, fp, o)
		}
		requireClean(t, fp, fds)
	}
}

// faultDuringReset: the fault strikes while the pool resets a process
// between two chats. The first chat has its answer already; the process
// is retired, and the next chat runs on another one and sees nothing of
// the first.
func faultDuringReset(t *testing.T, f fault, fds fdSet) {
	if f.reset == "" {
		t.Skip("no counterpart in a reset")
	}
	c := newSwapCLI(t)
	fp := f.newPool(t, c, 1, func(c *Config) {
		c.MaxUses = 0
		c.ReadyTimeout = hangDeadline // bounds a reset that hangs
		c.Env = append(c.Env, fakecli.EnvEchoHistory+"=1")
	})
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(testCtx(t)))
	first := "first " + fakecli.ResetMarker(f.reset)
	o1 := chat(t, a, first, faultBound)
	requireOK(t, o1, first)
	requireResetFailed(t, fp, o1.pid)
	require.NoError(t, fp.WaitReady(testCtx(t)))
	o2 := chat(t, a, "second", faultBound)
	requireOK(t, o2, "second") // the fake echoes the whole conversation
	require.NotEqual(t, o1.pid, o2.pid)
	requireClean(t, fp, fds)
}

// requireResetFailed waits until the reset of process pid has failed and
// the process is gone, counted as a failed reset.
func requireResetFailed(t *testing.T, fp *fakePool, pid int) {
	t.Helper()
	recs := fp.logs.waitFor(t, "claudepool: reset failed", 1)
	require.EqualValues(t, pid, attr(recs[0], "pid").Int64())
	require.True(t, waitExited(pid, testWait), "process %d retired", pid)
	// The reset logs its failure before it retires the process, and the
	// process may exit on its own before that: wait for the count.
	st := waitStats(t, fp, "the failed reset counted", func(st Stats) bool { return st.Retired[RetireResetFailed] >= 1 })
	require.EqualValues(t, 1, st.Retired[RetireResetFailed])
	require.Zero(t, st.Reuses)
}

// requireSpawnLog checks a "spawn failed" record: it carries the error
// and the retry delay.
func requireSpawnLog(t *testing.T, r slog.Record, want string) {
	t.Helper()
	require.Contains(t, attr(r, "err").String(), want)
	require.Positive(t, attr(r, "retry_in").Duration())
	require.Positive(t, attr(r, "consecutive_failures").Int64())
}

// Every wait in the library is bounded by a ctx or a documented timeout
// (ReadyTimeout, StopGrace). The tests below hold the library against a
// CLI that never answers and ignores SIGINT and SIGTERM, with
// ReadyTimeout far away, so that only the caller's ctx can end the wait.

// neverAnswers starts a pool whose CLI never answers anything and only
// dies by SIGKILL.
func neverAnswers(t *testing.T, size int) *fakePool {
	t.Helper()
	return newFakePool(t, Config{Size: size, ReadyTimeout: time.Hour, StopGrace: 20 * time.Millisecond},
		fakecli.EnvMode+"="+fakecli.ModeNoReady, fakecli.EnvIgnoreSIGTERM+"=1")
}

func TestDeadlineStreamChatOnSilentCLI(t *testing.T) {
	fds := fdBaseline(t)
	fp := neverAnswers(t, 0)
	ctx, cancel := context.WithTimeout(testCtx(t), hangDeadline)
	defer cancel()
	start := time.Now()
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x"))
	require.NoError(t, err)
	require.False(t, s.Next())
	requireErrorIs(t, s.Err(), context.DeadlineExceeded)
	require.Less(t, time.Since(start), hangDeadline+faultBound, "StreamChat outlived the caller's deadline")
	// Close stops the process (SIGINT, SIGTERM, SIGKILL) within its
	// grace periods.
	closeStart := time.Now()
	require.NoError(t, s.Close())
	require.Less(t, time.Since(closeStart), 2*fp.cfg.StopGrace+faultBound)
	require.True(t, waitExited(s.Acquire().PID, 0), "process not reaped after Stream.Close")
	fp.logs.waitFor(t, "claudepool: process did not stop, sending SIGKILL", 1)
	requireClean(t, fp, fds)
}

func TestDeadlineStreamChatWithoutCtxDeadline(t *testing.T) {
	// With no deadline on ctx, ReadyTimeout bounds the handshake.
	fp := newFakePool(t, Config{ReadyTimeout: 100 * time.Millisecond, StopGrace: 20 * time.Millisecond},
		fakecli.EnvMode+"="+fakecli.ModeNoReady, fakecli.EnvIgnoreSIGTERM+"=1")
	s, err := NewAdapter(fp.Pool).StreamChat(context.Background(), userMsg("x"))
	require.NoError(t, err)
	defer s.Close()
	done := make(chan bool, 1)
	go func() { done <- s.Next() }()
	select {
	case next := <-done:
		require.False(t, next)
	case <-time.After(testWait):
		t.Fatal("Next outlived ReadyTimeout")
	}
	requireErrorIs(t, s.Err(), ErrNotReady)
}

func TestDeadlineCloseWithSilentBusyCLI(t *testing.T) {
	fds := fdBaseline(t)
	fp := neverAnswers(t, 0)
	s, err := NewAdapter(fp.Pool).StreamChat(testCtx(t), userMsg("x"))
	require.NoError(t, err)
	// The stream waits for its initialize answer, which never comes.
	ctx, cancel := context.WithTimeout(testCtx(t), closeDeadline)
	defer cancel()
	start := time.Now()
	err = fp.Close(ctx)
	require.Less(t, time.Since(start), closeDeadline+faultBound, "Close outlived its ctx")
	requireErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, s.Next())
	requireDocumented(t, s.Err())
	require.NoError(t, s.Close())
	requireClean(t, fp, fds)
}

func TestDeadlineCloseWithSilentStartingCLI(t *testing.T) {
	fds := fdBaseline(t)
	fp := neverAnswers(t, 2)
	fp.logs.waitFor(t, "claudepool: process started", 2)
	ctx, cancel := context.WithTimeout(testCtx(t), closeDeadline)
	defer cancel()
	start := time.Now()
	// The probes in flight are aborted; the processes ignore SIGTERM and
	// are killed after the stop grace.
	require.NoError(t, fp.Close(ctx))
	require.Less(t, time.Since(start), closeDeadline+faultBound, "Close outlived its ctx")
	require.Zero(t, fp.Stats().SpawnFailures)
	requireClean(t, fp, fds)
}

// Regressions found by the tests above.

func TestStreamChatCLIExitsZeroAtStart(t *testing.T) {
	// A CLI that exits 0 before answering anything ended without a
	// result: the caller gets an *ExitError like for any other code.
	ctx := testCtx(t)
	fp := newFakePool(t, Config{}, fakecli.EnvMode+"="+fakecli.ModeExitEarly, fakecli.EnvExitCode+"=0")
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x"))
	require.NoError(t, err)
	defer s.Close()
	require.False(t, s.Next())
	var ee *ExitError
	require.ErrorAs(t, s.Err(), &ee)
	require.Equal(t, 0, ee.Code)
	require.Contains(t, ee.Stderr, "fatal: fake start-up failure")
	require.ErrorContains(t, s.Err(), "exited before answering initialize")
}

func TestSpawnExecFormatErrorIsCLINotFound(t *testing.T) {
	// A CLI file that is executable but not a program could not be run:
	// ErrCLINotFound, like a missing one.
	ctx := testCtx(t)
	cli := filepath.Join(t.TempDir(), "claude")
	require.NoError(t, os.WriteFile(cli, []byte("\x7fELF but not really a program\n"), 0o755))
	fp := newFakePool(t, Config{Command: cli})
	_, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x"))
	requireErrorIs(t, err, ErrCLINotFound)
	require.ErrorContains(t, err, "exec format error")
}

func TestCloseWithUnreadStream(t *testing.T) {
	// A caller that stopped reading its stream (and has not closed it)
	// must not hold Close, even with a ctx that never ends: once the CLI
	// has answered, the stream needs nothing more from the pool.
	fp := newFakePool(t, Config{Size: 1, PartialMessages: true},
		fakecli.EnvChunks+"=100", fakecli.EnvReply+"="+strings.Repeat("word ", 100))
	require.NoError(t, fp.WaitReady(testCtx(t)))
	s, err := NewAdapter(fp.Pool).StreamChat(testCtx(t), userMsg("x"))
	require.NoError(t, err)
	require.True(t, s.Next())
	// The CLI prints every event and its result; the pool resets the
	// process.
	fp.logs.waitFor(t, "claudepool: process reset", 1)

	closed := make(chan error, 1)
	go func() { closed <- fp.Close(context.Background()) }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(testWait):
		t.Error("Close waited for a stream nobody reads")
		require.NoError(t, s.Close()) // unblock it
		<-closed
	}
	// The caller who comes back finds every event, then the result.
	n := 1
	for s.Next() {
		n++
	}
	require.NoError(t, s.Err())
	require.NotNil(t, s.Result())
	require.Greater(t, n, 100, "events delivered")
	require.NoError(t, s.Close())
}

func TestDeadIdleProcessReleasesPipes(t *testing.T) {
	fds := fdBaseline(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(testCtx(t)))
	victim := fp.pids()[0]
	require.NoError(t, syscall.Kill(victim, syscall.SIGKILL))
	fp.logs.waitFor(t, "claudepool: idle process exited", 1)
	require.NoError(t, fp.WaitReady(testCtx(t)))
	require.NoError(t, fp.Close(testCtx(t)))
	requireNoNewFDs(t, fds)
}

func TestProcessReadToEndReleasesPipes(t *testing.T) {
	// The documented way to finish with a process is to read its output
	// to the end, or to Stop it: reading to the end must be enough.
	fds := fdBaseline(t)
	fp := newFakePool(t, Config{})
	proc, err := fp.Acquire(testCtx(t))
	require.NoError(t, err)
	require.NoError(t, proc.WriteLine([]byte(`{"type":"user","session_id":"","message":{"role":"user","content":"hi"},"parent_tool_use_id":null}`)))
	require.NoError(t, proc.CloseStdin())
	for {
		if _, err := proc.ReadLine(); err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
	}
	require.NoError(t, proc.Wait(testCtx(t)))
	requireNoNewFDs(t, fds)
}
