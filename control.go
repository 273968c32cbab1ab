package claudepool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// The CLI's stdin protocol: user lines, control requests (each answered
// by a control_response line on stdout), and the /clear exchange that
// resets a conversation.

// SystemPrompt is a system prompt setting, with the meaning of
// Request.System and Request.AppendSystem: System replaces the CLI's own
// prompt, AppendSystem is added to it (or to System), and both empty
// give an empty prompt.
type SystemPrompt struct {
	System       string
	AppendSystem string
}

// initialize returns the initialize control request that applies sp.
func (sp SystemPrompt) initialize() map[string]any {
	req := map[string]any{"subtype": "initialize"}
	switch {
	case sp.System != "":
		req["systemPrompt"] = []string{sp.System}
	case sp.AppendSystem == "":
		// Only the first initialize of a process sets its system prompt,
		// so the empty prompt must be chosen here, explicitly.
		req["systemPrompt"] = []string{""}
	}
	if sp.AppendSystem != "" {
		req["appendSystemPrompt"] = sp.AppendSystem
	}
	return req
}

// userLine is the stream-json input line carrying the user's message.
//
// TextNotTyped marks the message as text that no person typed at the CLI's
// prompt: the CLI (2.1.330) then runs no slash command for it, and sends
// it to the API as it is. Without it, a message whose text starts with "/"
// (after white space) runs as a command: "/model X" switches the process's
// model, "/config" writes the settings file, "/compact" or "/init" run
// prompts of their own, and the API never sees the text. Every chat's line
// carries it; the pool's own /clear is the one line without it.
type userLine struct {
	Type            string      `json:"type"`
	SessionID       string      `json:"session_id"`
	Message         userMessage `json:"message"`
	ParentToolUseID *string     `json:"parent_tool_use_id"`
	TextNotTyped    bool        `json:"text_not_typed,omitempty"`
}

type userMessage struct {
	Role    string      `json:"role"`
	Content []lineBlock `json:"content"`
}

// controlRequest is a control line on the CLI's stdin:
// {"type":"control_request","request_id":"<id>","request":{"subtype":...}}.
type controlRequest struct {
	Type      string         `json:"type"`
	RequestID string         `json:"request_id"`
	Request   map[string]any `json:"request"`
}

// errResetUnconfirmed is wrapped when a reset's answer lacks its proof.
var errResetUnconfirmed = errors.New("claudepool: reset not confirmed")

// clearLine is the user line that makes the CLI reset its conversation.
var clearLine = mustMarshal(userLine{
	Type:    "user",
	Message: userMessage{Role: "user", Content: []lineBlock{{Type: "text", Text: "/clear"}}},
})

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("claudepool: " + err.Error())
	}
	return b
}

// exchange bounds the reads of one request-and-answer exchange with the
// process by ReadyTimeout, and cuts them short when ctx ends. The
// returned func ends the bound.
func (p *Process) exchange(ctx context.Context) (end func()) {
	p.setReadDeadline(time.Now().Add(p.set.readyTimeout))
	stop := context.AfterFunc(ctx, func() { p.setReadDeadline(time.Now()) })
	return func() {
		if stop() {
			p.setReadDeadline(time.Time{})
		}
	}
}

// readErr describes a failed read during an exchange named what.
func (p *Process) readErr(ctx context.Context, what string, err error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
		return fmt.Errorf("claudepool: %s of process %d: %w", what, p.pid, ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: process %d did not answer %s within %v", ErrNotReady, p.pid, what, p.set.readyTimeout)
	case errors.Is(err, io.EOF):
		return p.exitedBefore(what, nil)
	}
	return fmt.Errorf("claudepool: read answer to %s: %w", what, err)
}

// control sends a control request and waits for its control_response,
// within ReadyTimeout and until ctx ends. Lines that arrive before the
// response are skipped: nothing else is expected between turns. It
// returns the response's payload, or an error that wraps ErrNotReady on a
// timeout, ctx.Err() when ctx ended, and describes the exit when the
// process ends first.
func (p *Process) control(ctx context.Context, request map[string]any) (json.RawMessage, error) {
	subtype, _ := request["subtype"].(string)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("claudepool: %s: %w", subtype, err)
	}
	id, err := p.sendControl(request)
	if err != nil {
		return nil, err
	}
	defer p.exchange(ctx)()
	for {
		out, err := p.ReadLine()
		if err != nil {
			return nil, p.readErr(ctx, subtype, err)
		}
		ev, ctrl, perr := parseLine(out)
		if perr != nil {
			p.set.malformed.Add(1)
			continue
		}
		if ctrl == nil {
			if err := p.answerIfAsked(ctx, ev); err != nil {
				return nil, p.exitedBefore(subtype, err)
			}
			continue
		}
		if ctrl.RequestID != id {
			continue
		}
		if ctrl.Subtype != "success" {
			return nil, &controlError{subtype: subtype, msg: ctrl.Error, code: ctrl.ErrorCode, model: ctrl.Model}
		}
		return ctrl.Response, nil
	}
}

// sendControl writes a control request without waiting for its answer,
// and returns its id: for a request made while a turn runs, whose answer
// the turn's reader skips.
func (p *Process) sendControl(request map[string]any) (id string, err error) {
	subtype, _ := request["subtype"].(string)
	id = "cp_" + strconv.FormatUint(p.set.ids.Add(1), 36)
	line, err := json.Marshal(controlRequest{Type: "control_request", RequestID: id, Request: request})
	if err != nil {
		return "", fmt.Errorf("claudepool: encode %s request: %w", subtype, err)
	}
	if err := p.WriteLine(line); err != nil {
		return "", p.exitedBefore(subtype, err)
	}
	return id, nil
}

// controlError is a control request the CLI answered with an error.
type controlError struct {
	subtype, msg string
	// code and model come with set_model's refusal of a model: why, and
	// the model the process keeps.
	code, model string
}

func (e *controlError) Error() string {
	return fmt.Sprintf("claudepool: %s request failed: %s", e.subtype, e.msg)
}

// modelRefusal reports whether err is set_model's refusal of a model: the
// CLI names a reason and the model it keeps, and stays usable (2.1.330:
// "Model 'x' not found" with error_code "not_found" after the API
// answered 404 to its confirmation request).
func modelRefusal(err error) (*controlError, bool) {
	var ce *controlError
	if errors.As(err, &ce) && ce.subtype == "set_model" && ce.code != "" && ce.model != "" {
		return ce, true
	}
	return nil, false
}

// refusalStatus is the HTTP status of the API answer behind a refusal
// code of set_model, 0 when the code names none.
func refusalStatus(code string) int {
	switch code {
	case "not_found":
		return 404
	case "auth_failed":
		return 401
	case "restricted_by_org", "unavailable_for_account", "not_offered":
		return 403
	}
	return 0
}

// exitedBefore describes a process that ended before answering what. It
// waits (bounded by StopGrace) for the exit status so that the error can
// carry the exit code and stderr.
func (p *Process) exitedBefore(what string, cause error) error {
	t := time.NewTimer(p.set.stopGrace)
	defer t.Stop()
	select {
	case <-p.done:
		return fmt.Errorf("claudepool: process %d exited before answering %s: %w", p.pid, what, p.exitWithoutResult())
	case <-t.C:
		if cause != nil {
			return fmt.Errorf("claudepool: process %d closed its output before answering %s: %w", p.pid, what, cause)
		}
		return fmt.Errorf("claudepool: process %d closed its output before answering %s", p.pid, what)
	}
}

// probe is the readiness check of a warm process: a harmless mcp_status
// request. It is not initialize, because only the first initialize of a
// process sets its system prompt, and that belongs to the first chat
// unless the pool has a prompt of its own.
func (p *Process) probe(ctx context.Context) error {
	if _, err := p.control(ctx, map[string]any{"subtype": "mcp_status"}); err != nil {
		return err
	}
	return p.awaitTools(ctx)
}

// awaitTools answers the CLI's MCP handshake with the pool's tool server
// until it has listed the tools: the CLI starts it on its own after
// start-up, and waits for each answer.
func (p *Process) awaitTools(ctx context.Context) error {
	if p.set.tools == nil || p.mcpReady {
		return nil
	}
	defer p.exchange(ctx)()
	for !p.mcpReady {
		out, err := p.ReadLine()
		if err != nil {
			return p.readErr(ctx, "the tools handshake", err)
		}
		ev, _, perr := parseLine(out)
		if perr != nil {
			p.set.malformed.Add(1)
			continue
		}
		if err := p.answerIfAsked(ctx, ev); err != nil {
			return p.exitedBefore("the tools handshake", err)
		}
	}
	return nil
}

// answerIfAsked answers ev when it is a control request of the CLI.
func (p *Process) answerIfAsked(ctx context.Context, ev Event) error {
	r, ok := cliRequestOf(ev)
	if !ok {
		return nil
	}
	ready, err := p.answerCLI(ctx, r, nil)
	if ready {
		p.mcpReady = true
	}
	return err
}

// initialize gives the process its system prompt; only the first
// initialize of a process does.
func (p *Process) initialize(ctx context.Context, sp SystemPrompt) error {
	_, err := p.control(ctx, sp.initialize())
	return err
}

// setModel switches the model for the next turns and returns the model
// id the CLI resolved it to ("" when its answer names none).
func (p *Process) setModel(ctx context.Context, model string) (string, error) {
	resp, err := p.control(ctx, map[string]any{"subtype": "set_model", "model": model})
	if err != nil {
		return "", err
	}
	var r struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(resp, &r)
	return r.Model, nil
}

// interrupt asks the CLI to end the turn in flight; the turn then ends
// with an error_during_execution result and the process stays usable.
// The answer is left to the turn's reader, which skips it.
func (p *Process) interrupt() error {
	_, err := p.sendControl(map[string]any{"subtype": "interrupt"})
	return err
}

// clearConversation resets the process's conversation with the CLI's
// /clear and confirms it: a conversation_reset line, then a system/init
// line with a session id other than the old conversation's (session),
// then the reset's result. A line that is not JSON fails the reset too: a
// process that prints garbage is not trusted with the next chat. It
// returns the new conversation's session id and the model its system/init
// names.
func (p *Process) clearConversation(ctx context.Context, session string) (newSession, model string, err error) {
	if err := p.endPaused(ctx); err != nil {
		return "", "", fmt.Errorf("%w: %w", errResetUnconfirmed, err)
	}
	if err := p.WriteLine(clearLine); err != nil {
		return "", "", p.exitedBefore("/clear", err)
	}
	defer p.exchange(ctx)()
	sawReset := false
	for {
		line, err := p.ReadLine()
		if err != nil {
			return "", "", p.readErr(ctx, "/clear", err)
		}
		ev, _, perr := parseLine(line)
		if perr != nil {
			p.set.malformed.Add(1)
			return "", "", fmt.Errorf("%w: process %d printed a malformed line: %w", errResetUnconfirmed, p.pid, perr)
		}
		if err := p.answerIfAsked(ctx, ev); err != nil {
			return "", "", p.exitedBefore("/clear", err)
		}
		switch {
		case ev.Type == EventConversationReset:
			sawReset = true
		case ev.Type == EventInit && sawReset:
			newSession = ev.SessionID
			if ev.Init != nil {
				model = ev.Init.Model
			}
		case ev.Type == EventResult || (ev.Type == EventUnknown && ev.Subtype == "result"):
			switch {
			case !sawReset:
				return "", "", fmt.Errorf("%w: process %d answered /clear without conversation_reset", errResetUnconfirmed, p.pid)
			case newSession == "" || newSession == session:
				return "", "", fmt.Errorf("%w: process %d kept its session %q", errResetUnconfirmed, p.pid, session)
			case ev.Result == nil || ev.Result.IsError:
				return "", "", fmt.Errorf("%w: process %d reported an error for /clear", errResetUnconfirmed, p.pid)
			}
			return newSession, model, nil
		}
	}
}

// encodeUserLine encodes the stream-json user line carrying text, as data
// the CLI never runs as a command.
func encodeUserLine(text string) ([]byte, error) {
	return encodeUserBlocks([]lineBlock{{Type: "text", Text: text}})
}

// encodeUserBlocks encodes the stream-json user line carrying content
// blocks, as data the CLI never runs as a command.
func encodeUserBlocks(content []lineBlock) ([]byte, error) {
	line, err := json.Marshal(userLine{
		Type:         "user",
		Message:      userMessage{Role: "user", Content: content},
		TextNotTyped: true,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	return line, nil
}
