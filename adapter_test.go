package claudepool

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

func userMsg(text string) Request {
	return Request{Messages: []Message{{Role: RoleUser, Content: text}}}
}

// drain reads a stream to its end and returns its events.
func drain(t *testing.T, s *Stream) []Event {
	t.Helper()
	var evs []Event
	for s.Next() {
		evs = append(evs, s.Event())
	}
	return evs
}

// chatOK runs req on a to its end and requires success. It returns the
// stream, closed at cleanup, and its events.
func chatOK(t *testing.T, ctx context.Context, a *Adapter, req Request) (*Stream, []Event) {
	t.Helper()
	s, err := a.StreamChat(ctx, req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	evs := drain(t, s)
	require.NoError(t, s.Err())
	return s, evs
}

func types(evs []Event) []EventType {
	var out []EventType
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

// sentLines decodes what process pid received on stdin.
func sentLines(t *testing.T, fp *fakePool, pid int) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range fp.stdin(t, pid) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		out = append(out, m)
	}
	return out
}

func request(m map[string]any) map[string]any {
	r, _ := m["request"].(map[string]any)
	return r
}

func userText(t *testing.T, m map[string]any) string {
	t.Helper()
	require.Equal(t, "user", m["type"])
	blocks := m["message"].(map[string]any)["content"].([]any)
	require.Len(t, blocks, 1)
	return blocks[0].(map[string]any)["text"].(string)
}

func TestStreamChatWarm(t *testing.T) {
	ctx := testCtx(t)
	// One chat a process: the lines a process received are its chat's.
	fp := newFakePool(t, Config{Size: 1, MaxUses: 1})
	require.NoError(t, fp.WaitReady(ctx))
	s, evs := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("hello"))
	require.Equal(t, []EventType{EventInit, EventAssistant, EventResult}, types(evs))
	require.Equal(t, "echo: hello", evs[1].Text())
	res := s.Result()
	require.NotNil(t, res)
	require.Equal(t, "echo: hello", res.Text)
	require.False(t, res.IsError)
	require.Equal(t, "success", res.Subtype)
	require.NotEmpty(t, res.SessionID)

	info := s.Acquire()
	require.True(t, info.Warm)
	lat := s.Latency()
	require.Equal(t, info.Wait, lat.Acquire)
	require.Positive(t, lat.FirstEvent)
	require.GreaterOrEqual(t, lat.FirstText, lat.FirstEvent)
	require.GreaterOrEqual(t, lat.Result, lat.FirstText)

	// Probe, then initialize with the empty system prompt, then the user
	// line.
	sent := sentLines(t, fp, info.PID)
	require.Len(t, sent, 3)
	require.Equal(t, "mcp_status", request(sent[0])["subtype"])
	require.Equal(t, "initialize", request(sent[1])["subtype"])
	require.Equal(t, []any{""}, request(sent[1])["systemPrompt"])
	require.NotContains(t, request(sent[1]), "appendSystemPrompt")
	require.Equal(t, "hello", userText(t, sent[2]))

	st := fp.Stats()
	require.EqualValues(t, 1, st.Warm.FirstEvent.Count)
	require.EqualValues(t, 1, st.Warm.FirstText.Count)
	require.EqualValues(t, 1, st.Warm.Result.Count)
	require.EqualValues(t, 0, st.Cold.FirstEvent.Count)
	require.NoError(t, s.Close())
}

func TestStreamChatCold(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{}, fakecli.EnvStartupDelay+"=30ms")
	s, evs := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("cold"))
	require.False(t, s.Acquire().Warm)
	require.Equal(t, "echo: cold", s.Result().Text)
	require.Len(t, evs, 3)
	// The cold process's start-up is in its time to first event.
	require.GreaterOrEqual(t, s.Latency().FirstEvent, 30*time.Millisecond)
	require.EqualValues(t, 1, fp.Stats().Cold.FirstEvent.Count)
}

func TestStreamChatPartialMessages(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, PartialMessages: true}, fakecli.EnvChunks+"=4", fakecli.EnvReply+"=one two three four")
	require.NoError(t, fp.WaitReady(ctx))
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("hi"))
	require.NoError(t, err)
	defer s.Close()

	var deltas []string
	var whole string
	for ev, err := range s.Events() {
		require.NoError(t, err)
		switch ev.Type {
		case EventPartial:
			if ev.Partial.DeltaType == "text_delta" {
				deltas = append(deltas, ev.Text())
			}
		case EventAssistant:
			whole = ev.Text()
		}
	}
	require.NoError(t, s.Err())
	require.Len(t, deltas, 4)
	require.Equal(t, "one two three four", strings.Join(deltas, ""))
	require.Equal(t, "one two three four", whole)

	args, err := os.ReadFile(filepath.Join(fp.rec, strconv.Itoa(s.Acquire().PID)+".args"))
	require.NoError(t, err)
	require.Contains(t, string(args), "--include-partial-messages\n")
}

func TestStreamChatSystemPromptAndModel(t *testing.T) {
	tests := []struct {
		name       string
		req        Request
		wantSystem any // systemPrompt in initialize; nil: absent
		wantAppend any // appendSystemPrompt; nil: absent
		wantModel  string
	}{
		{"system and model", Request{System: "Be terse.", Model: "sonnet"}, []any{"Be terse."}, nil, "claude-sonnet-5-5"},
		{"append only keeps the CLI prompt", Request{AppendSystem: "Answer in French."}, nil, "Answer in French.", fakecli.DefaultModel},
		{"both", Request{System: "S", AppendSystem: "A", Model: "claude-x-1"}, []any{"S"}, "A", "claude-x-1"},
		{"neither means empty", Request{}, []any{""}, nil, fakecli.DefaultModel},
	}
	ctx := testCtx(t)
	// One chat a process: the lines a process received are its chat's.
	fp := newFakePool(t, Config{Size: 1, MaxUses: 1})
	a := NewAdapter(fp.Pool)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, fp.WaitReady(ctx))
			req := tt.req
			req.Messages = []Message{{Role: RoleUser, Content: "hi"}}
			s, evs := chatOK(t, ctx, a, req)
			require.True(t, s.Acquire().Warm, "settings are applied on a warm process")

			require.Equal(t, EventInit, evs[0].Type)
			require.Equal(t, tt.wantModel, evs[0].Init.Model)

			sent := sentLines(t, fp, s.Acquire().PID)
			init := request(sent[1])
			require.Equal(t, "initialize", init["subtype"])
			require.Equal(t, tt.wantSystem, init["systemPrompt"])
			require.Equal(t, tt.wantAppend, init["appendSystemPrompt"])
			if tt.req.Model != "" {
				require.Len(t, sent, 4)
				require.Equal(t, map[string]any{"subtype": "set_model", "model": tt.req.Model}, request(sent[2]))
			} else {
				require.Len(t, sent, 3)
			}
		})
	}
}

// With Config.Prompt, a warm process gets the pool's prompt before any
// claim. A request without a prompt of its own, or with the pool's, then
// starts with the user line; a request with another prompt is served by a
// cold process that gets that prompt.
func TestStreamChatPoolPrompt(t *testing.T) {
	ctx := testCtx(t)
	poolPrompt := SystemPrompt{System: "Pool prompt.", AppendSystem: "Be brief."}
	// One chat a process: the lines a process received are its chat's.
	fp := newFakePool(t, Config{Size: 1, MaxUses: 1, Prompt: &poolPrompt})
	a := NewAdapter(fp.Pool)

	require.NoError(t, fp.WaitReady(ctx))
	pids := fp.pids()
	require.Len(t, pids, 1)
	before := sentLines(t, fp, pids[0])
	require.Len(t, before, 2, "probe and initialize, before any claim")
	require.Equal(t, "mcp_status", request(before[0])["subtype"])
	require.Equal(t, map[string]any{"subtype": "initialize", "systemPrompt": []any{"Pool prompt."}, "appendSystemPrompt": "Be brief."}, request(before[1]))

	tests := []struct {
		name       string
		req        Request
		warm       bool
		wantSystem []any  // the prompt the process ran with
		wantAppend string // "" when none
	}{
		{"no prompt of its own", Request{}, true, []any{"Pool prompt."}, "Be brief."},
		{"the pool's prompt", Request{System: "Pool prompt.", AppendSystem: "Be brief."}, true, []any{"Pool prompt."}, "Be brief."},
		{"another prompt", Request{System: "Other."}, false, []any{"Other."}, ""},
		{"only part of the pool's prompt", Request{System: "Pool prompt."}, false, []any{"Pool prompt."}, ""},
		{"the pool's prompt with a model", Request{System: "Pool prompt.", AppendSystem: "Be brief.", Model: "sonnet"}, true, []any{"Pool prompt."}, "Be brief."},
	}
	cold := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, fp.WaitReady(ctx))
			req := tt.req
			req.Messages = []Message{{Role: RoleUser, Content: "hi"}}
			s, evs := chatOK(t, ctx, a, req)
			require.Equal(t, tt.warm, s.Acquire().Warm)

			var init struct {
				System []any  `json:"fake_system_prompt"`
				Append string `json:"fake_append_system_prompt"`
			}
			require.Equal(t, EventInit, evs[0].Type)
			require.NoError(t, json.Unmarshal(evs[0].Raw, &init))
			require.Equal(t, tt.wantSystem, init.System)
			require.Equal(t, tt.wantAppend, init.Append)

			var subtypes []any
			for _, m := range sentLines(t, fp, s.Acquire().PID) {
				if m["type"] == "user" {
					subtypes = append(subtypes, "user")
				} else {
					subtypes = append(subtypes, request(m)["subtype"])
				}
			}
			want := []any{"initialize", "user"} // cold: no probe
			switch {
			case tt.warm && tt.req.Model != "":
				want = []any{"mcp_status", "initialize", "set_model", "user"}
			case tt.warm:
				want = []any{"mcp_status", "initialize", "user"}
			default:
				cold++
			}
			require.Equal(t, want, subtypes)
			require.EqualValues(t, cold, fp.Stats().PromptCold)
		})
	}
}

// At the MaxProcs cap, a request whose prompt no warm process carries
// retires an idle one to get a slot, rather than wait for its deadline.
func TestPoolPromptAtMaxProcs(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 1, Prompt: &SystemPrompt{System: "pool"}})
	require.NoError(t, fp.WaitReady(ctx))
	idle := fp.pids()
	require.Len(t, idle, 1)

	s, evs := chatOK(t, ctx, NewAdapter(fp.Pool), Request{System: "other", Messages: []Message{{Role: RoleUser, Content: "hi"}}})
	require.False(t, s.Acquire().Warm)
	require.Contains(t, string(evs[0].Raw), `"fake_system_prompt":["other"]`)
	require.True(t, waitExited(idle[0], testWait), "the idle process was retired")
	require.NoError(t, s.Close())
	require.NoError(t, fp.WaitReady(ctx), "the pool refills once the slot is free")
}

// A warm process whose CLI rejects the pool's prompt never becomes ready:
// the spawn fails with the CLI's error, and WaitReady reports it.
func TestPoolPromptRejected(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, Prompt: &SystemPrompt{System: "x"}}, fakecli.EnvMode+"="+fakecli.ModeRejectInit)
	fp.logs.waitFor(t, "claudepool: spawn failed", 1)
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := fp.WaitReady(wctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "initialize request failed: "+fakecli.RejectInitError)
	require.Positive(t, fp.Stats().SpawnFailures)
	require.Zero(t, fp.Stats().Idle)
}

// The replacement of a process a chat took starts only once the chat's
// first event has arrived, so that its start-up does not compete with the
// chat for the CPU.
func TestStreamChatRefillAfterFirstEvent(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	before := time.Now()
	// The chat stays busy after its first event, so that its process is
	// not back in the pool before the replacement starts.
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("hi "+fakecli.Marker(fakecli.ModeHangMid)))
	require.NoError(t, err)
	defer s.Close()
	require.True(t, s.Next())
	firstEvent := before.Add(s.Latency().FirstEvent) // no later than the event

	started := fp.logs.waitFor(t, "claudepool: process started", 2)
	require.GreaterOrEqual(t, started[1].Time.Sub(firstEvent), pauseGrace,
		"the replacement starts pauseGrace after the first event at the earliest, when the CLI has sent its API request")
	require.NoError(t, s.Close())
	require.NoError(t, fp.WaitReady(ctx))
}

// A caller that finds no idle process ends the pauses of the chats before
// it: the refill then works for it at once instead of waiting for their
// first events.
func TestShortageEndsRefillPauses(t *testing.T) {
	for _, tt := range []struct {
		name  string
		short func(t *testing.T, ctx context.Context, fp *fakePool)
	}{
		{"StreamChat", func(t *testing.T, ctx context.Context, fp *fakePool) {
			s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("y"))
			require.NoError(t, err)
			require.False(t, s.Acquire().Warm, "the second chat found no idle process")
			drain(t, s)
			require.NoError(t, s.Err())
			require.NoError(t, s.Close())
		}},
		{"TryAcquire", func(t *testing.T, ctx context.Context, fp *fakePool) {
			_, err := fp.TryAcquire()
			require.ErrorIs(t, err, ErrNotAvailable)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			fp := newFakePool(t, Config{Size: 1})
			require.NoError(t, fp.WaitReady(ctx))
			pauses := func() int {
				fp.mu.Lock()
				defer fp.mu.Unlock()
				return fp.pausedLocked()
			}
			// The first chat's process prints nothing, so nothing but a
			// shortage ends its pause before maxPause.
			claimed := time.Now()
			s1, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x "+fakecli.Marker(fakecli.ModeHang)))
			require.NoError(t, err)
			defer s1.Close()
			tt.short(t, ctx, fp)
			if time.Since(claimed) < maxPause {
				require.Zero(t, pauses(), "the shortage ended the first chat's pause")
			}
			require.NoError(t, fp.WaitReady(ctx), "the refill replaces the first chat's process")
			require.NoError(t, s1.Close())
		})
	}
}

// A chat whose process never prints an event pauses the refill for
// maxPause at most.
func TestStreamChatRefillPauseIsBounded(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	claimed := time.Now()
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x "+fakecli.Marker(fakecli.ModeHang)))
	require.NoError(t, err)
	defer s.Close()

	started := fp.logs.waitFor(t, "claudepool: process started", 2)
	require.GreaterOrEqual(t, started[1].Time.Sub(claimed), maxPause)
	require.NoError(t, fp.WaitReady(ctx))
	require.Zero(t, s.Latency().FirstEvent, "the hung chat printed nothing")
	require.NoError(t, s.Close())
	requireErrorIs(t, s.Err(), ErrStreamClosed)
}

func TestStreamChatMultiTurn(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxUses: 1})
	require.NoError(t, fp.WaitReady(ctx))
	req := Request{Messages: []Message{
		{Role: RoleUser, Content: "What is 2+2?"},
		{Role: RoleAssistant, Content: "4"},
		{Role: RoleUser, Content: "And times 3?"},
	}}
	s, _ := chatOK(t, ctx, NewAdapter(fp.Pool), req)

	golden, err := os.ReadFile(filepath.Join("testdata", "multiturn.golden"))
	require.NoError(t, err)
	sent := sentLines(t, fp, s.Acquire().PID)
	require.Equal(t, string(golden), userText(t, sent[len(sent)-1]))
	require.Equal(t, "echo: "+string(golden), s.Result().Text)
}

func TestStreamChatInvalidRequest(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"no messages", Request{}, "no messages"},
		{"last is assistant", Request{Messages: []Message{{Role: RoleUser, Content: "q"}, {Role: RoleAssistant, Content: "a"}}}, "last message must be the user's"},
		{"unknown role", Request{Messages: []Message{{Role: "system", Content: "x"}, {Role: RoleUser, Content: "q"}}}, `role "system"`},
		{"empty content", Request{Messages: []Message{{Role: RoleUser, Content: "  \n"}}}, "message 0 is empty"},
		{"invalid UTF-8", Request{Messages: []Message{{Role: RoleUser, Content: "a\xffb"}}}, "not valid UTF-8"},
		{"invalid UTF-8 system", Request{System: "\xff", Messages: []Message{{Role: RoleUser, Content: "q"}}}, "System is not valid UTF-8"},
		{"model with spaces", Request{Model: "so net", Messages: []Message{{Role: RoleUser, Content: "q"}}}, "contains white space"},
		{"negative max_tokens", Request{MaxTokens: -1, Messages: []Message{{Role: RoleUser, Content: "q"}}}, "MaxTokens -1 is negative"},
		{"temperature above 1", Request{Temperature: ptr(1.5), Messages: []Message{{Role: RoleUser, Content: "q"}}}, "Temperature 1.5 is outside"},
		{"negative top_p", Request{TopP: ptr(-0.1), Messages: []Message{{Role: RoleUser, Content: "q"}}}, "TopP -0.1 is outside"},
		{"negative top_k", Request{TopK: ptr(-3), Messages: []Message{{Role: RoleUser, Content: "q"}}}, "TopK -3 is negative"},
		{"empty stop sequence", Request{StopSequences: []string{"x", ""}, Messages: []Message{{Role: RoleUser, Content: "q"}}}, "stop sequence 1 is empty"},
		{"API key with space", Request{APIKey: "sk one", Messages: []Message{{Role: RoleUser, Content: "q"}}}, "APIKey contains white space"},
		{"CLI's field", Request{APIFields: map[string]json.RawMessage{"messages": json.RawMessage(`[]`)}, Messages: []Message{{Role: RoleUser, Content: "q"}}}, `cannot set "messages"`},
		{"bad JSON field", Request{APIFields: map[string]json.RawMessage{"service_tier": json.RawMessage(`auto`)}, Messages: []Message{{Role: RoleUser, Content: "q"}}}, "is not a JSON value"},
	}
	ctx := testCtx(t)
	fp := newFakePool(t, Config{})
	a := NewAdapter(fp.Pool)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := a.StreamChat(ctx, tt.req)
			require.Nil(t, s)
			requireErrorIs(t, err, ErrInvalidRequest)
			require.ErrorContains(t, err, tt.want)
		})
	}
	st := fp.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires, "a bad request took a process")
	require.Empty(t, fp.pids())
}

func TestStreamChatResultError(t *testing.T) {
	ctx := testCtx(t)
	// The CLI does not retry a 400: its result reports it.
	fp := newFakePool(t, Config{Size: 1}, fakecli.EnvMode+"="+fakecli.ModeErrorResult, fakecli.EnvAPIStatus+"=400")
	require.NoError(t, fp.WaitReady(ctx))
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("hi"))
	require.NoError(t, err)
	defer s.Close()
	evs := drain(t, s)
	require.Equal(t, EventResult, evs[len(evs)-1].Type)

	var re *ResultError
	require.ErrorAs(t, s.Err(), &re)
	require.Equal(t, 400, re.APIErrorStatus)
	require.Equal(t, "success", re.Subtype, "failure is decided on is_error, not on subtype")
	require.Equal(t, fakecli.DefaultErrorText, re.Message)
	require.Equal(t, "api_error", re.TerminalReason)
	require.Same(t, s.Result(), re.Result)
	require.Contains(t, re.Error(), "API status 400")
}

func TestStreamChatExitWithoutResult(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("boom "+fakecli.Marker(fakecli.ModeCrash)))
	require.NoError(t, err)
	defer s.Close()
	evs := drain(t, s)
	require.NotEmpty(t, evs)
	require.Nil(t, s.Result())
	var ee *ExitError
	require.ErrorAs(t, s.Err(), &ee)
	require.Equal(t, 2, ee.Code)
	require.Contains(t, ee.Stderr, "panic: fake crash")
}

func TestStreamChatGarbageLineSkipped(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	_, evs := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("x "+fakecli.Marker(fakecli.ModeGarbage)))
	require.Equal(t, []EventType{EventInit, EventAssistant, EventResult}, types(evs))
	require.EqualValues(t, 1, fp.Stats().MalformedLines)
}

func TestStreamChatUnknownLinesPassThrough(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	_, evs := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("x "+fakecli.Marker(fakecli.ModeUnknownLines)))
	require.Equal(t, []EventType{EventInit, EventSystem, EventUnknown, EventAssistant, EventResult}, types(evs))
	require.Equal(t, "ui_invalidate", evs[1].Subtype)
	require.Equal(t, "brand_new_type", evs[2].Subtype)
	require.Contains(t, string(evs[2].Raw), `"brand_new_type"`)
}

func TestStreamChatRetryEvents(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1}, fakecli.EnvRetries+"=2")
	require.NoError(t, fp.WaitReady(ctx))
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x "+fakecli.Marker(fakecli.ModeRetry)))
	require.NoError(t, err)
	defer s.Close()
	var retries []*Retry
	for _, ev := range drain(t, s) {
		if ev.Type == EventRetry {
			retries = append(retries, ev.Retry)
		}
	}
	require.NoError(t, s.Err())
	require.Len(t, retries, 2)
	require.Equal(t, 1, retries[0].Attempt)
	require.Equal(t, 500, retries[0].ErrorStatus)
}

func TestStreamChatLargeLine(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	s, evs := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("x "+fakecli.Marker(fakecli.ModeHuge)))
	require.Len(t, evs[1].Text(), 10_000_000)
	require.Len(t, s.Result().Text, 10_000_000)
}

func TestStreamChatLineTooLong(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxLineBytes: 1 << 20}, fakecli.EnvHugeBytes+"=2000000")
	require.NoError(t, fp.WaitReady(ctx))
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x "+fakecli.Marker(fakecli.ModeHuge)))
	require.NoError(t, err)
	defer s.Close()
	evs := drain(t, s)
	require.Equal(t, []EventType{EventInit}, types(evs))
	requireErrorIs(t, s.Err(), ErrLineTooLong)
	require.NoError(t, s.Close())
	require.True(t, waitExited(s.Acquire().PID, 0), "process not reaped after Close")
}

func TestStreamChatCancelMidStream(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, PartialMessages: true})
	require.NoError(t, fp.WaitReady(ctx))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := NewAdapter(fp.Pool).StreamChat(cctx, userMsg("x "+fakecli.Marker(fakecli.ModeHangMid)))
	require.NoError(t, err)
	defer s.Close()
	pid := s.Acquire().PID
	// Wait for the first text delta, then cancel.
	for s.Next() {
		if s.Event().Text() != "" {
			break
		}
	}
	cancel()
	for s.Next() {
	}
	requireErrorIs(t, s.Err(), context.Canceled)
	require.NoError(t, s.Close())
	require.True(t, waitExited(pid, 0), "process %d not reaped after Close", pid)
	// The interrupted process never goes back to the pool.
	require.NoError(t, fp.WaitReady(ctx))
	proc, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.NotEqual(t, pid, proc.PID())
	require.NoError(t, proc.Stop(ctx))
}

func TestStreamChatDeadlineOnHungCLI(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, StopGrace: 20 * time.Millisecond},
		fakecli.EnvIgnoreSIGTERM+"=1", fakecli.EnvMode+"="+fakecli.ModeHang)
	require.NoError(t, fp.WaitReady(ctx))
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	s, err := NewAdapter(fp.Pool).StreamChat(dctx, userMsg("x"))
	require.NoError(t, err)
	require.False(t, s.Next())
	requireErrorIs(t, s.Err(), context.DeadlineExceeded)
	require.NoError(t, s.Close())
	requireGone(t, fp.pids()[:1])
}

func TestStreamCloseWithoutDraining(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, PartialMessages: true}, fakecli.EnvChunks+"=50", fakecli.EnvChunkDelay+"=10ms")
	require.NoError(t, fp.WaitReady(ctx))
	fds := openFDs(t)
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x"))
	require.NoError(t, err)
	require.True(t, s.Next())
	pid := s.Acquire().PID
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close twice")
	require.False(t, s.Next())
	require.True(t, waitExited(pid, 0))
	// The replacement holds the pipes the claimed process held before;
	// wait until its spawn is over so that none of its fds are in flux.
	require.NoError(t, fp.WaitReady(ctx))
	require.LessOrEqual(t, openFDs(t), fds, "file descriptors left open")
}

func TestStreamChatOutputClosedEarly(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, StopGrace: 50 * time.Millisecond})
	require.NoError(t, fp.WaitReady(ctx))
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x "+fakecli.Marker(fakecli.ModeCloseStdout)))
	require.NoError(t, err)
	defer s.Close()
	drain(t, s)
	// Its output ended without a result; the process, still running, was
	// interrupted after StopGrace.
	var ee *ExitError
	require.ErrorAs(t, s.Err(), &ee)
	require.ErrorContains(t, ee, "CLI exited without a result")
	require.True(t, waitExited(s.Acquire().PID, 0))
}

func TestStreamChatGrandchildHoldingStdout(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxUses: 1})
	require.NoError(t, fp.WaitReady(ctx))
	s, _ := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("x "+fakecli.Marker(fakecli.ModeGrandchild)))
	require.Equal(t, "echo: x "+fakecli.Marker(fakecli.ModeGrandchild), s.Result().Text)
	require.NoError(t, s.Close())
	// Closing the pool does not touch the finished process's grandchild:
	// its exit comes from the group kill when the CLI was reaped.
	require.NoError(t, fp.WaitReady(ctx))
	pids := fp.pids()
	require.Len(t, pids, 3, "the process, its grandchild and the refill")
	require.NoError(t, fp.Close(ctx))
	requireGone(t, pids)
}

func TestStreamChatCLIExitsAtStart(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{}, fakecli.EnvMode+"="+fakecli.ModeExitEarly)
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x"))
	require.NoError(t, err)
	defer s.Close()
	require.False(t, s.Next())
	var ee *ExitError
	require.ErrorAs(t, s.Err(), &ee)
	require.Equal(t, 1, ee.Code)
	require.Contains(t, s.Err().Error(), "exited before answering initialize")
	require.Contains(t, ee.Stderr, "fatal: fake start-up failure")
}

func TestStreamChatControlTimeout(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{ReadyTimeout: 50 * time.Millisecond}, fakecli.EnvMode+"="+fakecli.ModeNoReady)
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x"))
	require.NoError(t, err)
	defer s.Close()
	require.False(t, s.Next())
	requireErrorIs(t, s.Err(), ErrNotReady)
}

func TestStreamEventsYieldsError(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1}, fakecli.EnvMode+"="+fakecli.ModeErrorResult)
	require.NoError(t, fp.WaitReady(ctx))
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x"))
	require.NoError(t, err)
	defer s.Close()
	var last error
	n := 0
	for _, err := range s.Events() {
		n++
		last = err
	}
	require.Greater(t, n, 1)
	var re *ResultError
	require.True(t, errors.As(last, &re), "last yield carries the stream error, got %v", last)
}

func TestRenderTranscript(t *testing.T) {
	require.Equal(t, "", RenderTranscript(nil))
	require.Equal(t, "only", RenderTranscript([]Message{{Role: RoleUser, Content: "only"}}))
	got := RenderTranscript([]Message{
		{Role: RoleUser, Content: "What is 2+2?"},
		{Role: RoleAssistant, Content: "4"},
		{Role: RoleUser, Content: "And times 3?"},
	})
	golden, err := os.ReadFile(filepath.Join("testdata", "multiturn.golden"))
	require.NoError(t, err)
	require.Equal(t, string(golden), got)
}

func TestNewAdapterNilPoolPanics(t *testing.T) {
	require.PanicsWithValue(t, "claudepool: NewAdapter with a nil Pool", func() { NewAdapter(nil) })
}

func TestStreamResultWinsOverLaterCancel(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := NewAdapter(fp.Pool).StreamChat(cctx, userMsg("hi"))
	require.NoError(t, err)
	defer s.Close()
	for s.Next() {
		if s.Event().Type == EventResult {
			// The reply is complete; the client goes away before the CLI
			// has exited.
			cancel()
		}
	}
	require.NoError(t, s.Err(), "a result that arrived before the cancel decides the outcome")
	require.Equal(t, "echo: hi", s.Result().Text)
}

func TestStreamErrAfterCloseMidStream(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, PartialMessages: true})
	require.NoError(t, fp.WaitReady(ctx))
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x "+fakecli.Marker(fakecli.ModeHangMid)))
	require.NoError(t, err)
	require.True(t, s.Next())
	require.NoError(t, s.Close())
	require.False(t, s.Next())
	require.ErrorContains(t, s.Err(), "stream closed", "a stream closed mid-turn does not report success")
	require.Zero(t, fp.Stats().Busy, "counts are final once the process was reaped")
}

func ptr[T any](v T) *T { return &v }
