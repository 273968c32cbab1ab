package claudepooltest

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// Kind tells what a recorded request was for.
type Kind string

// Kinds of recorded requests.
const (
	// KindChat is a POST /v1/messages that carries the user's conversation
	// and offers tools (a "tools" key, even an empty one): the request a CLI
	// turn is made of, streamed, or not streamed when the CLI falls back
	// after a stalled stream.
	KindChat Kind = "chat"
	// KindSide is any other POST /v1/messages: one the CLI makes on its own
	// account (for example to generate a title), not the user's turn.
	KindSide Kind = "side"
	// KindCountTokens is a POST /v1/messages/count_tokens.
	KindCountTokens Kind = "count_tokens"
	// KindHello is the CLI's HEAD /api/hello connectivity check.
	KindHello Kind = "hello"
	// KindOther is any other request; the server answers it with 404.
	KindOther Kind = "other"
)

// Message is one message of a recorded request, reduced to its text, the
// types of its content blocks, and its tool calls and tool results.
type Message struct {
	// Role is "user" or "assistant".
	Role string
	// Texts holds the text of each text block, in order. A message whose
	// content is a plain string has a single entry.
	Texts []string
	// Types holds the type of every content block, in order, whatever its
	// type: "text", "image", "document", "thinking", "tool_use",
	// "tool_result" and so on ("" for a block without one). A message whose
	// content is a plain string has Types ["text"]; one whose content is
	// null or absent has none. Only the text blocks have an entry in Texts.
	Types []string
	// ToolUses holds every tool_use block, in order: the tool calls of an
	// assistant message of the history, as the client sends them back.
	ToolUses []ToolCall
	// ToolResults holds every tool_result block, in order: what the
	// client sends back, in a user message, after running tool calls.
	ToolResults []ToolResult
}

// ToolResult is a tool_result content block of a recorded message: the
// outcome of a [ToolCall], as the client that ran it sends it back.
type ToolResult struct {
	// ToolUseID is the block's tool_use_id: the [ToolCall.ID] of the call
	// it answers.
	ToolUseID string
	// Content is the result's text: the block's content when that is a
	// string, or the text of its text blocks joined by "\n" when it is a
	// list of blocks (images and other blocks are left out); "" when it
	// is absent or null.
	Content string
	// IsError is the block's is_error: the tool failed, or the client did
	// not let it run, and Content tells why.
	IsError bool
}

// Text returns the texts of the message's text blocks joined by newlines.
func (m Message) Text() string { return strings.Join(m.Texts, "\n") }

// Request is a request the server received, as recorded and as passed to a
// [ReplyFunc].
type Request struct {
	// Seq numbers the requests of a server from 1 in the order they arrived.
	Seq int
	// Time is when the request arrived: when the server began to handle it,
	// its header read and its body not yet.
	Time time.Time
	// FirstByte is when the server began its response, taken just before
	// the status line and first bytes are written and flushed (after any
	// [Config.FirstByteDelay] or [Reply.Delay] pause), for every kind of
	// request and for errors as for successful replies. It is zero in the
	// copy passed to a [ReplyFunc], and stays zero for a request that is
	// never answered (FailHang, or a client that leaves or a server that
	// closes during a pause). It is recorded before the bytes are written,
	// so a client that has read any of the response finds it set in
	// [Server.Requests]. FirstByte minus Time is the mock API's own
	// time to first byte.
	FirstByte time.Time
	// Kind says what the request was for.
	Kind Kind
	// Method and Path are those of the HTTP request; Query is its raw query
	// string (the CLI sends "beta=true").
	Method, Path, Query string
	// Header is a copy of every request header: the credentials
	// (X-Api-Key, or Authorization: Bearer ... for a token), and
	// Anthropic-Version, Anthropic-Beta, User-Agent and the rest. Read it
	// with Header.Get, which canonicalizes the name.
	Header http.Header

	// Model is the body's "model", e.g. "claude-sonnet-5-5".
	Model string
	// System holds the text of each system block; a string system prompt
	// gives a single entry.
	System []string
	// Messages is the conversation, reduced to roles, text, the types of
	// the content blocks, tool calls and tool results.
	Messages []Message
	// Stream reports whether the body asked for a streamed reply.
	Stream bool
	// MaxTokens is the body's "max_tokens", 0 when absent. A reply whose
	// estimated output tokens exceed it is cut (see [Reply]).
	MaxTokens int
	// Temperature is the body's "temperature", nil when absent.
	Temperature *float64
	// TopP is the body's "top_p", nil when absent.
	TopP *float64
	// TopK is the body's "top_k", nil when absent.
	TopK *int
	// StopSequences is the body's "stop_sequences", nil when absent. A
	// reply whose text contains one is cut before it (see [Reply]).
	StopSequences []string
	// MetadataUserID is the body's "metadata.user_id", "" when absent. The
	// CLI sends one of its own: a JSON object, encoded as a string, with a
	// device-id hash and account and session ids.
	MetadataUserID string
	// Thinking is the body's "thinking" as raw JSON (for example
	// {"type":"enabled","budget_tokens":1024} or {"type":"adaptive"}), nil
	// when absent.
	Thinking json.RawMessage
	// OutputConfig is the body's "output_config" as raw JSON, nil when
	// absent. The CLI sends {"effort":"medium"}; a request for structured
	// output adds a "format", as in
	// {"effort":"medium","format":{"type":"json_schema","schema":{...}}}.
	OutputConfig json.RawMessage
	// Tools holds the names of the tools the body offers.
	Tools []string
	// Body is the raw request body, whole and unparsed: the place to look
	// for what the fields above leave out (the images and documents of
	// user messages or tool results, signatures of thinking blocks,
	// cache_control, the rest of metadata), or for text of earlier turns
	// anywhere in the request.
	Body []byte
}

// LastUserText returns the text of the last text block of the last user
// message, or "" when there is none. Messages of other roles are skipped:
// the CLI sends its environment notes as a "system" message after the
// user's, and may put text blocks of its own before the user's text.
func (r Request) LastUserText() string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		m := r.Messages[i]
		if m.Role == "user" && len(m.Texts) > 0 {
			return m.Texts[len(m.Texts)-1]
		}
	}
	return ""
}

// LastToolResults returns the tool results of the last user message, in
// order, or nil when it carries none: when the request is not the one that
// follows tool calls, which the client answers with a user message of
// their results. Messages of other roles are skipped, as
// [Request.LastUserText] skips them.
func (r Request) LastToolResults() []ToolResult {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if m := r.Messages[i]; m.Role == "user" {
			return m.ToolResults
		}
	}
	return nil
}

// clone returns a copy of r whose slices and header are not shared with r.
func (r Request) clone() Request {
	c := r
	c.Header = r.Header.Clone()
	c.System = append([]string(nil), r.System...)
	c.Tools = append([]string(nil), r.Tools...)
	c.Body = append([]byte(nil), r.Body...)
	c.Temperature = clonePtr(r.Temperature)
	c.TopP = clonePtr(r.TopP)
	c.TopK = clonePtr(r.TopK)
	if r.StopSequences != nil {
		c.StopSequences = append([]string{}, r.StopSequences...)
	}
	if r.Thinking != nil {
		c.Thinking = append(json.RawMessage{}, r.Thinking...)
	}
	if r.OutputConfig != nil {
		c.OutputConfig = append(json.RawMessage{}, r.OutputConfig...)
	}
	c.Messages = make([]Message, len(r.Messages))
	for i, m := range r.Messages {
		c.Messages[i] = Message{
			Role:        m.Role,
			Texts:       append([]string(nil), m.Texts...),
			Types:       append([]string(nil), m.Types...),
			ToolResults: append([]ToolResult(nil), m.ToolResults...),
		}
		if m.ToolUses != nil {
			c.Messages[i].ToolUses = make([]ToolCall, len(m.ToolUses))
			for j, u := range m.ToolUses {
				c.Messages[i].ToolUses[j] = u
				if u.Input != nil {
					c.Messages[i].ToolUses[j].Input = append(json.RawMessage{}, u.Input...)
				}
			}
		}
	}
	if r.Messages == nil {
		c.Messages = nil
	}
	return c
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// messagesBody is the part of a Messages API request body the server reads.
type messagesBody struct {
	Model     string          `json:"model"`
	System    json.RawMessage `json:"system"`
	Messages  []wireMessage   `json:"messages"`
	Stream    bool            `json:"stream"`
	MaxTokens int             `json:"max_tokens"`
	// The sampling and stop fields are pointers (and a slice) to tell a
	// missing key from a zero value.
	Temperature   *float64 `json:"temperature"`
	TopP          *float64 `json:"top_p"`
	TopK          *int     `json:"top_k"`
	StopSequences []string `json:"stop_sequences"`
	Metadata      *struct {
		UserID string `json:"user_id"`
	} `json:"metadata"`
	Thinking     json.RawMessage `json:"thinking"`
	OutputConfig json.RawMessage `json:"output_config"`
	// Tools is a pointer to tell an empty list from no key at all.
	Tools *[]struct {
		Name string `json:"name"`
	} `json:"tools"`
}

type wireMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// contentBlocks reads content that is either a string or a list of content
// blocks into a message without its role: the text of its text blocks, the
// type of every block, its tool_use and its tool_result blocks. A string is
// one text block.
func contentBlocks(raw json.RawMessage) (m Message, err error) {
	if isNull(raw) {
		return m, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return Message{Texts: []string{s}, Types: []string{"text"}}, nil
	}
	var blocks []json.RawMessage
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return m, err
	}
	for _, raw := range blocks {
		var b struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			return m, err
		}
		m.Types = append(m.Types, b.Type)
		switch b.Type {
		case "text":
			m.Texts = append(m.Texts, b.Text)
		case "tool_use":
			var u struct {
				ID    string          `json:"id"`
				Name  string          `json:"name"`
				Input json.RawMessage `json:"input"`
			}
			if err := json.Unmarshal(raw, &u); err != nil {
				return m, err
			}
			if isNull(u.Input) {
				u.Input = nil
			}
			m.ToolUses = append(m.ToolUses, ToolCall{ID: u.ID, Name: u.Name, Input: u.Input})
		case "tool_result":
			var res struct {
				ToolUseID string          `json:"tool_use_id"`
				Content   json.RawMessage `json:"content"`
				IsError   bool            `json:"is_error"`
			}
			if err := json.Unmarshal(raw, &res); err != nil {
				return m, err
			}
			inner, err := contentBlocks(res.Content)
			if err != nil {
				return m, err
			}
			m.ToolResults = append(m.ToolResults, ToolResult{
				ToolUseID: res.ToolUseID,
				Content:   inner.Text(),
				IsError:   res.IsError,
			})
		}
	}
	return m, nil
}

// isNull reports whether raw is absent or JSON null.
func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// parseMessagesBody fills the body-derived fields of r and reports whether
// the body has a "tools" key.
func parseMessagesBody(r *Request) (hasTools bool, err error) {
	var b messagesBody
	if err := json.Unmarshal(r.Body, &b); err != nil {
		return false, err
	}
	r.Model = b.Model
	r.Stream = b.Stream
	r.MaxTokens = b.MaxTokens
	r.Temperature = b.Temperature
	r.TopP = b.TopP
	r.TopK = b.TopK
	r.StopSequences = b.StopSequences
	if b.Metadata != nil {
		r.MetadataUserID = b.Metadata.UserID
	}
	if !isNull(b.Thinking) {
		r.Thinking = b.Thinking
	}
	if !isNull(b.OutputConfig) {
		r.OutputConfig = b.OutputConfig
	}
	if b.Tools != nil {
		hasTools = true
		for _, t := range *b.Tools {
			r.Tools = append(r.Tools, t.Name)
		}
	}
	sys, err := contentBlocks(b.System)
	if err != nil {
		return false, err
	}
	r.System = sys.Texts
	for _, wm := range b.Messages {
		m, err := contentBlocks(wm.Content)
		if err != nil {
			return false, err
		}
		m.Role = wm.Role
		r.Messages = append(r.Messages, m)
	}
	return hasTools, nil
}

// classify tells a chat request from a side request. Every request that
// makes up a CLI turn offers tools (a "tools" key, empty under --tools "")
// and carries the conversation: the streamed request and, after a stream
// stalls for the CLI's idle limit, its non-streamed fallback. Requests the
// CLI makes on its own account (titles, summaries) offer no tools.
func classify(r Request, hasTools bool) Kind {
	if !hasTools {
		return KindSide
	}
	for _, m := range r.Messages {
		if m.Role == "user" {
			return KindChat
		}
	}
	return KindSide
}
