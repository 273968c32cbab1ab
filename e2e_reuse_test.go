package claudepool

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// One real CLI process serves several chats: between them the pool
// clears the conversation and puts the model back, and the next chat's
// API request carries nothing of the one before. A chat that ended in an
// API error leaves a process that is reused as well.
func TestE2EReuse(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	// No held conversations: every chat is followed by a reset.
	p, logs := e.pool(t, Config{Size: 1, HoldConversations: -1})
	require.NoError(t, p.WaitReady(ctx))
	a := NewAdapter(p)
	const system = "You are the reuse test's assistant."
	const marker = "MARKER-of-chat-one-7f3a"

	s1, _ := chatOK(t, ctx, a, Request{System: system, Model: "sonnet",
		Messages: []Message{{Role: RoleUser, Content: "Remember " + marker + "."}}})
	pid := s1.Acquire().PID
	logs.waitFor(t, "claudepool: process reset", 1)

	s2, _ := chatOK(t, ctx, a, Request{System: system,
		Messages: []Message{{Role: RoleUser, Content: "What did I ask you to remember?"}}})
	require.Equal(t, pid, s2.Acquire().PID, "chat 2 runs on chat 1's process")
	require.True(t, s2.Acquire().Reused)
	require.Equal(t, 2, s2.Acquire().Uses)

	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 2, "a reset sends no API request")
	require.Contains(t, string(reqs[0].Body), marker)
	require.NotContains(t, string(reqs[1].Body), marker, "chat 2's request holds nothing of chat 1")
	require.Contains(t, strings.Join(reqs[1].System, "\n"), system, "the system prompt stays")
	require.Equal(t, "claude-sonnet-5-5", reqs[0].Model)
	require.NotEqual(t, reqs[0].Model, reqs[1].Model, "a chat without Model runs on the pool's model")

	// An API error ends the turn with is_error; the process stays usable.
	logs.waitFor(t, "claudepool: process reset", 2)
	e.mock.SetReply(claudepooltest.Fail(claudepooltest.FailRateLimit))
	s3, err := a.StreamChat(ctx, Request{System: system, Messages: []Message{{Role: RoleUser, Content: "hi"}}})
	require.NoError(t, err)
	drain(t, s3)
	var re *ResultError
	require.ErrorAs(t, s3.Err(), &re)
	require.NoError(t, s3.Close())
	require.Equal(t, pid, s3.Acquire().PID)
	logs.waitFor(t, "claudepool: process reset", 3)
	e.mock.SetReply(nil)
	s4, _ := chatOK(t, ctx, a, Request{System: system, Messages: []Message{{Role: RoleUser, Content: "again"}}})
	require.Equal(t, pid, s4.Acquire().PID, "a process whose turn reported an API error is reused")
	require.Equal(t, claudepooltest.EchoPrefix+"again", s4.Result().Text)

	logs.waitFor(t, "claudepool: process reset", 4)
	st := p.Stats()
	require.EqualValues(t, 3, st.Reuses)
	require.EqualValues(t, 4, st.Resets.Count)
	require.Positive(t, st.IdleRSS, "the idle process's RSS, read after its reset")
	t.Logf("reset p50 %v, idle RSS %d MB", st.Resets.P50, st.IdleRSS>>20)
}

// On the real CLI: at the MaxProcs cap, chats that end holding their
// conversations leave no spare; the refill resets one of them, and a
// spare is back without any chat asking.
func TestE2ESpareComesBackAtCap(t *testing.T) {
	ctx := e2eCtx(t, 3*time.Minute)
	reply, release := holdMarked(t)
	e := newE2E(t, claudepooltest.Config{Reply: reply})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 3, HoldConversations: time.Hour})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))
	// The mock holds each reply until all three have started: three
	// processes.
	go func() {
		_, _ = e.mock.WaitChatRequests(ctx, 3)
		release()
	}()
	chatsAtOnce(t, ctx, a, userMsg("a [hold]"), userMsg("b [hold]"), userMsg("c [hold]"))
	waitPool(t, p, time.Now().Add(time.Minute), func(st Stats) bool {
		return st.Live == 3 && st.Idle == 3 && st.Held == 2 && st.Resetting == 0
	})
	proc, err := p.TryAcquire()
	require.NoError(t, err, "a spare is ready")
	require.NoError(t, proc.Stop(context.Background()))
}
