package claudepooltest

import (
	"crypto/sha256"
	"encoding/base64"
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
// the reply never reaches its scripted end. The usage's output_tokens is
// the estimate of what was generated: the text sent, plus the stop
// sequence when one stopped it, plus the Thinking's estimate.
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
	// length (never more than Text has characters), and Thinking into as
	// many thinking_delta events. 0 means the server's [Config.Chunks];
	// when that is 0 too, one chunk per estimated output token (about 4
	// characters) if the reply is paced (see TokensPerSecond), else 1.
	Chunks int
	// ChunkDelay is the pause before each chunk after the first, of the
	// thinking and the text alike. 0 means the server's
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
	// (or before the end of the message when Text is empty) until Hold is
	// closed, so a test can act in the middle of a reply and then let it
	// finish. The thinking block, if any, is complete by then. A reply
	// that is not streamed ignores it.
	Hold <-chan struct{}
	// Fail, when not FailNone, answers with that failure instead of Text.
	Fail Failure
	// ErrorMessage replaces the default message of an HTTP failure.
	ErrorMessage string
	// StopReason is the message's stop_reason when Text is sent whole: ""
	// means [StopEndTurn]. It is reported as any other, in the
	// message_delta event of a streamed reply and in the message of a
	// non-streamed one, so that [StopMaxTokens] or [StopRefusal] make the
	// reply look cut by the limit or the safety classifiers after Text,
	// whatever the request's max_tokens. The message's stop_sequence stays
	// null unless the request's stop_sequences cut the reply.
	StopReason string
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
	text     string // the text sent
	reason   string // the stop_reason
	sequence string // the stop_sequence; "" reports null
	tokens   int    // the usage's output_tokens
}

// end applies r's stop_sequences and max_tokens to rep as [Reply]
// describes.
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
	if reason == "" {
		reason = StopEndTurn
	}
	return ending{text: rep.Text, reason: reason, tokens: outputTokens(rep.Text)}
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
