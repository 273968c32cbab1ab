package claudepool

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// Interrupt ends a turn in the middle of its reply with the CLI's own
// interrupt: the stream ends with the CLI's result, its error wraps
// ErrInterrupted and a *ResultError, and the process, not stopped, serves
// the next chat after its reset.
func TestStreamInterrupt(t *testing.T) {
	ctx := testCtx(t)
	// Each reply stops after its first chunk for an hour.
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 1, PartialMessages: true},
		fakecli.EnvChunks+"=2", fakecli.EnvChunkDelay+"=1h")
	require.NoError(t, fp.WaitReady(ctx))
	a := NewAdapter(fp.Pool)

	s, err := a.StreamChat(ctx, userMsg("a long answer"))
	require.NoError(t, err)
	defer s.Close()
	for s.Next() && s.Event().Text() == "" {
	}
	require.NoError(t, s.Err())
	pid := s.Acquire().PID
	require.NoError(t, s.Interrupt())
	for s.Next() {
	}
	require.ErrorIs(t, s.Err(), ErrInterrupted)
	var re *ResultError
	require.ErrorAs(t, s.Err(), &re)
	require.NotNil(t, s.Result())
	require.NoError(t, s.Interrupt(), "after the result it does nothing")

	fp2 := fp.Stats()
	require.Zero(t, retiredTotal(fp2), "the process was not retired")
	require.True(t, alive(pid))

	// The next chat runs on the same process, reset. The fake's replies
	// still pause after their first chunk: read that chunk and close.
	s2, err := a.StreamChat(ctx, userMsg("next"))
	require.NoError(t, err)
	defer s2.Close()
	for s2.Next() && s2.Event().Text() == "" {
	}
	require.NoError(t, s2.Err())
	require.Equal(t, pid, s2.Acquire().PID)
	require.True(t, s2.Acquire().Reused)
}

// Each process of a pool that owns its directory works in a directory of
// its own, which every reset empties: what a chat leaves there is gone
// before the next chat, and the directory goes with the process.
func TestWorkDirEmptiedAtReset(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 1})
	require.NoError(t, fp.WaitReady(ctx))
	a := NewAdapter(fp.Pool)

	ready := fp.pids()
	require.Len(t, ready, 1)
	pid := ready[0]
	cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "cwd"))
	require.NoError(t, err)
	require.Equal(t, fp.dir, filepath.Dir(cwd), "a directory of its own inside the pool's")
	// What a chat's tools would leave behind, there before the reset
	// that follows the next chat.
	require.NoError(t, os.WriteFile(filepath.Join(cwd, "secret.txt"), []byte("tenant A"), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(cwd, "sub", "dir"), 0o700))

	s, _ := chatOK(t, ctx, a, userMsg("first"))
	require.Equal(t, pid, s.Acquire().PID)
	s2, _ := chatOK(t, ctx, a, userMsg("second"))
	require.Equal(t, pid, s2.Acquire().PID)
	waitQuiet(t, ctx, fp.Pool)
	entries, err := os.ReadDir(cwd)
	require.NoError(t, err)
	require.Empty(t, entries, "the reset emptied the working directory")

	require.NoError(t, fp.Close(ctx))
	_, err = os.Stat(cwd)
	require.ErrorIs(t, err, os.ErrNotExist)
}

// After a reset the pool reads what an idle process costs: its private
// memory and its proportional share, beside its resident memory, which
// also counts the pages every process of the executable shares.
func TestIdleMemoryMeasures(t *testing.T) {
	if _, err := os.Stat("/proc/self/smaps_rollup"); err != nil {
		t.Skip("no /proc/PID/smaps_rollup here")
	}
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 1})
	chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("hello"))
	waitQuiet(t, ctx, fp.Pool)
	st := fp.Stats()
	require.Positive(t, st.IdlePrivate)
	require.Positive(t, st.IdlePss)
	require.LessOrEqual(t, st.IdlePrivate, st.IdlePss)
	require.LessOrEqual(t, st.IdlePss, st.IdleRSS)
}
