package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/claudepool/claudepool"
)

// messagesFormat is the Messages API's format (POST /v1/messages), so that
// the official SDKs and tools written for the API can use the pool by
// changing their base URL. It takes text only: a request with images,
// documents, tools or fields that would change what the model does and
// that the pool cannot honour gets a 400.
type messagesFormat struct{}

// messagesFields lists the request fields the server knows: true for those
// it uses or safely ignores, false for those it checks before it accepts
// them (see checkField).
var messagesFields = map[string]bool{
	"model": true, "messages": true, "system": true, "stream": true,
	// Set on the chat's API calls by the pool's gateway (apiParams).
	"max_tokens": true, "temperature": true, "top_p": true, "top_k": true,
	"stop_sequences": true, "metadata": true,
	// Ignored: bookkeeping, not what a reply means.
	"service_tier": true,
	// Accepted only when they ask for nothing.
	"tools": false, "tool_choice": false, "thinking": false,
}

// messagesRequest is the part of a Messages API request the server reads
// as is; apiParams reads the API parameters.
type messagesRequest struct {
	Model    string          `json:"model"`
	Stream   bool            `json:"stream"`
	System   json.RawMessage `json:"system"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
}

// textBlock is a content block; only text blocks are accepted.
type textBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

func (messagesFormat) parse(body []byte) (call, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return call{}, fmt.Errorf("malformed request: %w", err)
	}
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		known, ok := messagesFields[name]
		if !ok {
			return call{}, fmt.Errorf("%s: unsupported field: this server takes model, messages, system, max_tokens, stream, metadata, stop_sequences and sampling parameters", name)
		}
		if !known {
			if err := checkField(name, fields[name]); err != nil {
				return call{}, err
			}
		}
	}
	var b messagesRequest
	if err := json.Unmarshal(body, &b); err != nil {
		return call{}, fmt.Errorf("malformed request: %w", err)
	}
	if b.Model == "" {
		return call{}, errors.New("model: field required")
	}
	req := claudepool.Request{Model: b.Model}
	if err := apiParams(fields, &req); err != nil {
		return call{}, err
	}
	if len(b.Messages) == 0 {
		return call{}, errors.New("messages: at least one message is required")
	}
	if len(b.System) > 0 && !bytes.Equal(b.System, []byte("null")) {
		s, err := textContent("system", b.System)
		if err != nil {
			return call{}, err
		}
		req.System = s
	}
	for i, m := range b.Messages {
		where := fmt.Sprintf("messages.%d", i)
		if m.Role != "user" && m.Role != "assistant" {
			return call{}, fmt.Errorf("%s.role: must be \"user\" or \"assistant\", got %q", where, m.Role)
		}
		text, err := textContent(where+".content", m.Content)
		if err != nil {
			return call{}, err
		}
		req.Messages = append(req.Messages, claudepool.Message{Role: claudepool.Role(m.Role), Content: text})
	}
	if last := req.Messages[len(req.Messages)-1]; last.Role != claudepool.RoleUser {
		return call{}, errors.New("messages: the last message must be the user's: this server cannot continue a prefilled assistant turn")
	}
	return call{req: req, stream: b.Stream, announce: true}, nil
}

// maxUserIDChars is the longest metadata.user_id the API takes.
const maxUserIDChars = 256

// apiParams validates the Messages API parameters among a request's
// fields and sets them on req, for the pool's gateway to set on the
// chat's API calls: max_tokens (required, as in the API), temperature,
// top_p, top_k, stop_sequences and metadata.user_id. A null is an absent
// field.
func apiParams(fields map[string]json.RawMessage, req *claudepool.Request) error {
	n, ok, err := integerField(fields, "max_tokens")
	switch {
	case err != nil:
		return err
	case !ok:
		return errors.New("max_tokens: field required")
	case n < 1:
		return fmt.Errorf("max_tokens: must be at least 1, got %d", n)
	}
	req.MaxTokens = n
	for _, name := range []string{"temperature", "top_p"} {
		f, ok, err := numberField(fields, name)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if f < 0 || f > 1 {
			return fmt.Errorf("%s: must be from 0 to 1, got %v", name, f)
		}
		if name == "temperature" {
			req.Temperature = &f
		} else {
			req.TopP = &f
		}
	}
	if k, ok, err := integerField(fields, "top_k"); err != nil {
		return err
	} else if ok {
		if k < 0 {
			return fmt.Errorf("top_k: must be at least 0, got %d", k)
		}
		req.TopK = &k
	}
	if v := fields["stop_sequences"]; !isNull(v) {
		var seqs []json.RawMessage
		if err := json.Unmarshal(v, &seqs); err != nil {
			return errors.New("stop_sequences: must be a list of strings")
		}
		for i, raw := range seqs {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return fmt.Errorf("stop_sequences.%d: must be a string", i)
			}
			if s == "" {
				return fmt.Errorf("stop_sequences.%d: must not be empty", i)
			}
			req.StopSequences = append(req.StopSequences, s)
		}
	}
	if v := fields["metadata"]; !isNull(v) {
		var md map[string]json.RawMessage
		if err := json.Unmarshal(v, &md); err != nil || md == nil {
			return errors.New("metadata: must be an object")
		}
		for k, raw := range md {
			if k != "user_id" {
				return fmt.Errorf("metadata.%s: unsupported field: metadata takes user_id only", k)
			}
			if isNull(raw) {
				continue
			}
			if err := json.Unmarshal(raw, &req.UserID); err != nil {
				return errors.New("metadata.user_id: must be a string")
			}
			if n := utf8.RuneCountInString(req.UserID); n > maxUserIDChars {
				return fmt.Errorf("metadata.user_id: must be at most %d characters, got %d", maxUserIDChars, n)
			}
		}
	}
	return nil
}

// isNull reports an absent field or a JSON null.
func isNull(v json.RawMessage) bool { return len(v) == 0 || bytes.Equal(v, []byte("null")) }

// numberField returns the JSON number fields[name]; ok is false when the
// field is absent or null.
func numberField(fields map[string]json.RawMessage, name string) (f float64, ok bool, err error) {
	v := fields[name]
	if isNull(v) {
		return 0, false, nil
	}
	if json.Unmarshal(v, &f) != nil {
		return 0, false, fmt.Errorf("%s: must be a number", name)
	}
	return f, true, nil
}

// integerField returns the JSON integer fields[name]; ok is false when
// the field is absent or null.
func integerField(fields map[string]json.RawMessage, name string) (n int, ok bool, err error) {
	f, ok, err := numberField(fields, name)
	if err != nil || !ok {
		return 0, ok, err
	}
	if f != math.Trunc(f) {
		return 0, false, fmt.Errorf("%s: must be an integer, got %v", name, f)
	}
	if math.Abs(f) > math.MaxInt32 {
		return 0, false, fmt.Errorf("%s: %.0f is out of range", name, f)
	}
	return int(f), true, nil
}

// checkField accepts a field the pool cannot honour only when it asks for
// nothing: no tools, a tool choice of auto or none, thinking disabled.
func checkField(name string, v json.RawMessage) error {
	if bytes.Equal(v, []byte("null")) {
		return nil
	}
	switch name {
	case "tools":
		var list []json.RawMessage
		if err := json.Unmarshal(v, &list); err != nil {
			return errors.New("tools: must be a list")
		}
		if len(list) == 0 {
			return nil
		}
		return errors.New("tools: tool use is not supported by this server")
	case "tool_choice":
		var c struct{ Type string }
		if err := json.Unmarshal(v, &c); err == nil && (c.Type == "auto" || c.Type == "none") {
			return nil
		}
		return errors.New("tool_choice: tool use is not supported by this server")
	case "thinking":
		var t struct{ Type string }
		if err := json.Unmarshal(v, &t); err == nil && t.Type == "disabled" {
			return nil
		}
		return errors.New("thinking: extended thinking is not supported by this server")
	}
	return fmt.Errorf("%s: unsupported field", name)
}

// textContent returns the text of a string or of a list of text blocks,
// the blocks joined by a blank line. Any other block (image, document,
// tool_use, tool_result, ...) is an error.
func textContent(where string, v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return s, nil
	}
	var blocks []textBlock
	if err := json.Unmarshal(v, &blocks); err != nil {
		return "", fmt.Errorf("%s: must be a string or a list of content blocks", where)
	}
	texts := make([]string, 0, len(blocks))
	for i, b := range blocks {
		if b.Type != "text" {
			return "", fmt.Errorf("%s.%d.type: %q blocks are not supported by this server, which answers text with text only", where, i, b.Type)
		}
		texts = append(texts, b.Text)
	}
	return strings.Join(texts, "\n\n"), nil
}

// messagesError is the body of an error answer, and the data of an "error"
// event.
type messagesError struct {
	Type  string `json:"type"` // "error"
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id,omitempty"`
}

func newMessagesError(e apiError, rid string) messagesError {
	m := messagesError{Type: "error", RequestID: rid}
	m.Error.Type, m.Error.Message = e.kind, e.msg
	return m
}

func (messagesFormat) writeError(w http.ResponseWriter, r *http.Request, e apiError) {
	rid := requestID(r.Context())
	w.Header().Set("Request-Id", rid)
	writeJSON(w, e.status, newMessagesError(e, rid))
}

func (messagesFormat) respond(w http.ResponseWriter, r *http.Request, c call) reply {
	rid := requestID(r.Context())
	w.Header().Set("Request-Id", rid)
	return &messagesReply{w: w, sse: newSSE(w), stream: c.stream, id: newMessageID(), rid: rid}
}

// message is a Messages API message, the body of a reply that is not
// streamed and the start of one that is.
type message struct {
	ID           string      `json:"id"`
	Type         string      `json:"type"` // "message"
	Role         string      `json:"role"` // "assistant"
	Model        string      `json:"model"`
	Content      []textBlock `json:"content"`
	StopReason   *string     `json:"stop_reason"`
	StopSequence *string     `json:"stop_sequence"`
	Usage        usage       `json:"usage"`
}

type messagesReply struct {
	w      http.ResponseWriter
	sse    *sseWriter
	stream bool
	id     string
	rid    string
}

// Events of a streamed reply, their fields in the API's order.
type (
	messageStart struct {
		Type    string  `json:"type"`
		Message message `json:"message"`
	}
	blockStart struct {
		Type         string    `json:"type"`
		Index        int       `json:"index"`
		ContentBlock textBlock `json:"content_block"`
	}
	blockDelta struct {
		Type  string    `json:"type"`
		Index int       `json:"index"`
		Delta textDelta `json:"delta"`
	}
	textDelta struct {
		Type string `json:"type"` // "text_delta"
		Text string `json:"text"`
	}
	blockStop struct {
		Type  string `json:"type"`
		Index int    `json:"index"`
	}
	messageDelta struct {
		Type  string `json:"type"`
		Delta struct {
			StopReason   string  `json:"stop_reason"`
			StopSequence *string `json:"stop_sequence"`
		} `json:"delta"`
		Usage usage `json:"usage"`
	}
	typeOnly struct {
		Type string `json:"type"` // ping, message_stop
	}
)

// begin starts the stream. u is the input usage the API reported as its
// reply began, nil when the reply begins before the API's (the first
// heartbeat) or without it (a pool without the gateway).
func (m *messagesReply) begin(model string, u *claudepool.Usage) {
	var start usage
	if u != nil {
		start = usageOf(*u)
	}
	m.sse.open()
	m.sse.event("message_start", messageStart{"message_start",
		message{ID: m.id, Type: "message", Role: "assistant", Model: model, Content: []textBlock{}, Usage: start}})
	m.sse.event("content_block_start", blockStart{"content_block_start", 0, textBlock{Type: "text"}})
	m.ping()
}

func (m *messagesReply) text(t string) {
	m.sse.event("content_block_delta", blockDelta{"content_block_delta", 0, textDelta{"text_delta", t}})
}

func (m *messagesReply) ping() { m.sse.event("ping", typeOnly{"ping"}) }

func (m *messagesReply) fail(e apiError) { m.sse.event("error", newMessagesError(e, m.rid)) }

func (m *messagesReply) err() error { return m.sse.err }

// end sends the end of the reply: the API's stop_reason (the CLI's
// without the gateway) and stop_sequence, and the turn's usage.
func (m *messagesReply) end(res *claudepool.Result, text, model string, _ claudepool.AcquireInfo, _ claudepool.StreamLatency) {
	stop := orDefault(res.StopReason, "end_turn")
	var seq *string
	if res.StopSequence != "" {
		seq = &res.StopSequence
	}
	if !m.stream {
		writeJSON(m.w, http.StatusOK, message{ID: m.id, Type: "message", Role: "assistant", Model: model,
			Content: []textBlock{{Type: "text", Text: orDefault(text, res.Text)}}, StopReason: &stop,
			StopSequence: seq, Usage: usageOf(res.Usage)})
		return
	}
	m.sse.event("content_block_stop", blockStop{"content_block_stop", 0})
	d := messageDelta{Type: "message_delta", Usage: usageOf(res.Usage)}
	d.Delta.StopReason, d.Delta.StopSequence = stop, seq
	m.sse.event("message_delta", d)
	m.sse.event("message_stop", typeOnly{"message_stop"})
}

// newMessageID returns an id in the shape of the API's, msg_ and 24 random
// hex digits.
func newMessageID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "msg_" + hex.EncodeToString(b[:])
}
