package claudepool

// Items 1-4 of issue 13, "Reliability, round two", on the real CLI (see
// reliability2_test.go for the fake's versions). The pools stay tiny:
// each real CLI costs about a CPU-second to start and 180 MB.

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// holdMarked holds the reply of every request whose text contains
// "[hold]" until release is called; the others are echoed at once.
func holdMarked(t *testing.T) (reply claudepooltest.ReplyFunc, release func()) {
	hold := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	reply = func(r claudepooltest.Request) claudepooltest.Reply {
		rep := claudepooltest.Echo(r)
		if strings.Contains(r.LastUserText(), "[hold]") {
			rep.Chunks, rep.Hold = 2, hold
		}
		return rep
	}
	return reply, release
}

// Item 1 on the real CLI: chats spawned cold from threads that then end
// (goroutines that return locked to them), and 100 more such threads
// ending meanwhile, must not kill the CLIs through Pdeathsig.
func TestE2EChatsSurviveLockedThreadExits(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	reply, release := holdMarked(t)
	e := newE2E(t, claudepooltest.Config{Reply: reply})
	p, _ := e.pool(t, Config{})
	a := NewAdapter(p)

	streams := chatsOnDyingThreads(t, ctx, a, 2, " [hold]")
	endThreads(100)

	// The replies are held until now: the turns outlived the threads.
	release()
	for _, st := range streams {
		for st.s.Next() {
		}
		require.NoError(t, st.s.Err(), "chat %q (pid %d)", st.text, st.s.Acquire().PID)
		require.Equal(t, claudepooltest.EchoPrefix+st.text, st.s.Result().Text)
	}
}

// Item 2 on the real CLI: a CLI wrapper whose escaped descendant holds
// stdout. A turn ends at its result; a CLI killed mid-turn ends its
// stream within StopGrace of the exit, with the exit, long before the
// caller's deadline and the holder's end.
func TestE2EStreamEndsWhenCLIExitsWithEscapedStdoutHolder(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	reply, _ := holdMarked(t)
	e := newE2E(t, claudepooltest.Config{Reply: reply})
	c := newHolderCLI(t, e.cli, holdStdout)
	p, _ := e.poolCommand(t, Config{Size: 1, StopGrace: 500 * time.Millisecond}, c.path)
	require.NoError(t, p.WaitReady(ctx))
	a := NewAdapter(p)

	const deadline = 30 * time.Second
	bounded, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	s, _ := chatOK(t, bounded, a, userMsg("hi"))
	require.Equal(t, claudepooltest.EchoPrefix+"hi", s.Result().Text)
	require.NoError(t, p.WaitReady(ctx))

	s, err := a.StreamChat(bounded, userMsg("hi [hold]"))
	require.NoError(t, err)
	defer s.Close()
	require.True(t, s.Next(), "first event: %v", s.Err())
	require.NoError(t, syscall.Kill(s.Acquire().PID, syscall.SIGKILL))
	for s.Next() {
	}
	var ee *ExitError
	require.ErrorAs(t, s.Err(), &ee, "want the CLI's exit, not the caller's deadline")
	require.Equal(t, "killed", ee.Signal)
	c.requireHoldersAlive(t)
}

// Item 3 on the real CLI: a warm process killed while idle, whose reap a
// descendant holding stderr delays, is replaced at claim by the other
// warm process.
func TestE2EDeadWarmProcessReplacedAtClaim(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	c := newHolderCLI(t, e.cli, holdStderr)
	// MaxProcs keeps the refill from starting more real CLIs than the two
	// the test needs while the dead one is not reaped.
	p, _ := e.poolCommand(t, Config{Size: 2, MaxProcs: 2, StopGrace: time.Second}, c.path)
	require.NoError(t, p.WaitReady(ctx))

	p.mu.Lock()
	victim := p.idle.best(&SystemPrompt{})
	p.mu.Unlock()
	require.NotNil(t, victim)
	require.NoError(t, syscall.Kill(victim.pid, syscall.SIGKILL))
	require.True(t, waitExited(victim.pid, time.Minute))

	s, _ := chatOK(t, ctx, NewAdapter(p), userMsg("hi"))
	require.Equal(t, claudepooltest.EchoPrefix+"hi", s.Result().Text)
	require.NotEqual(t, victim.pid, s.Acquire().PID)
	require.True(t, s.Acquire().Warm, "the chat runs on the other warm process")
	require.EqualValues(t, 1, p.Stats().DeadAtClaim)
}

// Item 4 on the real CLI: a request whose ctx has already ended takes
// nothing; the warm process waits for the next caller.
func TestE2EEndedCtxTakesNoProcess(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	p, _ := e.pool(t, Config{Size: 1})
	require.NoError(t, p.WaitReady(ctx))
	p.mu.Lock()
	require.Equal(t, 1, p.idle.len())
	pid := p.idle.procs[0].pid
	p.mu.Unlock()
	a := NewAdapter(p)

	ended, cancel := context.WithCancel(ctx)
	cancel()
	_, err := a.StreamChat(ended, userMsg("hi"))
	requireErrorIs(t, err, context.Canceled)
	st := p.Stats()
	require.Zero(t, st.WarmAcquires)
	require.Zero(t, st.ColdAcquires)
	require.Equal(t, 1, st.Idle)

	s, _ := chatOK(t, ctx, a, userMsg("hi"))
	require.True(t, s.Acquire().Warm)
	require.Equal(t, pid, s.Acquire().PID)
	require.Len(t, e.mock.ChatRequests(), 1, "the ended request reached no API")
}
