package claudepool

// Regression tests for issue 13, "Reliability, round two": one test (or a
// few) per item, each against the fake CLI and each failing without the
// item's fix.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// heldPipe names the output pipe of a CLI that an escaped descendant keeps
// open.
type heldPipe string

const (
	holdStdout heldPipe = "stdout"
	holdStderr heldPipe = "stderr"
)

// holderCLI is a CLI wrapper that, before it execs target (keeping its
// PID), starts a sleep in a session of its own, out of reach of the
// signals the pool sends to the CLI's process group, that keeps one of the
// CLI's output pipes open: an escaped descendant. Each spawn appends its
// holder's PID to a file; the holders are killed at cleanup, which runs
// after the cleanups of pools created later.
type holderCLI struct {
	*swapCLI
	pidFile string
}

func newHolderCLI(t *testing.T, target string, hold heldPipe) *holderCLI {
	t.Helper()
	c := &holderCLI{swapCLI: &swapCLI{path: filepath.Join(t.TempDir(), "claude")}}
	c.pidFile = c.path + ".holders"
	other := "2>/dev/null" // the holder keeps stdout
	if hold == holdStderr {
		other = ">/dev/null"
	}
	// In a shell without job control a background job stays in the
	// shell's process group without leading it, so setsid does not fork:
	// $! is the sleep.
	script := fmt.Sprintf("#!/bin/sh\nsetsid sleep 300 </dev/null %s &\necho $! >>'%s'\nexec '%s' \"$@\"\n",
		other, c.pidFile, target)
	c.write(t, script, 0o755)
	t.Cleanup(func() {
		for _, pid := range c.holders(t) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			if !waitExited(pid, 5*time.Second) {
				t.Errorf("holder %d still running", pid)
			}
		}
	})
	return c
}

// holders returns the PIDs of the holders started so far.
func (c *holderCLI) holders(t *testing.T) []int {
	t.Helper()
	data, err := os.ReadFile(c.pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		require.NoError(t, err)
		pids = append(pids, pid)
	}
	return pids
}

// requireHoldersAlive fails unless every holder started so far still
// runs: what the test checked happened while the pipe was held.
func (c *holderCLI) requireHoldersAlive(t *testing.T) {
	t.Helper()
	pids := c.holders(t)
	require.NotEmpty(t, pids)
	for _, pid := range pids {
		require.True(t, alive(pid), "holder %d ended before the check", pid)
	}
}

// runChat reads s to its end and closes it. It returns the stream's
// error, or an error when the reply is not the fake's echo of text. It
// calls no require, for use from other goroutines.
func runChat(s *Stream, text string) error {
	defer s.Close()
	var reply string
	for s.Next() {
		if ev := s.Event(); ev.Type == EventAssistant {
			reply = ev.Text()
		}
	}
	if err := s.Err(); err != nil {
		return err
	}
	if want := "echo: " + text; reply != want {
		return fmt.Errorf("reply %q, want %q", reply, want)
	}
	return nil
}

// Item 1. Children get Pdeathsig SIGKILL, which fires when the thread
// that forked them ends, not the process. Guards against forking from
// whatever thread the caller runs on: a chat whose spawn ran on a thread
// that then died (a goroutine that returned locked to it) was killed
// mid-turn with "signal killed".
func TestChatsSurviveLockedThreadExits(t *testing.T) {
	ctx := testCtx(t)
	// Cold chats: each spawn runs inside the caller's StreamChat. The
	// slow turns are still running when the threads below have ended.
	fp := newFakePool(t, Config{}, fakecli.EnvChunkDelay+"=300ms")
	a := NewAdapter(fp.Pool)

	// Three: a goroutine locked to the main thread does not end it (the
	// runtime parks that thread instead), and at most one can be.
	streams := chatsOnDyingThreads(t, ctx, a, 3, "")
	endThreads(100)

	for _, st := range streams {
		require.NoError(t, runChat(st.s, st.text), "chat %q (pid %d)", st.text, st.s.Acquire().PID)
	}
}

// Item 2. Guards against a stream that waited for the end of the CLI's
// output after the CLI had exited: an escaped descendant holding stdout
// kept Next blocked until it ended, or until the caller's deadline.
func TestStreamEndsWhenCLIExitsWithEscapedStdoutHolder(t *testing.T) {
	c := newHolderCLI(t, fakeCLI, holdStdout)
	fp := newFakePool(t, Config{Command: c.path, Size: 1})
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(testCtx(t)))

	// Far longer than StopGrace, far shorter than the holder's life.
	const deadline = 10 * time.Second
	bounded := func() context.Context {
		ctx, cancel := context.WithTimeout(testCtx(t), deadline)
		t.Cleanup(cancel)
		return ctx
	}

	// A turn that ends with its result ends the stream at the result,
	// whatever holds the pipe.
	s, _ := chatOK(t, bounded(), a, userMsg("ok"))
	require.Equal(t, "echo: ok", s.Result().Text)

	// A CLI that exits without a result: the stream ends within
	// StopGrace of the exit, with the exit.
	s, err := a.StreamChat(bounded(), userMsg("x "+fakecli.Marker(fakecli.ModeCrash)))
	require.NoError(t, err)
	defer s.Close()
	for s.Next() {
	}
	var ee *ExitError
	require.ErrorAs(t, s.Err(), &ee, "want the CLI's exit, not the caller's deadline")
	require.Equal(t, 2, ee.Code)
	require.Contains(t, ee.Stderr, "panic: fake crash")
	c.requireHoldersAlive(t)
	require.NoError(t, s.Close())
}

// Item 3. Guards against handing a chat a warm process that died while
// idle, not reaped yet (a descendant holding its stderr delays the
// reap): the chat failed with "exited before answering initialize" while
// another warm process stood ready.
func TestDeadWarmProcessReplacedAtClaim(t *testing.T) {
	ctx := testCtx(t)
	c := newHolderCLI(t, fakeCLI, holdStderr)
	// The reaper waits StopGrace for the held stderr: the window in which
	// the pool still counts the dead process as idle.
	fp := newFakePool(t, Config{Command: c.path, Size: 2, StopGrace: time.Second})
	require.NoError(t, fp.WaitReady(ctx))

	fp.mu.Lock()
	victim := fp.idle.best(&SystemPrompt{}) // the process the chat will take
	var other *pooled
	for _, proc := range fp.idle.procs {
		if proc != victim {
			other = proc
		}
	}
	fp.mu.Unlock()
	require.NotNil(t, victim)
	require.NotNil(t, other)
	require.NoError(t, syscall.Kill(victim.pid, syscall.SIGKILL))
	require.True(t, waitExited(victim.pid, testWait))

	s, _ := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("x"))
	require.Equal(t, "echo: x", s.Result().Text)
	require.NotEqual(t, victim.pid, s.Acquire().PID)
	require.True(t, s.Acquire().Warm, "the chat runs on another warm process")
	require.EqualValues(t, 1, fp.Stats().DeadAtClaim)
}

// Item 4. Guards against a request whose ctx has already ended taking a
// process anyway: a warm one was claimed, interrupted and replaced, or a
// cold one spawned, for a caller who was gone.
func TestEndedCtxTakesNoProcess(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()

	t.Run("warm", func(t *testing.T) {
		fp := newFakePool(t, Config{Size: 1})
		require.NoError(t, fp.WaitReady(testCtx(t)))
		pids := fp.pids()
		require.Len(t, pids, 1)
		a := NewAdapter(fp.Pool)

		s, err := a.StreamChat(ended, userMsg("x"))
		requireErrorIs(t, err, context.Canceled)
		require.Nil(t, s)
		_, err = fp.Acquire(ended)
		requireErrorIs(t, err, context.Canceled)
		st := fp.Stats()
		require.Zero(t, st.WarmAcquires)
		require.Zero(t, st.ColdAcquires)
		require.Equal(t, 1, st.Idle)

		// The warm process is still there for the next caller.
		s, _ = chatOK(t, testCtx(t), a, userMsg("x"))
		require.True(t, s.Acquire().Warm)
		require.Equal(t, pids[0], s.Acquire().PID)
	})
	t.Run("cold", func(t *testing.T) {
		fp := newFakePool(t, Config{})
		_, err := NewAdapter(fp.Pool).StreamChat(ended, userMsg("x"))
		requireErrorIs(t, err, context.Canceled)
		_, err = fp.Acquire(ended)
		requireErrorIs(t, err, context.Canceled)
		require.Zero(t, fp.Stats().ColdAcquires)
		require.Zero(t, fp.Stats().Live)
	})
}

// Item 5. Guards against a relative Command that NewPool found in the
// caller's directory but exec looked up in the pool's working directory:
// every spawn failed with ErrCLINotFound.
func TestRelativeCommandResolvedOnce(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Symlink(fakeCLI, filepath.Join(dir, "claude")))
	t.Chdir(dir)
	fp := newFakePool(t, Config{Command: "./claude"})
	// Resolved once: the caller's directory may change afterwards.
	t.Chdir(t.TempDir())
	_, err := os.Stat(filepath.Join(fp.dir, "claude"))
	require.ErrorIs(t, err, fs.ErrNotExist, "the pool's directory has no claude of its own")

	chatOK(t, testCtx(t), NewAdapter(fp.Pool), userMsg("x"))
}

// Item 6. Guards against a missing Config.Dir reported as
// ErrCLINotFound, naming a binary that exists, when spawns failed.
func TestMissingDirRejectedByNewPool(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gone")
	p, err := NewPool(Config{Command: fakeCLI, Dir: missing})
	require.Error(t, err)
	require.Nil(t, p)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.False(t, errors.Is(err, ErrCLINotFound), "error %q blames the CLI", err)
	require.ErrorContains(t, err, missing)
}

// Item 6. Guards against a spawn in a working directory removed after
// NewPool failing with ErrCLINotFound: the error names the directory.
func TestRemovedDirNamedBySpawnError(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "work")
	require.NoError(t, os.Mkdir(dir, 0o700))
	fp := newFakePool(t, Config{Dir: dir})
	require.NoError(t, os.Remove(dir))
	_, err := NewAdapter(fp.Pool).StreamChat(testCtx(t), userMsg("x"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.False(t, errors.Is(err, ErrCLINotFound), "error %q blames the CLI", err)
	require.ErrorContains(t, err, "working directory "+dir)
}

// Item 6. Guards against a pool whose private working directory a temp
// cleaner removed: every spawn failed from then on.
func TestRemovedPrivateDirRecreated(t *testing.T) {
	fp := newFakePool(t, Config{})
	require.True(t, fp.ownDir)
	require.NoError(t, os.RemoveAll(fp.dir))
	chatOK(t, testCtx(t), NewAdapter(fp.Pool), userMsg("x"))
	fi, err := os.Stat(fp.dir)
	require.NoError(t, err)
	require.True(t, fi.IsDir())
	fp.logs.waitFor(t, "claudepool: recreated the removed working directory", 1)
}

// Item 7. Guards against a stream whose process Close killed reporting a
// bare *ExitError "signal killed", which looks like a CLI crash, although
// the doc promises ErrClosed.
func TestCloseKilledStreamWrapsErrClosed(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x "+fakecli.Marker(fakecli.ModeHangMid)))
	require.NoError(t, err)
	defer s.Close()
	require.True(t, s.Next(), "first event: %v", s.Err()) // the turn is under way

	ended, cancel := context.WithCancel(ctx)
	cancel()
	err = fp.Close(ended)
	requireErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "killed 1 busy processes")

	require.False(t, s.Next())
	requireErrorIs(t, s.Err(), ErrClosed)
	var ee *ExitError
	require.ErrorAs(t, s.Err(), &ee)
	require.Equal(t, "killed", ee.Signal)
}

// Item 8. Guards against Close counting idle processes as busy: with
// Busy() == 0, a Close whose ctx had ended returned "killed 2 busy
// processes".
func TestCloseKillingOnlyIdleProcessesIsNotAnError(t *testing.T) {
	fp := newFakePool(t, Config{Size: 2})
	require.NoError(t, fp.WaitReady(testCtx(t)))
	st := fp.Stats()
	require.Zero(t, st.Busy)
	require.Equal(t, 2, st.Idle)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, fp.Close(ended))
}

// Item 9. Guards against Stats reading its process counts apart: under
// load, busy > live was seen in a few of 11,000 snapshots.
func TestStatsProcessCountsConsistent(t *testing.T) {
	ctx := testCtx(t)
	// MaxUses 1: every chat retires its process, so processes keep being
	// spawned, leased, retired and reaped while the snapshots are taken.
	fp := newFakePool(t, Config{Size: 2, MaxUses: 1})
	a := NewAdapter(fp.Pool)
	const callers, chatsEach = 4, 15
	errs := make(chan error, callers*chatsEach)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range chatsEach {
				text := fmt.Sprintf("caller %d chat %d", i, j)
				s, err := a.StreamChat(ctx, userMsg(text))
				if err == nil {
					err = runChat(s, text)
				}
				errs <- err
			}
		}()
	}
	go func() {
		wg.Wait()
		close(done)
	}()

	finished := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	const minSnapshots = 300
	snapshots, bad := 0, 0
	var first Stats
	for snapshots < minSnapshots || !finished() {
		st := fp.Stats()
		snapshots++
		if st.Busy < 0 || st.Idle < 0 || st.Resetting < 0 ||
			st.Busy+st.Idle+st.Resetting > st.Live {
			if bad == 0 {
				first = st
			}
			bad++
		}
	}
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Zero(t, bad, "%d of %d snapshots inconsistent, first: busy %d + idle %d + resetting %d > live %d",
		bad, snapshots, first.Busy, first.Idle, first.Resetting, first.Live)
}

// Item 10. Guards against Err after Stream.Close returning an
// unexported, undocumented error.
func TestStreamCloseErrIsErrStreamClosed(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{})
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x "+fakecli.Marker(fakecli.ModeHang)))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.False(t, s.Next())
	require.ErrorIs(t, s.Err(), ErrStreamClosed)
}

// Item 10. Guards against NewPool accepting an Env or Args entry with a
// NUL byte, which made every spawn fail.
func TestNewPoolRejectsNUL(t *testing.T) {
	for name, cfg := range map[string]Config{
		"env":  {Command: fakeCLI, Env: []string{"FOO=a\x00b"}},
		"args": {Command: fakeCLI, Args: []string{"--x\x00y"}},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := NewPool(cfg)
			if p != nil {
				_ = p.Close(context.Background())
			}
			require.ErrorContains(t, err, "NUL")
		})
	}
}

// lockedChat is a chat started by a goroutine that ended locked to its
// OS thread.
type lockedChat struct {
	s    *Stream
	text string
	err  error
}

// chatsOnDyingThreads starts n chats, each from a goroutine that locks its
// OS thread and returns without unlocking it, which ends the thread, once
// the chat's turn has begun: each spawn ran on a thread that is then gone.
// The chats' texts are "chat <i>" and suffix.
func chatsOnDyingThreads(t *testing.T, ctx context.Context, a *Adapter, n int, suffix string) []lockedChat {
	t.Helper()
	out := make(chan lockedChat, n)
	for i := range n {
		go func() {
			// Never unlocked: this goroutine's thread ends with it, once
			// its StreamChat has spawned the CLI and the turn has begun
			// (a process that dies before its user line is replaced).
			runtime.LockOSThread()
			text := "chat " + strconv.Itoa(i) + suffix
			s, err := a.StreamChat(ctx, userMsg(text))
			if err == nil && !s.Next() {
				err = fmt.Errorf("no first event: %w", s.Err())
			}
			out <- lockedChat{s, text, err}
		}()
	}
	var chats []lockedChat
	for range n {
		c := <-out
		if c.s != nil {
			t.Cleanup(func() { _ = c.s.Close() })
		}
		require.NoError(t, c.err)
		chats = append(chats, c)
	}
	return chats
}

// endThreads ends n OS threads, as unrelated code does with goroutines
// that return locked to their thread.
func endThreads(n int) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
		}()
	}
	wg.Wait()
}
