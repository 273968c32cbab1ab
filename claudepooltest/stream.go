package claudepooltest

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// message is the assistant message the server answers with.
type message struct {
	id           string
	model        string
	inputTokens  int
	outputTokens int
}

func (m message) usage(output int) map[string]any {
	return map[string]any{
		"input_tokens":                m.inputTokens,
		"output_tokens":               output,
		"cache_creation_input_tokens": 0,
		"cache_read_input_tokens":     0,
	}
}

// full returns the whole message, for a non-streamed reply.
func (m message) full(text, stopReason string) map[string]any {
	return map[string]any{
		"id":            m.id,
		"type":          "message",
		"role":          "assistant",
		"model":         m.model,
		"content":       []any{map[string]string{"type": "text", "text": text}},
		"stop_reason":   stopReason,
		"stop_sequence": nil,
		"usage":         m.usage(m.outputTokens),
	}
}

// stream writes rep as a Messages API event stream. It reports false when
// the client went away or the server is closing before the stream ended.
func (s *Server) stream(w http.ResponseWriter, hr *http.Request, m message, rep Reply) bool {
	flusher, _ := w.(http.Flusher)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Request-Id", "req_mock")
	w.WriteHeader(http.StatusOK)

	send := func(event string, data any) bool {
		b, err := json.Marshal(data)
		if err != nil {
			panic("claudepooltest: " + err.Error())
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}

	start := map[string]any{
		"id":            m.id,
		"type":          "message",
		"role":          "assistant",
		"model":         m.model,
		"content":       []any{},
		"stop_reason":   nil,
		"stop_sequence": nil,
		"usage":         m.usage(1),
	}
	if !send("message_start", map[string]any{"type": "message_start", "message": start}) ||
		!send("content_block_start", map[string]any{
			"type":          "content_block_start",
			"index":         0,
			"content_block": map[string]string{"type": "text", "text": ""},
		}) ||
		!send("ping", map[string]string{"type": "ping"}) {
		return false
	}
	chunks := splitChunks(rep.Text, rep.Chunks)
	for i, chunk := range chunks {
		if i > 0 && rep.ChunkDelay > 0 && !s.pause(hr, rep.ChunkDelay) {
			return false
		}
		if !send("content_block_delta", map[string]any{
			"type":  "content_block_delta",
			"index": 0,
			"delta": map[string]string{"type": "text_delta", "text": chunk},
		}) {
			return false
		}
		if i == 0 && rep.Hold != nil && !s.hold(hr, rep.Hold) {
			return false
		}
	}
	if len(chunks) == 0 && rep.Hold != nil && !s.hold(hr, rep.Hold) {
		return false
	}
	return send("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0}) &&
		send("message_delta", map[string]any{
			"type":  "message_delta",
			"delta": map[string]any{"stop_reason": rep.StopReason, "stop_sequence": nil},
			"usage": map[string]int{"output_tokens": m.outputTokens},
		}) &&
		send("message_stop", map[string]string{"type": "message_stop"})
}

// hold waits until ch is closed, and reports false if the client went away
// or the server is closing first.
func (s *Server) hold(hr *http.Request, ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-hr.Context().Done():
		return false
	case <-s.closing:
		return false
	}
}
