package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/claudepool/claudepool"
)

// chatFormat is POST /chat's own format: JSON messages in, server-sent
// events out ("delta" events, then one "result" or "error" event).
type chatFormat struct{}

// chatRequest is the body of POST /chat.
type chatRequest struct {
	Messages []struct {
		Role    claudepool.Role `json:"role"` // "user" or "assistant"
		Content string          `json:"content"`
	} `json:"messages"`
	System string `json:"system,omitempty"`
	Model  string `json:"model,omitempty"`
}

// resultEvent is the data of the final "result" event.
type resultEvent struct {
	Text        string  `json:"text"`
	IsError     bool    `json:"is_error"`
	StopReason  string  `json:"stop_reason,omitempty"`
	Usage       usage   `json:"usage"`
	CostUSD     float64 `json:"cost_usd"`
	Warm        bool    `json:"warm"`          // the process came ready from the pool
	AcquireMS   float64 `json:"acquire_ms"`    // time to take the process
	FirstTextMS float64 `json:"first_text_ms"` // time to the first text
}

type usage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
}

func usageOf(u claudepool.Usage) usage {
	return usage{u.InputTokens, u.OutputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens}
}

// chatError is the body of an error answer, and the data of an "error"
// event.
type chatError struct {
	Error string `json:"error"`
	Type  string `json:"type"` // the Messages API's error type, e.g. overloaded_error
}

func (chatFormat) parse(body []byte) (call, error) {
	var b chatRequest
	if err := json.Unmarshal(body, &b); err != nil {
		return call{}, fmt.Errorf("malformed request: %w", err)
	}
	req := claudepool.Request{System: b.System, Model: b.Model}
	for _, m := range b.Messages {
		req.Messages = append(req.Messages, claudepool.Message{Role: m.Role, Content: m.Content})
	}
	return call{req: req, stream: true}, nil
}

// writeError answers with a JSON error. A shed load is a 503 here, with
// Retry-After, as HTTP clients and proxies expect; 529 is the Messages
// API's own.
func (chatFormat) writeError(w http.ResponseWriter, _ *http.Request, e apiError) {
	if e.kind == errOverloaded {
		e.status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", strconv.Itoa(1))
	}
	writeJSON(w, e.status, chatError{e.msg, e.kind})
}

func (chatFormat) respond(w http.ResponseWriter, _ *http.Request, _ call) reply {
	return &chatReply{sse: newSSE(w)}
}

type chatReply struct{ sse *sseWriter }

func (c *chatReply) begin(string, *claudepool.Usage) { c.sse.open() }
func (c *chatReply) ping()                           { c.sse.comment("heartbeat") }
func (c *chatReply) fail(e apiError)                 { c.sse.event("error", chatError{e.msg, e.kind}) }
func (c *chatReply) err() error                      { return c.sse.err }

// add sends a piece of text as a "delta" event; /chat shows no thinking.
func (c *chatReply) add(p piece) {
	if p.kind == pieceText && p.text != "" {
		c.sse.event("delta", map[string]string{"text": p.text})
	}
}

func (c *chatReply) end(res *claudepool.Result, _ string, info claudepool.AcquireInfo, lat claudepool.StreamLatency) {
	c.sse.event("result", resultEvent{
		Text:        res.Text,
		IsError:     res.IsError,
		StopReason:  res.StopReason,
		Usage:       usageOf(res.Usage),
		CostUSD:     res.TotalCostUSD,
		Warm:        info.Warm,
		AcquireMS:   ms(info.Wait),
		FirstTextMS: ms(lat.FirstText),
	})
}
