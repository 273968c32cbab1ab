package claudepool

import (
	"encoding/json"
	"strings"
	"time"
)

// EventType names the kind of an Event.
type EventType string

// The kinds of Event. The CLI adds line types and system subtypes between
// versions; anything this package does not know arrives as EventSystem (an
// unknown system subtype) or EventUnknown (an unknown line type), never as an
// error.
const (
	EventInit              EventType = "init"               // system/init: session start of a turn
	EventSystem            EventType = "system"             // other system subtypes (status, ui_invalidate, ...); Subtype says which
	EventAssistant         EventType = "assistant"          // a whole assistant message (content blocks: text, thinking, tool_use)
	EventUser              EventType = "user"               // a user message, e.g. tool results or "[Request interrupted by user]"
	EventPartial           EventType = "partial"            // stream_event (with --include-partial-messages): raw SSE event, e.g. a text delta
	EventRetry             EventType = "retry"              // system/api_retry
	EventResult            EventType = "result"             // the final result line of a turn
	EventConversationReset EventType = "conversation_reset" // the CLI dropped the conversation, e.g. on "/clear"
	EventUnknown           EventType = "unknown"            // any other type, passed through with Raw
	// EventMessageStart comes from the pool's gateway, not from a CLI
	// line: the API began the chat's reply, and Usage holds its input
	// tokens. It follows the turn's EventInit; Raw is nil.
	EventMessageStart EventType = "message_start"
)

// Event is one stdout line of the CLI, decoded.
//
// The pointer field that matches Type is always non-nil: Init for EventInit,
// Message for EventAssistant and EventUser, Partial for EventPartial, Retry
// for EventRetry, Result for EventResult, Reset for
// EventConversationReset and Usage for EventMessageStart. The others are
// nil. EventSystem and EventUnknown
// carry only Subtype, SessionID and Raw.
//
// A line of a known type whose fields do not have the shape this package
// expects (say a string where a number belongs) is delivered as EventUnknown
// with Subtype set to the line's type, so that a caller never sees a
// half-decoded event; Raw still holds the line.
type Event struct {
	Type      EventType          // what kind of line this was
	Subtype   string             // system subtype; for EventUnknown the line's "type" value
	SessionID string             // the CLI session the line belongs to
	Init      *Init              // EventInit
	Message   *ChatMessage       // EventAssistant and EventUser
	Partial   *Partial           // EventPartial
	Retry     *Retry             // EventRetry
	Result    *Result            // EventResult
	Reset     *ConversationReset // EventConversationReset
	Usage     *Usage             // EventMessageStart
	// Raw is the whole line as received. It is the event's own copy and
	// never aliases the buffer the line was read into.
	Raw json.RawMessage
}

// ChatMessage is the message of an assistant or user line. It is named apart
// from Message, which is a message of a request.
type ChatMessage struct {
	ID, Model, Role, StopReason string
	Content                     []ContentBlock
	Usage                       Usage
	// Aborted is set on the partial assistant message the CLI prints when
	// it is interrupted (SIGINT) in the middle of a reply.
	Aborted         bool
	ParentToolUseID string
	// APIError is the "api_error" value of a synthetic error message, or its
	// "error" value when it has no "api_error".
	APIError string
	// IsAPIErrorMessage reports a message the CLI made up to describe a
	// failed API call ("is_api_error_message": true); its text is the
	// error, not a reply from the model.
	IsAPIErrorMessage bool
}

// ContentBlock is one content block of a ChatMessage. Which fields are set
// depends on Type; blocks of other types keep only Type.
type ContentBlock struct {
	Type      string          // "text", "thinking", "tool_use", "tool_result", others passed through
	Text      string          // text
	Thinking  string          // thinking
	Signature string          // thinking: the API's signature of it
	ID, Name  string          // tool_use
	Input     json.RawMessage // tool_use
	ToolUseID string          // tool_result
	Content   json.RawMessage // tool_result content (string or blocks)
	IsError   bool            // tool_result
}

// Init describes the session a turn runs in, from the system/init line.
type Init struct {
	Model, Cwd, PermissionMode string
	Version                    string // claude_code_version
	Tools                      []string
}

// Partial is one raw server-sent event of the Messages API, forwarded by the
// CLI when it runs with --include-partial-messages.
type Partial struct {
	Type      string          // SSE event type: message_start, content_block_start, content_block_delta, ...
	Index     int             // content block index
	DeltaType string          // for content_block_delta: text_delta, thinking_delta, input_json_delta
	Text      string          // text of a text_delta (or thinking of thinking_delta)
	Event     json.RawMessage // the raw "event" object
}

// Retry reports that the CLI is about to retry a failed API request.
type Retry struct {
	Attempt, MaxRetries int
	Delay               time.Duration // wait before the next attempt
	ErrorStatus         int           // HTTP status; 0 when there was none (e.g. DNS failure)
	Error               string        // error kind, e.g. "server_error"
}

// ConversationReset reports that the CLI dropped the conversation and
// started a new one, as it does when it is sent "/clear". The reset line
// itself still carries the old session ID; the system/init line that follows
// carries the new one, and the turn ends with a Result whose LocalCommand is
// "clear".
type ConversationReset struct {
	NewConversationID string // new_conversation_id
	Trigger           string // what caused the reset, e.g. "clear"
}

// Usage counts the tokens of a message or of a whole turn.
type Usage struct {
	InputTokens, OutputTokens, CacheCreationInputTokens, CacheReadInputTokens int
}

// Result is the last line of a turn. IsError alone says whether the turn
// failed: the CLI reports some failures (e.g. "Not logged in") with Subtype
// "success".
type Result struct {
	Text         string        // "result"
	IsError      bool          // "is_error": the only field that decides failure
	Subtype      string        // e.g. "success", "error_during_execution"
	SessionID    string        // the CLI session
	NumTurns     int           // model turns the CLI took
	Duration     time.Duration // duration_ms
	APIDuration  time.Duration // duration_api_ms
	TotalCostUSD float64       // the CLI's cost estimate for the turn
	Usage        Usage         // tokens of the whole turn
	// StopReason is why the model's reply ended: with the gateway the
	// API's own stop_reason ("end_turn", "max_tokens", "stop_sequence",
	// "refusal", ...), else the CLI's. Empty when null.
	StopReason string
	// StopSequence is the stop sequence that ended the reply, when
	// StopReason is "stop_sequence" (gateway only).
	StopSequence   string
	TerminalReason string        // e.g. "completed", "api_error", "aborted_streaming"
	APIErrorStatus int           // api_error_status, 0 when null
	APIErrorType   string        // api_error_type or api_error
	Errors         []string      // "errors": diagnostics of a failed turn
	TTFT           time.Duration // ttft_ms; 0 when absent
	// LocalCommand names the slash command the CLI ran itself instead of
	// asking the model, e.g. "clear"; "" for an ordinary turn.
	LocalCommand string // local_command
	// Thinking is the text of the thinking blocks of the turn's assistant
	// messages, "" when the model did not think (or its thinking was
	// redacted).
	Thinking string
	// JSON is the reply as JSON, for a chat with Request.OutputSchema
	// whose Text is valid JSON; nil otherwise.
	JSON json.RawMessage
	// ToolCalls are the calls of the caller's tools (Tools without a
	// Handler) that the turn waits for: StopReason is then "tool_use" and
	// Subtype SubtypeToolUse. The process holds the turn, paused; a
	// request whose messages are this chat's, then AssistantMessage, then
	// a user message of ToolResultBlocks for these calls resumes it.
	ToolCalls []ToolCall
	// APIError is the error the Messages API answered, verbatim, when the
	// pool's gateway saw the turn fail on one; nil otherwise.
	APIError *APIError
}

// ToolCall is a call of a tool that the caller answers.
type ToolCall struct {
	ID    string          // the call's id; its ToolResultBlock names it
	Name  string          // the tool's name (Tool.Name)
	Input json.RawMessage // the model's input, a JSON object
}

// SubtypeToolUse is the Result.Subtype of a turn paused for the caller's
// tools (Result.ToolCalls).
const SubtypeToolUse = "tool_use"

// AssistantMessage is the message that continues a conversation after
// this result: the reply's text and, when the turn paused for the
// caller's tools, a ToolUseBlock for each of its calls.
func (r *Result) AssistantMessage() Message {
	m := Message{Role: RoleAssistant, Content: r.Text}
	for _, c := range r.ToolCalls {
		m.Blocks = append(m.Blocks, ToolUseBlock(c.ID, c.Name, c.Input))
	}
	return m
}

// Text returns the text a caller would print for the event: for
// EventAssistant the concatenated text blocks of the message (thinking and
// tool blocks are left out), for EventPartial the text of a text_delta, and
// "" for every other event. It is "" for EventResult, whose text repeats
// the assistant text. With Config.PartialMessages the reply arrives twice,
// as text deltas and then as the whole assistant message: print the
// EventPartial texts to stream it, or the EventAssistant texts to show each
// message whole, not both.
func (e Event) Text() string {
	switch e.Type {
	case EventAssistant:
		if e.Message != nil {
			return blocksText(e.Message.Content)
		}
	case EventPartial:
		if e.Partial != nil && e.Partial.DeltaType == "text_delta" {
			return e.Partial.Text
		}
	}
	return ""
}

// blocksText concatenates the text blocks, without allocating for the usual
// single block.
func blocksText(blocks []ContentBlock) string {
	var first string
	n := 0
	for _, b := range blocks {
		if b.Type == "text" {
			if n == 0 {
				first = b.Text
			}
			n++
		}
	}
	if n <= 1 {
		return first
	}
	var sb strings.Builder
	for _, b := range blocks {
		if b.Type == "text" {
			sb.WriteString(b.Text)
		}
	}
	return sb.String()
}

// ToolCalls returns the tool calls of an EventAssistant, in order: every
// tool_use block, the pool's GoTools under their own names. nil for other
// events.
func (e Event) ToolCalls() []ToolCall {
	if e.Type != EventAssistant || e.Message == nil {
		return nil
	}
	var out []ToolCall
	for _, b := range e.Message.Content {
		if b.Type == "tool_use" {
			out = append(out, ToolCall{ID: b.ID, Name: b.Name, Input: b.Input})
		}
	}
	return out
}

// ToolResult is the result of a tool call as the CLI gave it to the model.
type ToolResult struct {
	ToolUseID string // the call it answers
	Content   string // its text (the text blocks of a list, joined by "\n")
	IsError   bool   // the call failed, or was not allowed to run
}

// ToolResults returns the tool results of an EventUser, in order. nil for
// other events.
func (e Event) ToolResults() []ToolResult {
	if e.Type != EventUser || e.Message == nil {
		return nil
	}
	var out []ToolResult
	for _, b := range e.Message.Content {
		if b.Type == "tool_result" {
			out = append(out, ToolResult{ToolUseID: b.ToolUseID, Content: resultText(b.Content), IsError: b.IsError})
		}
	}
	return out
}

// resultText is the text of a tool_result's content: a string, or a list
// of blocks whose text blocks are joined by "\n".
func resultText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var blocks []struct{ Type, Text string }
	_ = json.Unmarshal(raw, &blocks)
	var texts []string
	for _, b := range blocks {
		if b.Type == "text" {
			texts = append(texts, b.Text)
		}
	}
	return strings.Join(texts, "\n")
}
