package claudepooltest

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// toolsReply returns a ReplyFunc that answers every request with rep.
func toolsReply(rep Reply) ReplyFunc { return func(Request) Reply { return rep } }

// assemble rebuilds the content of a streamed message from its events, as
// a client does, checking that every delta and stop names the block
// started last and that blocks are numbered from 0.
func assemble(t *testing.T, evs []sseEvent) []any {
	t.Helper()
	var content []map[string]any
	var partial strings.Builder // the input JSON of the open tool_use block
	open := -1
	for _, ev := range evs {
		switch ev.name {
		case "content_block_start":
			require.Equal(t, -1, open, "a block starts while block %d is open", open)
			open = int(ev.data["index"].(float64))
			require.Equal(t, len(content), open, "blocks are numbered in order")
			content = append(content, ev.data["content_block"].(map[string]any))
			partial.Reset()
		case "content_block_delta":
			require.EqualValues(t, open, ev.data["index"])
			d := ev.data["delta"].(map[string]any)
			b := content[open]
			switch d["type"] {
			case "text_delta":
				b["text"] = b["text"].(string) + d["text"].(string)
			case "thinking_delta":
				b["thinking"] = b["thinking"].(string) + d["thinking"].(string)
			case "signature_delta":
				b["signature"] = d["signature"]
			case "input_json_delta":
				require.Equal(t, "tool_use", b["type"])
				partial.WriteString(d["partial_json"].(string))
			default:
				require.FailNow(t, "unknown delta", "%v", d)
			}
		case "content_block_stop":
			require.EqualValues(t, open, ev.data["index"])
			if b := content[open]; b["type"] == "tool_use" {
				require.Equal(t, map[string]any{}, b["input"], "content_block_start has an empty input")
				var input any
				require.NoError(t, json.Unmarshal([]byte(partial.String()), &input), "partial_json %q", partial.String())
				b["input"] = input
			}
			open = -1
		}
	}
	require.Equal(t, -1, open, "every block stopped")
	out := make([]any, len(content))
	for i, b := range content {
		out[i] = b
	}
	return out
}

// stopOf returns the stop_reason and output_tokens of a streamed message.
func stopOf(t *testing.T, evs []sseEvent) (reason string, tokens int) {
	t.Helper()
	md := evs[len(evs)-2]
	require.Equal(t, "message_delta", md.name)
	return md.data["delta"].(map[string]any)["stop_reason"].(string),
		int(md.data["usage"].(map[string]any)["output_tokens"].(float64))
}

// A reply with ToolCalls has its text block, then a tool_use block per
// call, and stops with "tool_use"; streamed, each input comes in
// input_json_delta pieces.
func TestToolCallsStreamed(t *testing.T) {
	input := `{"file_path": "/tmp/notes.txt", "limit": 10}` // compacted when sent
	s := newServer(t, Config{Reply: toolsReply(Reply{
		Text: "Let me look.",
		ToolCalls: []ToolCall{
			{Name: "Read", Input: json.RawMessage(input)},
			{ID: "toolu_given", Name: "Bash"},
		},
		Chunks: 3,
	})})
	resp := mustPost(t, s, "/v1/messages", chatBody(true, "x"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	evs := readSSE(t, resp.Body)
	require.Equal(t, []string{
		"message_start",
		"content_block_start", "ping", "content_block_delta", "content_block_delta", "content_block_delta", "content_block_stop",
		"content_block_start", "content_block_delta", "content_block_delta", "content_block_delta", "content_block_stop",
		"content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
		"message_delta", "message_stop",
	}, names(evs))
	require.Equal(t, map[string]any{"type": "tool_use", "id": "toolu_mock_000001", "name": "Read", "input": map[string]any{}},
		evs[7].data["content_block"])

	const compact = `{"file_path":"/tmp/notes.txt","limit":10}`
	pieces := deltasOf(evs, "input_json_delta", "partial_json")
	require.Equal(t, []string{compact[:13], compact[13:27], compact[27:], "{", "}"}, pieces,
		"each input in Chunks pieces, never more than its characters")
	require.Equal(t, []any{
		map[string]any{"type": "text", "text": "Let me look."},
		map[string]any{"type": "tool_use", "id": "toolu_mock_000001", "name": "Read",
			"input": map[string]any{"file_path": "/tmp/notes.txt", "limit": 10.0}},
		map[string]any{"type": "tool_use", "id": "toolu_given", "name": "Bash", "input": map[string]any{}},
	}, assemble(t, evs))

	reason, tokens := stopOf(t, evs)
	require.Equal(t, StopToolUse, reason)
	require.Equal(t, outputTokens("Let me look.")+outputTokens("Read"+compact)+outputTokens("Bash{}"), tokens)
}

// Not streamed, the message holds the same blocks whole; the server
// numbers the calls it names across replies.
func TestToolCallsNotStreamed(t *testing.T) {
	s := newServer(t, Config{Reply: toolsReply(Reply{
		Text:      "Let me look.",
		ToolCalls: []ToolCall{{Name: "Read", Input: json.RawMessage(`{"file_path":"/tmp/a"}`)}},
	})})
	evs := readSSE(t, mustPost(t, s, "/v1/messages", chatBody(true, "x")).Body)
	streamed := assemble(t, evs)
	require.Equal(t, "toolu_mock_000001", streamed[1].(map[string]any)["id"])

	resp := mustPost(t, s, "/v1/messages", chatBody(false, "x"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	m := decode(t, resp.Body)
	streamed[1].(map[string]any)["id"] = "toolu_mock_000002"
	require.Equal(t, streamed, m["content"])
	require.Equal(t, StopToolUse, m["stop_reason"])
	require.Nil(t, m["stop_sequence"])
	_, tokens := stopOf(t, evs)
	require.EqualValues(t, tokens, m["usage"].(map[string]any)["output_tokens"])
}

// Without Text the message has no text block: its first tool_use block
// has index 0, or 1 after a thinking block.
func TestToolCallsWithoutText(t *testing.T) {
	tests := []struct {
		name  string
		reply Reply
		want  []any
	}{
		{"tool call alone", Reply{ToolCalls: []ToolCall{{ID: "t1", Name: "Glob", Input: json.RawMessage(`{"pattern":"*.go"}`)}}},
			[]any{map[string]any{"type": "tool_use", "id": "t1", "name": "Glob", "input": map[string]any{"pattern": "*.go"}}}},
		{"after thinking", Reply{Thinking: "look first", ToolCalls: []ToolCall{{ID: "t1", Name: "Glob"}}},
			[]any{
				map[string]any{"type": "thinking", "thinking": "look first", "signature": signature("look first")},
				map[string]any{"type": "tool_use", "id": "t1", "name": "Glob", "input": map[string]any{}},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Config{Reply: toolsReply(tc.reply)})
			evs := readSSE(t, mustPost(t, s, "/v1/messages", chatBody(true, "x")).Body)
			require.Equal(t, "ping", evs[2].name, "a ping follows the first block's start")
			require.Equal(t, tc.want, assemble(t, evs))
			reason, _ := stopOf(t, evs)
			require.Equal(t, StopToolUse, reason)

			m := decode(t, mustPost(t, s, "/v1/messages", chatBody(false, "x")).Body)
			require.Equal(t, tc.want, m["content"])
		})
	}
}

// StopReason overrides "tool_use"; a stop of the request that cuts the
// text drops the calls, which the model never reached.
func TestToolCallsStops(t *testing.T) {
	call := []ToolCall{{ID: "t1", Name: "Read"}}
	tests := []struct {
		name   string
		reply  Reply
		body   map[string]any
		text   string
		calls  int
		reason string
	}{
		{"stop reason", Reply{Text: "a", ToolCalls: call, StopReason: StopMaxTokens}, withStops(1024, nil), "a", 1, StopMaxTokens},
		{"stop sequence", Reply{Text: "a END b", ToolCalls: call}, withStops(1024, []string{"END"}), "a ", 0, StopSequence},
		{"stop sequence after the text", Reply{Text: "a b", ToolCalls: call}, withStops(1024, []string{"Read"}), "a b", 1, StopToolUse},
		{"max_tokens", Reply{Text: "0123456789", ToolCalls: call}, withStops(1, nil), "012", 0, StopMaxTokens},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			both(t, func(t *testing.T, stream bool) {
				s := newServer(t, Config{Reply: toolsReply(tc.reply)})
				tc.body["stream"] = stream
				resp := mustPost(t, s, "/v1/messages", tc.body)
				require.Equal(t, http.StatusOK, resp.StatusCode)
				var content []any
				var reason string
				if stream {
					evs := readSSE(t, resp.Body)
					content = assemble(t, evs)
					reason, _ = stopOf(t, evs)
				} else {
					m := decode(t, resp.Body)
					content, reason = m["content"].([]any), m["stop_reason"].(string)
				}
				require.Equal(t, tc.reason, reason)
				require.Len(t, content, 1+tc.calls)
				require.Equal(t, map[string]any{"type": "text", "text": tc.text}, content[0])
			})
		})
	}
}

// An Input that is not a JSON object is answered 500, saying why.
func TestToolCallsBadInput(t *testing.T) {
	for _, input := range []string{`{"a":`, `[1,2]`, `"text"`} {
		t.Run(input, func(t *testing.T) {
			s := newServer(t, Config{Reply: toolsReply(Reply{ToolCalls: []ToolCall{{Name: "Read", Input: json.RawMessage(input)}}})})
			resp := mustPost(t, s, "/v1/messages", chatBody(true, "x"))
			require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
			e := decode(t, resp.Body)["error"].(map[string]any)
			require.Equal(t, "api_error", e["type"])
			require.Contains(t, e["message"], "tool call 0 (Read)")
		})
	}
}

// A paced reply splits each input into one delta per estimated token, and
// its calls count toward the time it takes.
func TestToolCallsPaced(t *testing.T) {
	input := `{"file_path":"` + strings.Repeat("d/", 20) + `x"}` // 56 characters: 15 tokens
	const rate = 500.0
	s := newServer(t, Config{TokensPerSecond: rate, Reply: toolsReply(Reply{
		ToolCalls: []ToolCall{{Name: "Read", Input: json.RawMessage(input)}},
	})})
	resp, err := post(waitCtx(t), s, "/v1/messages", chatBody(true, "x"))
	require.NoError(t, err)
	defer resp.Body.Close()
	evs := readTimedSSE(t, resp)
	r := onlyRequest(t, s)
	var plain []sseEvent
	for _, ev := range evs {
		plain = append(plain, ev.sseEvent)
	}
	pieces := deltasOf(plain, "input_json_delta", "partial_json")
	require.Len(t, pieces, outputTokens(input))
	require.Equal(t, input, strings.Join(pieces, ""))
	_, tokens := stopOf(t, plain)
	require.Equal(t, outputTokens("")+outputTokens("Read"+input), tokens)
	total := time.Duration(float64(tokens) / rate * float64(time.Second))
	require.GreaterOrEqual(t, evs[len(evs)-1].at.Sub(r.FirstByte), total, "the whole reply takes tokens/rate")
}

// Without Text, a Hold pauses before the last content_block_stop, with
// every input sent.
func TestToolCallsHold(t *testing.T) {
	hold := make(chan struct{})
	s := newServer(t, Config{Reply: toolsReply(Reply{
		ToolCalls: []ToolCall{{ID: "t1", Name: "A"}, {ID: "t2", Name: "B", Input: json.RawMessage(`{"x":1}`)}},
		Hold:      hold,
	})})
	sr := newSSEReader(t, mustPost(t, s, "/v1/messages", chatBody(true, "x")).Body)
	var before []sseEvent
	for len(deltasOf(before, "input_json_delta", "partial_json")) < 2 {
		ev, ok := sr.next()
		require.True(t, ok)
		before = append(before, ev)
	}
	require.Equal(t, []string{"{}", `{"x":1}`}, deltasOf(before, "input_json_delta", "partial_json"))
	close(hold)
	var rest []sseEvent
	for ev, ok := sr.next(); ok; ev, ok = sr.next() {
		rest = append(rest, ev)
	}
	require.Equal(t, []string{"content_block_stop", "message_delta", "message_stop"}, names(rest))
	require.EqualValues(t, 1, rest[0].data["index"])
}

// Tool calls and tool results of the history are recorded per message;
// LastToolResults gives those of the last user message.
func TestRecordingTools(t *testing.T) {
	s := newServer(t, Config{})
	body := chatBody(true, "x")
	body["messages"] = []any{
		map[string]any{"role": "user", "content": "read both"},
		map[string]any{"role": "assistant", "content": []any{
			map[string]any{"type": "text", "text": "Reading."},
			map[string]any{"type": "tool_use", "id": "t1", "name": "Read", "input": map[string]any{"file_path": "/a"}},
			map[string]any{"type": "tool_use", "id": "t2", "name": "Bash"},
		}},
		map[string]any{"role": "user", "content": []any{
			map[string]any{"type": "tool_result", "tool_use_id": "t1", "content": "contents of a"},
			map[string]any{"type": "tool_result", "tool_use_id": "t2", "is_error": true, "content": []any{
				map[string]any{"type": "text", "text": "line 1"},
				map[string]any{"type": "image", "source": map[string]any{"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
				map[string]any{"type": "text", "text": "line 2"},
			}},
			map[string]any{"type": "tool_result", "tool_use_id": "t3"},
			map[string]any{"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
		}},
		map[string]any{"role": "system", "content": "# Environment"},
	}
	readSSE(t, mustPost(t, s, "/v1/messages", body).Body)
	got := s.Requests()
	require.Len(t, got, 1)
	r := got[0]
	require.Equal(t, Message{
		Role:  "assistant",
		Texts: []string{"Reading."},
		Types: []string{"text", "tool_use", "tool_use"},
		ToolUses: []ToolCall{
			{ID: "t1", Name: "Read", Input: json.RawMessage(`{"file_path":"/a"}`)},
			{ID: "t2", Name: "Bash"},
		},
	}, r.Messages[1])
	want := []ToolResult{
		{ToolUseID: "t1", Content: "contents of a"},
		{ToolUseID: "t2", Content: "line 1\nline 2", IsError: true},
		{ToolUseID: "t3"},
	}
	require.Equal(t, want, r.Messages[2].ToolResults)
	require.Equal(t, []string{"<system-reminder>ctx</system-reminder>"}, r.Messages[2].Texts)
	require.Equal(t, want, r.LastToolResults(), "the system message after it is skipped")
	require.Nil(t, Request{Messages: r.Messages[:2]}.LastToolResults(), "the last user message has none")

	// Requests returns copies: changing one leaves the record alone.
	r.Messages[1].ToolUses[0].Input[0] = 'X'
	r.Messages[1].ToolUses[0].Name = "changed"
	r.Messages[2].ToolResults[0].Content = "changed"
	again := s.Requests()[0]
	require.Equal(t, `{"file_path":"/a"}`, string(again.Messages[1].ToolUses[0].Input))
	require.Equal(t, "Read", again.Messages[1].ToolUses[0].Name)
	require.Equal(t, "contents of a", again.Messages[2].ToolResults[0].Content)
}

// A tool block whose fields have the wrong JSON type is answered 400, as
// any other body of the wrong shape.
func TestRecordingToolsBadType(t *testing.T) {
	for name, block := range map[string]any{
		"tool_result content":     map[string]any{"type": "tool_result", "tool_use_id": "t1", "content": 5},
		"tool_result is_error":    map[string]any{"type": "tool_result", "tool_use_id": "t1", "is_error": "yes"},
		"tool_result inner block": map[string]any{"type": "tool_result", "content": []any{map[string]any{"type": "text", "text": 5}}},
		"tool_use id":             map[string]any{"type": "tool_use", "id": 1, "name": "Read"},
	} {
		t.Run(name, func(t *testing.T) {
			s := newServer(t, Config{})
			body := chatBody(true, "x")
			body["messages"] = []any{map[string]any{"role": "user", "content": []any{block}}}
			resp := mustPost(t, s, "/v1/messages", body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			require.Equal(t, "invalid_request_error", decode(t, resp.Body)["error"].(map[string]any)["type"])
			require.Len(t, s.Requests(), 1, "recorded too")
		})
	}
}

// CallTool calls the tool in a new turn and quotes its results once the
// client sends them; side requests are echoed.
func TestCallTool(t *testing.T) {
	s := newServer(t, Config{Reply: CallTool("Read", map[string]string{"file_path": "/tmp/notes.txt"})})

	evs := readSSE(t, mustPost(t, s, "/v1/messages", chatBody(true, "read it")).Body)
	content := assemble(t, evs)
	require.Equal(t, []any{map[string]any{"type": "tool_use", "id": "toolu_mock_000001", "name": "Read",
		"input": map[string]any{"file_path": "/tmp/notes.txt"}}}, content)
	reason, _ := stopOf(t, evs)
	require.Equal(t, StopToolUse, reason)

	body := chatBody(true, "read it")
	body["messages"] = append(body["messages"].([]any),
		map[string]any{"role": "assistant", "content": content},
		map[string]any{"role": "user", "content": []any{
			map[string]any{"type": "tool_result", "tool_use_id": "toolu_mock_000001", "content": "one\ntwo"},
			map[string]any{"type": "tool_result", "tool_use_id": "toolu_mock_000002", "content": "three"},
		}},
	)
	evs = readSSE(t, mustPost(t, s, "/v1/messages", body).Body)
	require.Equal(t, []any{map[string]any{"type": "text", "text": ToolSaidPrefix + "one\ntwo\nthree"}}, assemble(t, evs))
	reason, _ = stopOf(t, evs)
	require.Equal(t, StopEndTurn, reason)

	side := chatBody(false, "title this")
	delete(side, "tools")
	m := decode(t, mustPost(t, s, "/v1/messages", side).Body)
	require.Equal(t, []any{map[string]any{"type": "text", "text": EchoPrefix + "title this"}}, m["content"])
}

// CallTool takes a nil input as {} and a json.RawMessage as is,
// compacted, and panics at once on an input that is not a JSON object.
func TestCallToolInput(t *testing.T) {
	chat := Request{Kind: KindChat, Messages: []Message{{Role: "user", Texts: []string{"x"}}}}
	require.Equal(t, json.RawMessage(`{}`), CallTool("A", nil)(chat).ToolCalls[0].Input)
	require.Equal(t, json.RawMessage(`{"a":1}`), CallTool("A", json.RawMessage(`{"a": 1}`))(chat).ToolCalls[0].Input)
	require.Equal(t, ToolCall{Name: "A", Input: json.RawMessage(`{"n":2}`)}, CallTool("A", struct {
		N int `json:"n"`
	}{2})(chat).ToolCalls[0])
	require.PanicsWithValue(t, "claudepooltest: CallTool input is not a JSON object: [1]", func() { CallTool("A", []int{1}) })
	require.Panics(t, func() { CallTool("A", func() {}) })
}

// The real CLI runs a tool the mock calls and sends its result back.
// Claude Code 2.1.330 with --tools Read offers Read (after a
// "DeferredToolPlaceholder" of its own). --allowedTools Read allows it by
// rule; without it the default permission mode still allows a Read in the
// working directory, and denies one outside at once in -p mode (a system
// line of subtype "permission_denied", then a tool_result with is_error,
// and the turn goes on). It prints, after the stream_events of the first
// reply: an assistant line with the tool_use block (stop_reason null, as
// for every reply), a user line with the tool_result (and fields of its
// own: "tool_use_result", "tool_result_meta"), an assistant line with the
// final text, then a result line whose result is that text, num_turns 2.
// The second request carries the history: the user message, the CLI's
// "system" environment message, the first reply with its tool_use block,
// and a user message of the tool_result alone, whose content is the file
// numbered as cat -n does: "1\tthe secret is 42\n2\t".
func TestRealCLIToolCall(t *testing.T) {
	path := realCLI(t)
	home, dir := t.TempDir(), t.TempDir()
	file := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(file, []byte("the secret is 42\n"), 0o600))
	input := map[string]any{"file_path": file}
	srv := NewServer(Config{Reply: CallTool("Read", input), Chunks: 3})
	defer srv.Close()
	p := spawnCLI(t, path, srv.Env(), home, dir,
		"--tools", "Read", "--allowedTools", "Read", "--include-partial-messages")
	p.send(userLine("read notes.txt"))
	require.NoError(t, p.stdin.Close())

	var (
		pieces      []string         // partial_json of the input_json_deltas
		toolStarts  []map[string]any // tool_use blocks of content_block_starts
		toolUses    []map[string]any // tool_use blocks of assistant lines
		toolResults []map[string]any // tool_result blocks of user lines
		texts       []string         // text blocks of assistant lines
		res         map[string]any
	)
	deadline := time.After(60 * time.Second)
	for res == nil {
		select {
		case m, ok := <-p.lines:
			require.True(t, ok, "stdout closed before a result line; stderr: %s", p.stderr.String())
			msg, _ := m["message"].(map[string]any)
			blocks, _ := msg["content"].([]any)
			switch m["type"] {
			case "result":
				res = m
			case "stream_event":
				ev := m["event"].(map[string]any)
				if b, _ := ev["content_block"].(map[string]any); b["type"] == "tool_use" {
					toolStarts = append(toolStarts, b)
				}
				if d, _ := ev["delta"].(map[string]any); d["type"] == "input_json_delta" {
					pieces = append(pieces, d["partial_json"].(string))
				}
			case "assistant":
				t.Logf("assistant line: %.500v", msg)
				for _, b := range blocks {
					switch b := b.(map[string]any); b["type"] {
					case "tool_use":
						toolUses = append(toolUses, b)
					case "text":
						texts = append(texts, b["text"].(string))
					}
				}
			case "user":
				t.Logf("user line: %.500v", m)
				for _, b := range blocks {
					if b := b.(map[string]any); b["type"] == "tool_result" {
						toolResults = append(toolResults, b)
					}
				}
			case "system":
				require.NotEqual(t, "permission_denied", m["subtype"], "line: %v", m)
			}
		case <-deadline:
			require.FailNow(t, "timed out", "no result line")
		}
	}
	logRequests(t, srv)
	t.Logf("result: is_error=%v num_turns=%v result=%q", res["is_error"], res["num_turns"], res["result"])

	// The streamed tool_use, passed through and put together.
	const id = "toolu_mock_000001"
	require.Equal(t, []map[string]any{{"type": "tool_use", "id": id, "name": "Read", "input": map[string]any{}}}, toolStarts)
	require.Len(t, pieces, 3, "the input in Chunks pieces")
	require.JSONEq(t, string(mustJSON(t, input)), strings.Join(pieces, ""))
	require.Equal(t, []map[string]any{{"type": "tool_use", "id": id, "name": "Read", "input": input}}, toolUses)

	// The CLI ran it and sent the result back.
	require.Len(t, toolResults, 1)
	content, _ := toolResults[0]["content"].(string)
	require.Equal(t, id, toolResults[0]["tool_use_id"])
	require.Nil(t, toolResults[0]["is_error"])
	require.Contains(t, content, "the secret is 42")
	chats := srv.ChatRequests()
	require.Len(t, chats, 2)
	require.Contains(t, chats[0].Tools, "Read")
	require.Nil(t, chats[0].LastToolResults())
	require.Equal(t, []ToolResult{{ToolUseID: id, Content: content}}, chats[1].LastToolResults())
	var uses []ToolCall
	for _, m := range chats[1].Messages {
		uses = append(uses, m.ToolUses...)
	}
	require.Len(t, uses, 1, "the first reply's tool_use, in the history")
	require.Equal(t, id, uses[0].ID)
	require.Equal(t, "Read", uses[0].Name)
	require.JSONEq(t, string(mustJSON(t, input)), string(uses[0].Input))

	// The mock quoted it, and that ends the turn.
	require.Equal(t, []string{ToolSaidPrefix + content}, texts)
	require.Equal(t, false, res["is_error"])
	require.Equal(t, ToolSaidPrefix+content, res["result"])
	require.EqualValues(t, 2, res["num_turns"])
}
