package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// lastUser returns the last user message of a recorded request.
func lastUser(t *testing.T, r claudepooltest.Request) claudepooltest.Message {
	t.Helper()
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			return r.Messages[i]
		}
	}
	require.FailNow(t, "no user message", "request %d", r.Seq)
	return claudepooltest.Message{}
}

// TestE2EMessagesContent drives POST /v1/messages over real CLI processes
// and the pool's gateway: images and documents reach the API as blocks in
// their places, thinking reaches it as the request set it and comes back
// as a thinking block before the text (streamed at index 0, the text at
// index 1), a request that did not ask for thinking gets the text alone,
// and output_config.format reaches the API with the reply's text the
// JSON.
func TestE2EMessagesContent(t *testing.T) {
	api := claudepooltest.NewServer(claudepooltest.Config{NoRetries: true})
	t.Cleanup(api.Close) // after the pool's Close, registered later
	pool := newE2EPool(t, api)
	ts := serveE2E(t, pool, false)

	const thought = "The user wants a number; four will do."
	thinkingReply := func(r claudepooltest.Request) claudepooltest.Reply {
		if r.Kind != claudepooltest.KindChat {
			return claudepooltest.Echo(r)
		}
		return claudepooltest.Reply{Thinking: thought, Text: "The answer is 4.", Chunks: 3}
	}

	t.Run("images and documents", func(t *testing.T) {
		api.SetReply(claudepooltest.Echo)
		img, other := testPNG(t, 3), testPNG(t, 4)
		const text = "describe the attachments"
		resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, nil, []map[string]any{
			imageJSON("image/png", img),
			textJSON("and also"),
			{"type": "image", "source": map[string]any{"type": "url", "url": "https://example.com/cat.png"}},
			documentJSON(map[string]any{"type": "base64", "media_type": "application/pdf", "data": b64(testPDF)}, map[string]any{"title": "Quarterly report"}),
			documentJSON(map[string]any{"type": "text", "media_type": "text/plain", "data": "meeting notes, plain"}, map[string]any{"title": "Notes"}),
			imageJSON("image/png", other),
			textJSON(text),
		}))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var m message
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		require.Equal(t, []contentBlock{{Type: "text", Text: claudepooltest.EchoPrefix + text}}, m.Content)

		reqs := chatRequestsFor(api, text)
		require.NotEmpty(t, reqs)
		for _, r := range reqs {
			u := lastUser(t, r)
			var media []string
			for _, typ := range u.Types {
				if typ != "text" {
					media = append(media, typ)
				}
			}
			require.Equal(t, []string{"image", "image", "document", "document", "image"}, media, "types %q", u.Types)
			require.Contains(t, u.Texts, "and also")
			body := string(r.Body)
			for _, want := range []string{b64(img), b64(other), b64(testPDF), "https://example.com/cat.png",
				"Quarterly report", "meeting notes, plain", `"title":"Notes"`} {
				require.Contains(t, body, want)
			}
		}
	})

	t.Run("thinking, not streamed", func(t *testing.T) {
		api.SetReply(thinkingReply)
		const text = "think, then answer"
		resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, map[string]any{
			"max_tokens": 4096, "thinking": map[string]any{"type": "enabled", "budget_tokens": 2048},
		}, text))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var m message
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		require.Len(t, m.Content, 2)
		require.Equal(t, "thinking", m.Content[0].Type)
		require.Equal(t, thought, m.Content[0].Thinking)
		require.NotEmpty(t, m.Content[0].Signature)
		require.Equal(t, contentBlock{Type: "text", Text: "The answer is 4."}, m.Content[1])

		reqs := chatRequestsFor(api, text)
		require.NotEmpty(t, reqs)
		for _, r := range reqs {
			var th map[string]any
			require.NoError(t, json.Unmarshal(r.Thinking, &th))
			require.Equal(t, "enabled", th["type"])
			require.Equal(t, 2048.0, th["budget_tokens"])
			require.Equal(t, 4096, r.MaxTokens)
		}
	})

	t.Run("thinking, streamed", func(t *testing.T) {
		api.SetReply(thinkingReply)
		const text = "think aloud, streamed"
		resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, true, map[string]any{
			"max_tokens": 4096, "thinking": map[string]any{"type": "adaptive"}, "output_config": map[string]any{"effort": "low"},
		}, text))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		events := readEvents(t, resp)
		var names []string
		var thoughts, texts strings.Builder
		var sigs []string
		for _, ev := range events {
			if ev.name == "ping" {
				continue
			}
			names = append(names, ev.name)
			idx, _ := ev.data["index"].(float64)
			switch ev.name {
			case "content_block_start":
				typ := ev.data["content_block"].(map[string]any)["type"]
				require.Equal(t, map[float64]any{0: "thinking", 1: "text"}[idx], typ)
			case "content_block_delta":
				d := ev.data["delta"].(map[string]any)
				switch d["type"] {
				case "thinking_delta":
					require.Equal(t, 0.0, idx)
					thoughts.WriteString(d["thinking"].(string))
				case "signature_delta":
					require.Equal(t, 0.0, idx)
					sigs = append(sigs, d["signature"].(string))
				case "text_delta":
					require.Equal(t, 1.0, idx)
					texts.WriteString(d["text"].(string))
				}
			}
		}
		require.Equal(t, "message_start", names[0])
		require.Equal(t, []string{"content_block_stop", "message_delta", "message_stop"}, names[len(names)-3:])
		require.Equal(t, thought, thoughts.String())
		require.Len(t, sigs, 1, "one signature, not repeated from the CLI's copy of the block")
		require.NotEmpty(t, sigs[0])
		require.Equal(t, "The answer is 4.", texts.String())
		first := func(name string, index float64) int {
			for i, ev := range events {
				if ev.name == name && ev.data["index"] == index {
					return i
				}
			}
			return -1
		}
		require.Less(t, first("content_block_start", 0), first("content_block_stop", 0))
		require.Less(t, first("content_block_stop", 0), first("content_block_start", 1), "the thinking block ends before the text block starts")

		reqs := chatRequestsFor(api, text)
		require.NotEmpty(t, reqs)
		for _, r := range reqs {
			var th map[string]any
			require.NoError(t, json.Unmarshal(r.Thinking, &th))
			require.Equal(t, "adaptive", th["type"])
			require.NotContains(t, th, "budget_tokens")
			var oc map[string]any
			require.NoError(t, json.Unmarshal(r.OutputConfig, &oc))
			require.Equal(t, "low", oc["effort"])
		}
	})

	t.Run("thinking not asked or disabled", func(t *testing.T) {
		api.SetReply(thinkingReply)
		for _, tt := range []struct {
			text     string
			thinking any
		}{
			{"no thinking asked", nil},
			{"thinking disabled", map[string]any{"type": "disabled"}},
		} {
			extra := map[string]any{}
			if tt.thinking != nil {
				extra["thinking"] = tt.thinking
			}
			resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, extra, tt.text))
			require.Equal(t, http.StatusOK, resp.StatusCode)
			var m message
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
			require.Equal(t, []contentBlock{{Type: "text", Text: "The answer is 4."}}, m.Content, "%s: the text alone", tt.text)

			resp = ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, true, extra, tt.text+", streamed"))
			require.Equal(t, http.StatusOK, resp.StatusCode)
			for _, ev := range readEvents(t, resp) {
				if i, ok := ev.data["index"]; ok {
					require.Equal(t, 0.0, i, "%s: one text block: %v", tt.text, ev.data)
				}
				if d, ok := ev.data["delta"].(map[string]any); ok && ev.name == "content_block_delta" {
					require.Equal(t, "text_delta", d["type"])
				}
			}
		}
		for _, r := range chatRequestsFor(api, "thinking disabled") {
			require.Nil(t, r.Thinking, "thinking disabled: the gateway drops the CLI's")
		}
	})

	t.Run("structured output", func(t *testing.T) {
		const reply = `{"name":"Ada","age":36}`
		api.SetReply(func(r claudepooltest.Request) claudepooltest.Reply {
			if r.Kind != claudepooltest.KindChat {
				return claudepooltest.Echo(r)
			}
			return claudepooltest.Reply{Text: reply}
		})
		const text = "who was the first programmer?"
		schema := `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"],"additionalProperties":false}`
		for _, stream := range []bool{false, true} {
			resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, stream, map[string]any{
				"output_config": map[string]any{"format": map[string]any{"type": "json_schema", "schema": json.RawMessage(schema)}},
			}, text))
			require.Equal(t, http.StatusOK, resp.StatusCode)
			if !stream {
				var m message
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
				require.Equal(t, []contentBlock{{Type: "text", Text: reply}}, m.Content)
				continue
			}
			var got strings.Builder
			for _, ev := range readEvents(t, resp) {
				if d, ok := ev.data["delta"].(map[string]any); ok && ev.name == "content_block_delta" {
					got.WriteString(d["text"].(string))
				}
			}
			require.JSONEq(t, reply, got.String())
		}
		reqs := chatRequestsFor(api, text)
		require.Len(t, reqs, 2)
		for _, r := range reqs {
			var oc struct {
				Effort string `json:"effort"`
				Format struct {
					Type   string          `json:"type"`
					Schema json.RawMessage `json:"schema"`
				} `json:"format"`
			}
			require.NoError(t, json.Unmarshal(r.OutputConfig, &oc), "%s", r.OutputConfig)
			require.Equal(t, "json_schema", oc.Format.Type)
			require.JSONEq(t, schema, string(oc.Format.Schema))
			require.NotEmpty(t, oc.Effort, "the CLI's effort, kept")
		}
	})
}
