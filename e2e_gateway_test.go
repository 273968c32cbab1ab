package claudepool

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// On the real CLI: a reply that stops at max_tokens, at a stop sequence or
// with a refusal ends the chat there, with the API's stop reason, the
// API's text and one API call: the CLI's own follow-up never reaches the
// API, nor the caller. The process does not hold such a conversation.
func TestE2EGatewayStops(t *testing.T) {
	const long = "one two three four five six seven eight nine ten eleven twelve thirteen"
	tests := []struct {
		name     string
		req      func(*Request)
		reply    claudepooltest.Reply
		stop     string
		text     string
		sequence string
		// unseen is true when the CLI asked again on its own: the
		// process then holds turns the caller never saw.
		unseen bool
	}{
		{name: "max_tokens", req: func(r *Request) { r.MaxTokens = 5 }, reply: claudepooltest.Reply{Text: long},
			stop: claudepooltest.StopMaxTokens, text: long[:4*5-1], unseen: true},
		{name: "stop sequence", req: func(r *Request) { r.StopSequences = []string{"five"} }, reply: claudepooltest.Reply{Text: long},
			stop: claudepooltest.StopSequence, text: "one two three four ", sequence: "five"},
		{name: "refusal", reply: claudepooltest.Reply{Text: "I can't", StopReason: claudepooltest.StopRefusal},
			stop: claudepooltest.StopRefusal, text: "I can't", unseen: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := e2eCtx(t, 2*time.Minute)
			e := newE2E(t, claudepooltest.Config{Reply: func(r claudepooltest.Request) claudepooltest.Reply {
				if r.LastUserText() == "question" {
					return tt.reply
				}
				return claudepooltest.Echo(r)
			}})
			// MaxProcs 2: a held conversation need not give way to a spare.
			p, _ := e.pool(t, Config{Size: 1, MaxProcs: 2})
			a := NewAdapter(p)
			require.NoError(t, p.WaitReady(ctx))

			req := userMsg("question")
			if tt.req != nil {
				tt.req(&req)
			}
			s, evs := chatOK(t, ctx, a, req)
			r := s.Result()
			require.Equal(t, tt.stop, r.StopReason)
			require.Equal(t, tt.sequence, r.StopSequence)
			require.Equal(t, tt.text, r.Text)
			var text strings.Builder
			for _, ev := range evs {
				require.NotEqual(t, EventUser, ev.Type, "the caller sees no message it did not send: %s", ev.Raw)
				text.WriteString(ev.Text())
			}
			require.Equal(t, tt.text, text.String())

			waitQuiet(t, ctx, p)
			reqs := e.mock.Requests()
			require.Len(t, reqs, 1, "one API call: %s", describeRequests(reqs))
			if tt.req != nil {
				require.Equal(t, req.MaxTokens != 0, reqs[0].MaxTokens == 5)
				require.Equal(t, req.StopSequences, reqs[0].StopSequences)
			}
			require.Equal(t, r.Usage.OutputTokens, 1+len([]rune(tt.text+tt.sequence))/4, "the usage is the API reply's")

			// A process that holds turns the caller never saw does not
			// continue the conversation; one that holds the caller's
			// conversation alone does.
			next := Request{Messages: []Message{{Role: RoleUser, Content: "question"},
				{Role: RoleAssistant, Content: r.Text}, {Role: RoleUser, Content: "go on"}}}
			s2, _ := chatOK(t, ctx, a, next)
			require.Equal(t, !tt.unseen, s2.Acquire().Continued, "%+v", p.Stats().Conversations)
		})
	}
}

// On the real CLI: a chat's sampling parameters and user id reach the API,
// and everything else of the CLI's request stays as the CLI made it.
func TestE2EGatewayParameters(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	temp, topP, topK := 0.25, 0.9, 7
	req := userMsg("sample")
	req.Temperature, req.TopP, req.TopK = &temp, &topP, &topK
	req.UserID = "end-user-42"
	req.APIFields = map[string]json.RawMessage{"service_tier": json.RawMessage(`"auto"`)}
	chatOK(t, ctx, a, req)
	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 1)
	got := reqs[0]
	require.Equal(t, &temp, got.Temperature)
	require.Equal(t, &topP, got.TopP)
	require.Equal(t, &topK, got.TopK)
	require.Equal(t, "end-user-42", got.MetadataUserID)
	require.Nil(t, got.Thinking, "the API refuses sampling parameters with thinking")
	require.Contains(t, string(got.Body), `"service_tier":"auto"`)
	require.NotZero(t, got.MaxTokens, "the CLI's max_tokens stays")

	// A chat that sets nothing gets the CLI's request untouched.
	e.mock.Reset()
	chatOK(t, ctx, a, userMsg("plain"))
	plain := e.mock.ChatRequests()[0]
	require.Nil(t, plain.Temperature)
	require.NotNil(t, plain.Thinking)
	require.Contains(t, plain.MetadataUserID, "device_id")
}

// On the real CLI: with Config.Model and Config.Models naming full model
// ids, no model confirmation reaches the API, before readiness or on a
// chat's path, for a listed model or another.
func TestE2EGatewayAnswersModelConfirmations(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1, Model: "claude-sonnet-5-5", Models: []string{"claude-haiku-4-5"}})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))
	require.Empty(t, e.mock.Requests(), "readiness (confirmations and priming) costs no API call")

	for _, model := range []string{"", "claude-haiku-4-5", "claude-x-9", ""} {
		waitSettled(t, ctx, p)
		e.mock.Reset()
		req := userMsg("which model")
		req.Model = model
		chatOK(t, ctx, a, req)
		waitSettled(t, ctx, p)
		reqs := e.mock.Requests()
		require.Len(t, reqs, 1, "model %q: %s", model, describeRequests(reqs))
		require.Equal(t, claudepooltest.KindChat, reqs[0].Kind)
		want := model
		if want == "" {
			want = "claude-sonnet-5-5"
		}
		require.Equal(t, want, reqs[0].Model)
	}
}

// sessionIDs matches what differs between two requests of one chat made
// in two conversations: the CLI's session id in metadata, and the
// checksum in its billing header.
var sessionIDs = regexp.MustCompile(`session_id\\":\\"[0-9a-f-]+|cc_version=[0-9a-f.]+`)

// On the real CLI: the same chat sent to a process that never ran one (a
// cold spawn) and to a process the pool reset reaches the API as the same
// request body, byte for byte apart from session ids: the CLI's note of
// the reset is gone.
func TestE2EGatewayFreshAndReusedSendTheSame(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	// Size 0: the first chat spawns cold, on its own path; the second
	// reuses that process after its reset.
	p, _ := e.pool(t, Config{Size: 0, MaxProcs: 1, HoldConversations: -1})
	a := NewAdapter(p)

	s1, _ := chatOK(t, ctx, a, userMsg("same chat"))
	require.False(t, s1.Acquire().Warm)
	waitSettled(t, ctx, p)
	s2, _ := chatOK(t, ctx, a, userMsg("same chat"))
	require.Equal(t, s1.Acquire().PID, s2.Acquire().PID)
	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 2)
	require.NotContains(t, string(reqs[1].Body), "local-command")
	norm := func(b []byte) string { return sessionIDs.ReplaceAllString(string(b), "<id>") }
	require.Equal(t, norm(reqs[0].Body), norm(reqs[1].Body))
	require.Equal(t, s1.Result().Usage.InputTokens, s2.Result().Usage.InputTokens)
}

// On the real CLI: no process has the upstream key in its environment or
// command line; each chat reaches the API with its own key, or the
// pool's.
func TestE2EGatewayKeys(t *testing.T) {
	const poolKey = "sk-pool-upstream-1c9e"
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	p, _ := e.pool(t, Config{Size: 2, MaxProcs: 2, APIKey: poolKey})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	pids := e.cliProcesses(t)
	require.Len(t, pids, 2)
	for _, pid := range pids {
		for _, file := range []string{"environ", "cmdline"} {
			data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), file))
			require.NoError(t, err)
			require.NotContains(t, string(data), poolKey, "process %d %s", pid, file)
			require.NotContains(t, string(data), "mock-key", "process %d %s", pid, file)
			require.NotContains(t, string(data), e.mock.URL(), "process %d %s", pid, file)
		}
	}

	for _, key := range []string{"sk-tenant-a", "sk-tenant-b", ""} {
		e.mock.Reset()
		req := userMsg("bill me")
		req.APIKey = key
		chatOK(t, ctx, a, req)
		reqs := e.mock.ChatRequests()
		require.Len(t, reqs, 1)
		want := key
		if want == "" {
			want = poolKey
		}
		require.Equal(t, want, reqs[0].Header.Get("X-Api-Key"))
		require.Empty(t, reqs[0].Header.Get("Authorization"))
	}
}

// On the real CLI: an API error reaches the caller as the API sent it.
func TestE2EGatewayErrorVerbatim(t *testing.T) {
	const msg = "invalid x-api-key for workspace 7 (tenant blue)"
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{Reply: func(r claudepooltest.Request) claudepooltest.Reply {
		if r.LastUserText() == "fail" {
			return claudepooltest.Reply{Fail: claudepooltest.FailUnauthorized, ErrorMessage: msg}
		}
		return claudepooltest.Echo(r)
	}})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	s, err := a.StreamChat(ctx, userMsg("fail"))
	require.NoError(t, err)
	defer s.Close()
	drain(t, s)
	var re *ResultError
	require.ErrorAs(t, s.Err(), &re)
	require.Equal(t, msg, re.Message)
	require.Equal(t, 401, re.APIErrorStatus)
	var api *APIError
	require.True(t, errors.As(s.Err(), &api))
	require.Equal(t, 401, api.Status)
	require.Equal(t, "authentication_error", api.Type)
	require.Equal(t, msg, api.Message)
	require.Equal(t, "authentication_error", s.Result().APIErrorType)

	// The process serves the next chat.
	s2, _ := chatOK(t, ctx, a, userMsg("fine"))
	require.Equal(t, s.Acquire().PID, s2.Acquire().PID)
}

// On the real CLI: the API's input tokens arrive as an EventMessageStart
// right after the turn's init, before any text, and the stream reports
// the API's time to first byte and the pool's overhead over it.
func TestE2EGatewayUsageAndTiming(t *testing.T) {
	const firstByte = 200 * time.Millisecond
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{FirstByteDelay: firstByte})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	s, evs := chatOK(t, ctx, a, userMsg("count my tokens"))
	index := func(match func(Event) bool) int {
		for i, ev := range evs {
			if match(ev) {
				return i
			}
		}
		return -1
	}
	init := index(func(ev Event) bool { return ev.Type == EventInit })
	start := index(func(ev Event) bool { return ev.Type == EventMessageStart })
	text := index(func(ev Event) bool { return ev.Text() != "" })
	require.Equal(t, 0, init, "types: %v", types(evs))
	require.Greater(t, start, init, "types: %v", types(evs))
	require.Greater(t, text, start, "types: %v", types(evs))
	require.Equal(t, s.Result().Usage.InputTokens, evs[start].Usage.InputTokens)

	l := s.Latency()
	require.GreaterOrEqual(t, l.APIFirstByte, firstByte, "the API's own time to first byte includes its delay")
	require.Positive(t, l.Overhead)
	require.Less(t, l.Overhead, l.FirstText)
}

// waitQuiet waits, until ctx's deadline, until every process of p is
// idle: no spawn, chat or reset in progress.
func waitQuiet(t *testing.T, ctx context.Context, p *Pool) {
	t.Helper()
	deadline, _ := ctx.Deadline()
	waitPool(t, p, deadline, quietStats)
}
