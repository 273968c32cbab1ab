package claudepool

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// errMalformedLine marks a stdout line that is not a JSON object with a
// "type"; the stream reader skips and counts such lines.
var errMalformedLine = errors.New("claudepool: malformed stdout line")

// controlResponse is the CLI's answer to a control_request written to its
// stdin.
type controlResponse struct {
	RequestID, Subtype, Error string
	// ErrorCode and Model come with some errors: set_model's refusal of
	// a model names why ("not_found", "auth_failed", ...) and the model
	// the process keeps.
	ErrorCode, Model string
	Response         json.RawMessage
}

// parseLine parses one stdout line. It returns (ev, nil, nil) for an event,
// (Event{}, ctrl, nil) for a control_response line, and an error wrapping
// errMalformedLine for a line that is not a JSON object or has no non-empty
// string "type". It never panics and never keeps line: the caller may reuse
// the buffer.
//
// The header (type, subtype, session_id) is read first, by scanHeader or,
// for unusual lines, by encoding/json; it decides between malformed and
// event. The line is then decoded into the shape of its type only, so that
// a future field of some other line type cannot spoil it, and a shape error
// turns the line into EventUnknown rather than an error.
func parseLine(line []byte) (Event, *controlResponse, error) {
	h, fast := scanHeader(line)
	if !fast {
		if err := json.Unmarshal(line, &h); err != nil {
			var te *json.UnmarshalTypeError
			if !errors.As(err, &te) || h.Type == "" {
				return Event{}, nil, malformedErr(err)
			}
			// The type is a string but subtype or session_id is not.
			return unknownEvent(h.Type, h.SessionID, line), nil, nil
		}
	}
	if h.Type == "" {
		if err := validateScanned(fast, line); err != nil {
			return Event{}, nil, malformedErr(err)
		}
		return Event{}, nil, malformedErr(errors.New(`no "type"`))
	}

	if h.Type == "control_response" {
		var w wireControlLine
		if err := json.Unmarshal(line, &w); err != nil {
			if isSyntaxError(err) {
				return Event{}, nil, malformedErr(err)
			}
			return unknownEvent(h.Type, h.SessionID, line), nil, nil
		}
		return Event{}, w.Response.controlResponse(), nil
	}

	ev := Event{SessionID: h.SessionID, Raw: append(json.RawMessage(nil), line...)}
	var err error
	switch h.Type {
	case "system":
		ev.Subtype = h.Subtype
		switch h.Subtype {
		case "init":
			ev.Type = EventInit
			ev.Init, err = decodeInit(ev.Raw)
		case "api_retry":
			ev.Type = EventRetry
			ev.Retry, err = decodeRetry(ev.Raw)
		default:
			ev.Type = EventSystem
			err = validateScanned(fast, ev.Raw)
		}
	case "assistant":
		ev.Type = EventAssistant
		ev.Message, err = decodeMessage(ev.Raw)
	case "user":
		ev.Type = EventUser
		ev.Message, err = decodeMessage(ev.Raw)
	case "stream_event":
		ev.Type = EventPartial
		ev.Partial, err = decodePartial(ev.Raw)
	case "result":
		ev.Type = EventResult
		ev.Result, err = decodeResult(ev.Raw, h.SessionID)
	case "conversation_reset":
		ev.Type = EventConversationReset
		ev.Reset, err = decodeReset(ev.Raw)
	default:
		ev.Type = EventUnknown
		ev.Subtype = h.Type
		err = validateScanned(fast, ev.Raw)
	}
	if err != nil {
		if isSyntaxError(err) {
			return Event{}, nil, malformedErr(err)
		}
		return Event{Type: EventUnknown, Subtype: h.Type, SessionID: h.SessionID, Raw: ev.Raw}, nil, nil
	}
	return ev, nil, nil
}

// malformedErr wraps the reason a line is malformed.
func malformedErr(err error) error {
	return fmt.Errorf("%w: %w", errMalformedLine, err)
}

// errInvalidJSON reports a line that scanHeader read but that is not valid
// JSON.
var errInvalidJSON = errors.New("invalid JSON")

// validateScanned checks a line that no decoder has looked at yet when
// scanHeader read its header: scanHeader does not validate the rest.
func validateScanned(fast bool, line []byte) error {
	if fast && !json.Valid(line) {
		return errInvalidJSON
	}
	return nil
}

// isSyntaxError reports whether err says the line is not valid JSON (as
// opposed to valid JSON of an unexpected shape). json.Unmarshal checks the
// whole input before decoding anything, so a decode reports invalid JSON
// this way only.
func isSyntaxError(err error) bool {
	var se *json.SyntaxError
	return err == errInvalidJSON || errors.As(err, &se)
}

// unknownEvent passes a line through as EventUnknown with its own copy.
func unknownEvent(typ, sessionID string, line []byte) Event {
	return Event{
		Type:      EventUnknown,
		Subtype:   typ,
		SessionID: sessionID,
		Raw:       append(json.RawMessage(nil), line...),
	}
}

// lineHeader holds the fields every line may carry.
type lineHeader struct {
	Type      string `json:"type"`
	Subtype   string `json:"subtype"`
	SessionID string `json:"session_id"`
}

// wireInit has the fields of Init in the same order, so that it converts.
type wireInit struct {
	Model          string   `json:"model"`
	Cwd            string   `json:"cwd"`
	PermissionMode string   `json:"permissionMode"`
	Version        string   `json:"claude_code_version"`
	Tools          []string `json:"tools"`
}

func decodeInit(line []byte) (*Init, error) {
	var w wireInit
	if err := json.Unmarshal(line, &w); err != nil {
		return nil, err
	}
	in := Init(w)
	return &in, nil
}

type wireRetry struct {
	Attempt     int     `json:"attempt"`
	MaxRetries  int     `json:"max_retries"`
	DelayMS     float64 `json:"retry_delay_ms"`
	ErrorStatus int     `json:"error_status"`
	Error       string  `json:"error"`
}

func decodeRetry(line []byte) (*Retry, error) {
	var w wireRetry
	if err := json.Unmarshal(line, &w); err != nil {
		return nil, err
	}
	return &Retry{
		Attempt:     w.Attempt,
		MaxRetries:  w.MaxRetries,
		Delay:       msDuration(w.DelayMS),
		ErrorStatus: w.ErrorStatus,
		Error:       w.Error,
	}, nil
}

// wireUsage has the fields of Usage in the same order, so that it converts.
type wireUsage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
}

type wireMessageLine struct {
	Message           wireMessage `json:"message"`
	ParentToolUseID   string      `json:"parent_tool_use_id"`
	Aborted           bool        `json:"aborted"`
	Error             string      `json:"error"`
	APIError          string      `json:"api_error"`
	IsAPIErrorMessage bool        `json:"is_api_error_message"`
}

type wireMessage struct {
	ID         string        `json:"id"`
	Model      string        `json:"model"`
	Role       string        `json:"role"`
	StopReason string        `json:"stop_reason"`
	Content    contentBlocks `json:"content"`
	Usage      wireUsage     `json:"usage"`
}

func decodeMessage(line []byte) (*ChatMessage, error) {
	var w wireMessageLine
	if err := json.Unmarshal(line, &w); err != nil {
		return nil, err
	}
	apiErr := w.APIError
	if apiErr == "" {
		apiErr = w.Error
	}
	return &ChatMessage{
		ID:                w.Message.ID,
		Model:             w.Message.Model,
		Role:              w.Message.Role,
		StopReason:        w.Message.StopReason,
		Content:           w.Message.Content,
		Usage:             Usage(w.Message.Usage),
		Aborted:           w.Aborted,
		ParentToolUseID:   w.ParentToolUseID,
		APIError:          apiErr,
		IsAPIErrorMessage: w.IsAPIErrorMessage,
	}, nil
}

// contentBlocks decodes a message's content, which is either a list of
// blocks or, in user messages, a bare string (one text block).
type contentBlocks []ContentBlock

// wireBlock has the fields of ContentBlock in the same order, so that it
// converts.
type wireBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	Thinking  string          `json:"thinking"`
	Signature string          `json:"signature"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

// UnmarshalJSON implements json.Unmarshaler.
func (c *contentBlocks) UnmarshalJSON(data []byte) error {
	switch {
	case string(data) == "null":
		*c = nil
		return nil
	case len(data) > 0 && data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*c = contentBlocks{{Type: "text", Text: s}}
		return nil
	}
	var ws []wireBlock
	if err := json.Unmarshal(data, &ws); err != nil {
		return err
	}
	out := make(contentBlocks, len(ws))
	for i, w := range ws {
		out[i] = ContentBlock(w)
		out[i].Input = nullToNil(w.Input)
		out[i].Content = nullToNil(w.Content)
	}
	*c = out
	return nil
}

type wireStreamLine struct {
	Event *wireSSE `json:"event"`
}

type wireSSE struct {
	Type  string `json:"type"`
	Index int    `json:"index"`
	Delta struct {
		Type     string `json:"type"`
		Text     string `json:"text"`
		Thinking string `json:"thinking"`
	} `json:"delta"`
}

// decodePartial decodes a stream_event line. Partial.Event points into line,
// the event's own copy, rather than being copied out a second time: deltas
// are the most frequent lines of a streamed reply.
func decodePartial(line []byte) (*Partial, error) {
	var w wireStreamLine
	if err := json.Unmarshal(line, &w); err != nil {
		return nil, err
	}
	p := &Partial{}
	if w.Event == nil { // absent or null
		return p, nil
	}
	raw, ok := topLevelValue(line, "event")
	if !ok {
		var rw struct {
			Event json.RawMessage `json:"event"`
		}
		if err := json.Unmarshal(line, &rw); err != nil {
			return nil, err
		}
		raw = rw.Event
	}
	p.Event = json.RawMessage(raw[:len(raw):len(raw)])
	p.Type = w.Event.Type
	p.Index = w.Event.Index
	p.DeltaType = w.Event.Delta.Type
	p.Text = w.Event.Delta.Text
	if w.Event.Delta.Type == "thinking_delta" {
		p.Text = w.Event.Delta.Thinking
	}
	return p, nil
}

type wireResult struct {
	Result         string    `json:"result"`
	IsError        bool      `json:"is_error"`
	Subtype        string    `json:"subtype"`
	NumTurns       int       `json:"num_turns"`
	DurationMS     float64   `json:"duration_ms"`
	APIDurationMS  float64   `json:"duration_api_ms"`
	TotalCostUSD   float64   `json:"total_cost_usd"`
	Usage          wireUsage `json:"usage"`
	StopReason     string    `json:"stop_reason"`
	TerminalReason string    `json:"terminal_reason"`
	APIErrorStatus int       `json:"api_error_status"`
	APIErrorType   string    `json:"api_error_type"`
	APIError       string    `json:"api_error"`
	Errors         []string  `json:"errors"`
	TTFTMS         float64   `json:"ttft_ms"`
	LocalCommand   string    `json:"local_command"`
}

func decodeResult(line []byte, sessionID string) (*Result, error) {
	var w wireResult
	if err := json.Unmarshal(line, &w); err != nil {
		return nil, err
	}
	errType := w.APIErrorType
	if errType == "" {
		errType = w.APIError
	}
	return &Result{
		Text:           w.Result,
		IsError:        w.IsError,
		Subtype:        w.Subtype,
		SessionID:      sessionID,
		NumTurns:       w.NumTurns,
		Duration:       msDuration(w.DurationMS),
		APIDuration:    msDuration(w.APIDurationMS),
		TotalCostUSD:   w.TotalCostUSD,
		Usage:          Usage(w.Usage),
		StopReason:     w.StopReason,
		TerminalReason: w.TerminalReason,
		APIErrorStatus: w.APIErrorStatus,
		APIErrorType:   errType,
		Errors:         w.Errors,
		TTFT:           msDuration(w.TTFTMS),
		LocalCommand:   w.LocalCommand,
	}, nil
}

// wireReset has the fields of ConversationReset in the same order, so that
// it converts.
type wireReset struct {
	NewConversationID string `json:"new_conversation_id"`
	Trigger           string `json:"trigger"`
}

func decodeReset(line []byte) (*ConversationReset, error) {
	var w wireReset
	if err := json.Unmarshal(line, &w); err != nil {
		return nil, err
	}
	r := ConversationReset(w)
	return &r, nil
}

type wireControlLine struct {
	Response wireControlResponse `json:"response"`
}

type wireControlResponse struct {
	Subtype   string          `json:"subtype"`
	RequestID string          `json:"request_id"`
	Error     json.RawMessage `json:"error"`
	ErrorCode string          `json:"error_code"`
	Model     string          `json:"model"`
	Response  json.RawMessage `json:"response"`
}

// controlResponse converts the wire form. The error is usually a string; any
// other value is kept as its JSON text rather than making the whole answer
// unreadable, because a request waits on it.
func (w wireControlResponse) controlResponse() *controlResponse {
	c := &controlResponse{
		RequestID: w.RequestID,
		Subtype:   w.Subtype,
		ErrorCode: w.ErrorCode,
		Model:     w.Model,
		Response:  nullToNil(w.Response),
	}
	if e := nullToNil(w.Error); e != nil {
		if json.Unmarshal(e, &c.Error) != nil {
			c.Error = string(e)
		}
	}
	return c
}

// nullToNil turns a JSON null into a nil RawMessage, the zero value.
func nullToNil(raw json.RawMessage) json.RawMessage {
	if string(raw) == "null" {
		return nil
	}
	return raw
}

// msDuration converts milliseconds to a Duration, saturating instead of
// overflowing on absurd values.
func msDuration(ms float64) time.Duration {
	d := ms * float64(time.Millisecond)
	switch {
	case d >= math.MaxInt64:
		return math.MaxInt64
	case d <= math.MinInt64:
		return math.MinInt64
	}
	return time.Duration(d)
}
