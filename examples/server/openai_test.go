package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// openaiPath is the path of the Chat Completions API.
const openaiPath = "/v1/chat/completions"

// mountOpenAI routes POST /v1/chat/completions to the server's handler,
// unless its router already does.
func mountOpenAI(s *server) {
	probe := httptest.NewRequest(http.MethodPost, openaiPath, nil)
	if _, pattern := s.mux.Handler(probe); !strings.HasSuffix(pattern, openaiPath) {
		s.mux.HandleFunc("POST "+openaiPath, s.chatCompletions)
	}
}

// newOpenAIServer is newTestServer with the Chat Completions API mounted.
func newOpenAIServer(t *testing.T, env ...string) *testServer {
	t.Helper()
	ts := newTestServer(t, env...)
	mountOpenAI(ts.api)
	return ts
}

// openaiBody returns a Chat Completions request with the given extra
// fields and messages: a string or a list of parts is the content of a
// user message (an assistant message at odd places), a map is a message
// whole.
func openaiBody(t *testing.T, extra map[string]any, msgs ...any) string {
	t.Helper()
	b := map[string]any{"model": "claude-test"}
	var m []any
	for i, c := range msgs {
		if msg, ok := c.(map[string]any); ok {
			m = append(m, msg)
			continue
		}
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		m = append(m, map[string]any{"role": role, "content": c})
	}
	b["messages"] = m
	for k, v := range extra {
		b[k] = v
	}
	out, err := json.Marshal(b)
	require.NoError(t, err)
	return string(out)
}

// openaiMsg is a message of a request.
func openaiMsg(role string, content any) map[string]any {
	return map[string]any{"role": role, "content": content}
}

// openaiFunctionTool is a tool of testToolsJSON as an OpenAI function.
func openaiFunctionTool(t *testing.T, i int) map[string]any {
	t.Helper()
	d := toolsJSON(t)[i].(map[string]any)
	return map[string]any{"type": "function", "function": map[string]any{
		"name": d["name"], "description": d["description"], "parameters": d["input_schema"]}}
}

// dataURLOf is a base64 data URL.
func dataURLOf(mediaType string, data []byte) string {
	return "data:" + mediaType + ";base64," + b64(data)
}

// openaiErrorResp decodes an error answer in OpenAI's shape.
func openaiErrorResp(t *testing.T, resp *http.Response) openaiErrorDetail {
	t.Helper()
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var fields map[string]json.RawMessage
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&fields))
	require.Len(t, fields, 1, "the error alone")
	var e map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(fields["error"], &e))
	for _, k := range []string{"message", "type", "param", "code"} {
		require.Contains(t, e, k, "each field, null when unknown")
	}
	var d openaiErrorDetail
	require.NoError(t, json.Unmarshal(fields["error"], &d))
	return d
}

// streamed is a streamed reply as a client assembles it.
type streamed struct {
	chunks  []map[string]any // every chunk, in order
	role    string
	content string
	deltas  int // content deltas with text
	calls   []openaiToolCall
	finish  string
	usage   map[string]any // the usage chunk's
	done    bool           // data: [DONE] ended it
	failure map[string]any // the error event that ended it
}

// readStreamed reads a streamed reply to its end, checking each chunk's
// shape.
func readStreamed(t *testing.T, r io.Reader) streamed {
	t.Helper()
	var s streamed
	sc := bufio.NewScanner(r)
	var id string
	for ev, ok := readEvent(sc); ok; ev, ok = readEvent(sc) {
		require.Empty(t, ev.name, "OpenAI's events have no names")
		require.False(t, s.done, "nothing after [DONE]")
		require.Nil(t, s.failure, "nothing after an error")
		if ev.data == "[DONE]" {
			s.done = true
			continue
		}
		var c map[string]any
		require.NoError(t, json.Unmarshal([]byte(ev.data), &c), ev.data)
		if e, ok := c["error"].(map[string]any); ok {
			s.failure = e
			continue
		}
		s.chunks = append(s.chunks, c)
		require.Equal(t, "chat.completion.chunk", c["object"])
		require.Positive(t, c["created"])
		if id == "" {
			id = c["id"].(string)
			require.True(t, strings.HasPrefix(id, "chatcmpl-"), id)
		}
		require.Equal(t, id, c["id"], "one id for every chunk")
		choices := c["choices"].([]any)
		if u, ok := c["usage"].(map[string]any); ok {
			require.Empty(t, choices, "the usage chunk has no choice")
			s.usage = u
			continue
		}
		require.Len(t, choices, 1)
		ch := choices[0].(map[string]any)
		require.EqualValues(t, 0, ch["index"])
		require.Contains(t, ch, "logprobs")
		require.Empty(t, s.finish, "no chunk after the finish reason but the usage")
		if f, ok := ch["finish_reason"].(string); ok {
			s.finish = f
		}
		d := ch["delta"].(map[string]any)
		if role, ok := d["role"].(string); ok {
			require.Empty(t, s.role, "the role in the first chunk alone")
			s.role = role
		}
		if text, ok := d["content"].(string); ok {
			s.content += text
			if text != "" {
				s.deltas++
			}
		}
		calls, _ := d["tool_calls"].([]any)
		for _, raw := range calls {
			c := raw.(map[string]any)
			i := int(c["index"].(float64))
			fn := c["function"].(map[string]any)
			if i == len(s.calls) {
				require.Equal(t, "function", c["type"])
				require.NotEmpty(t, c["id"])
				require.NotEmpty(t, fn["name"])
				s.calls = append(s.calls, openaiToolCall{ID: c["id"].(string), Type: "function", Function: openaiFunction{Name: fn["name"].(string)}})
			}
			require.Equal(t, len(s.calls)-1, i, "calls in order, each whole before the next")
			s.calls[i].Function.Arguments += fn["arguments"].(string)
		}
	}
	require.NoError(t, sc.Err())
	return s
}

// completion decodes a reply that is not streamed.
func completion(t *testing.T, resp *http.Response) openaiCompletion {
	t.Helper()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var c openaiCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&c))
	require.True(t, strings.HasPrefix(c.ID, "chatcmpl-"), c.ID)
	require.Equal(t, "chat.completion", c.Object)
	require.Positive(t, c.Created)
	require.Len(t, c.Choices, 1)
	require.Equal(t, "assistant", c.Choices[0].Message.Role)
	return c
}

// TestOpenAIParsed: a request maps to a claudepool.Request: the system
// and developer messages to its system prompt, the user's text, images
// (data URLs decoded, http(s) URLs by reference) and files to its
// messages, the parameters to the Messages API's, response_format
// json_schema to its output schema; the stream options are the reply's.
func TestOpenAIParsed(t *testing.T) {
	img, pdf := testPNG(t, 1), testPDF
	parse := func(t *testing.T, body string) (call, *openaiFormat) {
		t.Helper()
		f := &openaiFormat{tools: testTools(t)}
		c, err := f.parse([]byte(body))
		require.NoError(t, err)
		return c, f
	}
	schema := map[string]any{"type": "object", "properties": map[string]any{"name": map[string]string{"type": "string"}}, "required": []string{"name"}}
	c, f := parse(t, openaiBody(t, map[string]any{
		"max_completion_tokens": 300, "temperature": 0.5, "top_p": 0.9, "stop": "END", "user": "tenant-1", "stream": true,
		"stream_options": map[string]any{"include_usage": true}, "response_format": map[string]any{"type": "json_schema",
			"json_schema": map[string]any{"name": "person", "strict": true, "schema": schema}},
		// The defaults of what the server cannot do, and what it ignores.
		"n": 1, "logprobs": false, "presence_penalty": 0, "frequency_penalty": 0.0, "seed": nil, "logit_bias": map[string]any{},
		"store": false, "modalities": []string{"text"}, "parallel_tool_calls": true, "metadata": map[string]string{"k": "v"},
		"service_tier": "auto", "prompt_cache_key": "p",
	},
		openaiMsg("system", "Be brief."),
		openaiMsg("developer", []any{textJSON("Be kind."), textJSON("Be right.")}),
		openaiMsg("user", []any{
			textJSON("What are these?"),
			map[string]any{"type": "image_url", "image_url": map[string]any{"url": dataURLOf("image/png", img), "detail": "auto"}},
			map[string]any{"type": "image_url", "image_url": map[string]any{"url": "https://example.com/cat.png"}},
			map[string]any{"type": "file", "file": map[string]any{"file_data": dataURLOf("application/pdf", pdf), "filename": "report.pdf"}},
			map[string]any{"type": "file", "file": map[string]any{"file_data": dataURLOf("text/plain", []byte("some notes")), "filename": "notes.txt"}},
		}),
		openaiMsg("assistant", []any{textJSON("A pixel"), map[string]any{"type": "refusal", "refusal": "and more."}}),
		openaiMsg("user", []any{textJSON("part one"), textJSON("part two")}),
	))
	require.True(t, c.stream)
	require.True(t, c.announce)
	require.True(t, f.includeUsage)
	require.False(t, c.thinking.show, "the reply shows no thinking")
	temp, topP := 0.5, 0.9
	pdfDoc := claudepool.DocumentBlock("application/pdf", pdf)
	pdfDoc.Title = "report.pdf"
	require.Equal(t, claudepool.Request{
		Model:  "claude-test",
		System: "Be brief.\n\nBe kind.\n\nBe right.",
		Messages: []claudepool.Message{
			{Role: claudepool.RoleUser, Blocks: []claudepool.Block{
				claudepool.TextBlock("What are these?"),
				claudepool.ImageBlock("image/png", img),
				claudepool.ImageURL("https://example.com/cat.png"),
				pdfDoc,
				claudepool.TextDocument("notes.txt", "some notes"),
			}},
			{Role: claudepool.RoleAssistant, Content: "A pixel\n\nand more."},
			{Role: claudepool.RoleUser, Content: "part one\n\npart two"},
		},
		MaxTokens: 300, Temperature: &temp, TopP: &topP, StopSequences: []string{"END"}, UserID: "tenant-1",
		OutputSchema: json.RawMessage(`{"properties":{"name":{"type":"string"}},"required":["name"],"type":"object"}`),
	}, c.req)

	// max_tokens is max_completion_tokens's older name; stop takes a
	// list; safety_identifier is user's successor; no stream options.
	c, f = parse(t, openaiBody(t, map[string]any{"max_tokens": 50, "stop": []string{"a", "b"}, "safety_identifier": "u2",
		"response_format": map[string]any{"type": "text"}}, "hi"))
	require.Equal(t, 50, c.req.MaxTokens)
	require.Equal(t, []string{"a", "b"}, c.req.StopSequences)
	require.Equal(t, "u2", c.req.UserID)
	require.Nil(t, c.req.OutputSchema)
	require.False(t, c.stream)
	require.False(t, f.includeUsage)
	require.Zero(t, c.req.System)
	require.Equal(t, []claudepool.Message{{Role: claudepool.RoleUser, Content: "hi"}}, c.req.Messages)

	// Nothing asked: the CLI's settings.
	c, _ = parse(t, openaiBody(t, nil, "hi"))
	require.Equal(t, claudepool.Request{Model: "claude-test", Messages: []claudepool.Message{{Role: claudepool.RoleUser, Content: "hi"}}}, c.req)
}

// TestOpenAIToolsParsed: function tools, the server's with its input
// schema as parameters, are Request.GoTools; tool_choice "required" is the
// API's "any", a function its name, and both force a call without the
// CLI's thinking. An assistant message's tool_calls are ToolUseBlocks
// after its text, their arguments re-encoded as JSON.stringify writes
// them; the tool messages after it are one user message of
// ToolResultBlocks, with the user message that follows them.
func TestOpenAIToolsParsed(t *testing.T) {
	f := &openaiFormat{tools: testTools(t)}
	parse := func(extra map[string]any, msgs ...any) claudepool.Request {
		t.Helper()
		c, err := f.parse([]byte(openaiBody(t, extra, msgs...)))
		require.NoError(t, err)
		return c.req
	}
	lookup, add := openaiFunctionTool(t, 0), openaiFunctionTool(t, 1)
	req := parse(map[string]any{"tools": []any{lookup, add}}, "hi")
	require.Equal(t, []string{"lookup", "add"}, req.GoTools)
	require.Empty(t, req.ToolChoice)
	require.Nil(t, req.Thinking)

	// The description is the server's; the client's may differ.
	mine := map[string]any{"type": "function", "function": map[string]any{"name": "add", "description": "mine", "strict": false,
		"parameters": map[string]any{"properties": map[string]any{"b": map[string]string{"type": "number"}, "a": map[string]string{"type": "number"}}, "type": "object"}}}
	for choice, want := range map[string]string{`"auto"`: "auto", `"none"`: "none", `"required"`: "any", `{"type":"function","function":{"name":"add"}}`: "add"} {
		req = parse(map[string]any{"tools": []any{mine}, "tool_choice": json.RawMessage(choice)}, "hi")
		require.Equal(t, []string{"add"}, req.GoTools)
		require.Equal(t, want, req.ToolChoice, choice)
		if want == "auto" || want == "none" {
			require.Nil(t, req.Thinking)
		} else {
			require.Equal(t, &claudepool.Thinking{Type: claudepool.ThinkingDisabled}, req.Thinking, "the API takes no thinking with a forced call")
		}
	}
	// No tools: tool_choice auto or none asks for nothing.
	for _, extra := range []map[string]any{{"tools": []any{}}, {"tool_choice": "none"}, {"tools": nil, "tool_choice": "auto"}} {
		req = parse(extra, "hi")
		require.Nil(t, req.GoTools, "serveChat offers none")
		require.Empty(t, req.ToolChoice)
	}

	// The loop: the calls as the reply sent them, the client's arguments
	// re-encoded, and their results.
	req = parse(map[string]any{"tools": []any{lookup, add}},
		"what is the weather?",
		map[string]any{"role": "assistant", "content": "Let me look.", "refusal": nil, "tool_calls": []any{
			map[string]any{"id": "call_1", "type": "function", "function": map[string]any{"name": "lookup", "arguments": "{\n  \"q\": \"w\\u00e9ather <now>\", \"n\": 1.50\n}"}},
			map[string]any{"id": "call_2", "type": "function", "function": map[string]any{"name": "add", "arguments": ""}},
		}},
		map[string]any{"role": "tool", "tool_call_id": "call_2", "content": []any{textJSON("no"), textJSON("numbers")}},
		map[string]any{"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
		openaiMsg("user", "and tomorrow?"),
	)
	require.Equal(t, []claudepool.Message{
		{Role: claudepool.RoleUser, Content: "what is the weather?"},
		{Role: claudepool.RoleAssistant, Content: "Let me look.", Blocks: []claudepool.Block{
			claudepool.ToolUseBlock("call_1", "lookup", json.RawMessage(`{"q":"wéather <now>","n":1.5}`)),
			claudepool.ToolUseBlock("call_2", "add", json.RawMessage(`{}`)),
		}},
		{Role: claudepool.RoleUser, Blocks: []claudepool.Block{
			claudepool.ToolResultBlock("call_2", "no\nnumbers", false),
			claudepool.ToolResultBlock("call_1", "sunny", false),
			claudepool.TextBlock("and tomorrow?"),
		}},
	}, req.Messages)

	// An assistant message with calls alone, its content null, as a reply
	// that called without text gives it.
	req = parse(nil, "q",
		map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{
			map[string]any{"id": "c", "type": "function", "function": map[string]any{"name": "lookup", "arguments": `{"q":"x"}`}}}},
		map[string]any{"role": "tool", "tool_call_id": "c", "content": ""},
	)
	require.Equal(t, claudepool.Message{Role: claudepool.RoleAssistant, Blocks: []claudepool.Block{
		claudepool.ToolUseBlock("c", "lookup", json.RawMessage(`{"q":"x"}`))}}, req.Messages[1])
	require.Equal(t, claudepool.Message{Role: claudepool.RoleUser, Blocks: []claudepool.Block{claudepool.ToolResultBlock("c", "", false)}}, req.Messages[2])
}

// TestOpenAIInvalid: what the server cannot honour, and what is
// malformed, is a 400 in OpenAI's shape that names the field, before the
// chat takes a process.
func TestOpenAIInvalid(t *testing.T) {
	ts := newToolServer(t, true)
	mountOpenAI(ts.api)
	lookup := openaiFunctionTool(t, 0)
	png := testPNG(t, 1)
	image := func(url string, extra map[string]any) []any {
		img := map[string]any{"url": url}
		for k, v := range extra {
			img[k] = v
		}
		return []any{textJSON("what is this?"), map[string]any{"type": "image_url", "image_url": img}}
	}
	calls := func(args string) map[string]any {
		return map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{
			map[string]any{"id": "call_1", "type": "function", "function": map[string]any{"name": "lookup", "arguments": args}}}}
	}
	result := func(id string) map[string]any {
		return map[string]any{"role": "tool", "tool_call_id": id, "content": "ok"}
	}
	tests := []struct {
		name, body, param, want string
	}{
		{"malformed JSON", `{"model":`, "", "malformed request"},
		{"unknown field", openaiBody(t, map[string]any{"reasoning_effort": "low"}, "hi"), "reasoning_effort", "reasoning_effort: unsupported field: this server takes model, messages"},
		{"functions", openaiBody(t, map[string]any{"functions": []any{}}, "hi"), "functions", "functions: not supported by this server: send tools and tool_choice"},
		{"n", openaiBody(t, map[string]any{"n": 2}, "hi"), "n", "n: not supported by this server: it returns one choice; send 1 or leave it out"},
		{"logprobs", openaiBody(t, map[string]any{"logprobs": true}, "hi"), "logprobs", "logprobs: not supported by this server"},
		{"top_logprobs", openaiBody(t, map[string]any{"top_logprobs": 3}, "hi"), "top_logprobs", "top_logprobs: not supported by this server"},
		{"presence penalty", openaiBody(t, map[string]any{"presence_penalty": 0.5}, "hi"), "presence_penalty", "presence_penalty: not supported by this server: its model takes no presence penalty"},
		{"frequency penalty", openaiBody(t, map[string]any{"frequency_penalty": -1}, "hi"), "frequency_penalty", "frequency_penalty: not supported by this server"},
		{"seed", openaiBody(t, map[string]any{"seed": 42}, "hi"), "seed", "seed: not supported by this server: its model's sampling cannot be seeded; leave it out"},
		{"logit bias", openaiBody(t, map[string]any{"logit_bias": map[string]int{"50256": -100}}, "hi"), "logit_bias", "logit_bias: not supported"},
		{"store", openaiBody(t, map[string]any{"store": true}, "hi"), "store", "store: not supported by this server: it stores no completions"},
		{"audio out", openaiBody(t, map[string]any{"modalities": []string{"text", "audio"}}, "hi"), "modalities", "modalities: not supported"},
		{"no parallel calls", openaiBody(t, map[string]any{"parallel_tool_calls": false}, "hi"), "parallel_tool_calls", "parallel_tool_calls: not supported by this server: the model may call several tools in one reply"},
		{"temperature over 1", openaiBody(t, map[string]any{"temperature": 1.5}, "hi"), "temperature", "temperature: must be at most 1 on this server, got 1.5"},
		{"temperature over 2", openaiBody(t, map[string]any{"temperature": 2.5}, "hi"), "temperature", "temperature: must be from 0 to 2, got 2.5"},
		{"temperature not a number", openaiBody(t, map[string]any{"temperature": "hot"}, "hi"), "temperature", "temperature: must be a number"},
		{"top_p", openaiBody(t, map[string]any{"top_p": 1.2}, "hi"), "top_p", "top_p: must be from 0 to 1, got 1.2"},
		{"both max tokens", openaiBody(t, map[string]any{"max_tokens": 5, "max_completion_tokens": 5}, "hi"), "max_tokens", "max_tokens: not with max_completion_tokens"},
		{"max tokens 0", openaiBody(t, map[string]any{"max_completion_tokens": 0}, "hi"), "max_completion_tokens", "max_completion_tokens: must be at least 1, got 0"},
		{"max tokens fraction", openaiBody(t, map[string]any{"max_tokens": 1.5}, "hi"), "max_tokens", "max_tokens: must be an integer"},
		{"empty stop", openaiBody(t, map[string]any{"stop": ""}, "hi"), "stop", "stop: must not be empty"},
		{"stop not strings", openaiBody(t, map[string]any{"stop": []any{"x", 1}}, "hi"), "stop.1", "stop.1: must be a string"},
		{"user too long", openaiBody(t, map[string]any{"user": strings.Repeat("u", 257)}, "hi"), "user", "user: must be at most 256 characters, got 257"},
		{"user and safety identifier", openaiBody(t, map[string]any{"user": "a", "safety_identifier": "b"}, "hi"), "safety_identifier", "safety_identifier: differs from user"},
		{"json mode", openaiBody(t, map[string]any{"response_format": map[string]string{"type": "json_object"}}, "hi"), "response_format.type",
			`response_format.type: "json_object" is not supported by this server: its model follows a JSON schema, not a JSON mode`},
		{"json schema without schema", openaiBody(t, map[string]any{"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x"}}}, "hi"),
			"response_format.json_schema.schema", "response_format.json_schema.schema: field required"},
		{"json schema description", openaiBody(t, map[string]any{"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x", "description": "d", "schema": map[string]any{}}}}, "hi"),
			"response_format.json_schema.description", "response_format.json_schema.description: not supported by this server"},
		{"stream options without stream", openaiBody(t, map[string]any{"stream_options": map[string]any{"include_usage": true}}, "hi"), "stream_options", "stream_options: only with stream true"},
		{"obfuscation", openaiBody(t, map[string]any{"stream": true, "stream_options": map[string]any{"include_obfuscation": true}}, "hi"),
			"stream_options.include_obfuscation", "stream_options.include_obfuscation: not supported by this server"},
		{"no model", `{"messages":[{"role":"user","content":"hi"}]}`, "model", "model: field required"},
		{"no messages", `{"model":"m"}`, "messages", "messages: field required"},
		{"system alone", openaiBody(t, nil, openaiMsg("system", "x")), "messages", "messages: at least one user message is required"},
		{"system later", openaiBody(t, nil, "hi", "hello", openaiMsg("system", "x"), "and?"), "messages.2.role", "messages.2.role: a system message after the conversation began is not supported"},
		{"prefill", openaiBody(t, nil, "hi", "Sure,"), "messages", "messages: the last message must be a user or tool message"},
		{"function role", openaiBody(t, nil, openaiMsg("function", "x")), "messages.0.role", `messages.0.role: "function" messages are not supported`},
		{"unknown role", openaiBody(t, nil, openaiMsg("critic", "x")), "messages.0.role", `messages.0.role: must be "system", "developer", "user", "assistant" or "tool", got "critic"`},
		{"name", openaiBody(t, nil, map[string]any{"role": "user", "content": "hi", "name": "ada"}), "messages.0.name", "messages.0.name: not supported by this server"},
		{"empty user", openaiBody(t, nil, " "), "messages.0.content", "messages.0.content: must not be empty"},
		{"empty assistant", openaiBody(t, nil, "hi", "", "and?"), "messages.1.content", "messages.1.content: an assistant message needs content or tool_calls"},
		{"image detail", openaiBody(t, nil, image(dataURLOf("image/png", png), map[string]any{"detail": "high"})), "messages.0.content.1.image_url.detail",
			`messages.0.content.1.image_url.detail: only "auto" is supported by this server`},
		{"image data URL not base64", openaiBody(t, nil, image("data:image/png,abc", nil)), "messages.0.content.1.image_url.url",
			"messages.0.content.1.image_url.url: a data URL must be base64-encoded"},
		{"image bad base64", openaiBody(t, nil, image("data:image/png;base64,!!!", nil)), "messages.0.content.1.image_url.url", "not valid base64"},
		{"image media type", openaiBody(t, nil, image(dataURLOf("image/bmp", png), nil)), "messages.0.content.1.image_url.url",
			`a data URL of "image/bmp"; the model takes image/jpeg, image/png, image/gif, image/webp`},
		{"image scheme", openaiBody(t, nil, image("ftp://example.com/x.png", nil)), "messages.0.content.1.image_url.url", "must be an https URL or a base64 data URL"},
		{"image mislabelled", openaiBody(t, nil, image(dataURLOf("image/jpeg", png), nil)), "", "the data is image/png, not image/jpeg"},
		{"audio in", openaiBody(t, nil, []any{map[string]any{"type": "input_audio", "input_audio": map[string]string{"data": "", "format": "wav"}}}),
			"messages.0.content.0.type", `"input_audio" parts are not supported by this server`},
		{"file id", openaiBody(t, nil, []any{map[string]any{"type": "file", "file": map[string]string{"file_id": "file-1"}}}), "messages.0.content.0.file.file_id",
			"file_id: not supported by this server, which stores no files"},
		{"file type", openaiBody(t, nil, []any{map[string]any{"type": "file", "file": map[string]string{"file_data": dataURLOf("application/zip", png)}}}),
			"messages.0.content.0.file.file_data", `a file of "application/zip"`},
		{"tool not the server's", openaiBody(t, map[string]any{"tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "weather", "parameters": map[string]any{}}}}}, "hi"),
			"tools.0.function.name", `tools.0.function.name: "weather" is not one of this server's tools: it offers only the tools it was started with (lookup, add)`},
		{"tool parameters differ", openaiBody(t, map[string]any{"tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "lookup", "parameters": map[string]any{"type": "object"}}}}}, "hi"),
			"tools.0.function.parameters", `tools.0.function.parameters: differs from the input schema of this server's tool "lookup"`},
		{"tool without parameters", openaiBody(t, map[string]any{"tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "lookup"}}}}, "hi"),
			"tools.0.function.parameters", "tools.0.function.parameters: field required"},
		{"custom tool", openaiBody(t, map[string]any{"tools": []any{map[string]any{"type": "custom", "custom": map[string]any{"name": "x"}}}}, "hi"),
			"tools.0.custom", "tools.0.custom: unsupported field"},
		{"strict tool", openaiBody(t, map[string]any{"tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "lookup", "strict": true}}}}, "hi"),
			"tools.0.function.strict", "tools.0.function.strict: not supported by this server"},
		{"tool twice", openaiBody(t, map[string]any{"tools": []any{lookup, lookup}}, "hi"), "tools.1.function.name", `tools.1.function.name: "lookup" is offered twice`},
		{"required without tools", openaiBody(t, map[string]any{"tool_choice": "required"}, "hi"), "tool_choice", `tool_choice: "required" needs tools`},
		{"choice not offered", openaiBody(t, map[string]any{"tools": []any{lookup}, "tool_choice": map[string]any{"type": "function", "function": map[string]string{"name": "add"}}}, "hi"),
			"tool_choice.function.name", `tool_choice.function.name: "add" is not one of the request's tools`},
		{"allowed tools", openaiBody(t, map[string]any{"tools": []any{lookup}, "tool_choice": map[string]any{"type": "allowed_tools"}}, "hi"),
			"tool_choice.type", `tool_choice.type: must be "function"`},
		{"call unanswered", openaiBody(t, nil, "hi", calls(`{"q":"x"}`), "and?"), "messages.1.tool_calls",
			`messages.1.tool_calls: an assistant message with tool_calls must be followed by a tool message for each call; none answers "call_1"`},
		{"call unanswered at the end", openaiBody(t, nil, "hi", calls(`{"q":"x"}`)), "messages.1.tool_calls", `none answers "call_1"`},
		{"result of no call", openaiBody(t, nil, "hi", calls(`{"q":"x"}`), result("call_2")), "messages.2.tool_call_id",
			`messages.2.tool_call_id: "call_2" answers no tool call of the assistant message before the tool messages`},
		{"result twice", openaiBody(t, nil, "hi", calls(`{"q":"x"}`), result("call_1"), result("call_1")), "messages.3.tool_call_id", `"call_1" is answered twice`},
		{"result without call", openaiBody(t, nil, result("call_1")), "messages.0.tool_call_id", "answers no tool call"},
		{"arguments not an object", openaiBody(t, nil, "hi", calls(`[1]`), result("call_1")), "messages.1.tool_calls.0.function.arguments",
			"messages.1.tool_calls.0.function.arguments: must be a JSON object, as text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.postTo(t, context.Background(), openaiPath, tt.body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			e := openaiErrorResp(t, resp)
			require.Equal(t, "invalid_request_error", e.Type)
			require.Contains(t, e.Message, tt.want)
			require.Nil(t, e.Code)
			if tt.param == "" {
				require.Nil(t, e.Param)
			} else {
				require.NotNil(t, e.Param, e.Message)
				require.Equal(t, tt.param, *e.Param)
			}
		})
	}
	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires, "a bad request took a process")
}

// TestOpenAINotStreamed: a chat.completion with the reply's text, its
// finish reason and usage.
func TestOpenAINotStreamed(t *testing.T) {
	ts := newOpenAIServer(t, fakecli.EnvChunks+"=3")
	c := completion(t, ts.postTo(t, context.Background(), openaiPath, openaiBody(t, nil, "hello")))
	require.Equal(t, "claude-test", c.Model, "the model the CLI reported")
	ch := c.Choices[0]
	require.NotNil(t, ch.Message.Content)
	require.Equal(t, "echo: hello", *ch.Message.Content)
	require.Nil(t, ch.Message.Refusal)
	require.Empty(t, ch.Message.ToolCalls)
	require.Equal(t, "stop", ch.FinishReason)
	require.Positive(t, c.Usage.PromptTokens)
	require.Positive(t, c.Usage.CompletionTokens)
	require.Equal(t, c.Usage.PromptTokens+c.Usage.CompletionTokens, c.Usage.TotalTokens)
}

// TestOpenAIStreamed: chat.completion.chunk events, the role first, the
// text in content deltas, the finish reason last, then the usage when
// the request asked for it (each chunk before it with a null usage), and
// data: [DONE].
func TestOpenAIStreamed(t *testing.T) {
	ts := newOpenAIServer(t, fakecli.EnvChunks+"=3", fakecli.EnvReply+"=one two three")
	for _, withUsage := range []bool{false, true} {
		extra := map[string]any{"stream": true}
		if withUsage {
			extra["stream_options"] = map[string]any{"include_usage": true}
		}
		resp := ts.postTo(t, context.Background(), openaiPath, openaiBody(t, extra, "hello"))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
		s := readStreamed(t, resp.Body)
		require.True(t, s.done)
		require.Equal(t, "assistant", s.role)
		require.Equal(t, "one two three", s.content)
		require.Equal(t, 3, s.deltas)
		require.Equal(t, "stop", s.finish)
		require.Equal(t, "claude-test", s.chunks[len(s.chunks)-1]["model"])
		for _, c := range s.chunks {
			u, ok := c["usage"]
			require.Equal(t, withUsage, ok, "usage in every chunk with include_usage alone")
			if ok && len(c["choices"].([]any)) > 0 {
				require.Nil(t, u)
			}
		}
		if !withUsage {
			require.Nil(t, s.usage)
			continue
		}
		require.NotNil(t, s.usage)
		require.Positive(t, s.usage["prompt_tokens"])
		require.Positive(t, s.usage["completion_tokens"])
		require.Equal(t, s.usage["prompt_tokens"].(float64)+s.usage["completion_tokens"].(float64), s.usage["total_tokens"])
	}
}

// TestOpenAIContentReachesTheCLI: images, by their bytes, and a PDF
// reach the CLI's user line as blocks, in order with the text.
func TestOpenAIContentReachesTheCLI(t *testing.T) {
	ts := newOpenAIServer(t)
	img := testPNG(t, 5)
	resp := ts.postTo(t, context.Background(), openaiPath, openaiBody(t, nil, []any{
		textJSON("compare"),
		map[string]any{"type": "image_url", "image_url": map[string]any{"url": dataURLOf("image/png", img)}},
		map[string]any{"type": "file", "file": map[string]any{"file_data": dataURLOf("application/pdf", testPDF), "filename": "Report"}},
		textJSON("briefly"),
	}))
	c := completion(t, resp)
	require.Equal(t, "echo: compare\nbriefly", *c.Choices[0].Message.Content, "the fake echoes the text")
	lines := recordedUserContent(t, ts)
	require.Len(t, lines, 1)
	require.Equal(t, []string{"text", "image", "document", "text"}, contentTypes(lines[0]))
	require.Equal(t, map[string]any{"type": "base64", "media_type": "image/png", "data": b64(img)}, lines[0][1]["source"])
	require.Equal(t, map[string]any{"type": "base64", "media_type": "application/pdf", "data": b64(testPDF)}, lines[0][2]["source"])
	require.Equal(t, "Report", lines[0][2]["title"])
}

// renderOpenAI renders events as serveChat does on the OpenAI path, into
// a recorded response.
func renderOpenAI(t *testing.T, evs []claudepool.Event, c call, res *claudepool.Result, tools *toolSet, includeUsage bool) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	f := &openaiFormat{tools: tools, includeUsage: includeUsage}
	out := f.respond(w, httptest.NewRequest(http.MethodPost, openaiPath, nil), c)
	rr := replyReader{view: c.thinking, tools: tools}
	begun := false
	for _, ev := range evs {
		for _, p := range rr.pieces(ev) {
			if c.stream && !begun {
				begun = true
				out.begin("claude-test", nil)
			}
			out.add(p)
		}
	}
	if c.stream && !begun {
		out.begin("claude-test", nil)
	}
	out.end(res, "claude-test", claudepool.AcquireInfo{}, claudepool.StreamLatency{})
	require.NoError(t, out.err())
	return w
}

// TestOpenAIFinishReason: the API's stop reasons in OpenAI's terms, and
// the usage with the cache's tokens in the prompt's.
func TestOpenAIFinishReason(t *testing.T) {
	for stop, want := range map[string]string{
		"end_turn": "stop", "": "stop", "stop_sequence": "stop", "pause_turn": "stop",
		"max_tokens": "length", "model_context_window_exceeded": "length",
		"tool_use": "tool_calls", "refusal": "content_filter",
	} {
		res := &claudepool.Result{Text: "cut", StopReason: stop,
			Usage: claudepool.Usage{InputTokens: 3, OutputTokens: 5, CacheCreationInputTokens: 7, CacheReadInputTokens: 11}}
		var c openaiCompletion
		w := renderOpenAI(t, nil, call{}, res, nil, false)
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &c))
		require.Equal(t, want, c.Choices[0].FinishReason, stop)
		require.Equal(t, "cut", *c.Choices[0].Message.Content, "the result's text when none came as pieces")
		require.Equal(t, 21, c.Usage.PromptTokens)
		require.Equal(t, 5, c.Usage.CompletionTokens)
		require.Equal(t, 26, c.Usage.TotalTokens)
		require.Equal(t, 11, c.Usage.PromptTokensDetails.CachedTokens)

		s := readStreamed(t, renderOpenAI(t, nil, call{stream: true}, res, nil, true).Body)
		require.Equal(t, want, s.finish, stop)
		require.EqualValues(t, 21, s.usage["prompt_tokens"])
		require.True(t, s.done)
	}
}

// TestOpenAIReplyToolCalls: a reply that ends with calls of the server's
// tools has them as tool_calls, after its text, with finish_reason
// "tool_calls". Streamed, each call starts with its index, id, type and
// name, and its arguments follow in pieces (whole, without partial
// messages); a call of the result that did not stream comes whole at the
// end. The CLI's own tools and the model's thinking do not show.
func TestOpenAIReplyToolCalls(t *testing.T) {
	tools := testTools(t)
	lookupIn, addIn := []string{`{"q":`, `"weather `, `<now>"}`}, []string{`{"a":1,`, `"b":2}`}
	res := &claudepool.Result{Text: "Let me look.", StopReason: "tool_use", Subtype: claudepool.SubtypeToolUse, Thinking: "Let me think.",
		ToolCalls: []claudepool.ToolCall{
			{ID: "toolu_1", Name: "lookup", Input: json.RawMessage(`{"q":"weather <now>"}`)},
			{ID: "toolu_2", Name: "add", Input: json.RawMessage(`{"a":1,"b":2}`)},
		}}
	want := []openaiToolCall{
		{ID: "toolu_1", Type: "function", Function: openaiFunction{Name: "lookup", Arguments: `{"q":"weather <now>"}`}},
		{ID: "toolu_2", Type: "function", Function: openaiFunction{Name: "add", Arguments: `{"a":1,"b":2}`}},
	}
	for _, partials := range []bool{true, false} {
		evs := cliEvents(t, partials, []string{"Let me ", "think."}, "c2ln", []string{"Let me ", "look."})
		evs = append(evs, toolEvents(t, partials, 2, "toolu_1", "lookup", lookupIn...)...)
		evs = append(evs, toolEvents(t, partials, 3, "toolu_2", "add", addIn...)...)
		evs = append(evs, toolEvents(t, partials, 4, "toolu_3", "Bash", `{"command":"ls"}`)...)
		c := call{req: claudepool.Request{GoTools: []string{"lookup", "add"}}}

		var got openaiCompletion
		require.NoError(t, json.Unmarshal(renderOpenAI(t, evs, c, res, tools, false).Body.Bytes(), &got))
		msg := got.Choices[0].Message
		require.Equal(t, "Let me look.", *msg.Content)
		require.Equal(t, want, msg.ToolCalls)
		require.Equal(t, "tool_calls", got.Choices[0].FinishReason)

		c.stream = true
		s := readStreamed(t, renderOpenAI(t, evs, c, res, tools, false).Body)
		require.Equal(t, "Let me look.", s.content)
		require.Equal(t, want, s.calls)
		require.Equal(t, "tool_calls", s.finish)
		pieces := 0
		for _, ch := range s.chunks {
			if d := ch["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any); d["tool_calls"] != nil {
				pieces++
			}
		}
		if partials {
			require.Equal(t, 2+len(lookupIn)+len(addIn), pieces, "each call's start, then its arguments as they streamed")
		} else {
			require.Equal(t, 4, pieces, "each call's start, then its arguments whole")
		}
	}

	// Calls without text: content null; streamed, the calls that did not
	// stream come whole.
	noText := &claudepool.Result{StopReason: "tool_use", ToolCalls: res.ToolCalls}
	c := call{req: claudepool.Request{GoTools: []string{"lookup", "add"}}}
	var got openaiCompletion
	require.NoError(t, json.Unmarshal(renderOpenAI(t, nil, c, noText, tools, false).Body.Bytes(), &got))
	require.Nil(t, got.Choices[0].Message.Content)
	require.Equal(t, want, got.Choices[0].Message.ToolCalls)
	c.stream = true
	s := readStreamed(t, renderOpenAI(t, toolEvents(t, true, 0, "toolu_1", "lookup", lookupIn...), c, noText, tools, false).Body)
	require.Empty(t, s.content)
	require.Equal(t, want, s.calls)
}

// TestOpenAIToolUseLoop: on a server with -tools, a request that offers
// a function gets the model's call of it (finish_reason "tool_calls");
// the request that sends back the assistant message it received and a
// tool message with the result resumes the paused turn on the process
// that holds it, whose reply quotes the result.
func TestOpenAIToolUseLoop(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(map[bool]string{false: "not streamed", true: "streamed"}[stream], func(t *testing.T) {
			ts := newToolServer(t, true)
			mountOpenAI(ts.api)
			const input = `{"q":"weather in Zürich <today>","days":2}`
			question := "what is the weather? " + lookupMarker(input)
			extra := map[string]any{"tools": []any{openaiFunctionTool(t, 0), openaiFunctionTool(t, 1)}, "stream": stream}
			ask := func(msgs ...any) (content *string, calls []openaiToolCall, finish string) {
				t.Helper()
				resp := ts.postTo(t, context.Background(), openaiPath, openaiBody(t, extra, msgs...))
				if !stream {
					ch := completion(t, resp).Choices[0]
					return ch.Message.Content, ch.Message.ToolCalls, ch.FinishReason
				}
				require.Equal(t, http.StatusOK, resp.StatusCode)
				s := readStreamed(t, resp.Body)
				require.True(t, s.done)
				return &s.content, s.calls, s.finish
			}
			content, calls, finish := ask(question)
			require.Equal(t, "tool_calls", finish)
			require.Len(t, calls, 1)
			require.Equal(t, "lookup", calls[0].Function.Name, "the tool's own name")
			require.True(t, strings.HasPrefix(calls[0].ID, "toolu_"), calls[0].ID)
			require.JSONEq(t, input, calls[0].Function.Arguments)
			require.Zero(t, ts.pool.Stats().Conversations.Continued)

			// The assistant message as the client received it: the SDKs
			// send it back as it came.
			assistant := map[string]any{"role": "assistant", "content": content, "tool_calls": calls}
			if !stream {
				require.Nil(t, content, "a call without text")
				assistant["refusal"] = nil
			}
			content, calls, finish = ask(question, assistant, map[string]any{"role": "tool", "tool_call_id": calls[0].ID, "content": "sunny, 21C"})
			require.Equal(t, "stop", finish)
			require.Empty(t, calls)
			require.Equal(t, "tool lookup said: sunny, 21C", *content)
			require.EqualValues(t, 1, ts.pool.Stats().Conversations.Continued, "the paused turn resumed")
			require.Equal(t, ts.pidWith(t, "what is the weather?"), ts.pidWith(t, "sunny, 21C"), "on the process that held it")
		})
	}
}

// TestOpenAIErrors: the upstream's errors and the server's in OpenAI's
// shape and with their statuses: an overload is a 503 with Retry-After;
// a stream that fails after it began ends with an error event, without
// [DONE]; a request that needs the pool's gateway, which is off, is a
// 400 naming the OpenAI field.
func TestOpenAIErrors(t *testing.T) {
	for _, tt := range []struct {
		upstream, status int
		kind, code, msg  string
	}{
		{401, 401, "authentication_error", "invalid_api_key", "upstream said no"},
		{429, 429, "rate_limit_error", "rate_limit_exceeded", "upstream said no"},
		{529, 503, "server_error", "overloaded", "Overloaded"},
		{500, 500, "server_error", "", "Internal server error"},
	} {
		t.Run(itoa(tt.upstream), func(t *testing.T) {
			ts := newOpenAIServer(t, noRetries, fakecli.EnvAPIStatus+"="+itoa(tt.upstream), fakecli.EnvErrorText+"=upstream said no")
			for _, stream := range []bool{false, true} {
				resp := ts.postTo(t, context.Background(), openaiPath,
					openaiBody(t, map[string]any{"stream": stream}, "x "+fakecli.Marker(fakecli.ModeErrorResult)))
				require.Equal(t, tt.status, resp.StatusCode, "stream %v", stream)
				e := openaiErrorResp(t, resp)
				require.Equal(t, tt.kind, e.Type)
				require.Equal(t, tt.msg, e.Message)
				require.Nil(t, e.Param)
				if tt.code == "" {
					require.Nil(t, e.Code)
				} else {
					require.Equal(t, tt.code, *e.Code)
				}
				if tt.status == http.StatusServiceUnavailable {
					require.Equal(t, "1", resp.Header.Get("Retry-After"))
				}
			}
		})
	}

	t.Run("stream fails after it began", func(t *testing.T) {
		ts := newOpenAIServer(t) // partial messages: the crash comes after the first text
		resp := ts.postTo(t, context.Background(), openaiPath, openaiBody(t, map[string]any{"stream": true}, "x "+fakecli.Marker(fakecli.ModeCrash)))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		s := readStreamed(t, resp.Body)
		require.False(t, s.done)
		require.NotNil(t, s.failure)
		require.Equal(t, "server_error", s.failure["type"])
		require.Contains(t, s.failure["message"], "the Claude Code CLI failed to answer")
		require.Contains(t, s.failure, "param")
	})

	t.Run("without the gateway", func(t *testing.T) {
		ts := newOpenAIServer(t)
		for body, want := range map[string]string{
			openaiBody(t, map[string]any{"stop": "x"}, "hi"): "stop: not supported by this server, whose pool calls the API without its gateway",
			openaiBody(t, map[string]any{"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"schema": map[string]any{}}}}, "hi"): "response_format: not supported by this server, whose pool calls the API without its gateway",
		} {
			resp := ts.postTo(t, context.Background(), openaiPath, body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			e := openaiErrorResp(t, resp)
			require.Equal(t, want, e.Message)
			require.Equal(t, strings.Split(want, ":")[0], *e.Param)
		}
		// What only tunes the reply runs with the CLI's settings.
		c := completion(t, ts.postTo(t, context.Background(), openaiPath, openaiBody(t, map[string]any{"max_tokens": 10, "temperature": 0.2}, "hello")))
		require.Equal(t, "echo: hello", *c.Choices[0].Message.Content)
	})
}

// TestOpenAIHeartbeat: a streamed reply that stays quiet gets its
// headers and then SSE comments, which clients skip.
func TestOpenAIHeartbeat(t *testing.T) {
	ts := newOpenAIServer(t)
	ts.api.heartbeat = 5 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := ts.postTo(t, ctx, openaiPath, openaiBody(t, map[string]any{"stream": true}, "x "+fakecli.Marker(fakecli.ModeHang)))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	sc := bufio.NewScanner(resp.Body)
	seen := 0
	for seen < 3 && sc.Scan() {
		if sc.Text() == ": ping" {
			seen++
		}
	}
	require.Equal(t, 3, seen, "heartbeats before the stream ended: %v", sc.Err())
	cancel()
	ts.waitHandler(t)
}
