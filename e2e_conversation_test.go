package claudepool

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// A conversation stays on its process: turn 2, sent with the whole
// history as a backend sends it, runs on turn 1's process, which receives
// the new message alone; the API sees real turns. A request that shares
// turn 1 but carries another reply is served as sent.
func TestE2EHeldConversation(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	// Replies that do not echo: turn 1's text is then in turn 1 alone.
	e := newE2E(t, claudepooltest.Config{Reply: claudepooltest.Text("Nice to meet you.")})
	p, _ := e.pool(t, Config{Size: 1, HoldConversations: time.Minute})
	require.NoError(t, p.WaitReady(ctx))
	a := NewAdapter(p)
	const turn1 = "My name is Ada, and my marker is STICKY-7c1e."

	msgs := []Message{{Role: RoleUser, Content: turn1}}
	s1, _ := chatOK(t, ctx, a, Request{Messages: msgs})
	msgs = append(msgs, Message{Role: RoleAssistant, Content: s1.Result().Text},
		Message{Role: RoleUser, Content: "What is my name?"})
	s2, _ := chatOK(t, ctx, a, Request{Messages: msgs})
	require.Equal(t, s1.Acquire().PID, s2.Acquire().PID, "turn 2 runs on turn 1's process")
	require.True(t, s2.Acquire().Continued)

	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 2)
	// The CLI may add messages on its own account (a "system" one here);
	// the conversation's own are user, assistant, user.
	var roles []string
	for _, m := range reqs[1].Messages {
		if m.Role == "user" || m.Role == "assistant" {
			roles = append(roles, m.Role)
		} else {
			t.Logf("a message the CLI added: %s %.200q", m.Role, m.Text())
		}
	}
	require.Equal(t, []string{"user", "assistant", "user"}, roles)
	require.Equal(t, 1, strings.Count(string(reqs[1].Body), "STICKY-7c1e"), "turn 1 appears once in turn 2's request")
	require.Equal(t, "What is my name?", reqs[1].LastUserText())

	// The same first turn with another reply: not the held conversation.
	forked := []Message{msgs[0], {Role: RoleAssistant, Content: "Nice to meet you, Grace."}, msgs[2]}
	s3, _ := chatOK(t, ctx, a, Request{Messages: forked})
	require.False(t, s3.Acquire().Continued)
	reqs = e.mock.ChatRequests()
	require.Len(t, reqs, 3)
	require.Equal(t, RenderTranscript(forked), reqs[2].LastUserText(), "its own history reaches the API")
	require.NotContains(t, string(reqs[2].Body), s1.Result().Text, "nothing of the held conversation")
	require.EqualValues(t, 1, p.Stats().Conversations.Continued)
	require.EqualValues(t, 1, p.Stats().Conversations.MissNotHeld)
}

// BenchmarkE2EConversation runs a 10-turn conversation on the real CLI
// against the mock, once with held conversations (held: each turn after
// the first sends the new message to the process that holds the rest) and
// once without (rendered: each turn sends the whole history, rendered into
// one message, to a process without a conversation). It reports the first
// event of turns 2 to 10 (p50), and the bytes of all ten API requests and
// the input tokens the mock counted for them.
func BenchmarkE2EConversation(b *testing.B) {
	const turns = 10
	for _, mode := range []struct {
		name string
		hold time.Duration
	}{{"held", time.Minute}, {"rendered", -1}} {
		b.Run("mode="+mode.name, func(b *testing.B) {
			var firstEvents []time.Duration
			var bytes, tokens int
			for i := range b.N {
				b.StopTimer()
				// A reply of a fixed length: an echo would grow with the
				// rendered history.
				e := newE2E(b, claudepooltest.Config{Reply: claudepooltest.Text(
					"Here is something about that number: it is a fine number, and it has a place in a sequence.")})
				p, _ := e.pool(b, Config{Size: 2, HoldConversations: mode.hold,
					Prompt: &SystemPrompt{System: benchSystem}})
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				if err := p.WaitReady(ctx); err != nil {
					b.Fatal(err)
				}
				a := NewAdapter(p)
				b.StartTimer()
				var msgs []Message
				for turn := range turns {
					msgs = append(msgs, Message{Role: RoleUser,
						Content: fmt.Sprintf("Turn %d of conversation %d: tell me something about the number %d.", turn+1, i, turn+1)})
					s, err := a.StreamChat(ctx, Request{Messages: msgs})
					if err != nil {
						b.Fatal(err)
					}
					for s.Next() {
					}
					if err := s.Err(); err != nil {
						b.Fatal(err)
					}
					_ = s.Close()
					if turn > 0 {
						firstEvents = append(firstEvents, s.Latency().FirstEvent)
						if s.Acquire().Continued != (mode.hold > 0) {
							b.Fatalf("turn %d: continued %v", turn+1, s.Acquire().Continued)
						}
					}
					tokens += s.Result().Usage.InputTokens
					msgs = append(msgs, Message{Role: RoleAssistant, Content: s.Result().Text})
					// Let the pool settle between turns, as a user who reads
					// the reply gives it time to.
					quiet(b, p)
				}
				b.StopTimer()
				for _, r := range e.mock.ChatRequests() {
					bytes += len(r.Body)
				}
				cancel()
				_ = p.Close(context.Background())
			}
			b.ReportMetric(ms(quantile(firstEvents, 0.5)), "turn2+-first-event-p50-ms")
			b.ReportMetric(float64(bytes)/float64(b.N), "request-bytes/conversation")
			b.ReportMetric(float64(tokens)/float64(b.N), "input-tokens/conversation")
			fmt.Fprintf(os.Stderr, "E2EConversation %s: %d turns, turns 2-%d first event p50 %v, %d request bytes, %d input tokens a conversation\n",
				mode.name, turns, turns, rnd(quantile(firstEvents, 0.5)), bytes/b.N, tokens/b.N)
		})
	}
}
