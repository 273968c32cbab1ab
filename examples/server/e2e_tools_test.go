package main

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// toolsReply is the mock API of the tool tests: a chat request whose last
// user message carries tool results is answered with a text that quotes
// them; one that offers the server's lookup tool and asks to "look up"
// something, with a text and a call of lookup; any other as Echo.
func toolsReply(r claudepooltest.Request) claudepooltest.Reply {
	if r.Kind != claudepooltest.KindChat {
		return claudepooltest.Echo(r)
	}
	if res := r.LastToolResults(); len(res) > 0 {
		parts := make([]string, len(res))
		for i, x := range res {
			parts[i] = x.Content
		}
		return claudepooltest.Reply{Text: "The tool said: " + strings.Join(parts, ", ")}
	}
	if strings.HasPrefix(r.LastUserText(), "Look up") && slices.Contains(r.Tools, cliToolPrefix+"lookup") {
		return claudepooltest.Reply{Text: "Let me look that up.", ToolCalls: []claudepooltest.ToolCall{
			{Name: cliToolPrefix + "lookup", Input: json.RawMessage(`{"q":"weather in Zürich <today>"}`)}}}
	}
	return claudepooltest.Echo(r)
}

// chatPIDs returns the process of each chat the server's log records, in
// order.
func chatPIDs(logs string) []string {
	var pids []string
	for _, m := range regexp.MustCompile(`msg=chat .*? pid=(\d+)`).FindAllStringSubmatch(logs, -1) {
		pids = append(pids, m[1])
	}
	return pids
}

// TestE2EMessagesToolUse drives the tool-use loop of POST /v1/messages
// over real CLI processes whose API is claudepooltest's mock, through the
// pool's gateway: the request offers one of the server's two tools; the
// API's call of it comes back after the reply's text as a tool_use
// block, under the tool's own name (streamed: its input in several
// input_json_delta events), with stop_reason "tool_use"; the request
// that sends back that content and the tool's result resumes the same
// API turn on the same process (the API's next request carries the
// result after the call), and the final answer quotes it. A tool_choice
// that names the tool reaches the API under the CLI's name of the tool,
// without the CLI's thinking.
func TestE2EMessagesToolUse(t *testing.T) {
	api := claudepooltest.NewServer(claudepooltest.Config{Chunks: 4, Reply: toolsReply})
	t.Cleanup(api.Close) // after the pool's Close, registered later
	tools := testTools(t)
	pool := newE2EPoolConfig(t, api, func(c *claudepool.Config) { c.GoTools = tools.goTools() })
	ts := serveE2E(t, pool, false)
	ts.api.tools = tools
	lookup := toolsJSON(t)[0]

	for _, tc := range []struct {
		name   string
		stream bool
		choice map[string]string
	}{
		{name: "not streamed", choice: map[string]string{"type": "auto"}},
		{name: "streamed", stream: true},
		{name: "tool chosen", choice: map[string]string{"type": "tool", "name": "lookup"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			question := "Look up the weather, " + tc.name
			extra := map[string]any{"tools": []any{lookup}}
			if tc.choice != nil {
				extra["tool_choice"] = tc.choice
			}
			continued := pool.Stats().Conversations.Continued
			r := readToolReply(t, ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, tc.stream, extra, question)), tc.stream)
			require.Equal(t, "tool_use", r.stop)
			require.Len(t, r.content, 2, "%s", r.content)
			require.JSONEq(t, `{"type":"text","text":"Let me look that up."}`, string(r.content[0]))
			var call struct{ Type, ID, Name string }
			require.NoError(t, json.Unmarshal(r.content[1], &call))
			require.Equal(t, "tool_use", call.Type)
			require.Equal(t, "lookup", call.Name, "the tool's own name")
			require.True(t, strings.HasPrefix(call.ID, "toolu_mock_"), call.ID)
			require.Contains(t, string(r.content[1]), `"input":{"q":"weather in Zürich <today>"}`)
			if tc.stream {
				var deltas int
				for _, name := range r.events {
					if name == "content_block_delta" {
						deltas++
					}
				}
				// The mock sends each in 4 chunks at once; the pool's gateway
				// passes a block's first delta at once and joins the rest.
				require.GreaterOrEqual(t, deltas, 4, "the text and the input, each in pieces: %v", r.events)
				require.Equal(t, []string{"content_block_stop", "message_delta", "message_stop"}, r.events[len(r.events)-3:])
			}

			reqs := chatRequestsFor(api, question)
			require.Len(t, reqs, 1)
			offered := slices.DeleteFunc(slices.Clone(reqs[0].Tools), func(n string) bool { return !strings.HasPrefix(n, cliToolPrefix) })
			require.Equal(t, []string{cliToolPrefix + "lookup"}, offered, "the request's tool alone of the server's two")
			var body struct {
				ToolChoice map[string]string `json:"tool_choice"`
			}
			require.NoError(t, json.Unmarshal(reqs[0].Body, &body))
			switch {
			case tc.choice == nil:
				require.Nil(t, body.ToolChoice)
			case tc.choice["type"] == "tool":
				require.Equal(t, map[string]string{"type": "tool", "name": cliToolPrefix + "lookup"}, body.ToolChoice)
				require.Nil(t, reqs[0].Thinking, "the API takes no thinking with a forced call")
			default:
				require.Equal(t, tc.choice, body.ToolChoice)
			}

			results := []map[string]any{{"type": "tool_result", "tool_use_id": call.ID, "content": []map[string]any{textJSON("sunny, 21C")}}}
			r = readToolReply(t, ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, tc.stream, extra, question, r.content, results)), tc.stream)
			require.Equal(t, "end_turn", r.stop)
			require.Len(t, r.content, 1)
			require.JSONEq(t, `{"type":"text","text":"The tool said: sunny, 21C"}`, string(r.content[0]))
			require.Equal(t, continued+1, pool.Stats().Conversations.Continued, "the paused turn resumed")
			pids := chatPIDs(ts.logs.String())
			require.GreaterOrEqual(t, len(pids), 2)
			require.Equal(t, pids[len(pids)-2], pids[len(pids)-1], "on the same process")

			// The API's next request is the same turn's: the call, then
			// its result.
			reqs = chatRequestsFor(api, question)
			require.Len(t, reqs, 2)
			require.Equal(t, []claudepooltest.ToolResult{{ToolUseID: call.ID, Content: "sunny, 21C"}}, reqs[1].LastToolResults())
			var uses []claudepooltest.ToolCall
			for _, m := range reqs[1].Messages {
				uses = append(uses, m.ToolUses...)
			}
			require.Len(t, uses, 1)
			require.Equal(t, call.ID, uses[0].ID)
		})
	}
}
