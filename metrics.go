package claudepool

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"time"
)

// Outcome says how a stream ended, for counters and the OnStreamEnd hook.
type Outcome string

// The outcomes of a stream, decided on Stream.Err.
const (
	OutcomeOK           Outcome = "ok"            // a result without is_error
	OutcomeResultError  Outcome = "result_error"  // *ResultError: the CLI reported an error (API, authentication)
	OutcomeExit         Outcome = "exit"          // *ExitError: the CLI exited without a result
	OutcomeLineTooLong  Outcome = "line_too_long" // ErrLineTooLong
	OutcomeNotReady     Outcome = "not_ready"     // ErrNotReady: a control request went unanswered
	OutcomeCanceled     Outcome = "canceled"      // the context was canceled
	OutcomeDeadline     Outcome = "deadline"      // the context's deadline passed
	OutcomeClosed       Outcome = "closed"        // ErrClosed: the pool's Close ended the chat
	OutcomeStreamClosed Outcome = "stream_closed" // ErrStreamClosed: Stream.Close ended it before its result
	OutcomeOther        Outcome = "other"         // any other error, e.g. a failed read of the output
)

// outcomesArray fixes the number of outcomes at compile time; Stats lists
// them in this order.
var outcomesArray = [...]Outcome{OutcomeOK, OutcomeResultError, OutcomeExit, OutcomeLineTooLong,
	OutcomeNotReady, OutcomeCanceled, OutcomeDeadline, OutcomeClosed, OutcomeStreamClosed, OutcomeOther}

// Outcomes lists every Outcome, in a fixed order.
func Outcomes() []Outcome { return append([]Outcome(nil), outcomesArray[:]...) }

// OutcomeOf classifies the error of a stream (Stream.Err; nil is
// OutcomeOK).
func OutcomeOf(err error) Outcome {
	var re *ResultError
	var ee *ExitError
	switch {
	case err == nil:
		return OutcomeOK
	case errors.As(err, &re):
		return OutcomeResultError
	case errors.Is(err, ErrClosed):
		// Before ExitError: Close's kill wraps the exit.
		return OutcomeClosed
	case errors.As(err, &ee):
		return OutcomeExit
	case errors.Is(err, ErrLineTooLong):
		return OutcomeLineTooLong
	case errors.Is(err, ErrNotReady):
		return OutcomeNotReady
	case errors.Is(err, ErrStreamClosed):
		return OutcomeStreamClosed
	case errors.Is(err, context.DeadlineExceeded):
		return OutcomeDeadline
	case errors.Is(err, context.Canceled):
		return OutcomeCanceled
	default:
		return OutcomeOther
	}
}

func outcomeIndex(o Outcome) int {
	for i, x := range outcomesArray {
		if x == o {
			return i
		}
	}
	return len(outcomesArray) - 1
}

// StreamEnd describes a stream that has ended, for Config.OnStreamEnd. It
// carries what the OpenTelemetry GenAI semantic conventions ask of a chat
// (operation duration, time to first chunk, token usage, model, error
// type) without the core depending on OpenTelemetry.
type StreamEnd struct {
	// Outcome classifies Err.
	Outcome Outcome
	// Err is the stream's error, as Stream.Err returns it; nil on
	// success.
	Err error
	// Model is the model the chat ran with: the request's, else
	// Config.Model; "" for the CLI's default.
	Model string
	// Acquire says how the stream's process was obtained.
	Acquire AcquireInfo
	// Latency holds the stream's timings (Latency.FirstText is the time
	// to the first chunk of text).
	Latency StreamLatency
	// Duration is the time from StreamChat to the end of the stream.
	Duration time.Duration
	// Result is the result line, with its usage and cost; nil when the
	// stream ended without one.
	Result *Result
}

// TokenCounts are token totals over the results of every stream.
type TokenCounts struct {
	Input         int64 `json:"input"`
	Output        int64 `json:"output"`
	CacheRead     int64 `json:"cache_read"`
	CacheCreation int64 `json:"cache_creation"`
}

// usageCounters accumulate the usage and cost of results.
type usageCounters struct {
	input, output, cacheRead, cacheCreation atomic.Int64
	costBits                                atomic.Uint64 // float64 bits of total_cost_usd
	// authFailures counts results with api_error_status 401 or 403 in a
	// row; any successful result resets it. Chats with a key of their own
	// (Request.APIKey) are left out: a tenant's revoked key says nothing
	// of the pool's.
	authFailures atomic.Int64
}

func (u *usageCounters) add(r *Result, ownKey bool) {
	u.input.Add(int64(r.Usage.InputTokens))
	u.output.Add(int64(r.Usage.OutputTokens))
	u.cacheRead.Add(int64(r.Usage.CacheReadInputTokens))
	u.cacheCreation.Add(int64(r.Usage.CacheCreationInputTokens))
	if c := r.TotalCostUSD; c != 0 && !math.IsNaN(c) && !math.IsInf(c, 0) {
		for {
			old := u.costBits.Load()
			if u.costBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+c)) {
				break
			}
		}
	}
	switch {
	case ownKey:
	case !r.IsError:
		u.authFailures.Store(0)
	case r.APIErrorStatus == 401 || r.APIErrorStatus == 403:
		u.authFailures.Add(1)
	}
}

// reportEnd records the end of a stream and calls Config.OnStreamEnd. It runs
// on the stream's reader goroutine once the outcome is final, holding no
// lock.
func (s *Stream) reportEnd(err error) {
	p := s.pool
	s.mu.Lock()
	l, r := s.latency, s.result
	s.mu.Unlock()
	o := OutcomeOf(err)
	p.counters.outcomes[outcomeIndex(o)].Add(1)
	if r != nil {
		p.usage.add(r, s.req.api != nil && s.req.api.key != "")
	}
	hook := p.cfg.OnStreamEnd
	if hook == nil {
		return
	}
	model := s.req.model
	if model == "" {
		model = p.cfg.Model
	}
	hook(StreamEnd{Outcome: o, Err: err, Model: model, Acquire: s.Acquire(), Latency: l,
		Duration: time.Since(s.req.start), Result: r})
}
