package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
)

// turn answers one user line in its own goroutine, so that control requests
// and signals are still handled while it streams. A /clear line is a turn
// with reset set.
type turn struct {
	cfg       *config
	out       *output
	mode      string
	text      string   // the user's text
	history   []string // the user texts of the conversation, text last
	model     string
	sessionID string
	msgID     string
	init      object
	start     time.Time

	command      string // for another slash command: its output
	reset        string // for a /clear: its reset mode
	newSessionID string // for a /clear: the session from then on
	quitAtEOF    bool   // stdin EOF ends the process without waiting for the turn

	abortC    chan struct{} // closed by abort
	abortOnce sync.Once
	done      chan struct{} // closed when run returns
	ended     bool          // set before done closes: a result was printed
	failed    bool          // set before done closes: that result was an API error

	produced strings.Builder // reply text so far; only the turn's goroutine uses it
}

// abort stops the turn as SIGINT or an interrupt request does: it ends with
// the text produced so far and an error_during_execution result.
func (t *turn) abort() {
	t.abortOnce.Do(func() { close(t.abortC) })
}

func (t *turn) run() {
	defer close(t.done)
	if t.reset != "" {
		// An interrupted hung reset prints nothing.
		t.ended = t.playReset()
		return
	}
	if t.command != "" {
		t.ended = true
		t.out.line(t.init)
		t.out.line(t.commandAssistant())
		t.out.line(t.commandResult())
		return
	}
	t.ended = true
	if !t.play() {
		if t.produced.Len() > 0 {
			t.out.line(t.assistant(true))
		}
		t.out.line(t.interruptedUser())
		t.out.line(t.abortedResult())
	}
}

// wait waits d and reports false if the turn was aborted first.
func (t *turn) wait(d time.Duration) bool {
	select {
	case <-t.abortC:
		return false
	default:
	}
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.abortC:
		return false
	case <-timer.C:
		return true
	}
}

// hang prints nothing more until the turn is aborted.
func (t *turn) hang() bool {
	<-t.abortC
	return false
}

// play prints the turn and reports false if it was aborted.
func (t *turn) play() bool {
	switch t.mode {
	case fakecli.ModeHang:
		return t.hang()
	case fakecli.ModeCloseStdout:
		t.out.close()
		return t.hang()
	}
	t.out.line(t.init)
	if t.mode == fakecli.ModeErrorResult {
		if !t.retryAPIError() {
			return false
		}
		t.out.line(t.apiErrorAssistant())
		t.out.line(t.apiErrorResult())
		t.failed = true
		return true
	}
	if t.cfg.partials {
		t.out.line(t.systemLine("status", "status", "requesting"))
	}
	switch t.mode {
	case fakecli.ModeGrandchild:
		startGrandchild()
	case fakecli.ModeRetry:
		for i := 1; i <= t.cfg.retries; i++ {
			t.out.line(t.systemLine("api_retry", "attempt", i, "max_retries", 10,
				"retry_delay_ms", 500, "error_status", 500, "error", "server_error"))
		}
	case fakecli.ModeGarbage:
		t.out.raw(fakecli.GarbageLine)
	case fakecli.ModeUnknownLines:
		t.out.line(t.systemLine("ui_invalidate", "reason", "fake"))
		t.out.line(obj("type", "brand_new_type", "payload", obj("note", "a type this library has never seen"),
			"session_id", t.sessionID, "uuid", newUUID()))
	}

	chunks := split(t.reply(), t.cfg.chunks)
	if t.cfg.partials {
		t.out.line(t.messageStart())
		t.out.line(t.streamEvent(obj("type", "content_block_start", "index", 0,
			"content_block", obj("type", "text", "text", ""))))
	}
	for i, c := range chunks {
		if i > 0 && !t.wait(t.cfg.chunkDelay) {
			return false
		}
		t.produced.WriteString(c)
		if t.cfg.partials {
			t.out.line(t.textDelta(c))
		}
		if i == 0 && !t.afterFirstChunk() {
			return false
		}
	}
	if len(chunks) == 0 && !t.afterFirstChunk() {
		return false
	}
	if t.cfg.partials {
		t.out.line(t.streamEvent(obj("type", "content_block_stop", "index", 0)))
		t.out.line(t.streamEvent(obj("type", "message_delta",
			"delta", obj("stop_reason", "end_turn", "stop_sequence", nil),
			"usage", obj("output_tokens", t.outputTokens()))))
		t.out.line(t.streamEvent(obj("type", "message_stop")))
	} else if !t.wait(t.cfg.chunkDelay) {
		return false
	}
	t.out.line(t.assistant(false))
	t.out.line(t.okResult())
	return true
}

// retryAPIError retries a failed request as the real CLI does: every
// status but 400 up to CLAUDE_CODE_MAX_RETRIES times (default 10), with a
// system/api_retry line and a wait (EnvRetryDelay, doubling) before each
// attempt. It reports false if the turn was aborted while waiting.
func (t *turn) retryAPIError() bool {
	if t.cfg.apiStatus == 400 {
		return true
	}
	delay := t.cfg.retryDelay
	for i := 1; i <= t.cfg.maxRetries; i++ {
		t.out.line(t.systemLine("api_retry", "attempt", i, "max_retries", t.cfg.maxRetries,
			"retry_delay_ms", delay.Milliseconds(), "error_status", t.cfg.apiStatus, "error", "authentication_failed"))
		if !t.wait(delay) {
			return false
		}
		delay *= 2
	}
	return true
}

// afterFirstChunk applies the modes that fail in the middle of a reply.
func (t *turn) afterFirstChunk() bool {
	switch t.mode {
	case fakecli.ModeCrash:
		fmt.Fprintln(os.Stderr, "panic: fake crash")
		os.Exit(2)
	case fakecli.ModeHangMid:
		return t.hang()
	}
	return true
}

// reply is the whole reply text of the turn.
func (t *turn) reply() string {
	switch {
	case t.mode == fakecli.ModeHuge:
		const letters = "abcdefghijklmnopqrstuvwxyz"
		return strings.Repeat(letters, t.cfg.hugeBytes/len(letters)+1)[:t.cfg.hugeBytes]
	case t.cfg.reply != nil:
		return *t.cfg.reply
	case t.cfg.echoHistory:
		return "echo: " + strings.Join(t.history, " | ")
	}
	return "echo: " + t.text
}

// split cuts s into at most n pieces of about the same number of runes,
// none empty.
func split(s string, n int) []string {
	r := []rune(s)
	var out []string
	for i := 0; i < n; i++ {
		lo, hi := len(r)*i/n, len(r)*(i+1)/n
		if hi > lo {
			out = append(out, string(r[lo:hi]))
		}
	}
	return out
}
