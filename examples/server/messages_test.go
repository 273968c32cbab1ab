package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// messagesBody returns a Messages API request with the given extra fields
// and a user message.
func messagesBody(t *testing.T, stream bool, extra map[string]any, msgs ...any) string {
	t.Helper()
	b := map[string]any{"model": "claude-test", "max_tokens": 64, "stream": stream}
	var m []map[string]any
	for i, c := range msgs {
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

// apiErrorBody decodes a Messages API error.
func apiErrorBody(t *testing.T, r io.Reader) messagesError {
	t.Helper()
	var e messagesError
	require.NoError(t, json.NewDecoder(r).Decode(&e))
	require.Equal(t, "error", e.Type)
	return e
}

func TestMessagesNotStreamed(t *testing.T) {
	ts := newTestServer(t, fakecli.EnvChunks+"=3")
	resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, nil, "hello"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.NotEmpty(t, resp.Header.Get("Request-Id"))
	var m message
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	require.True(t, strings.HasPrefix(m.ID, "msg_"), m.ID)
	require.Equal(t, "message", m.Type)
	require.Equal(t, "assistant", m.Role)
	require.Equal(t, "claude-test", m.Model, "the model the CLI reported, after set_model")
	require.Equal(t, []contentBlock{{Type: "text", Text: "echo: hello"}}, m.Content)
	require.NotNil(t, m.StopReason)
	require.Equal(t, "end_turn", *m.StopReason)
	require.Positive(t, m.Usage.OutputTokens)
	require.Positive(t, m.Usage.InputTokens)
}

func TestMessagesStreamed(t *testing.T) {
	ts := newTestServer(t, fakecli.EnvChunks+"=3", fakecli.EnvReply+"=one two three")
	resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, true, nil, "hello"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	require.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))

	var names, deltas []string
	var last map[string]any
	sc := bufio.NewScanner(resp.Body)
	for ev, ok := readEvent(sc); ok; ev, ok = readEvent(sc) {
		names = append(names, ev.name)
		var data map[string]any
		require.NoError(t, json.Unmarshal([]byte(ev.data), &data), ev.data)
		require.Equal(t, ev.name, data["type"], "each event's data names its type")
		switch ev.name {
		case "content_block_delta":
			d := data["delta"].(map[string]any)
			require.Equal(t, "text_delta", d["type"])
			deltas = append(deltas, d["text"].(string))
		case "message_delta":
			last = data
		}
	}
	require.Equal(t, []string{"message_start", "content_block_start", "ping",
		"content_block_delta", "content_block_delta", "content_block_delta",
		"content_block_stop", "message_delta", "message_stop"}, names)
	require.Equal(t, "one two three", strings.Join(deltas, ""))
	require.Equal(t, "end_turn", last["delta"].(map[string]any)["stop_reason"])
	u := last["usage"].(map[string]any)
	require.Positive(t, u["output_tokens"])
	require.Positive(t, u["input_tokens"])
}

func TestMessagesSystemAndTextBlocks(t *testing.T) {
	ts := newTestServer(t)
	body := messagesBody(t, false, map[string]any{
		"system":      []map[string]any{{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind.", "cache_control": map[string]string{"type": "ephemeral"}}},
		"temperature": 0.2, "metadata": map[string]string{"user_id": "u1"}, "tools": []any{}, "stop_sequences": []string{},
	},
		[]map[string]any{{"type": "text", "text": "first question"}},
		"first answer",
		[]map[string]any{{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}},
	)
	resp := ts.postTo(t, context.Background(), "/v1/messages", body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_, err := io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)

	// The fake recorded what the pool sent it: the system prompt and the
	// rendered conversation.
	files, err := filepath.Glob(filepath.Join(ts.rec, "*.jsonl"))
	require.NoError(t, err)
	var all strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		all.Write(b)
	}
	require.Contains(t, all.String(), `Be brief.\n\nBe kind.`)
	require.Contains(t, all.String(), "first question")
	require.Contains(t, all.String(), "first answer")
	require.Contains(t, all.String(), `part one\n\npart two`)
}

func TestMessagesBadRequests(t *testing.T) {
	ts := newTestServer(t)
	image := []map[string]any{{"type": "image", "source": map[string]string{"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}}
	search := []map[string]any{{"type": "search_result", "source": "s", "title": "t", "content": []any{}}}
	tests := []struct {
		name, body, want string
	}{
		{"malformed JSON", `{"model":`, "malformed request"},
		{"search result", messagesBody(t, false, nil, search), `messages.0.content.0.type: "search_result" blocks are not supported`},
		{"document without source", messagesBody(t, false, nil, []map[string]any{{"type": "document"}}), "messages.0.content.0.source: field required"},
		{"tool use unanswered", messagesBody(t, false, nil, "hi", []map[string]any{{"type": "tool_use", "id": "t1", "name": "x", "input": map[string]any{}}}, "ok"),
			`messages.2: tool_use "t1" has no tool_result`},
		{"tool result unasked", messagesBody(t, false, nil, []map[string]any{{"type": "tool_result", "tool_use_id": "t1", "content": "x"}}), `tool_result "t1" answers no tool_use`},
		{"tools", messagesBody(t, false, map[string]any{"tools": []map[string]any{{"name": "x", "input_schema": map[string]any{}}}}, "hi"),
			"it offers only the tools it was started with (none: it was started without -tools)"},
		{"tool choice", messagesBody(t, false, map[string]any{"tool_choice": map[string]string{"type": "any"}}, "hi"), `tool_choice: type "any" needs tools`},
		{"thinking over max_tokens", messagesBody(t, false, map[string]any{"thinking": map[string]any{"type": "enabled", "budget_tokens": 1024}}, "hi"),
			"thinking.budget_tokens: must be less than max_tokens (64), got 1024"},
		{"unknown field", messagesBody(t, false, map[string]any{"mcp_servers": []any{}}, "hi"), "mcp_servers: unsupported field"},
		{"image in system", messagesBody(t, false, map[string]any{"system": image}, "hi"), `system.0.type: "image"`},
		{"no max_tokens", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, "max_tokens: field required"},
		{"no model", `{"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`, "model: field required"},
		{"no messages", `{"model":"m","max_tokens":1,"messages":[]}`, "at least one message"},
		{"prefill", messagesBody(t, false, nil, "hi", "Sure,"), "last message must be the user's"},
		{"bad role", `{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"hi"}]}`, "messages.0.role"},
		{"empty text", messagesBody(t, false, nil, " "), "message 0 is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.postTo(t, context.Background(), "/v1/messages", tt.body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			e := apiErrorBody(t, resp.Body)
			require.Equal(t, "invalid_request_error", e.Error.Type)
			require.Contains(t, e.Error.Message, tt.want)
			require.Equal(t, resp.Header.Get("Request-Id"), e.RequestID)
		})
	}
	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires, "a bad request took a process")
}

// TestMessagesUpstreamErrorPassedThrough: an upstream error keeps its
// status and type; a 4xx keeps its text, a 5xx gets the API's own.
func TestMessagesUpstreamErrorPassedThrough(t *testing.T) {
	for _, tt := range []struct {
		status    int
		kind, msg string
	}{
		{401, "authentication_error", "upstream said no"},
		{429, "rate_limit_error", "upstream said no"},
		{529, "overloaded_error", "Overloaded"},
		{500, "api_error", "Internal server error"},
	} {
		t.Run(itoa(tt.status), func(t *testing.T) {
			ts := newTestServer(t, noRetries, fakecli.EnvAPIStatus+"="+itoa(tt.status), fakecli.EnvErrorText+"=upstream said no")
			for _, stream := range []bool{false, true} {
				resp := ts.postTo(t, context.Background(), "/v1/messages",
					messagesBody(t, stream, nil, "x "+fakecli.Marker(fakecli.ModeErrorResult)))
				require.Equal(t, tt.status, resp.StatusCode, "stream %v", stream)
				e := apiErrorBody(t, resp.Body)
				require.Equal(t, tt.kind, e.Error.Type)
				require.Equal(t, tt.msg, e.Error.Message)
			}
		})
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// secretCLI writes a script that prints secret to stderr and then runs the
// fake CLI, and returns its path.
func secretCLI(t *testing.T, secret string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "claude")
	script := "#!/bin/sh\necho '" + secret + "' >&2\nexec '" + fakeCLI + "' \"$@\"\n"
	require.NoError(t, os.WriteFile(path, []byte(script), 0o755))
	return path
}

// TestErrorsLeakNoStderr crashes the CLI after it wrote a secret to its
// stderr, before and after the reply began, on both endpoints: no client
// sees the secret or the crash's own stderr line, and the server's log has
// both.
func TestErrorsLeakNoStderr(t *testing.T) {
	const secret = "sk-SECRET-in-stderr-7f3a"
	crash := "x " + fakecli.Marker(fakecli.ModeCrash)
	for _, tt := range []struct {
		name     string
		partials bool // with partial messages the crash comes after the first text
		path     string
		body     string
		status   int
	}{
		{"chat before text", false, "/chat", chatBody(crash), http.StatusInternalServerError},
		{"chat after text", true, "/chat", chatBody(crash), http.StatusOK},
		{"messages", true, "/v1/messages", messagesBody(t, false, nil, crash), http.StatusInternalServerError},
		{"messages stream before text", false, "/v1/messages", messagesBody(t, true, nil, crash), http.StatusInternalServerError},
		{"messages stream after text", true, "/v1/messages", messagesBody(t, true, nil, crash), http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServerConfig(t, func(c *claudepool.Config) {
				c.Command = secretCLI(t, secret)
				c.PartialMessages = tt.partials
			})
			resp := ts.postTo(t, context.Background(), tt.path, tt.body)
			require.Equal(t, tt.status, resp.StatusCode)
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			body := string(b)
			require.NotContains(t, body, secret)
			require.NotContains(t, body, "fake crash")
			require.Contains(t, body, "request id "+resp.Header.Get("X-Request-Id"))
			if tt.status == http.StatusOK {
				require.Contains(t, body, "event: error")
			}
			ts.waitHandler(t)
			logs := ts.logs.String()
			require.Contains(t, logs, secret, "the operator sees the stderr")
			require.Contains(t, logs, "fake crash")
		})
	}
}

// TestHeartbeat: a reply that stays quiet gets its headers and then
// heartbeats, a comment on /chat and a ping on /v1/messages.
func TestHeartbeat(t *testing.T) {
	for _, path := range []string{"/chat", "/v1/messages"} {
		t.Run(path, func(t *testing.T) {
			ts := newTestServer(t)
			ts.api.heartbeat = 5 * time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			body := chatBody("x " + fakecli.Marker(fakecli.ModeHang))
			want := ": heartbeat"
			if path == "/v1/messages" {
				body = messagesBody(t, true, nil, "x "+fakecli.Marker(fakecli.ModeHang))
				want = `data: {"type":"ping"}`
			}
			resp := ts.postTo(t, ctx, path, body)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
			require.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))
			sc := bufio.NewScanner(resp.Body)
			seen := 0
			for seen < 3 && sc.Scan() {
				if sc.Text() == want {
					seen++
				}
			}
			require.Equal(t, 3, seen, "heartbeats before the stream ended: %v", sc.Err())
			cancel()
			ts.waitHandler(t)
		})
	}
}

func TestRequestID(t *testing.T) {
	ts := newTestServer(t)
	get := func(id string) string {
		req, err := http.NewRequest(http.MethodGet, ts.URL+"/healthz", nil)
		require.NoError(t, err)
		if id != "" {
			req.Header.Set("X-Request-Id", id)
		}
		resp, err := ts.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		ts.waitHandler(t)
		return resp.Header.Get("X-Request-Id")
	}
	require.Equal(t, "abc-123", get("abc-123"), "echoed")
	gen := get("")
	require.Regexp(t, `^[0-9a-f]{32}$`, gen, "generated")
	require.NotEqual(t, gen, get(""))
	bad := get("has space")
	require.Regexp(t, `^[0-9a-f]{32}$`, bad, "replaced")
	logs := ts.logs.String()
	require.Contains(t, logs, "request_id=abc-123 method=GET path=/healthz status=200")
	require.Contains(t, logs, "request_id="+gen)
}
