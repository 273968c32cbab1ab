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
// changing their base URL. It takes text, images and documents, extended
// thinking, structured output and the server's tools, which the client
// answers; a request with fields that would change what the model does
// and that the pool cannot honour gets a 400.
type messagesFormat struct {
	tools   *toolSet // the server's tools (-tools); nil for none
	version string   // the request's anthropic-version (routes.go)
}

// messagesFields lists the request fields the server knows.
var messagesFields = map[string]bool{
	"model": true, "messages": true, "system": true, "stream": true,
	// Set on the chat's API calls by the pool's gateway (apiParams,
	// thinkingParams, toolParams).
	"max_tokens": true, "temperature": true, "top_p": true, "top_k": true,
	"stop_sequences": true, "metadata": true, "thinking": true, "output_config": true,
	"tools": true, "tool_choice": true,
	// Ignored: bookkeeping, not what a reply means.
	"service_tier": true,
}

// messagesRequest is the part of a Messages API request the server reads
// as is; apiParams and thinkingParams read the API parameters.
type messagesRequest struct {
	Model    string          `json:"model"`
	Stream   bool            `json:"stream"`
	System   json.RawMessage `json:"system"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
}

// countFields lists the fields of a count_tokens request the server
// knows: those of a Messages request that the API counts with.
var countFields = map[string]bool{
	"model": true, "messages": true, "system": true, "tools": true, "tool_choice": true,
	"thinking": true, "output_config": true,
}

// samplingFields are the sampling parameters, which API version
// 2026-10-21 removed.
var samplingFields = []string{"temperature", "top_p", "top_k"}

func (f messagesFormat) parse(body []byte) (call, error) { return f.parseRequest(body, false) }

// parseRequest parses a Messages request, or with counting a count_tokens
// request, which has no max_tokens, no stream and no sampling parameters
// and is otherwise validated the same way: a request this server would
// refuse to answer is refused to count.
func (f messagesFormat) parseRequest(body []byte, counting bool) (call, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return call{}, fmt.Errorf("malformed request: %w", err)
	}
	if f.version == version20261021 {
		for _, name := range samplingFields {
			if _, ok := fields[name]; ok {
				return call{}, fmt.Errorf("%s: Extra inputs are not permitted (anthropic-version %s has no sampling parameters)", name, f.version)
			}
		}
	}
	for _, name := range sortedKeys(fields) {
		switch {
		case counting && !countFields[name]:
			return call{}, fmt.Errorf("%s: unsupported field: count_tokens takes model, messages, system, thinking, output_config, tools and tool_choice", name)
		case !messagesFields[name]:
			return call{}, fmt.Errorf("%s: unsupported field: this server takes model, messages, system, max_tokens, stream, metadata, stop_sequences, sampling parameters, thinking, output_config, tools and tool_choice", name)
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
	if counting {
		// No max_tokens bounds a thinking budget.
		req.MaxTokens = math.MaxInt32
	} else if err := apiParams(fields, &req); err != nil {
		return call{}, err
	}
	view, err := thinkingParams(fields, &req)
	if err != nil {
		return call{}, err
	}
	if err := toolParams(fields, &req, f.tools); err != nil {
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
		if f.version == version20261021 && m.Role == "user" {
			if err := userCitations(where, m.Content); err != nil {
				return call{}, err
			}
		}
		msg, err := messageContent(where, claudepool.Role(m.Role), m.Content)
		if err != nil {
			return call{}, err
		}
		req.Messages = append(req.Messages, msg)
	}
	if last := req.Messages[len(req.Messages)-1]; last.Role != claudepool.RoleUser {
		return call{}, errors.New("messages: the last message must be the user's: this server cannot continue a prefilled assistant turn")
	}
	if err := answeredCalls(req.Messages); err != nil {
		return call{}, err
	}
	if counting {
		req.MaxTokens = 0
	}
	return call{req: req, stream: b.Stream, announce: true, thinking: view}, nil
}

// userCitations refuses, with API version 2026-10-21, a user turn's text
// block with citations, as the API does. (Earlier versions take them;
// the server drops them, as it drops the citations of every text block.)
func userCitations(where string, content json.RawMessage) error {
	var blocks []struct {
		Type      string            `json:"type"`
		Citations []json.RawMessage `json:"citations"`
	}
	if json.Unmarshal(content, &blocks) != nil {
		return nil // a string, or malformed: messageContent says so
	}
	for i, b := range blocks {
		if b.Type == "text" && len(b.Citations) > 0 {
			return fmt.Errorf("%s.content.%d.citations: not permitted on the text blocks of user turns with anthropic-version %s", where, i, version20261021)
		}
	}
	return nil
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
	lazy := c.thinking.show || len(c.req.GoTools) > 0
	return &messagesReply{w: w, sse: newSSE(w), stream: c.stream, lazy: lazy, id: newMessageID(), rid: rid}
}

// message is a Messages API message, the body of a reply that is not
// streamed and the start of one that is.
type message struct {
	ID           string         `json:"id"`
	Type         string         `json:"type"` // "message"
	Role         string         `json:"role"` // "assistant"
	Model        string         `json:"model"`
	Content      []contentBlock `json:"content"`
	StopReason   *string        `json:"stop_reason"`
	StopSequence *string        `json:"stop_sequence"`
	Usage        usage          `json:"usage"`
}

// contentBlock is a content block of a reply: text, thinking with its
// signature, or a call of one of the server's tools.
type contentBlock struct {
	Type      string          `json:"type"` // "text", "thinking" or "tool_use"
	Text      string          `json:"text,omitempty"`
	Thinking  string          `json:"thinking,omitempty"`
	Signature string          `json:"signature,omitempty"`
	ID        string          `json:"id,omitempty"`    // tool_use
	Name      string          `json:"name,omitempty"`  // tool_use
	Input     json.RawMessage `json:"input,omitempty"` // tool_use
}

// MarshalJSON writes the fields of the block's type, each also when
// empty, as the API does: {"type":"text","text":""},
// {"type":"thinking","thinking":"","signature":""} and
// {"type":"tool_use","id":...,"name":...,"input":{}}.
func (b contentBlock) MarshalJSON() ([]byte, error) {
	switch b.Type {
	case "thinking":
		return marshal(struct {
			Type      string `json:"type"`
			Thinking  string `json:"thinking"`
			Signature string `json:"signature"`
		}{b.Type, b.Thinking, b.Signature})
	case "tool_use":
		input := b.Input
		if len(input) == 0 {
			input = json.RawMessage("{}")
		}
		return marshal(struct {
			Type  string          `json:"type"`
			ID    string          `json:"id"`
			Name  string          `json:"name"`
			Input json.RawMessage `json:"input"`
		}{b.Type, b.ID, b.Name, input})
	}
	return marshal(textBlock{b.Type, b.Text})
}

// replyContent gathers the pieces of a reply into its content blocks, in
// order: a piece of another kind than the last block's starts a block,
// and so does thinking after a signature, which ends a thinking block,
// and each call of a tool.
type replyContent struct{ blocks []contentBlock }

// add adds p to the content and reports whether it started a block. A
// tool's input (pieceToolInput) goes to the tool_use block before it,
// and is dropped without one.
func (c *replyContent) add(p piece) bool {
	n := len(c.blocks)
	if p.kind == pieceToolInput {
		if n > 0 && c.blocks[n-1].Type == "tool_use" {
			c.blocks[n-1].Input = append(c.blocks[n-1].Input, p.text...)
		}
		return false
	}
	if p.kind == pieceToolUse {
		c.blocks = append(c.blocks, contentBlock{Type: "tool_use", ID: p.id, Name: p.name})
		return true
	}
	kind := "text"
	if p.kind != pieceText {
		kind = "thinking"
	}
	started := n == 0 || c.blocks[n-1].Type != kind || (p.kind == pieceThinking && c.blocks[n-1].Signature != "")
	if started {
		c.blocks = append(c.blocks, contentBlock{Type: kind})
	}
	b := &c.blocks[len(c.blocks)-1]
	switch p.kind {
	case pieceText:
		b.Text += p.text
	case pieceThinking:
		b.Thinking += p.text
	case pieceSignature:
		b.Signature += p.text
	}
	return started
}

// called reports whether the content has a tool_use block with id.
func (c *replyContent) called(id string) bool {
	return slices.ContainsFunc(c.blocks, func(b contentBlock) bool { return b.Type == "tool_use" && b.ID == id })
}

// text is the text of the reply's text blocks.
func (c *replyContent) text() string {
	var b strings.Builder
	for _, block := range c.blocks {
		b.WriteString(block.Text)
	}
	return b.String()
}

type messagesReply struct {
	w      http.ResponseWriter
	sse    *sseWriter
	stream bool
	// lazy starts each content block with its first piece: a reply that
	// shows thinking begins with a thinking block when the model thinks,
	// with its text block when it does not. Otherwise the text block,
	// the only one, starts with the stream.
	lazy    bool
	content replyContent
	id      string
	rid     string
}

// Events of a streamed reply, their fields in the API's order.
type (
	messageStart struct {
		Type    string  `json:"type"`
		Message message `json:"message"`
	}
	blockStart struct {
		Type         string       `json:"type"`
		Index        int          `json:"index"`
		ContentBlock contentBlock `json:"content_block"`
	}
	blockDelta struct {
		Type  string `json:"type"`
		Index int    `json:"index"`
		Delta any    `json:"delta"` // textDelta, thinkingDelta, signatureDelta or inputJSONDelta
	}
	textDelta struct {
		Type string `json:"type"` // "text_delta"
		Text string `json:"text"`
	}
	thinkingDelta struct {
		Type     string `json:"type"` // "thinking_delta"
		Thinking string `json:"thinking"`
	}
	signatureDelta struct {
		Type      string `json:"type"` // "signature_delta"
		Signature string `json:"signature"`
	}
	inputJSONDelta struct {
		Type        string `json:"type"` // "input_json_delta"
		PartialJSON string `json:"partial_json"`
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
		message{ID: m.id, Type: "message", Role: "assistant", Model: model, Content: []contentBlock{}, Usage: start}})
	if !m.lazy {
		m.add(piece{kind: pieceText})
	}
	m.ping()
}

// add takes a piece of the reply. A streamed reply sends it as a delta of
// its content block, after the block's start (and the end of the block
// before) when it starts one; a reply that is not streamed gathers it,
// but for the calls of tools, which it takes from the result (end).
func (m *messagesReply) add(p piece) {
	if !m.stream && (p.kind == pieceToolUse || p.kind == pieceToolInput) {
		return
	}
	started := m.content.add(p)
	if !m.stream {
		return
	}
	i := len(m.content.blocks) - 1
	if started {
		if i > 0 {
			m.sse.event("content_block_stop", blockStop{"content_block_stop", i - 1})
		}
		start := contentBlock{Type: m.content.blocks[i].Type}
		if start.Type == "tool_use" {
			start.ID, start.Name, start.Input = p.id, p.name, json.RawMessage("{}")
		}
		m.sse.event("content_block_start", blockStart{"content_block_start", i, start})
	}
	if p.text == "" || (p.kind == pieceToolInput && m.content.blocks[i].Type != "tool_use") {
		return
	}
	var d any
	switch p.kind {
	case pieceText:
		d = textDelta{"text_delta", p.text}
	case pieceThinking:
		d = thinkingDelta{"thinking_delta", p.text}
	case pieceSignature:
		d = signatureDelta{"signature_delta", p.text}
	case pieceToolInput:
		d = inputJSONDelta{"input_json_delta", p.text}
	default:
		return
	}
	m.sse.event("content_block_delta", blockDelta{"content_block_delta", i, d})
}

func (m *messagesReply) ping() { m.sse.event("ping", typeOnly{"ping"}) }

func (m *messagesReply) fail(e apiError) { m.sse.event("error", newMessagesError(e, m.rid)) }

func (m *messagesReply) err() error { return m.sse.err }

// end sends the end of the reply: the API's stop_reason (the CLI's
// without the gateway) and stop_sequence, and the turn's usage. A reply
// has at least one content block; one that is not streamed has a text
// block, the result's text when no text came as pieces, unless it ends
// with calls of tools alone. A reply that ends with calls of the
// server's tools (Result.ToolCalls, stop_reason "tool_use") has a
// tool_use block for each, after the text: in a streamed reply, those
// that did not stream come whole, their input in one delta.
func (m *messagesReply) end(res *claudepool.Result, model string, _ claudepool.AcquireInfo, _ claudepool.StreamLatency) {
	stop := orDefault(res.StopReason, "end_turn")
	var seq *string
	if res.StopSequence != "" {
		seq = &res.StopSequence
	}
	if !m.stream {
		if m.content.text() == "" && (res.Text != "" || len(res.ToolCalls) == 0) {
			m.content.add(piece{kind: pieceText, text: res.Text})
		}
		for _, c := range res.ToolCalls {
			m.content.blocks = append(m.content.blocks, contentBlock{Type: "tool_use", ID: c.ID, Name: c.Name, Input: c.Input})
		}
		writeJSON(m.w, http.StatusOK, message{ID: m.id, Type: "message", Role: "assistant", Model: model,
			Content: m.content.blocks, StopReason: &stop, StopSequence: seq, Usage: usageOf(res.Usage)})
		return
	}
	for _, c := range res.ToolCalls {
		if !m.content.called(c.ID) {
			m.add(piece{kind: pieceToolUse, id: c.ID, name: c.Name})
			m.add(piece{kind: pieceToolInput, text: string(c.Input)})
		}
	}
	if len(m.content.blocks) == 0 {
		m.add(piece{kind: pieceText})
	}
	m.sse.event("content_block_stop", blockStop{"content_block_stop", len(m.content.blocks) - 1})
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
