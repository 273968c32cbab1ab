package claudepool

import (
	"context"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// The spares: they come back at the MaxProcs cap, they are what Acquire
// and TryAcquire take, and beyond Size they go after a while idle.

// chatsAtOnce starts every request before it reads any, so that each gets
// a process of its own, then reads each to a successful end.
func chatsAtOnce(t testing.TB, ctx context.Context, a *Adapter, reqs ...Request) {
	t.Helper()
	streams := make([]*Stream, 0, len(reqs))
	for _, req := range reqs {
		s, err := a.StreamChat(ctx, req)
		require.NoError(t, err)
		streams = append(streams, s)
	}
	for _, s := range streams {
		for s.Next() {
		}
		require.NoError(t, s.Err())
		require.NoError(t, s.Close())
	}
}

// At the MaxProcs cap, chats that end holding their conversations leave
// no spare; the refill then resets the least recently used one, off any
// chat's path, and the next new chat finds a spare.
func TestSpareComesBackAtCap(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 3, HoldConversations: time.Hour},
		fakecli.EnvChunks+"=2", fakecli.EnvChunkDelay+"=50ms")
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(ctx))
	chatsAtOnce(t, ctx, a, conv("a"), conv("b"), conv("c"))
	st := waitStats(t, fp, "a spare at the cap", func(st Stats) bool {
		return st.Idle == 3 && st.Held == 2 && st.Resetting == 0
	})
	require.EqualValues(t, 1, st.Conversations.GaveWay)
	require.NoError(t, fp.WaitReady(ctx))
	proc, err := fp.TryAcquire()
	require.NoError(t, err, "a spare without a conversation is ready")
	require.NoError(t, proc.Stop(ctx))
}

// Without Config.Prompt, the spare a chat leaves (it carries the empty
// prompt) is what WaitReady counts, TryAcquire takes and Acquire takes
// warm.
func TestSpareWithoutPromptForAcquire(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 1})
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(ctx))
	s, _ := chatOK(t, ctx, a, userMsg("x"))
	pid := s.Acquire().PID
	waitReset(t, fp, pid, 1)
	require.NoError(t, fp.WaitReady(ctx))

	proc, err := fp.TryAcquire()
	require.NoError(t, err)
	require.Equal(t, pid, proc.PID())
	sp, ok := proc.SystemPrompt()
	require.True(t, ok)
	require.Equal(t, SystemPrompt{}, sp)
	require.NoError(t, proc.Stop(ctx))

	fp2 := newFakePool(t, Config{Size: 1, MaxProcs: 2})
	require.NoError(t, fp2.WaitReady(ctx))
	chatsAtOnce(t, ctx, NewAdapter(fp2.Pool), userMsg("x"), userMsg("y"))
	waitStats(t, fp2, "both chats' processes idle", func(st Stats) bool { return st.Idle == 2 })
	cold := fp2.Stats().ColdAcquires
	for range 2 {
		p, err := fp2.Acquire(ctx)
		require.NoError(t, err)
		require.True(t, p.Warm(), "both idle processes are spares")
		defer p.Stop(context.Background())
	}
	require.Equal(t, cold, fp2.Stats().ColdAcquires)
}

// With neither MaxProcs nor MaxIdle, the spares a burst left beyond Size
// are retired once idle for the surplus time, down to Size.
func TestSurplusSparesShrink(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1}, fakecli.EnvChunks+"=2", fakecli.EnvChunkDelay+"=50ms")
	fp.mu.Lock()
	fp.surplusIdle = 50 * time.Millisecond
	fp.mu.Unlock()
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(ctx))
	chatsAtOnce(t, ctx, a, userMsg("a"), userMsg("b"), userMsg("c"))
	st := waitStats(t, fp, "the pool back at Size", func(st Stats) bool {
		return st.Live == 1 && st.Idle == 1
	})
	require.GreaterOrEqual(t, st.Retired[RetireSpare], int64(2))
	require.NoError(t, fp.WaitReady(ctx))

	// With MaxIdle set, the surplus rule stays out of the way.
	fp2 := newFakePool(t, Config{Size: 1, MaxIdle: time.Hour})
	fp2.mu.Lock()
	fp2.surplusIdle = time.Nanosecond
	fp2.mu.Unlock()
	chatsAtOnce(t, ctx, NewAdapter(fp2.Pool), userMsg("a"), userMsg("b"))
	waitStats(t, fp2, "both chats' processes idle", func(st Stats) bool { return st.Idle >= 2 && st.Resetting == 0 })
	require.Zero(t, fp2.Stats().Retired[RetireSpare])
}
