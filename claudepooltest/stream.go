package claudepooltest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"
)

// message is the assistant message the server answers with.
type message struct {
	id           string
	model        string
	inputTokens  int
	outputTokens int
	stopReason   string
	stopSequence string     // "" reports null
	thinking     string     // the thinking block's text; "": no thinking block
	calls        []ToolCall // the tool_use blocks, after the text
}

// hasText reports whether the message has a text block: unless it calls
// tools, even an empty one.
func (m message) hasText(text string) bool { return text != "" || len(m.calls) == 0 }

// sequence returns the message's stop_sequence as JSON: a string, or null.
func (m message) sequence() any {
	if m.stopSequence == "" {
		return nil
	}
	return m.stopSequence
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
func (m message) full(text string) map[string]any {
	var content []any
	if m.thinking != "" {
		content = append(content, map[string]string{
			"type":      "thinking",
			"thinking":  m.thinking,
			"signature": signature(m.thinking),
		})
	}
	if m.hasText(text) {
		content = append(content, map[string]string{"type": "text", "text": text})
	}
	for _, c := range m.calls {
		content = append(content, map[string]any{"type": "tool_use", "id": c.ID, "name": c.Name, "input": c.Input})
	}
	return map[string]any{
		"id":            m.id,
		"type":          "message",
		"role":          "assistant",
		"model":         m.model,
		"content":       content,
		"stop_reason":   m.stopReason,
		"stop_sequence": m.sequence(),
		"usage":         m.usage(m.outputTokens),
	}
}

// stream writes rep as a Messages API event stream: m's thinking block, if
// any, in the given thinking chunks, then the text block, if any, in the
// given text chunks, then a tool_use block per call of m with its input in
// the given chunks. It reports false when the client went away or the
// server is closing before the stream ended.
func (s *Server) stream(w http.ResponseWriter, hr *http.Request, m message, rep Reply, thinking, text []string, inputs [][]string) bool {
	flusher, _ := w.(http.Flusher)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Request-Id", "req_mock")
	w.WriteHeader(http.StatusOK)
	// The pace counts from here, no earlier than the recorded FirstByte.
	chars := utf8.RuneCountInString(m.thinking) + utf8.RuneCountInString(rep.Text)
	for _, c := range m.calls {
		chars += utf8.RuneCount(c.Input)
	}
	pace := newPacer(time.Now(), m.outputTokens, chars, rep.TokensPerSecond)

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
	// startBlock opens content block index; the first is followed by a
	// ping, as the API sends it.
	startBlock := func(index int, block any) bool {
		return send("content_block_start", map[string]any{
			"type":          "content_block_start",
			"index":         index,
			"content_block": block,
		}) && (index > 0 || send("ping", map[string]string{"type": "ping"}))
	}
	sendDelta := func(index int, delta map[string]string) bool {
		return send("content_block_delta", map[string]any{
			"type":  "content_block_delta",
			"index": index,
			"delta": delta,
		})
	}
	stopBlock := func(index int) bool {
		return send("content_block_stop", map[string]any{"type": "content_block_stop", "index": index})
	}
	sent := 0   // characters sent so far, thinking, text and tool inputs
	chunks := 0 // chunks sent so far, of every block
	// chunk sends the next piece of block index as a delta of the given
	// type, after the chunk delay and when the pace has it due.
	chunk := func(index int, typ, field, piece string) bool {
		if chunks > 0 && rep.ChunkDelay > 0 && !s.pause(hr, rep.ChunkDelay) {
			return false
		}
		if !s.until(hr, pace.due(sent)) {
			return false
		}
		if !sendDelta(index, map[string]string{"type": typ, field: piece}) {
			return false
		}
		sent += utf8.RuneCountInString(piece)
		chunks++
		return true
	}
	hold := func() bool {
		if !s.hold(hr, rep.Hold) {
			return false
		}
		pace.resume(sent, time.Now())
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
	if !send("message_start", map[string]any{"type": "message_start", "message": start}) {
		return false
	}
	index := 0 // of the next block
	if m.thinking != "" {
		if !startBlock(0, map[string]string{"type": "thinking", "thinking": "", "signature": ""}) {
			return false
		}
		for _, piece := range thinking {
			if !chunk(0, "thinking_delta", "thinking", piece) {
				return false
			}
		}
		if !sendDelta(0, map[string]string{"type": "signature_delta", "signature": signature(m.thinking)}) ||
			!stopBlock(0) {
			return false
		}
		index = 1
	}
	last := index + len(m.calls) - 1 // the last block
	if m.hasText(rep.Text) {
		last++
	}
	// endBlock stops block index; the last one first waits for the hold
	// when there is no text to hold after, and for the pace.
	endBlock := func() bool {
		if index == last {
			if len(text) == 0 && rep.Hold != nil && !hold() {
				return false
			}
			if !s.until(hr, pace.end()) {
				return false
			}
		}
		if !stopBlock(index) {
			return false
		}
		index++
		return true
	}
	if m.hasText(rep.Text) {
		if !startBlock(index, map[string]string{"type": "text", "text": ""}) {
			return false
		}
		for i, piece := range text {
			if !chunk(index, "text_delta", "text", piece) {
				return false
			}
			if i == 0 && rep.Hold != nil && !hold() {
				return false
			}
		}
		if !endBlock() {
			return false
		}
	}
	for i, c := range m.calls {
		block := map[string]any{"type": "tool_use", "id": c.ID, "name": c.Name, "input": map[string]any{}}
		if !startBlock(index, block) {
			return false
		}
		for _, piece := range inputs[i] {
			if !chunk(index, "input_json_delta", "partial_json", piece) {
				return false
			}
		}
		if !endBlock() {
			return false
		}
	}
	return send("message_delta", map[string]any{
		"type":  "message_delta",
		"delta": map[string]any{"stop_reason": m.stopReason, "stop_sequence": m.sequence()},
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

// until waits until t (at once when t is zero or past), and reports false if
// the client went away or the server is closing first.
func (s *Server) until(hr *http.Request, t time.Time) bool {
	if t.IsZero() {
		return true
	}
	d := time.Until(t)
	return d <= 0 || s.pause(hr, d)
}

// pacer tells when the parts of a streamed reply are due so that its tokens
// come at a given rate.
type pacer struct {
	start time.Time     // the first byte, moved on by a hold; zero: unpaced
	total time.Duration // the time all tokens take
	chars int           // characters of the reply's thinking and text
}

// maxPace bounds the time a reply can be paced to, so that a tiny rate does
// not overflow a Duration.
const maxPace = 100 * 365 * 24 * time.Hour

func newPacer(start time.Time, tokens, chars int, perSecond float64) pacer {
	if !(perSecond > 0) {
		return pacer{}
	}
	total := maxPace
	if secs := float64(tokens) / perSecond; secs < maxPace.Seconds() {
		total = time.Duration(secs * float64(time.Second))
	}
	return pacer{start: start, total: total, chars: chars}
}

// due returns when the delta that follows the first sent characters of the
// reply (thinking and text) is due, or zero when unpaced.
func (p pacer) due(sent int) time.Time {
	if p.start.IsZero() {
		return p.start
	}
	return p.start.Add(p.share(sent))
}

// end returns when the reply may end, or zero when unpaced.
func (p pacer) end() time.Time {
	if p.start.IsZero() {
		return p.start
	}
	return p.start.Add(p.total)
}

// share returns the part of the total time that the first sent characters
// take.
func (p pacer) share(sent int) time.Duration {
	if p.chars == 0 {
		return 0
	}
	return time.Duration(float64(p.total) * float64(sent) / float64(p.chars))
}

// resume restarts the pace at now after a hold, as if the first sent
// characters had just been sent on time: the rest of the reply takes the
// rest of the time, counted from now.
func (p *pacer) resume(sent int, now time.Time) {
	if !p.start.IsZero() {
		p.start = now.Add(-p.share(sent))
	}
}
