package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/claudepool/claudepool"
	"github.com/stretchr/testify/require"
)

// TestMessagesThinkingParsed: thinking lands in Request.Thinking,
// output_config.effort in its Effort and output_config.format's schema in
// Request.OutputSchema; the reply shows thinking when the request asked
// for it, without its text with display "omitted".
func TestMessagesThinkingParsed(t *testing.T) {
	parse := func(extra map[string]any) call {
		t.Helper()
		c, err := messagesFormat{}.parse([]byte(messagesBody(t, false, extra, "hi")))
		require.NoError(t, err)
		return c
	}
	c := parse(map[string]any{"max_tokens": 4096, "thinking": map[string]any{"type": "enabled", "budget_tokens": 2048}})
	require.Equal(t, &claudepool.Thinking{Type: claudepool.ThinkingEnabled, BudgetTokens: 2048}, c.req.Thinking)
	require.Equal(t, thinkingView{show: true}, c.thinking)
	require.Nil(t, c.req.OutputSchema)

	c = parse(map[string]any{"thinking": map[string]any{"type": "adaptive", "display": "omitted"}, "output_config": map[string]any{"effort": "low"}})
	require.Equal(t, &claudepool.Thinking{Type: claudepool.ThinkingAdaptive, Effort: "low"}, c.req.Thinking)
	require.Equal(t, thinkingView{show: true, omit: true}, c.thinking)

	c = parse(map[string]any{"thinking": map[string]any{"type": "adaptive", "display": "summarized"}})
	require.Equal(t, thinkingView{show: true}, c.thinking)

	c = parse(map[string]any{"thinking": map[string]any{"type": "disabled"}})
	require.Equal(t, &claudepool.Thinking{Type: claudepool.ThinkingDisabled}, c.req.Thinking)
	require.Equal(t, thinkingView{}, c.thinking, "no thinking blocks")

	schema := `{"type":"object","properties":{"name":{"type":"string"}},"required":["name"],"additionalProperties":false}`
	c = parse(map[string]any{"output_config": map[string]any{"format": map[string]any{"type": "json_schema", "schema": json.RawMessage(schema)}}})
	require.JSONEq(t, schema, string(c.req.OutputSchema))
	require.Nil(t, c.req.Thinking, "the CLI's thinking")
	require.Equal(t, thinkingView{}, c.thinking)

	c = parse(map[string]any{"thinking": nil, "output_config": map[string]any{"effort": nil, "format": nil}})
	require.Nil(t, c.req.Thinking)
	require.Nil(t, c.req.OutputSchema)
}

// TestMessagesThinkingInvalid: a malformed thinking or output_config is a
// 400 that names the field, before the chat takes a process; so is
// thinking with sampling parameters, which the API refuses.
func TestMessagesThinkingInvalid(t *testing.T) {
	ts := newTestServer(t)
	body := func(extra map[string]any) string { return messagesBody(t, false, extra, "hi") }
	th := func(kv map[string]any) map[string]any { return map[string]any{"max_tokens": 4096, "thinking": kv} }
	format := func(f any) map[string]any { return map[string]any{"output_config": map[string]any{"format": f}} }
	for _, tt := range []struct {
		name, body, want string
	}{
		{"thinking not an object", body(map[string]any{"thinking": "on"}), "thinking: must be an object"},
		{"no type", body(th(map[string]any{"budget_tokens": 2048})), "thinking.type: field required"},
		{"unknown type", body(th(map[string]any{"type": "between_tools"})), `thinking.type: must be "enabled", "adaptive" or "disabled", got "between_tools"`},
		{"no budget", body(th(map[string]any{"type": "enabled"})), `thinking.budget_tokens: field required with type "enabled"`},
		{"budget too small", body(th(map[string]any{"type": "enabled", "budget_tokens": 1000})), "thinking.budget_tokens: must be at least 1024, got 1000"},
		{"budget not below max_tokens", body(th(map[string]any{"type": "enabled", "budget_tokens": 4096})),
			"thinking.budget_tokens: must be less than max_tokens (4096), got 4096"},
		{"budget a string", body(th(map[string]any{"type": "enabled", "budget_tokens": "2048"})), "thinking.budget_tokens: must be a number"},
		{"budget with adaptive", body(th(map[string]any{"type": "adaptive", "budget_tokens": 2048})),
			`thinking.budget_tokens: only with type "enabled", not "adaptive"`},
		{"bad display", body(th(map[string]any{"type": "adaptive", "display": "full"})), `thinking.display: must be "summarized" or "omitted", got "full"`},
		{"display when disabled", body(th(map[string]any{"type": "disabled", "display": "omitted"})), `thinking.display: not with type "disabled"`},
		{"unknown thinking field", body(th(map[string]any{"type": "adaptive", "level": 3})), "thinking.level: unsupported field"},
		{"with temperature", body(map[string]any{"thinking": map[string]any{"type": "adaptive"}, "temperature": 0.5}),
			"the API takes no Temperature, TopP or TopK with thinking"},
		{"output_config not an object", body(map[string]any{"output_config": "json"}), "output_config: must be an object"},
		{"unknown output_config field", body(map[string]any{"output_config": map[string]any{"verbosity": "low"}}),
			"output_config.verbosity: unsupported field"},
		{"effort without thinking", body(map[string]any{"output_config": map[string]any{"effort": "high"}}),
			"output_config.effort: this server sets effort together with thinking only"},
		{"effort not a string", body(map[string]any{"thinking": map[string]any{"type": "adaptive"}, "output_config": map[string]any{"effort": 3}}),
			"output_config.effort: must be an effort level"},
		{"format not an object", body(format("json")), "output_config.format: must be an object"},
		{"format of another type", body(format(map[string]any{"type": "text"})), `output_config.format.type: must be "json_schema", got "text"`},
		{"format without type", body(format(map[string]any{"schema": map[string]any{}})), `output_config.format.type: must be "json_schema", got none`},
		{"no schema", body(format(map[string]any{"type": "json_schema"})), "output_config.format.schema: field required"},
		{"schema not an object", body(format(map[string]any{"type": "json_schema", "schema": []any{}})), "output_config.format.schema: must be a JSON schema object"},
		{"unknown format field", body(format(map[string]any{"type": "json_schema", "schema": map[string]any{}, "name": "x"})),
			"output_config.format.name: unsupported field"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.postTo(t, context.Background(), "/v1/messages", tt.body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			e := apiErrorBody(t, resp.Body)
			require.Equal(t, "invalid_request_error", e.Error.Type)
			require.Contains(t, e.Error.Message, tt.want)
		})
	}
	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires, "a bad request took a process")
}

// TestMessagesThinkingWithoutGateway: a pool without the gateway runs a
// chat that sets thinking and effort with the CLI's own, and refuses
// structured output, which would change what the reply is, before it
// takes a process.
func TestMessagesThinkingWithoutGateway(t *testing.T) {
	ts := newTestServer(t)
	resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, map[string]any{
		"thinking": map[string]any{"type": "adaptive"}, "output_config": map[string]any{"effort": "low"}}, "hello"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var m message
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	require.Equal(t, []contentBlock{{Type: "text", Text: "echo: hello"}}, m.Content, "the fake does not think")

	for _, stream := range []bool{false, true} {
		resp = ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, stream, map[string]any{
			"output_config": map[string]any{"format": map[string]any{"type": "json_schema", "schema": map[string]any{"type": "object"}}}}, "hello"))
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		e := apiErrorBody(t, resp.Body)
		require.Equal(t, "invalid_request_error", e.Error.Type)
		require.Equal(t, errNoOutputFormat.Error(), e.Error.Message)
	}
	st := ts.pool.Stats()
	require.EqualValues(t, 1, st.WarmAcquires+st.ColdAcquires, "no process for a chat that cannot run as asked")
}

// cliEvents are the events of a reply that thinks, as the CLI sends them:
// with partial messages, the raw SSE events of each block and then the
// block in an assistant message of its own; without, the assistant
// messages alone.
func cliEvents(t *testing.T, partials bool, thinking []string, signature string, text []string) []claudepool.Event {
	t.Helper()
	partial := func(index int, deltaType, text string, event map[string]any) claudepool.Event {
		raw, err := json.Marshal(event)
		require.NoError(t, err)
		return claudepool.Event{Type: claudepool.EventPartial, Partial: &claudepool.Partial{
			Type: event["type"].(string), Index: index, DeltaType: deltaType, Text: text, Event: raw}}
	}
	assistant := func(b claudepool.ContentBlock) claudepool.Event {
		return claudepool.Event{Type: claudepool.EventAssistant, Message: &claudepool.ChatMessage{
			ID: "msg_1", Model: "claude-test", Role: "assistant", Content: []claudepool.ContentBlock{b}}}
	}
	var evs []claudepool.Event
	if partials {
		evs = append(evs, partial(0, "", "", map[string]any{"type": "content_block_start", "index": 0,
			"content_block": map[string]any{"type": "thinking", "thinking": "", "signature": ""}}))
		for _, s := range thinking {
			evs = append(evs, partial(0, "thinking_delta", s, map[string]any{"type": "content_block_delta", "index": 0,
				"delta": map[string]any{"type": "thinking_delta", "thinking": s}}))
		}
		evs = append(evs, partial(0, "signature_delta", "", map[string]any{"type": "content_block_delta", "index": 0,
			"delta": map[string]any{"type": "signature_delta", "signature": signature}}))
		evs = append(evs, partial(0, "", "", map[string]any{"type": "content_block_stop", "index": 0}))
	}
	evs = append(evs, assistant(claudepool.ContentBlock{Type: "thinking", Thinking: strings.Join(thinking, ""), Signature: signature}))
	if partials {
		evs = append(evs, partial(1, "", "", map[string]any{"type": "content_block_start", "index": 1,
			"content_block": map[string]any{"type": "text", "text": ""}}))
		for _, s := range text {
			evs = append(evs, partial(1, "text_delta", s, map[string]any{"type": "content_block_delta", "index": 1,
				"delta": map[string]any{"type": "text_delta", "text": s}}))
		}
		evs = append(evs, partial(1, "", "", map[string]any{"type": "content_block_stop", "index": 1}))
	}
	evs = append(evs, assistant(claudepool.ContentBlock{Type: "text", Text: strings.Join(text, "")}))
	return evs
}

// render renders events as serveChat does, into a recorded response.
func render(t *testing.T, evs []claudepool.Event, c call, res *claudepool.Result) *httptest.ResponseRecorder {
	t.Helper()
	return renderTools(t, evs, c, res, nil)
}

// renderTools is render on a server with tools.
func renderTools(t *testing.T, evs []claudepool.Event, c call, res *claudepool.Result, tools *toolSet) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/v1/messages", nil)
	out := messagesFormat{tools: tools}.respond(w, r, c)
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

// TestReplyThinking: a reply that asked for thinking begins with a
// thinking block, its thinking and signature, before the text block:
// streamed, a thinking block at index 0 (thinking_delta events, then a
// signature_delta) and the text block at index 1; not streamed, the
// blocks in the message's content. The CLI's whole copies of the blocks
// are not sent twice, and without partial messages they make the blocks.
// A request that did not ask gets the text alone; display "omitted" gets
// the thinking block without its text.
func TestReplyThinking(t *testing.T) {
	thinking, text := []string{"Let me ", "think."}, []string{"The answer ", "is 4."}
	const sig = "c2lnbmF0dXJl"
	res := &claudepool.Result{Text: "The answer is 4.", Thinking: "Let me think.", StopReason: "end_turn",
		Usage: claudepool.Usage{InputTokens: 10, OutputTokens: 20}}
	shown := call{thinking: thinkingView{show: true}}
	for _, partials := range []bool{true, false} {
		evs := cliEvents(t, partials, thinking, sig, text)
		name := map[bool]string{true: "partials", false: "whole"}[partials]

		t.Run(name+" not streamed", func(t *testing.T) {
			w := render(t, evs, shown, res)
			var m message
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &m))
			require.Equal(t, []contentBlock{
				{Type: "thinking", Thinking: "Let me think.", Signature: sig},
				{Type: "text", Text: "The answer is 4."},
			}, m.Content)
			require.Contains(t, w.Body.String(), `"content":[{"type":"thinking","thinking":"Let me think.","signature":"c2lnbmF0dXJl"},{"type":"text","text":"The answer is 4."}]`)
		})

		t.Run(name+" streamed", func(t *testing.T) {
			c := shown
			c.stream = true
			evs := recordedEvents(t, render(t, evs, c, res))
			want := []string{"message_start", "ping",
				"content_block_start", "content_block_delta", "content_block_delta", "content_block_delta", "content_block_stop",
				"content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
				"message_delta", "message_stop"}
			if !partials {
				// One delta for the whole thinking, one for the whole text.
				want = slices.Delete(want, 8, 9)
				want = slices.Delete(want, 3, 4)
			}
			require.Equal(t, want, eventNames(evs))
			var thoughts, texts, sigs []string
			for _, ev := range evs {
				switch ev.name {
				case "content_block_start":
					cb := ev.data["content_block"].(map[string]any)
					if cb["type"] == "thinking" {
						require.Equal(t, 0.0, ev.data["index"])
						require.Equal(t, map[string]any{"type": "thinking", "thinking": "", "signature": ""}, cb)
					} else {
						require.Equal(t, 1.0, ev.data["index"])
						require.Equal(t, map[string]any{"type": "text", "text": ""}, cb)
					}
				case "content_block_delta":
					d := ev.data["delta"].(map[string]any)
					switch d["type"] {
					case "thinking_delta":
						require.Equal(t, 0.0, ev.data["index"])
						thoughts = append(thoughts, d["thinking"].(string))
					case "signature_delta":
						require.Equal(t, 0.0, ev.data["index"])
						require.Empty(t, texts, "the signature ends the thinking block")
						sigs = append(sigs, d["signature"].(string))
					case "text_delta":
						require.Equal(t, 1.0, ev.data["index"])
						texts = append(texts, d["text"].(string))
					}
				case "content_block_stop":
					require.Contains(t, []float64{0, 1}, ev.data["index"])
				}
			}
			if partials {
				require.Equal(t, thinking, thoughts)
				require.Equal(t, text, texts)
			} else {
				require.Equal(t, []string{"Let me think."}, thoughts)
				require.Equal(t, []string{"The answer is 4."}, texts)
			}
			require.Equal(t, []string{sig}, sigs)
		})

		t.Run(name+" not asked", func(t *testing.T) {
			w := render(t, evs, call{}, res)
			var m message
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &m))
			require.Equal(t, []contentBlock{{Type: "text", Text: "The answer is 4."}}, m.Content)

			evs := recordedEvents(t, render(t, evs, call{stream: true}, res))
			require.NotContains(t, eventNames(evs), "error")
			for _, ev := range evs {
				if i, ok := ev.data["index"]; ok {
					require.Equal(t, 0.0, i, "one text block: %v", ev.data)
				}
				if d, ok := ev.data["delta"].(map[string]any); ok && ev.name == "content_block_delta" {
					require.Equal(t, "text_delta", d["type"])
				}
			}
		})

		t.Run(name+" omitted", func(t *testing.T) {
			w := render(t, evs, call{thinking: thinkingView{show: true, omit: true}}, res)
			var m message
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &m))
			require.Equal(t, []contentBlock{{Type: "thinking", Signature: sig}, {Type: "text", Text: "The answer is 4."}}, m.Content)
			require.Contains(t, w.Body.String(), `{"type":"thinking","thinking":"","signature":"c2lnbmF0dXJl"}`)

			c := call{stream: true, thinking: thinkingView{show: true, omit: true}}
			evs := recordedEvents(t, render(t, evs, c, res))
			for _, ev := range evs {
				if d, ok := ev.data["delta"].(map[string]any); ok && ev.name == "content_block_delta" {
					require.NotEqual(t, "thinking_delta", d["type"], "no thinking text")
				}
			}
			require.Equal(t, "thinking", evs[2].data["content_block"].(map[string]any)["type"])
		})
	}

	t.Run("asked, no thinking came", func(t *testing.T) {
		evs := cliEvents(t, true, nil, "", text)[3:] // no thinking block at all
		evs = evs[1:]                                // nor its assistant message
		c := shown
		c.stream = true
		got := recordedEvents(t, render(t, evs, c, res))
		require.Equal(t, []string{"message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
			"content_block_stop", "message_delta", "message_stop"}, eventNames(got))
		require.Equal(t, 0.0, got[2].data["index"], "the text block is the first")
	})

	t.Run("asked, empty reply", func(t *testing.T) {
		c := shown
		c.stream = true
		got := recordedEvents(t, render(t, nil, c, &claudepool.Result{StopReason: "max_tokens"}))
		require.Equal(t, []string{"message_start", "ping", "content_block_start", "content_block_stop", "message_delta", "message_stop"}, eventNames(got))

		w := render(t, nil, shown, &claudepool.Result{StopReason: "max_tokens"})
		var m message
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &m))
		require.Equal(t, []contentBlock{{Type: "text"}}, m.Content)
	})
}

// recordedEvents reads the events of a recorded streamed reply.
func recordedEvents(t *testing.T, w *httptest.ResponseRecorder) []decodedEvent {
	t.Helper()
	require.Equal(t, "text/event-stream", w.Header().Get("Content-Type"))
	var out []decodedEvent
	sc := bufio.NewScanner(w.Body)
	for ev, ok := readEvent(sc); ok; ev, ok = readEvent(sc) {
		var data map[string]any
		require.NoError(t, json.Unmarshal([]byte(ev.data), &data), ev.data)
		out = append(out, decodedEvent{ev.name, data})
	}
	require.NoError(t, sc.Err())
	return out
}
