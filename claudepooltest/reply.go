package claudepooltest

import (
	"fmt"
	"net/http"
	"time"
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

// Reply describes how the server answers one Messages request.
type Reply struct {
	// Text is the assistant text. It is sent as is, also when empty.
	Text string
	// Chunks splits Text into this many text_delta events of about equal
	// length (never more than Text has characters). 0 means the server's
	// [Config.Chunks]; when that is 0 too, one chunk per estimated output
	// token (about 4 characters) if the reply is paced (see
	// TokensPerSecond), else 1.
	Chunks int
	// ChunkDelay is the pause before each chunk after the first. 0 means
	// the server's [Config.ChunkDelay].
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
	// Hold, when not nil, pauses the stream after its first chunk (or
	// before the end of the message when Text is empty) until Hold is
	// closed, so a test can act in the middle of a reply and then let it
	// finish. A reply that is not streamed ignores it.
	Hold <-chan struct{}
	// Fail, when not FailNone, answers with that failure instead of Text.
	Fail Failure
	// ErrorMessage replaces the default message of an HTTP failure.
	ErrorMessage string
	// StopReason is the message's stop_reason; "" means "end_turn".
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
