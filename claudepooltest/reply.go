package claudepooltest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// Failure selects how the server fails a Messages request instead of
// answering it.
type Failure int

// Failures the server can produce. Each HTTP failure answers with an
// Anthropic-shaped JSON body such as
//
//	{"type":"error","error":{"type":"authentication_error","message":"..."}}
const (
	// FailNone answers normally.
	FailNone Failure = iota
	// FailBadRequest answers 400 invalid_request_error; the CLI does not retry it.
	FailBadRequest
	// FailUnauthorized answers 401 authentication_error.
	FailUnauthorized
	// FailRateLimit answers 429 rate_limit_error.
	FailRateLimit
	// FailServer answers 500 api_error.
	FailServer
	// FailOverloaded answers 529 overloaded_error.
	FailOverloaded
	// FailHang never answers: the request stays open until the client goes
	// away or the server is closed.
	FailHang
	// FailForbidden answers 403 permission_error.
	FailForbidden
	// FailNotFound answers 404 not_found_error, as the API answers a
	// model it does not know.
	FailNotFound
	// FailTooLarge answers 413 request_too_large.
	FailTooLarge
)

// String returns a short name for f, e.g. "401" or "hang".
func (f Failure) String() string {
	switch f {
	case FailNone:
		return "none"
	case FailHang:
		return "hang"
	}
	if s, ok := failures[f]; ok {
		return fmt.Sprint(s.status)
	}
	return fmt.Sprintf("Failure(%d)", int(f))
}

// HTTPStatus returns the status code f answers with, or 0 for FailNone and
// FailHang.
func (f Failure) HTTPStatus() int { return failures[f].status }

// ErrorType returns the Anthropic error type f answers with (e.g.
// "rate_limit_error"), or "" for FailNone and FailHang.
func (f Failure) ErrorType() string { return failures[f].errType }

type failureShape struct {
	status  int
	errType string
	message string
}

var failures = map[Failure]failureShape{
	FailBadRequest:   {http.StatusBadRequest, "invalid_request_error", "mock invalid request"},
	FailUnauthorized: {http.StatusUnauthorized, "authentication_error", "mock invalid x-api-key"},
	FailRateLimit:    {http.StatusTooManyRequests, "rate_limit_error", "mock rate limited"},
	FailServer:       {http.StatusInternalServerError, "api_error", "mock internal error"},
	FailOverloaded:   {529, "overloaded_error", "mock overloaded"},
	FailForbidden:    {http.StatusForbidden, "permission_error", "mock permission denied"},
	FailNotFound:     {http.StatusNotFound, "not_found_error", "mock model not found"},
	FailTooLarge:     {http.StatusRequestEntityTooLarge, "request_too_large", "mock request too large"},
}

// Stop reasons the Messages API ends a message with, for [Reply.StopReason]
// and as the server reports them.
const (
	// StopEndTurn: the model finished its turn (the default).
	StopEndTurn = "end_turn"
	// StopMaxTokens: the reply reached the request's max_tokens.
	StopMaxTokens = "max_tokens"
	// StopSequence: the reply reached one of the request's stop_sequences,
	// which the message names in its "stop_sequence".
	StopSequence = "stop_sequence"
	// StopRefusal: the API's safety classifiers stopped the reply.
	StopRefusal = "refusal"
	// StopToolUse: the model called a tool.
	StopToolUse = "tool_use"
	// StopPauseTurn: the API paused a long turn for the client to resume.
	StopPauseTurn = "pause_turn"
)

// Reply describes how the server answers one Messages request.
//
// The request can stop a reply early, as the Messages API does, in both
// streamed and non-streamed replies:
//
//   - stop_sequences: when Text contains one of the request's
//     stop_sequences, the reply is cut before it and ends with
//     stop_reason "stop_sequence" and "stop_sequence" set to it. Of
//     several, the one whose end comes first in Text wins (of two that end
//     at the same character, the longer). Empty sequences are ignored.
//   - max_tokens: when Text's estimated output tokens (1 + characters/4,
//     characters counted as Unicode code points) exceed a positive
//     max_tokens, the reply is cut to its first 4*max_tokens-1 characters,
//     the longest text whose estimate is max_tokens, and ends with
//     stop_reason "max_tokens". A max_tokens of 0 (or absent) sets no
//     limit. The CLI asks 32000 or more, so this cuts only replies of more
//     than about 128,000 characters, and its one-token model probe
//     (max_tokens 1), whose reply becomes its first 3 characters.
//
// When both apply, the earlier stop wins: the stop sequence, if the text up
// to its end (which the model generated, though the API does not send it)
// fits in max_tokens, else max_tokens. Either wins over StopReason, since
// the reply never reaches its scripted end, and drops the ToolCalls, which
// come after the text. The usage's output_tokens is the estimate of what
// was generated: the text sent, plus the stop sequence when one stopped
// it, plus the Thinking's estimate, plus that of each tool call sent.
//
// Neither stop touches Thinking, which is always sent whole: the API does
// not apply stop_sequences to thinking, and the mock, to keep max_tokens
// simple, applies it to Text alone, cutting Text as if there were no
// thinking (the API counts thinking toward max_tokens). A reply with
// Thinking can thus report more output_tokens than max_tokens.
type Reply struct {
	// Text is the assistant text. It is sent as is, also when empty,
	// unless the request's stop_sequences or max_tokens cut it (see
	// above).
	Text string
	// Thinking, when not empty, is the text of a thinking block that
	// begins the reply, before the text block, as the Messages API sends
	// extended thinking (whatever the request's "thinking" asks). Streamed,
	// the thinking block has index 0 and the text block index 1: a
	// content_block_start with
	// {"type":"thinking","thinking":"","signature":""}, the thinking in
	// thinking_delta events (split as Chunks says), a signature_delta
	// with a base64 signature, then content_block_stop, before the text
	// block's events. Not streamed, the message's content is
	//
	//	[{"type":"thinking","thinking":"...","signature":"..."},{"type":"text","text":"..."}]
	//
	// The signature depends on the thinking alone. The request's stops
	// leave the thinking whole (see above); its estimated tokens (1 +
	// characters/4) add to the usage's output_tokens and to the time a
	// paced reply takes.
	Thinking string
	// Chunks splits Text into this many text_delta events of about equal
	// length (never more than Text has characters), Thinking into as
	// many thinking_delta events, and the input of each of the ToolCalls
	// into as many input_json_delta events. 0 means the server's
	// [Config.Chunks]; when that is 0 too, one chunk per estimated output
	// token (about 4 characters) if the reply is paced (see
	// TokensPerSecond), else 1.
	Chunks int
	// ChunkDelay is the pause before each chunk after the first, of the
	// thinking, the text and the tool inputs alike. 0 means the server's
	// [Config.ChunkDelay].
	ChunkDelay time.Duration
	// TokensPerSecond paces a streamed reply as [Config.TokensPerSecond]
	// describes. 0 means the server's Config.TokensPerSecond; a negative
	// value means no pacing whatever the server's setting.
	TokensPerSecond float64
	// Delay is the pause before the server answers at all (status line
	// included), with Text or with a failure alike: the reply's time to
	// first byte, or a way to exceed a client's timeout. 0 means the
	// server's [Config.FirstByteDelay]; a negative value means no pause
	// whatever the server's setting.
	Delay time.Duration
	// Hold, when not nil, pauses the stream after the first chunk of Text
	// (or, when Text is empty, before the last content_block_stop, with
	// the input of every tool call sent) until Hold is closed, so a test
	// can act in the middle of a reply and then let it finish. The
	// thinking block, if any, is complete by then. A reply that is not
	// streamed ignores it.
	Hold <-chan struct{}
	// Fail, when not FailNone, answers with that failure instead of Text.
	Fail Failure
	// ErrorMessage replaces the default message of an HTTP failure.
	ErrorMessage string
	// ToolCalls, when not empty, makes the reply call tools, as the model
	// does when the request offers them (the mock does not check that it
	// does): after the Thinking, if any, and Text, as a text block only
	// when Text is not empty, the message has one tool_use block per call,
	// in order, and ends with stop_reason "tool_use" unless StopReason
	// says otherwise. Streamed, each block is a content_block_start with
	//
	//	{"type":"tool_use","id":"toolu_...","name":"Read","input":{}}
	//
	// then the input JSON in input_json_delta events (their partial_json
	// pieces, split as Chunks says, make up the input), then
	// content_block_stop; not streamed, each is a block whole:
	//
	//	{"type":"tool_use","id":"toolu_...","name":"Read","input":{...}}
	//
	// Content blocks are numbered from 0 across the message, thinking and
	// text included. Each call adds 1 + (characters of its name and input
	// JSON)/4 to the usage's output_tokens, and to the time a paced reply
	// takes. A call whose Input is not a JSON object is answered 500
	// api_error instead, with a message that says so.
	ToolCalls []ToolCall
	// StopReason is the message's stop_reason when Text is sent whole: ""
	// means [StopToolUse] when there are ToolCalls, [StopEndTurn]
	// otherwise. It is reported as any other, in the
	// message_delta event of a streamed reply and in the message of a
	// non-streamed one, so that [StopMaxTokens] or [StopRefusal] make the
	// reply look cut by the limit or the safety classifiers after Text,
	// whatever the request's max_tokens. The message's stop_sequence stays
	// null unless the request's stop_sequences cut the reply.
	StopReason string
}

// ToolCall is a tool_use content block: the model's call of a tool, in a
// reply ([Reply.ToolCalls]) or in the history a request carries
// ([Message.ToolUses]).
type ToolCall struct {
	// ID identifies the call; the tool_result that answers it names it as
	// its tool_use_id. In a reply, "" makes the server number the call
	// "toolu_mock_000001", "toolu_mock_000002" and so on.
	ID string
	// Name is the tool's name, as the request's tools offer it, e.g.
	// "Read".
	Name string
	// Input is the tool's input, a JSON object such as
	// {"file_path":"/tmp/notes.txt"}. In a reply, nil sends {}; in a
	// recorded message it is the block's input as sent, nil when absent.
	Input json.RawMessage
}

// ReplyFunc decides the reply to a Messages request. It is called from the
// server's handler goroutines, possibly concurrently, with a copy of the
// recorded request that it may keep.
type ReplyFunc func(Request) Reply

// EchoPrefix starts the default reply, which is EchoPrefix followed by the
// last user text.
const EchoPrefix = "mock reply to: "

// Echo is the default [ReplyFunc]: it answers EchoPrefix followed by the
// request's [Request.LastUserText].
func Echo(r Request) Reply { return Reply{Text: EchoPrefix + r.LastUserText()} }

// Text returns a [ReplyFunc] that answers every request with text.
func Text(text string) ReplyFunc {
	return func(Request) Reply { return Reply{Text: text} }
}

// Fail returns a [ReplyFunc] that fails every request with f.
func Fail(f Failure) ReplyFunc {
	return func(Request) Reply { return Reply{Fail: f} }
}

// ToolSaidPrefix starts the reply of [CallTool] to a request that carries
// tool results: ToolSaidPrefix followed by their contents.
const ToolSaidPrefix = "tool said: "

// CallTool returns a [ReplyFunc] that plays an agent calling one tool per
// user turn. A chat request whose last user message carries no tool
// results, a new turn, is answered with a call of the tool name with
// input; one whose last user message carries results, the client having
// run the tool, with the text ToolSaidPrefix followed by the
// [ToolResult.Content] of each, joined by "\n". Requests of other kinds,
// such as the CLI's side requests, are answered as [Echo] answers them.
//
// input is marshaled to JSON once, by CallTool, which panics when it is
// not a JSON object; nil means {}. A json.RawMessage is sent as it is,
// compacted.
func CallTool(name string, input any) ReplyFunc {
	raw := json.RawMessage("{}")
	if input != nil {
		b, err := json.Marshal(input)
		if err != nil {
			panic("claudepooltest: CallTool input: " + err.Error())
		}
		if !isObject(b) {
			panic("claudepooltest: CallTool input is not a JSON object: " + string(b))
		}
		raw = b
	}
	return func(r Request) Reply {
		if r.Kind != KindChat {
			return Echo(r)
		}
		results := r.LastToolResults()
		if len(results) == 0 {
			return Reply{ToolCalls: []ToolCall{{Name: name, Input: raw}}}
		}
		contents := make([]string, len(results))
		for i, res := range results {
			contents[i] = res.Content
		}
		return Reply{Text: ToolSaidPrefix + strings.Join(contents, "\n")}
	}
}

// isObject reports whether raw, valid JSON, is an object.
func isObject(raw []byte) bool {
	b := bytes.TrimLeft(raw, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// toolCalls checks the scripted calls and returns copies whose inputs are
// compact JSON objects, {} for a nil input.
func toolCalls(calls []ToolCall) ([]ToolCall, error) {
	out := make([]ToolCall, len(calls))
	for i, c := range calls {
		out[i] = c
		if c.Input == nil {
			out[i].Input = json.RawMessage("{}")
			continue
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, c.Input); err != nil {
			return nil, fmt.Errorf("claudepooltest: tool call %d (%s): input is not valid JSON: %v", i, c.Name, err)
		}
		if !isObject(buf.Bytes()) {
			return nil, fmt.Errorf("claudepooltest: tool call %d (%s): input is not a JSON object: %s", i, c.Name, buf.Bytes())
		}
		out[i].Input = buf.Bytes()
	}
	return out, nil
}

// callTokens returns the output tokens the server counts for a tool call.
func callTokens(c ToolCall) int { return outputTokens(c.Name + string(c.Input)) }

// signature returns the signature of a thinking block: base64 of a hash of
// the thinking, standing in for the API's opaque signatures.
func signature(thinking string) string {
	sum := sha256.Sum256([]byte("claudepooltest thinking\x00" + thinking))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// splitChunks splits s into n pieces of about equal length without cutting
// a character in two. An empty s gives no pieces.
func splitChunks(s string, n int) []string {
	runes := []rune(s)
	if len(runes) == 0 {
		return nil
	}
	if n < 1 {
		n = 1
	}
	if n > len(runes) {
		n = len(runes)
	}
	out := make([]string, 0, n)
	for i := range n {
		lo, hi := i*len(runes)/n, (i+1)*len(runes)/n
		out = append(out, string(runes[lo:hi]))
	}
	return out
}

// ending is how a reply ends once the request's stops apply.
type ending struct {
	text     string     // the text sent
	calls    []ToolCall // the tool calls sent
	reason   string     // the stop_reason
	sequence string     // the stop_sequence; "" reports null
	tokens   int        // the output tokens of the text
}

// end applies r's stop_sequences and max_tokens to rep as [Reply]
// describes. A stop drops rep's tool calls.
func end(rep Reply, r Request) ending {
	fits := func(chars int) bool { return r.MaxTokens <= 0 || chars/4+1 <= r.MaxTokens }
	if seq, start, stop := firstStop(rep.Text, r.StopSequences); seq != "" {
		generated := utf8.RuneCountInString(rep.Text[:stop])
		if fits(generated) {
			return ending{text: rep.Text[:start], reason: StopSequence, sequence: seq, tokens: generated/4 + 1}
		}
	}
	if chars := utf8.RuneCountInString(rep.Text); !fits(chars) {
		text := prefix(rep.Text, 4*r.MaxTokens-1)
		return ending{text: text, reason: StopMaxTokens, tokens: outputTokens(text)}
	}
	reason := rep.StopReason
	switch {
	case reason != "":
	case len(rep.ToolCalls) > 0:
		reason = StopToolUse
	default:
		reason = StopEndTurn
	}
	return ending{text: rep.Text, calls: rep.ToolCalls, reason: reason, tokens: outputTokens(rep.Text)}
}

// firstStop returns the stop sequence of seqs whose first occurrence in
// text ends first (of two that end together, the longer), with the byte
// offsets where that occurrence starts and ends; seq is "" when text holds
// none.
func firstStop(text string, seqs []string) (seq string, start, stop int) {
	for _, s := range seqs {
		if s == "" {
			continue
		}
		i := strings.Index(text, s)
		if i < 0 {
			continue
		}
		if e := i + len(s); seq == "" || e < stop || e == stop && i < start {
			seq, start, stop = s, i, e
		}
	}
	return seq, start, stop
}

// prefix returns the first n characters of s.
func prefix(s string, n int) string {
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}
