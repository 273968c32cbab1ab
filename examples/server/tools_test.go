package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// testToolsJSON is the -tools file of the tests: the tool definitions as
// a client sends them too.
const testToolsJSON = `[
  {"name": "lookup", "description": "Looks things up; the client answers.",
   "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}},
  {"name": "add", "description": "Adds two numbers.",
   "input_schema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}
]`

// writeTools writes a -tools file.
func writeTools(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tools.json")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// testTools are the tools of testToolsJSON.
func testTools(t *testing.T) *toolSet {
	t.Helper()
	ts, err := loadTools(writeTools(t, testToolsJSON))
	require.NoError(t, err)
	return ts
}

// toolsJSON are the definitions of testToolsJSON, to send in a request.
func toolsJSON(t *testing.T) []any {
	t.Helper()
	var list []any
	require.NoError(t, json.Unmarshal([]byte(testToolsJSON), &list))
	return list
}

// newToolServer is a test server whose pool of fake CLIs offers the
// tools of testToolsJSON, answered by the clients, through the pool's
// gateway (which offers each chat its request's tools; the fake calls no
// API, so it sees no call).
func newToolServer(t *testing.T, partial bool, env ...string) *testServer {
	t.Helper()
	tools := testTools(t)
	ts := newTestServerConfig(t, func(c *claudepool.Config) {
		c.NoGateway, c.APIKey = false, "sk-fake-unused"
		c.MaxProcs = 2
		c.PartialMessages = partial
		c.GoTools = tools.goTools()
	}, env...)
	ts.api.tools = tools
	require.True(t, ts.api.hasGateway())
	return ts
}

// lookupMarker makes the fake CLI's model call the server's tool lookup.
func lookupMarker(input string) string {
	return fakecli.ToolCallMarker(fakecli.MCPToolName("claudepool", "lookup"), input)
}

// TestLoadTools: a -tools file lists Messages API tool definitions; the
// pool gets each as a tool without a Handler, which the clients answer.
// A malformed file stops the start, naming what is wrong.
func TestLoadTools(t *testing.T) {
	ts := testTools(t)
	got := ts.goTools()
	require.Len(t, got, 2)
	require.Equal(t, "lookup", got[0].Name)
	require.Equal(t, "Looks things up; the client answers.", got[0].Description)
	require.JSONEq(t, `{"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}`, string(got[0].InputSchema))
	require.Nil(t, got[0].Handler, "the client answers")
	require.Equal(t, "add", got[1].Name)

	for _, tt := range []struct{ name, content, want string }{
		{"not a list", `{"name": "x"}`, "must be a JSON list of tool definitions"},
		{"empty", `[]`, "lists no tools"},
		{"no schema", `[{"name": "x"}]`, "tools.0.input_schema: field required"},
		{"schema not an object", `[{"name": "x", "input_schema": []}]`, "tools.0.input_schema: must be a JSON schema object"},
		{"bad name", `[{"name": "a b", "input_schema": {}}]`, `tools.0.name: "a b" is not 1 to 64 letters`},
		{"no name", `[{"input_schema": {}}]`, "tools.0.name: field required"},
		{"unknown field", `[{"name": "x", "input_schema": {}, "strict": true}]`, "tools.0.strict: unsupported field"},
		{"server tool", `[{"name": "web_search", "type": "web_search_20250305"}]`, `tools.0.type: "web_search_20250305" tools are not supported`},
		{"twice", `[{"name": "x", "input_schema": {}}, {"name": "x", "input_schema": {}}]`, `tools.1.name: two tools are named "x"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadTools(writeTools(t, tt.content))
			require.ErrorContains(t, err, tt.want)
		})
	}
	_, err := loadTools(filepath.Join(t.TempDir(), "missing.json"))
	require.ErrorIs(t, err, os.ErrNotExist)

	o, err := parseOptions(nil, envOf(map[string]string{"CLAUDEPOOL_TOOLS": "/etc/tools.json"}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, "/etc/tools.json", o.tools)
	o, err = parseOptions([]string{"-tools", "mine.json"}, envOf(map[string]string{"CLAUDEPOOL_TOOLS": "/etc/tools.json"}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, "mine.json", o.tools)

	// run stops at a malformed file, before the pool starts.
	o, err = parseOptions([]string{"-tools", writeTools(t, `[]`), "-cli", fakeCLI, "-addr", "127.0.0.1:0"}, noEnv, io.Discard)
	require.NoError(t, err)
	require.ErrorContains(t, run(context.Background(), o, newTextLogger(io.Discard)), "-tools: ")
}

// TestRunToolsNeedTheGateway: without the pool's gateway, which offers
// each chat the tools its request lists, the server does not start with
// -tools.
func TestRunToolsNeedTheGateway(t *testing.T) {
	t.Setenv("ANTHROPIC_API_KEY", "")
	t.Setenv("ANTHROPIC_AUTH_TOKEN", "")
	o, err := parseOptions([]string{"-tools", writeTools(t, testToolsJSON), "-cli", fakeCLI, "-size", "1",
		"-addr", "127.0.0.1:0", "-close-timeout", "10s"}, noEnv, io.Discard)
	require.NoError(t, err)
	o.started = func(*server, string, string) { t.Error("the server started") }
	require.ErrorContains(t, run(context.Background(), o, newTextLogger(io.Discard)), "-tools needs the pool's gateway")
}

// TestMessagesToolsParsed: a request's tools, the server's by name and
// input_schema, become Request.GoTools, and its tool_choice
// Request.ToolChoice; a choice that forces a call turns the CLI's
// thinking off. The calls of an assistant turn become its ToolUseBlocks
// after its text (the text blocks joined as the reply split them), their
// input as JSON.stringify writes it; the results of a user turn its
// ToolResultBlocks.
func TestMessagesToolsParsed(t *testing.T) {
	f := messagesFormat{tools: testTools(t)}
	parse := func(extra map[string]any, msgs ...any) claudepool.Request {
		t.Helper()
		c, err := f.parse([]byte(messagesBody(t, false, extra, msgs...)))
		require.NoError(t, err)
		return c.req
	}
	tools := toolsJSON(t)
	req := parse(map[string]any{"tools": tools}, "hi")
	require.Equal(t, []string{"lookup", "add"}, req.GoTools)
	require.Empty(t, req.ToolChoice)
	require.Nil(t, req.Thinking, "the CLI's thinking")

	// The description is the server's; the client's may differ.
	add := map[string]any{"name": "add", "description": "mine", "type": "custom", "cache_control": map[string]string{"type": "ephemeral"},
		"input_schema": map[string]any{"properties": map[string]any{"b": map[string]string{"type": "number"}, "a": map[string]string{"type": "number"}}, "type": "object"}}
	for choice, want := range map[string]string{`{"type":"auto"}`: "auto", `{"type":"none"}`: "none", `{"type":"auto","disable_parallel_tool_use":false}`: "auto"} {
		req = parse(map[string]any{"tools": []any{add}, "tool_choice": json.RawMessage(choice)}, "hi")
		require.Equal(t, []string{"add"}, req.GoTools)
		require.Equal(t, want, req.ToolChoice)
		require.Nil(t, req.Thinking)
	}
	for choice, want := range map[string]string{`{"type":"any"}`: "any", `{"type":"tool","name":"add"}`: "add"} {
		req = parse(map[string]any{"tools": []any{add}, "tool_choice": json.RawMessage(choice)}, "hi")
		require.Equal(t, want, req.ToolChoice)
		require.Equal(t, &claudepool.Thinking{Type: claudepool.ThinkingDisabled}, req.Thinking, "the API takes no thinking with a forced call")
	}

	// No tools: tool_choice auto or none asks for nothing.
	for _, extra := range []map[string]any{nil, {"tools": []any{}}, {"tool_choice": map[string]string{"type": "none"}}, {"tools": nil}} {
		req = parse(extra, "hi")
		require.Nil(t, req.GoTools, "serveChat offers none")
		require.Empty(t, req.ToolChoice)
	}

	// The loop: the calls as the reply sent them, the client's input
	// re-encoded, and their results.
	req = parse(map[string]any{"tools": tools},
		"what is the weather?",
		[]map[string]any{
			{"type": "thinking", "thinking": "hmm", "signature": "c2ln"},
			textJSON("Let me "), textJSON("look."),
			{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": json.RawMessage("{\n  \"q\": \"w\\u00e9ather <now>\",\n  \"n\": 1.50, \"big\": 1E21, \"z\": [true, null, {}]\n}")},
			{"type": "tool_use", "id": "toolu_2", "name": "add", "input": map[string]any{}, "cache_control": map[string]string{"type": "ephemeral"}},
		},
		[]map[string]any{
			{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
			{"type": "tool_result", "tool_use_id": "toolu_2", "content": []map[string]any{textJSON("no"), textJSON("numbers")}, "is_error": true},
		},
	)
	require.Equal(t, []claudepool.Message{
		{Role: claudepool.RoleUser, Content: "what is the weather?"},
		{Role: claudepool.RoleAssistant, Content: "Let me look.", Blocks: []claudepool.Block{
			claudepool.ToolUseBlock("toolu_1", "lookup", json.RawMessage(`{"q":"wéather <now>","n":1.5,"big":1e+21,"z":[true,null,{}]}`)),
			claudepool.ToolUseBlock("toolu_2", "add", json.RawMessage(`{}`)),
		}},
		{Role: claudepool.RoleUser, Blocks: []claudepool.Block{
			claudepool.ToolResultBlock("toolu_1", "sunny", false),
			claudepool.ToolResultBlock("toolu_2", "no\nnumbers", true),
		}},
	}, req.Messages)

	// A result with text after it keeps both in place; one without
	// content is empty.
	req = parse(nil, "q", []map[string]any{{"type": "tool_use", "id": "t", "name": "lookup", "input": map[string]any{}}},
		[]map[string]any{{"type": "tool_result", "tool_use_id": "t"}, textJSON("and then?")})
	require.Equal(t, []claudepool.Block{claudepool.ToolResultBlock("t", "", false), claudepool.TextBlock("and then?")}, req.Messages[2].Blocks)
	require.Empty(t, req.Messages[2].Content)
}

// TestJSJSON: JSON re-encoded as JSON.stringify(JSON.parse(...)) writes
// it.
func TestJSJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"b": 1, "a": [1, 2]}`:              `{"b":1,"a":[1,2]}`,
		`{"s": "\u00e9\u003c\u2028\/x\"\\"}`: `{"s":"é<` + "\u2028" + `/x\"\\"}`,
		`"\u0001\b\f\n\r\t\u007f"`:           `"\u0001\b\f\n\r\t` + "\x7f" + `"`,
		`[0, -0, 1.0, 1.5e3, 1e21, 1e-7, 123e-20, -0.000001, 0.1, 12345678901234567890]`: `[0,0,1,1500,1e+21,1e-7,1.23e-18,-0.000001,0.1,12345678901234567000]`,
		`[1e400]`:                  `[null]`,
		`{}`:                       `{}`,
		` {"a" : { "b" : [ ] } } `: `{"a":{"b":[]}}`,
	} {
		got, err := jsJSON([]byte(in))
		require.NoError(t, err, in)
		require.Equal(t, want, string(got), in)
	}
	for _, bad := range []string{`{"a":}`, `{} {}`, ``} {
		_, err := jsJSON([]byte(bad))
		require.Error(t, err, bad)
	}
}

// TestMessagesToolsInvalid: tools other than the server's, a malformed
// tool_choice and malformed tool_use and tool_result blocks are 400s in
// the API's shape, before the chat takes a process.
func TestMessagesToolsInvalid(t *testing.T) {
	ts := newToolServer(t, true)
	lookup := toolsJSON(t)[0].(map[string]any)
	otherSchema := map[string]any{"name": "lookup", "input_schema": map[string]any{"type": "object"}}
	use := func(input any) []map[string]any {
		return []map[string]any{{"type": "tool_use", "id": "t1", "name": "lookup", "input": input}}
	}
	result := []map[string]any{{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}}
	tests := []struct {
		name, body, want string
	}{
		{"unknown tool", messagesBody(t, false, map[string]any{"tools": []any{map[string]any{"name": "weather", "input_schema": map[string]any{}}}}, "hi"),
			`tools.0.name: "weather" is not one of this server's tools: it offers only the tools it was started with (lookup, add)`},
		{"other schema", messagesBody(t, false, map[string]any{"tools": []any{otherSchema}}, "hi"),
			`tools.0.input_schema: differs from that of this server's tool "lookup": it offers only the tools it was started with`},
		{"twice", messagesBody(t, false, map[string]any{"tools": []any{lookup, lookup}}, "hi"), `tools.1.name: "lookup" is offered twice`},
		{"server tool", messagesBody(t, false, map[string]any{"tools": []any{map[string]any{"type": "bash_20250124", "name": "bash"}}}, "hi"),
			`tools.0.type: "bash_20250124" tools are not supported`},
		{"tools not a list", messagesBody(t, false, map[string]any{"tools": "lookup"}, "hi"), "tools: must be a list"},
		{"choice of a tool not offered", messagesBody(t, false, map[string]any{"tools": []any{lookup}, "tool_choice": map[string]string{"type": "tool", "name": "add"}}, "hi"),
			`tool_choice.name: "add" is not one of the request's tools`},
		{"choice any without tools", messagesBody(t, false, map[string]any{"tool_choice": map[string]string{"type": "any"}}, "hi"), `tool_choice: type "any" needs tools`},
		{"choice type", messagesBody(t, false, map[string]any{"tools": []any{lookup}, "tool_choice": map[string]string{"type": "some"}}, "hi"), `tool_choice.type: must be`},
		{"choice no type", messagesBody(t, false, map[string]any{"tools": []any{lookup}, "tool_choice": map[string]string{}}, "hi"), `tool_choice.type: field required`},
		{"choice not an object", messagesBody(t, false, map[string]any{"tools": []any{lookup}, "tool_choice": "auto"}, "hi"), `tool_choice: must be an object`},
		{"parallel off", messagesBody(t, false, map[string]any{"tools": []any{lookup}, "tool_choice": map[string]any{"type": "auto", "disable_parallel_tool_use": true}}, "hi"),
			"tool_choice.disable_parallel_tool_use: not supported by this server"},
		{"forced with thinking", messagesBody(t, false, map[string]any{"max_tokens": 2048, "tools": []any{lookup}, "tool_choice": map[string]string{"type": "any"},
			"thinking": map[string]any{"type": "enabled", "budget_tokens": 1024}}, "hi"), `thinking: not with a tool_choice that forces tool use`},
		{"tool_use in a user turn", messagesBody(t, false, nil, use(map[string]any{})), `messages.0.content.0.type: "tool_use" blocks belong in assistant turns`},
		{"tool_result in an assistant turn", messagesBody(t, false, nil, "hi", result, "ok"), `messages.1.content.0.type: "tool_result" blocks belong in user turns`},
		{"input not an object", messagesBody(t, false, nil, "hi", use([]int{1}), result), "messages.1.content.0.input: field required, an object"},
		{"no id", messagesBody(t, false, nil, "hi", []map[string]any{{"type": "tool_use", "name": "lookup", "input": map[string]any{}}}, result), "messages.1.content.0.id: field required"},
		{"unknown tool_use field", messagesBody(t, false, nil, "hi", []map[string]any{{"type": "tool_use", "id": "t1", "name": "lookup", "input": map[string]any{}, "caller": "x"}}, result),
			"messages.1.content.0.caller: unsupported field for tool_use blocks"},
		{"call without its result", messagesBody(t, false, nil, "hi", use(map[string]any{}), "ok"), `messages.2: tool_use "t1" has no tool_result in the message after it`},
		{"result without its call", messagesBody(t, false, nil, result), `tool_result "t1" answers no tool_use`},
		{"result of another call", messagesBody(t, false, nil, "hi", use(map[string]any{}), append(result, map[string]any{"type": "tool_result", "tool_use_id": "t2"})),
			`tool_result "t2" answers no tool_use`},
		{"image in a result", messagesBody(t, false, nil, "hi", use(map[string]any{}), []map[string]any{{"type": "tool_result", "tool_use_id": "t1",
			"content": []any{imageJSON("image/png", testPNG(t, 1))}}}), "messages.2.content.0.content.0: this server takes text blocks only in a tool_result"},
		{"is_error not a boolean", messagesBody(t, false, nil, "hi", use(map[string]any{}), []map[string]any{{"type": "tool_result", "tool_use_id": "t1", "is_error": "yes"}}),
			"messages.2.content.0.is_error: must be a boolean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.postTo(t, context.Background(), "/v1/messages", tt.body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			e := apiErrorBody(t, resp.Body)
			require.Equal(t, "invalid_request_error", e.Error.Type)
			require.Contains(t, e.Error.Message, tt.want)
			require.Equal(t, resp.Header.Get("Request-Id"), e.RequestID)
		})
	}
	// A server without -tools offers none.
	plain := newTestServer(t)
	resp := plain.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, map[string]any{"tools": []any{lookup}}, "hi"))
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, apiErrorBody(t, resp.Body).Error.Message,
		`tools.0.name: "lookup" is not one of this server's tools: it offers only the tools it was started with (none: it was started without -tools)`)

	for _, s := range []*testServer{ts, plain} {
		st := s.pool.Stats()
		require.Zero(t, st.WarmAcquires+st.ColdAcquires, "a bad request took a process")
	}
}

// toolReply is a reply as a client reads it: its content blocks, each as
// the server sent it (a streamed one assembled as the SDKs assemble it:
// each tool_use block's input the concatenation of its input_json_delta
// events), and its stop reason.
type toolReply struct {
	content []json.RawMessage
	stop    string
	events  []string // the names of a streamed reply's events
}

// readToolReply reads a reply, streamed or not, checking that a streamed
// one's blocks start in order, each tool_use block with an empty input,
// and stop before the next starts.
func readToolReply(t *testing.T, resp *http.Response, stream bool) toolReply {
	t.Helper()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var r toolReply
	if !stream {
		var m struct {
			Content    []json.RawMessage `json:"content"`
			StopReason string            `json:"stop_reason"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		r.content, r.stop = m.Content, m.StopReason
		return r
	}
	return assembleReply(t, readEvents(t, resp))
}

// assembleReply assembles a streamed reply's events, as readToolReply.
func assembleReply(t *testing.T, evs []decodedEvent) toolReply {
	t.Helper()
	var r toolReply
	var blocks []map[string]any
	var inputs []string
	open := -1
	for _, ev := range evs {
		r.events = append(r.events, ev.name)
		switch ev.name {
		case "content_block_start":
			require.Equal(t, -1, open, "a block starts after the one before stopped")
			i := int(ev.data["index"].(float64))
			require.Equal(t, len(blocks), i, "blocks start in order")
			cb := ev.data["content_block"].(map[string]any)
			if cb["type"] == "tool_use" {
				require.Equal(t, map[string]any{}, cb["input"], "a tool_use block starts with an empty input")
				require.NotEmpty(t, cb["id"])
				require.NotEmpty(t, cb["name"])
			}
			blocks, inputs, open = append(blocks, cb), append(inputs, ""), i
		case "content_block_delta":
			require.Equal(t, float64(open), ev.data["index"])
			d := ev.data["delta"].(map[string]any)
			switch d["type"] {
			case "text_delta":
				blocks[open]["text"] = blocks[open]["text"].(string) + d["text"].(string)
			case "thinking_delta":
				blocks[open]["thinking"] = blocks[open]["thinking"].(string) + d["thinking"].(string)
			case "signature_delta":
				blocks[open]["signature"] = blocks[open]["signature"].(string) + d["signature"].(string)
			case "input_json_delta":
				require.Equal(t, "tool_use", blocks[open]["type"])
				inputs[open] += d["partial_json"].(string)
			default:
				t.Fatalf("unexpected delta %v", d)
			}
		case "content_block_stop":
			require.Equal(t, float64(open), ev.data["index"])
			open = -1
		case "message_delta":
			r.stop = ev.data["delta"].(map[string]any)["stop_reason"].(string)
		}
	}
	require.Equal(t, -1, open)
	str := func(v any) string { s, _ := v.(string); return s }
	for i, b := range blocks {
		cb := contentBlock{Type: str(b["type"]), Text: str(b["text"]), Thinking: str(b["thinking"]), Signature: str(b["signature"]),
			ID: str(b["id"]), Name: str(b["name"])}
		if cb.Type == "tool_use" {
			cb.Input = json.RawMessage(orDefault(inputs[i], "{}"))
		}
		raw, err := marshal(cb) // the fields in the API's order
		require.NoError(t, err)
		r.content = append(r.content, raw)
	}
	return r
}

// TestMessagesToolUseLoop: on a server with -tools, a request that offers
// a tool gets the model's call of it: a tool_use block (streamed: its
// start, the input in input_json_delta events, its stop) and stop_reason
// "tool_use". The request that sends back the assistant content it
// received and the tool's result resumes the paused turn on the process
// that holds it (a continued conversation), whose reply quotes the
// result. The same loop works without partial messages (the input comes
// whole in one delta), and with an input the client re-encoded.
func TestMessagesToolUseLoop(t *testing.T) {
	for _, tc := range []struct {
		name             string
		stream, partial  bool
		reencode         bool
		wantStreamEvents []string
	}{
		{name: "not streamed", partial: true},
		{name: "not streamed, input re-encoded", partial: true, reencode: true},
		{name: "streamed", stream: true, partial: true},
		{name: "streamed without partial messages", stream: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newToolServer(t, tc.partial)
			tools := toolsJSON(t)
			const input = `{"q":"weather in Zürich <today>","days":2}`
			question := "what is the weather? " + lookupMarker(input)
			resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, tc.stream, map[string]any{"tools": tools}, question))
			r := readToolReply(t, resp, tc.stream)
			require.Equal(t, "tool_use", r.stop)
			require.Len(t, r.content, 1, "the fake calls without text: %s", r.content)
			var call struct {
				Type, ID, Name string
				Input          json.RawMessage
			}
			require.NoError(t, json.Unmarshal(r.content[0], &call))
			require.Equal(t, "tool_use", call.Type)
			require.Equal(t, "lookup", call.Name, "the tool's own name")
			require.True(t, strings.HasPrefix(call.ID, "toolu_"), call.ID)
			require.JSONEq(t, input, string(call.Input))
			if tc.stream {
				require.Equal(t, []string{"message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop",
					"message_delta", "message_stop"}, r.events, "one tool_use block at index 0, its input in one delta")
			} else {
				require.Contains(t, string(r.content[0]), `"input":`+input, "the input as the CLI wrote it")
			}
			st := ts.pool.Stats()
			require.Zero(t, st.Conversations.Continued)

			assistant := r.content
			if tc.reencode {
				var b bytes.Buffer
				require.NoError(t, json.Indent(&b, []byte(`{"type":"tool_use","id":"`+call.ID+`","name":"lookup","input":{"q":"weather in Z\u00fcrich \u003ctoday\u003e","days":2.0}}`), "", "  "))
				assistant = []json.RawMessage{b.Bytes()}
			}
			results := []map[string]any{{"type": "tool_result", "tool_use_id": call.ID, "content": "sunny, 21C"}}
			resp = ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, tc.stream, map[string]any{"tools": tools}, question, assistant, results))
			r = readToolReply(t, resp, tc.stream)
			require.Equal(t, "end_turn", r.stop)
			require.Len(t, r.content, 1)
			require.JSONEq(t, `{"type":"text","text":"tool lookup said: sunny, 21C"}`, string(r.content[0]))
			st = ts.pool.Stats()
			require.EqualValues(t, 1, st.Conversations.Continued, "the paused turn resumed")
			require.Equal(t, ts.pidWith(t, "what is the weather?"), ts.pidWith(t, "sunny, 21C"), "on the process that held it")
		})
	}
}

// TestMessagesToolUseEdited: a request whose history differs from the
// reply (an edited call) resumes no paused turn: the pool renders the
// calls and results into a transcript for a process without the turn
// (the one that held it gives way, reset, when no other is idle).
func TestMessagesToolUseEdited(t *testing.T) {
	ts := newToolServer(t, true)
	tools := toolsJSON(t)
	question := "look it up " + lookupMarker(`{"q":"x"}`)
	r := readToolReply(t, ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, map[string]any{"tools": tools}, question)), false)
	var call struct{ ID string }
	require.NoError(t, json.Unmarshal(r.content[0], &call))
	edited := []map[string]any{{"type": "tool_use", "id": call.ID, "name": "lookup", "input": map[string]any{"q": "y"}}}
	results := []map[string]any{{"type": "tool_result", "tool_use_id": call.ID, "content": "found"}}
	// The fake's model calls the tool again: the transcript quotes the
	// question, marker and all.
	readToolReply(t, ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, map[string]any{"tools": tools}, question, edited, results)), false)
	require.Zero(t, ts.pool.Stats().Conversations.Continued)
	ts.pidWith(t, `tool_use id=\"`+call.ID+`\" name=\"lookup\"`)
	ts.pidWith(t, `tool_result tool_use_id=\"`+call.ID+`\" is_error=\"false\"\u003e\nfound\n`)
}

// TestToolsOfferedPerRequest: a chat offers the model the tools its
// request lists, none without: on /chat too. The gateway applies it;
// here the chats run on a pool whose gateway is on, and the request
// reaches the CLI.
func TestToolsOfferedPerRequest(t *testing.T) {
	ts := newToolServer(t, true, fakecli.EnvReply+"=plain")
	resp := ts.post(t, context.Background(), chatBody("hello"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(b), `"text":"plain"`)
	r := readToolReply(t, ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, nil, "hello")), false)
	require.Equal(t, "end_turn", r.stop)

	// Without the gateway (tests only: run refuses to start so), a
	// chat that would offer tools fails before it takes a process.
	nogw := newTestServer(t)
	nogw.api.tools = testTools(t)
	resp = nogw.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, nil, "hello"))
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Equal(t, errNoTools.Error(), apiErrorBody(t, resp.Body).Error.Message)
}

// toolEvents are the events of a tool_use block as the CLI sends them:
// with partial messages, its stream events (the CLI's name of the tool,
// the input in pieces), then the block in an assistant message of its
// own, under the tool's name.
func toolEvents(t *testing.T, partials bool, index int, id, name string, input ...string) []claudepool.Event {
	t.Helper()
	partial := func(deltaType string, event map[string]any) claudepool.Event {
		raw, err := json.Marshal(event)
		require.NoError(t, err)
		return claudepool.Event{Type: claudepool.EventPartial, Partial: &claudepool.Partial{
			Type: event["type"].(string), Index: index, DeltaType: deltaType, Event: raw}}
	}
	var evs []claudepool.Event
	if partials {
		// The pool's partial events name its tools by their own names.
		evs = append(evs, partial("", map[string]any{"type": "content_block_start", "index": index,
			"content_block": map[string]any{"type": "tool_use", "id": id, "name": name, "input": map[string]any{}}}))
		for _, s := range input {
			evs = append(evs, partial("input_json_delta", map[string]any{"type": "content_block_delta", "index": index,
				"delta": map[string]any{"type": "input_json_delta", "partial_json": s}}))
		}
		evs = append(evs, partial("", map[string]any{"type": "content_block_stop", "index": index}))
	}
	return append(evs, claudepool.Event{Type: claudepool.EventAssistant, Message: &claudepool.ChatMessage{
		ID: "msg_1", Model: "claude-test", Role: "assistant", Content: []claudepool.ContentBlock{
			{Type: "tool_use", ID: id, Name: name, Input: json.RawMessage(strings.Join(input, ""))}}}})
}

// TestReplyToolUse: a reply that ends with calls of the server's tools
// has, after its text (and its thinking, when asked for), one tool_use
// block for each call, and stop_reason "tool_use". Streamed, each block
// starts with an empty input at the next index, its input follows in
// input_json_delta events (as the API streamed it with partial messages,
// whole without), and it stops before the next starts. Calls of tools
// that are not the server's do not show; a call of the result that did
// not stream comes whole at the end.
func TestReplyToolUse(t *testing.T) {
	tools := testTools(t)
	lookupIn, addIn := []string{`{"q":`, `"weather `, `<now>"}`}, []string{`{"a":1,`, `"b":2}`}
	res := &claudepool.Result{Text: "Let me look.", StopReason: "tool_use", Subtype: claudepool.SubtypeToolUse, Thinking: "Let me think.",
		ToolCalls: []claudepool.ToolCall{
			{ID: "toolu_1", Name: "lookup", Input: json.RawMessage(`{"q":"weather <now>"}`)},
			{ID: "toolu_2", Name: "add", Input: json.RawMessage(`{"a":1,"b":2}`)},
		}}
	wantContent := []string{
		`{"type":"text","text":"Let me look."}`,
		`{"type":"tool_use","id":"toolu_1","name":"lookup","input":{"q":"weather <now>"}}`,
		`{"type":"tool_use","id":"toolu_2","name":"add","input":{"a":1,"b":2}}`,
	}
	const sig = "c2lnbmF0dXJl"
	for _, partials := range []bool{true, false} {
		name := map[bool]string{true: "partials", false: "whole"}[partials]
		evs := cliEvents(t, partials, []string{"Let me ", "think."}, sig, []string{"Let me ", "look."})
		evs = append(evs, toolEvents(t, partials, 2, "toolu_1", "lookup", lookupIn...)...)
		evs = append(evs, toolEvents(t, partials, 3, "toolu_2", "add", addIn...)...)
		evs = append(evs, toolEvents(t, partials, 4, "toolu_3", "Bash", `{"command":"ls"}`)...)
		offered := call{req: claudepool.Request{GoTools: []string{"lookup", "add"}}}

		t.Run(name+" not streamed", func(t *testing.T) {
			w := renderTools(t, evs, offered, res, tools)
			r := readToolReply(t, w.Result(), false)
			require.Equal(t, "tool_use", r.stop)
			require.Equal(t, wantContent, rawStrings(r.content))

			shown := offered
			shown.thinking.show = true
			r = readToolReply(t, renderTools(t, evs, shown, res, tools).Result(), false)
			require.Equal(t, append([]string{`{"type":"thinking","thinking":"Let me think.","signature":"` + sig + `"}`}, wantContent...), rawStrings(r.content))
		})

		t.Run(name+" streamed", func(t *testing.T) {
			c := offered
			c.stream = true
			r := assembleReply(t, recordedEvents(t, renderTools(t, evs, c, res, tools)))
			require.Equal(t, "tool_use", r.stop)
			require.Equal(t, wantContent, rawStrings(r.content))
			want := []string{"message_start", "ping",
				"content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
				"content_block_start", "content_block_delta", "content_block_delta", "content_block_delta", "content_block_stop",
				"content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
				"message_delta", "message_stop"}
			if !partials {
				// The text, and each input, in one delta.
				want = []string{"message_start", "ping",
					"content_block_start", "content_block_delta", "content_block_stop",
					"content_block_start", "content_block_delta", "content_block_stop",
					"content_block_start", "content_block_delta", "content_block_stop",
					"message_delta", "message_stop"}
			}
			require.Equal(t, want, r.events)

			c.thinking.show = true
			r = assembleReply(t, recordedEvents(t, renderTools(t, evs, c, res, tools)))
			require.Equal(t, append([]string{`{"type":"thinking","thinking":"Let me think.","signature":"` + sig + `"}`}, wantContent...), rawStrings(r.content))
		})
	}

	t.Run("a call that did not stream", func(t *testing.T) {
		evs := toolEvents(t, true, 0, "toolu_1", "lookup", lookupIn...)
		c := call{stream: true, req: claudepool.Request{GoTools: []string{"lookup", "add"}}}
		r := assembleReply(t, recordedEvents(t, renderTools(t, evs, c, &claudepool.Result{StopReason: "tool_use", ToolCalls: res.ToolCalls}, tools)))
		require.Equal(t, wantContent[1:], rawStrings(r.content), "the tool_use blocks alone, from index 0")
		require.Equal(t, []string{"message_start", "ping",
			"content_block_start", "content_block_delta", "content_block_delta", "content_block_delta", "content_block_stop",
			"content_block_start", "content_block_delta", "content_block_stop",
			"message_delta", "message_stop"}, r.events)
	})
}

// rawStrings returns the texts of raw JSON values.
func rawStrings(raws []json.RawMessage) []string {
	out := make([]string, len(raws))
	for i, r := range raws {
		out[i] = string(r)
	}
	return out
}
