package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// openaiMockReply is the mock API of the OpenAI tests: the tool loop as
// toolsReply answers it, a fixed reply for the parameters' question,
// replies cut by max_tokens or refused, a fixed JSON for structured
// output, and an echo otherwise.
func openaiMockReply(r claudepooltest.Request) claudepooltest.Reply {
	if r.Kind != claudepooltest.KindChat {
		return claudepooltest.Echo(r)
	}
	switch text := r.LastUserText(); {
	case len(r.LastToolResults()) > 0 || strings.HasPrefix(text, "Look up"):
		return toolsReply(r)
	case text == "params question":
		return claudepooltest.Reply{Text: "alpha beta STOP gamma"}
	case text == "cut me short":
		return claudepooltest.Reply{Text: "cut", StopReason: claudepooltest.StopMaxTokens}
	case text == "say something bad":
		return claudepooltest.Reply{Text: "I can't help with that.", StopReason: claudepooltest.StopRefusal}
	case bytes.Contains(r.OutputConfig, []byte(`"json_schema"`)):
		return claudepooltest.Reply{Text: `{"name":"Ada Lovelace","year":1843}`}
	}
	return claudepooltest.Echo(r)
}

// TestE2EOpenAI drives POST /v1/chat/completions over real CLI processes
// whose API is claudepooltest's mock, through the pool's gateway: the
// request's parameters, system prompt, image and JSON schema reach the
// API in the Messages API's terms; the reply's finish reason and usage
// come back in OpenAI's; a function call of the server's tool comes back
// as tool_calls, and the tool message that answers it resumes the same
// API turn on the same process.
func TestE2EOpenAI(t *testing.T) {
	api := claudepooltest.NewServer(claudepooltest.Config{Chunks: 4, NoRetries: true, Reply: openaiMockReply})
	t.Cleanup(api.Close) // after the pool's Close, registered later
	tools := testTools(t)
	pool := newE2EPoolConfig(t, api, func(c *claudepool.Config) { c.GoTools = tools.goTools() })
	ts := serveE2E(t, pool, false)
	ts.api.tools = tools
	mountOpenAI(ts.api)
	post := func(t *testing.T, extra map[string]any, msgs ...any) *http.Response {
		t.Helper()
		b := map[string]any{"model": "claude-sonnet-4-5"}
		for k, v := range extra {
			b[k] = v
		}
		var list []any
		for _, m := range msgs {
			if s, ok := m.(string); ok {
				m = openaiMsg("user", s)
			}
			list = append(list, m)
		}
		b["messages"] = list
		body, err := json.Marshal(b)
		require.NoError(t, err)
		return ts.postTo(t, context.Background(), openaiPath, string(body))
	}
	only := func(t *testing.T, text string) claudepooltest.Request {
		t.Helper()
		reqs := chatRequestsFor(api, text)
		require.Len(t, reqs, 1)
		require.Equal(t, "claude-sonnet-4-5", reqs[0].Model)
		return reqs[0]
	}

	t.Run("parameters and a stop", func(t *testing.T) {
		c := completion(t, post(t, map[string]any{"max_completion_tokens": 300, "temperature": 0.3, "top_p": 0.9, "stop": []string{"STOP", "never"}, "user": "tenant-42"},
			openaiMsg("developer", "You are terse."), "params question"))
		require.Equal(t, "alpha beta ", *c.Choices[0].Message.Content, "cut before the stop sequence")
		require.Equal(t, "stop", c.Choices[0].FinishReason)
		require.Positive(t, c.Usage.PromptTokens)
		require.Positive(t, c.Usage.CompletionTokens)
		require.True(t, strings.HasPrefix(c.Model, "claude-sonnet-4-5"), c.Model)

		r := only(t, "params question")
		require.Equal(t, 300, r.MaxTokens)
		require.Equal(t, 0.3, *r.Temperature)
		require.Equal(t, 0.9, *r.TopP)
		require.Equal(t, []string{"STOP", "never"}, r.StopSequences)
		require.Equal(t, "tenant-42", r.MetadataUserID)
		require.Contains(t, strings.Join(r.System, "\n"), "You are terse.")
	})

	t.Run("finish reasons", func(t *testing.T) {
		for text, want := range map[string]string{"cut me short": "length", "say something bad": "content_filter"} {
			c := completion(t, post(t, nil, text))
			require.Equal(t, want, c.Choices[0].FinishReason, text)
		}
	})

	t.Run("streamed with usage", func(t *testing.T) {
		resp := post(t, map[string]any{"stream": true, "stream_options": map[string]any{"include_usage": true}}, "Stream this reply please")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		s := readStreamed(t, resp.Body)
		require.True(t, s.done)
		require.Equal(t, "assistant", s.role)
		require.Equal(t, claudepooltest.EchoPrefix+"Stream this reply please", s.content)
		require.Greater(t, s.deltas, 1, "the reply came in pieces")
		require.Equal(t, "stop", s.finish)
		require.Positive(t, s.usage["prompt_tokens"])
		require.Positive(t, s.usage["completion_tokens"])
		require.True(t, only(t, "Stream this reply please").Stream)
	})

	t.Run("image", func(t *testing.T) {
		img := testPNG(t, 9)
		c := completion(t, post(t, nil, openaiMsg("user", []any{
			map[string]any{"type": "image_url", "image_url": map[string]any{"url": dataURLOf("image/png", img)}},
			textJSON("What is in this picture?"),
		})))
		require.Equal(t, claudepooltest.EchoPrefix+"What is in this picture?", *c.Choices[0].Message.Content)
		r := only(t, "What is in this picture?")
		require.Equal(t, []string{"image", "text"}, lastUser(t, r).Types[len(lastUser(t, r).Types)-2:])
		require.Contains(t, string(r.Body), `"media_type":"image/png","data":"`+b64(img)+`"`)
	})

	t.Run("json schema", func(t *testing.T) {
		schema := map[string]any{"type": "object", "properties": map[string]any{"name": map[string]string{"type": "string"}, "year": map[string]string{"type": "integer"}},
			"required": []string{"name", "year"}, "additionalProperties": false}
		c := completion(t, post(t, map[string]any{"response_format": map[string]any{"type": "json_schema",
			"json_schema": map[string]any{"name": "person", "strict": true, "schema": schema}}}, "Who wrote the first program?"))
		require.JSONEq(t, `{"name":"Ada Lovelace","year":1843}`, *c.Choices[0].Message.Content)
		var oc struct {
			Format struct {
				Type   string         `json:"type"`
				Schema map[string]any `json:"schema"`
			} `json:"format"`
		}
		require.NoError(t, json.Unmarshal(only(t, "Who wrote the first program?").OutputConfig, &oc))
		require.Equal(t, "json_schema", oc.Format.Type)
		require.Equal(t, []any{"name", "year"}, oc.Format.Schema["required"])
	})

	for _, stream := range []bool{false, true} {
		name := map[bool]string{false: "tool call round trip", true: "tool call round trip, streamed"}[stream]
		t.Run(name, func(t *testing.T) {
			question := "Look up the weather, " + name
			extra := map[string]any{"tools": []any{openaiFunctionTool(t, 0)}, "tool_choice": "auto", "stream": stream}
			ask := func(msgs ...any) (string, []openaiToolCall, string) {
				t.Helper()
				resp := post(t, extra, msgs...)
				if !stream {
					ch := completion(t, resp).Choices[0]
					text := ""
					if ch.Message.Content != nil {
						text = *ch.Message.Content
					}
					return text, ch.Message.ToolCalls, ch.FinishReason
				}
				require.Equal(t, http.StatusOK, resp.StatusCode)
				s := readStreamed(t, resp.Body)
				require.True(t, s.done)
				return s.content, s.calls, s.finish
			}
			continued := pool.Stats().Conversations.Continued
			text, calls, finish := ask(question)
			require.Equal(t, "tool_calls", finish)
			require.Equal(t, "Let me look that up.", text)
			require.Len(t, calls, 1)
			require.Equal(t, "lookup", calls[0].Function.Name, "the tool's own name")
			require.True(t, strings.HasPrefix(calls[0].ID, "toolu_mock_"), calls[0].ID)
			require.JSONEq(t, `{"q":"weather in Zürich <today>"}`, calls[0].Function.Arguments)
			reqs := chatRequestsFor(api, question)
			require.Len(t, reqs, 1)
			require.Contains(t, reqs[0].Tools, cliToolPrefix+"lookup")
			require.NotContains(t, reqs[0].Tools, cliToolPrefix+"add", "the request's tool alone of the server's two")

			text, calls, finish = ask(question,
				map[string]any{"role": "assistant", "content": text, "tool_calls": calls},
				map[string]any{"role": "tool", "tool_call_id": calls[0].ID, "content": "sunny, 21C"})
			require.Equal(t, "stop", finish)
			require.Empty(t, calls)
			require.Equal(t, "The tool said: sunny, 21C", text)
			require.Equal(t, continued+1, pool.Stats().Conversations.Continued, "the paused turn resumed")
			pids := chatPIDs(ts.logs.String())
			require.GreaterOrEqual(t, len(pids), 2)
			require.Equal(t, pids[len(pids)-2], pids[len(pids)-1], "on the same process")
			reqs = chatRequestsFor(api, question)
			require.Len(t, reqs, 2, "the API's next request is the same turn's")
			require.Equal(t, []claudepooltest.ToolResult{{ToolUseID: calls0(t, reqs[1]), Content: "sunny, 21C"}}, reqs[1].LastToolResults())
		})
	}

	t.Run("error", func(t *testing.T) {
		resp := post(t, map[string]any{"temperature": 1.5}, "too hot")
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		e := openaiErrorResp(t, resp)
		require.Equal(t, "temperature", *e.Param)
		require.Empty(t, chatRequestsFor(api, "too hot"))
	})
}

// calls0 is the id of the one tool call in the history of a request.
func calls0(t *testing.T, r claudepooltest.Request) string {
	t.Helper()
	var uses []claudepooltest.ToolCall
	for _, m := range r.Messages {
		uses = append(uses, m.ToolUses...)
	}
	require.Len(t, uses, 1)
	return uses[0].ID
}
