package claudepool

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// callerTool is a tool the caller answers.
func callerTool(name string) Tool {
	return Tool{Name: name, Description: "Answered by the caller.", InputSchema: json.RawMessage(`{"type":"object"}`)}
}

// toolMarker makes the fake CLI's model call the pool's tool name.
func toolMarker(name, input string) string {
	return fakecli.ToolCallMarker(fakecli.MCPToolName(toolServer, name), input)
}

// A call of a tool without a Handler ends the chat with the call, the
// process keeps the turn, and the request that brings the result resumes
// that same turn on that process.
func TestCallerToolPausesAndResumes(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 2, HoldConversations: time.Minute, GoTools: []Tool{callerTool("lookup")}})
	require.NoError(t, fp.WaitReady(ctx))
	a := NewAdapter(fp.Pool)

	first := userMsg("find it " + toolMarker("lookup", `{"q":"x"}`))
	s1, evs := chatOK(t, ctx, a, first)
	r1 := s1.Result()
	require.Equal(t, SubtypeToolUse, r1.Subtype)
	require.Equal(t, "tool_use", r1.StopReason)
	require.Len(t, r1.ToolCalls, 1)
	call := r1.ToolCalls[0]
	require.Equal(t, "lookup", call.Name)
	require.JSONEq(t, `{"q":"x"}`, string(call.Input))
	require.NotEmpty(t, call.ID)
	require.Equal(t, EventResult, evs[len(evs)-1].Type)

	next := first
	next.Messages = append(append([]Message(nil), first.Messages...), r1.AssistantMessage(),
		Message{Role: RoleUser, Blocks: []Block{ToolResultBlock(call.ID, "found it", false)}})
	s2, evs2 := chatOK(t, ctx, a, next)
	require.True(t, s2.Acquire().Continued, "the paused turn resumed")
	require.Equal(t, s1.Acquire().PID, s2.Acquire().PID)
	require.Equal(t, "tool lookup said: found it", s2.Result().Text)
	require.Empty(t, s2.Result().ToolCalls)
	for _, ev := range evs2 {
		require.NotEqual(t, EventInit, ev.Type, "the same turn goes on")
	}
	// No user line went to the process for the resumed chat.
	texts := userTexts(t, fp, s1.Acquire().PID)
	require.Equal(t, first.Messages[0].Content, texts[len(texts)-1])
}

// Two calls of the caller's tools in one message: the chat lists both,
// and the results of both resume the turn.
func TestCallerToolsTwoInOneMessage(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 2, HoldConversations: time.Minute,
		GoTools: []Tool{callerTool("a"), callerTool("b")}})
	a := NewAdapter(fp.Pool)
	first := userMsg("both " + toolMarker("a", `{"n":1}`) + " " + toolMarker("b", `{"n":2}`))
	s1, _ := chatOK(t, ctx, a, first)
	calls := s1.Result().ToolCalls
	require.Len(t, calls, 2)
	require.Equal(t, []string{"a", "b"}, []string{calls[0].Name, calls[1].Name})

	next := first
	next.Messages = append(append([]Message(nil), first.Messages...), s1.Result().AssistantMessage(),
		Message{Role: RoleUser, Blocks: []Block{ToolResultBlock(calls[0].ID, "one", false), ToolResultBlock(calls[1].ID, "two failed", true)}})
	s2, _ := chatOK(t, ctx, a, next)
	require.True(t, s2.Acquire().Continued)
	require.Equal(t, "tool a said: one\ntool b failed: two failed", s2.Result().Text)
}

// Without a process holding the paused turn (held conversations off), the
// results go to a fresh turn with the calls and results rendered into
// the transcript, clearly marked; the paused turn was ended at its reset.
func TestCallerToolRenderedFallback(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 1, GoTools: []Tool{callerTool("lookup")}})
	a := NewAdapter(fp.Pool)
	first := userMsg("find it " + toolMarker("lookup", `{"q":"x"}`))
	s1, _ := chatOK(t, ctx, a, first)
	call := s1.Result().ToolCalls[0]
	waitQuiet(t, ctx, fp.Pool)

	next := first
	next.Messages = append(append([]Message(nil), first.Messages...), s1.Result().AssistantMessage(),
		Message{Role: RoleUser, Blocks: []Block{ToolResultBlock(call.ID, "found <it>", false)}})
	s2, err := a.StreamChat(ctx, next)
	require.NoError(t, err)
	defer s2.Close()
	drain(t, s2)
	require.False(t, s2.Acquire().Continued)
	line := lastUserText(t, fp, s2.Acquire().PID)
	require.Contains(t, line, `<tool_use id="`+call.ID+`" name="lookup">`)
	require.Contains(t, line, `<tool_result tool_use_id="`+call.ID+`" is_error="false">`+"\nfound &lt;it&gt;\n</tool_result>")
	require.Zero(t, retiredTotal(fp.Stats()), "the paused turn ended cleanly at its reset")
}

// A request whose tool results answer no call of the message before it
// is refused before it takes a process.
func TestToolResultNeedsItsCall(t *testing.T) {
	req := Request{Messages: []Message{
		{Role: RoleUser, Content: "q"},
		{Role: RoleAssistant, Content: "a", Blocks: []Block{ToolUseBlock("toolu_1", "lookup", json.RawMessage(`{}`))}},
		{Role: RoleUser, Blocks: []Block{ToolResultBlock("toolu_2", "r", false)}},
	}}
	err := req.validate()
	require.ErrorIs(t, err, ErrInvalidRequest)
	require.True(t, strings.Contains(err.Error(), `tool_result "toolu_2" answers no tool_use`), err.Error())
	req.Messages[2].Blocks[0].ToolUseID = "toolu_1"
	require.NoError(t, req.validate())
}

// The gateway offers a chat only the pool's tools it names, and sets its
// tool_choice under the CLI's name of the tool; other tools stay.
func TestApplyTools(t *testing.T) {
	body := `{"model":"m","tools":[{"name":"Bash","input_schema":{}},{"name":"mcp__claudepool__a","input_schema":{}},{"name":"mcp__claudepool__b","input_schema":{}}],"stream":true}`
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{}, body},
		{Request{GoTools: []string{"b"}}, `{"model":"m","tools":[{"name":"Bash","input_schema":{}},{"name":"mcp__claudepool__b","input_schema":{}}],"stream":true}`},
		{Request{GoTools: []string{}}, `{"model":"m","tools":[{"name":"Bash","input_schema":{}}],"stream":true}`},
		{Request{ToolChoice: "any"}, strings.TrimSuffix(body, "}") + `,"tool_choice":{"type":"any"}}`},
		{Request{ToolChoice: "a"}, strings.TrimSuffix(body, "}") + `,"tool_choice":{"name":"mcp__claudepool__a","type":"tool"}}`},
	} {
		obj, err := parseObject([]byte(body))
		require.NoError(t, err)
		applyTools(&obj, &tc.req)
		require.Equal(t, tc.want, string(obj.bytes()))
	}
}

// A client that decodes and re-encodes a call's input (other spacing, key
// order, escapes) still resumes the paused turn: the conversation's key
// reads the input as JSON.
func TestCallerToolResumesWithReencodedInput(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 2, HoldConversations: time.Minute, GoTools: []Tool{callerTool("lookup")}})
	a := NewAdapter(fp.Pool)
	first := userMsg("find " + toolMarker("lookup", `{"q":"é","n":1}`))
	s1, _ := chatOK(t, ctx, a, first)
	call := s1.Result().ToolCalls[0]
	back := s1.Result().AssistantMessage()
	back.Blocks[0].Input = json.RawMessage(`{ "n": 1, "q": "\u00e9" }`)
	next := first
	next.Messages = append(append([]Message(nil), first.Messages...), back,
		Message{Role: RoleUser, Blocks: []Block{ToolResultBlock(call.ID, "ok", false)}})
	s2, _ := chatOK(t, ctx, a, next)
	require.True(t, s2.Acquire().Continued)
	require.Equal(t, "tool lookup said: ok", s2.Result().Text)
}

// With partial messages, the start of a tool_use block names the pool's
// tool by its own name too.
func TestCallerToolPartialNames(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 2, PartialMessages: true, GoTools: []Tool{callerTool("lookup")}})
	_, evs := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("find "+toolMarker("lookup", `{"q":"x"}`)))
	var starts int
	for _, ev := range evs {
		if ev.Type == EventPartial && ev.Partial.Type == "content_block_start" && strings.Contains(string(ev.Partial.Event), "tool_use") {
			starts++
			require.Contains(t, string(ev.Partial.Event), `"name":"lookup"`)
		}
	}
	require.Equal(t, 1, starts)
}
