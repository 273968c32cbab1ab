package main

import (
	"encoding/json"
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

	mcp          *mcp       // the SDK MCP servers the tools are called on
	calls        []toolCall // the tools the model calls, in order
	finalMsgID   string     // with calls: the message id of the reply after them
	toolSummary  string     // with calls: the reply, one line per call
	toolsAborted bool       // set when an interrupt came while tools ran

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
		// As the real CLI's Bash tool with run_in_background: the tool
		// call, the process it leaves running, and the tool's result.
		call := toolCall{id: "toolu_fake_background", name: "Bash",
			input: json.RawMessage(`{"command":"sleep infinity","run_in_background":true}`)}
		t.calls = []toolCall{call}
		t.out.line(t.toolUseAssistant())
		t.calls = nil
		startGrandchild()
		t.out.line(t.toolResultUser(call, "Command running in background", false))
	case fakecli.ModeGrandchildUnasked:
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
	if len(t.calls) > 0 && !t.playTools() {
		return false
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
	case len(t.calls) > 0:
		return t.toolSummary
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

// playTools prints the message that calls the turn's tools, then calls
// them one after another, each when the one before has its answer, and
// prints each result as it comes. It leaves the reply about the results
// in toolSummary and the id of the message that gives it in msgID. It
// reports false if the turn was aborted; the calls left without a result
// then get one that says so.
func (t *turn) playTools() bool {
	if t.cfg.partials {
		t.toolUseEvents()
	}
	t.out.line(t.toolUseAssistant())
	var summary []string
	for i, c := range t.calls {
		text, isError, ok := t.callTool(c)
		if !ok {
			t.toolsAborted = true
			for _, c := range t.calls[i:] {
				t.out.line(t.toolResultUser(c, fakecli.InterruptedToolUse, true))
			}
			return false
		}
		t.out.line(t.toolResultUser(c, text, isError))
		verb := "said"
		if isError {
			verb = "failed"
		}
		summary = append(summary, fmt.Sprintf("tool %s %s: %s", t.mcp.shortToolName(c.name), verb, text))
	}
	t.toolSummary = strings.Join(summary, "\n")
	t.msgID = t.finalMsgID
	if t.cfg.partials {
		t.out.line(t.systemLine("status", "status", "requesting"))
	}
	return true
}

// callTool calls one tool on its SDK MCP server with a tools/call request
// and returns the text of its result and whether that is an error; ok is
// false if the turn was aborted first. A tool that no server listed is
// not called: its result is the error fakecli.NoSuchTool gives.
func (t *turn) callTool(c toolCall) (text string, isError, ok bool) {
	select {
	case <-t.abortC:
		return "", false, false
	default:
	}
	srv, tool, found := t.mcp.lookup(c.name)
	if !found {
		return fakecli.NoSuchTool(c.name), true, true
	}
	id, answer := t.mcp.request(srv, true, func(id int) object {
		return obj("method", "tools/call", "params", obj("name", tool, "arguments", c.input),
			"jsonrpc", "2.0", "id", id)
	})
	var r controlReply
	select {
	case r = <-answer:
	case <-t.abortC:
		t.mcp.cancel(id)
		return "", false, false
	}
	result, errText := r.rpc()
	if errText != "" {
		return errText, true, true
	}
	var res struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		IsError bool `json:"isError"`
	}
	if err := json.Unmarshal(result, &res); err != nil {
		return "Invalid MCP tool result: " + err.Error(), true, true
	}
	var texts []string
	for _, b := range res.Content {
		if b.Type == "text" {
			texts = append(texts, b.Text)
		}
	}
	return strings.Join(texts, "\n"), res.IsError, true
}
