package claudepool

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

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
	// must not hold Close past its ctx, even once the CLI has finished.
	fp := newFakePool(t, Config{Size: 1, PartialMessages: true},
		fakecli.EnvChunks+"=100", fakecli.EnvReply+"="+strings.Repeat("word ", 100))
	require.NoError(t, fp.WaitReady(testCtx(t)))
	s, err := NewAdapter(fp.Pool).StreamChat(testCtx(t), userMsg("x"))
	require.NoError(t, err)
	require.True(t, s.Next())
	// The CLI prints far more events than the stream buffers, then exits.
	require.True(t, waitExited(s.Acquire().PID, testWait))

	ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- fp.Close(ctx) }()
	select {
	case err := <-closed:
		// The process ended by itself: nothing was killed.
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Error("Close outlived its ctx while a stream was not read")
		require.NoError(t, s.Close()) // unblock it
		<-closed
	}
	// The caller who comes back finds the events that were buffered,
	// then ErrClosed.
	for s.Next() {
	}
	requireErrorIs(t, s.Err(), ErrClosed)
	require.NoError(t, s.Close())
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
