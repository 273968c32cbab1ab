package claudepool

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Compare with errors.Is: the library wraps them with
// context (the command, the limit that was hit) using %w.
var (
	// ErrClosed is returned by Acquire, TryAcquire, WaitReady and
	// StreamChat after the pool was closed.
	ErrClosed = errors.New("claudepool: pool closed")

	// ErrNotAvailable is returned by TryAcquire when no warm process is
	// ready.
	ErrNotAvailable = errors.New("claudepool: no ready process")

	// ErrCLINotFound means the CLI executable could not be found or run.
	ErrCLINotFound = errors.New("claudepool: claude CLI not found " +
		"(install it with `npm install -g @anthropic-ai/claude-code`, " +
		"or set Config.Command to its path)")

	// ErrLineTooLong is returned when the CLI writes a stdout line longer
	// than Config.MaxLineBytes.
	ErrLineTooLong = errors.New("claudepool: stdout line exceeds MaxLineBytes")

	// ErrInvalidRequest is wrapped by every validation error StreamChat
	// returns before it takes a process.
	ErrInvalidRequest = errors.New("claudepool: invalid request")

	// ErrNoGateway is wrapped by the error of a request that sets a
	// Messages API parameter (MaxTokens, APIKey, ...) on a pool whose
	// gateway is off: only the gateway can apply them.
	ErrNoGateway = errors.New("claudepool: the request sets API parameters, which need the pool's gateway (it is off)")

	// ErrInterrupted is wrapped by the error of a stream whose turn
	// Stream.Interrupt ended; the *ResultError of the CLI's result is
	// wrapped too.
	ErrInterrupted = errors.New("claudepool: the turn was interrupted")

	// ErrStreamClosed is what Stream.Err returns when Close ended the
	// stream before its result.
	ErrStreamClosed = errors.New("claudepool: stream closed")

	// ErrNotReady is wrapped when a spawned process does not answer its
	// readiness probe or a control request within Config.ReadyTimeout.
	ErrNotReady = errors.New("claudepool: process not ready")

	// ErrOverloaded is wrapped when a caller would wait for a MaxProcs
	// slot beyond Config.MaxWaiting, or waited longer than
	// Config.MaxWait: the pool sheds the request instead of queueing it.
	// No process was taken; the request may be retried later.
	ErrOverloaded = errors.New("claudepool: overloaded")
)

// ExitError reports a CLI process that ended without a result line: it
// crashed, was killed, or closed its output early.
type ExitError struct {
	// Code is the exit code, or -1 when the process was ended by a signal
	// or its status is unknown.
	Code int
	// Signal names the signal that ended the process ("" if none).
	Signal string
	// Stderr is the tail of what the process wrote to stderr.
	Stderr string
	// Err is the underlying error from os/exec, if any.
	Err error
}

// Error describes the exit and the last line of stderr.
func (e *ExitError) Error() string {
	var b strings.Builder
	b.WriteString("claudepool: CLI exited without a result")
	if e.Signal != "" {
		fmt.Fprintf(&b, " (signal %s)", e.Signal)
	} else {
		fmt.Fprintf(&b, " (exit code %d)", e.Code)
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		if i := strings.LastIndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
		fmt.Fprintf(&b, ": %s", s)
	}
	return b.String()
}

// Unwrap returns the underlying os/exec error.
func (e *ExitError) Unwrap() error { return e.Err }

// ResultError reports a result line whose is_error field was true: an API
// error, an authentication failure, an interrupted turn. The decision is
// made on is_error alone, never on the subtype, because the CLI reports
// some failures (for example "Not logged in") with subtype "success".
type ResultError struct {
	// Subtype is the result's subtype, e.g. "success" or
	// "error_during_execution".
	Subtype string
	// Message is the result text, e.g. "Invalid API key · Fix external API key".
	Message string
	// APIErrorStatus is the HTTP status of the failed API call, 0 if none.
	APIErrorStatus int
	// TerminalReason is the CLI's terminal_reason, e.g. "api_error".
	TerminalReason string
	// Result is the whole result.
	Result *Result
	// API is the error the Messages API answered, as it sent it, when the
	// pool's gateway saw one; nil otherwise. Unwrap returns it, so
	// errors.As(err, &apiErr) finds it.
	API *APIError
}

// Unwrap returns the API's error, nil when there was none.
func (e *ResultError) Unwrap() error {
	if e.API == nil {
		return nil
	}
	return e.API
}

// APIError is an error response of the Messages API, as the gateway
// received it: the HTTP status, and the error's type and message from
// the body ({"type":"error","error":{"type":...,"message":...}}).
type APIError struct {
	Status    int    // HTTP status, e.g. 401
	Type      string // error.type, e.g. "authentication_error"
	Message   string // error.message, verbatim
	RequestID string // the request-id header, "" when absent
	// Body is the response body, verbatim (up to 64 KiB).
	Body []byte
}

// Error returns the API's status, type and message.
func (e *APIError) Error() string {
	return fmt.Sprintf("API error %d (%s): %s", e.Status, e.Type, e.Message)
}

// Error describes the failure with its API status and message.
func (e *ResultError) Error() string {
	var b strings.Builder
	b.WriteString("claudepool: CLI reported an error")
	if e.APIErrorStatus != 0 {
		fmt.Fprintf(&b, " (API status %d)", e.APIErrorStatus)
	}
	if e.Subtype != "" {
		fmt.Fprintf(&b, " [%s]", e.Subtype)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	return b.String()
}

func newResultError(r *Result) *ResultError {
	return &ResultError{
		Subtype:        r.Subtype,
		Message:        r.Text,
		APIErrorStatus: r.APIErrorStatus,
		TerminalReason: r.TerminalReason,
		Result:         r,
		API:            r.APIError,
	}
}
