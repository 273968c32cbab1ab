package claudepool

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Tool is a tool written in Go that the model may call during a chat
// (Config.GoTools). The pool serves it to every process as an in-process
// MCP server over the CLI's control protocol: the CLI asks the pool, and
// the pool runs Handler, while the turn waits.
type Tool struct {
	// Name is the tool's name as the caller and the model know it:
	// letters, digits, "_" and "-", up to 64 characters. The CLI calls it
	// mcp__claudepool__<Name>; events report it by Name.
	Name string
	// Description tells the model what the tool does and when to use it.
	Description string
	// InputSchema is the JSON schema (an object) of the tool's input. nil
	// means any object.
	InputSchema json.RawMessage
	// Handler runs a call with the model's input, and returns the text
	// the model receives. An error is returned to the model as a failed
	// call with the error's text. ctx ends when the chat does.
	//
	// A tool without a Handler is the caller's to answer, as with the
	// Messages API: a chat whose model calls it ends with a Result whose
	// ToolCalls list the calls (StopReason "tool_use"), while its process
	// holds the turn, paused; the request that continues the chat with
	// the results (ToolResultBlocks) resumes that same turn on that
	// process. When that process is gone, the conversation goes to another
	// with the calls and results rendered into its transcript.
	Handler func(ctx context.Context, input json.RawMessage) (string, error)
}

// toolServer is the name of the pool's in-process MCP server.
const toolServer = "claudepool"

// toolPrefix is how the CLI names the pool's tools.
const toolPrefix = "mcp__" + toolServer + "__"

var toolName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// validateTools reports a malformed Config.GoTools.
func validateTools(tools []Tool) error {
	seen := map[string]bool{}
	for i, t := range tools {
		switch {
		case !toolName.MatchString(t.Name):
			return fmt.Errorf("claudepool: GoTools[%d]: name %q is not 1 to 64 letters, digits, _ or -", i, t.Name)
		case seen[t.Name]:
			return fmt.Errorf("claudepool: GoTools[%d]: two tools are named %q", i, t.Name)
		}
		if t.InputSchema != nil {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(t.InputSchema, &m); err != nil {
				return fmt.Errorf("claudepool: GoTools[%d] (%s): InputSchema is not a JSON object: %w", i, t.Name, err)
			}
		}
		seen[t.Name] = true
	}
	return nil
}

// tools serves Config.GoTools to the processes.
type tools struct {
	byName map[string]*Tool
	list   json.RawMessage // the answer to tools/list
}

func newTools(list []Tool) *tools {
	if len(list) == 0 {
		return nil
	}
	ts := &tools{byName: make(map[string]*Tool, len(list))}
	type listed struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		InputSchema json.RawMessage `json:"inputSchema"`
	}
	var l []listed
	for i := range list {
		t := &list[i]
		ts.byName[t.Name] = t
		schema := t.InputSchema
		if schema == nil {
			schema = json.RawMessage(`{"type":"object"}`)
		}
		l = append(l, listed{t.Name, t.Description, schema})
	}
	ts.list = mustMarshal(map[string]any{"tools": l})
	return ts
}

// cliRequest is a control request the CLI sends the pool.
type cliRequest struct {
	RequestID string          `json:"request_id"`
	raw       json.RawMessage // the request object whole
	Request   struct {
		Subtype    string          `json:"subtype"`
		ServerName string          `json:"server_name"`
		Message    json.RawMessage `json:"message"`
	} `json:"request"`
}

// cliRequestOf returns the control request an event carries, when it is
// one: the CLI's line of type control_request, which parseLine delivers
// as EventUnknown.
func cliRequestOf(ev Event) (*cliRequest, bool) {
	if ev.Type != EventUnknown || ev.Subtype != "control_request" {
		return nil, false
	}
	var r cliRequest
	if json.Unmarshal(ev.Raw, &r) != nil || r.RequestID == "" {
		return nil, false
	}
	var whole struct {
		Request json.RawMessage `json:"request"`
	}
	_ = json.Unmarshal(ev.Raw, &whole)
	r.raw = whole.Request
	return &r, true
}

// jsonRPC is an MCP message.
type jsonRPC struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// answerCLI answers a control request of the CLI: the pool's MCP server
// for mcp_message, an error for anything else. Tool calls run in ctx.
// mcpReady reports a tools/list answered: the CLI has the pool's tools.
func (p *Process) answerCLI(ctx context.Context, r *cliRequest, ask permissionFunc) (mcpReady bool, err error) {
	var resp map[string]any
	switch {
	case r.Request.Subtype == "can_use_tool":
		resp = p.askPermission(ctx, r.raw, ask)
	case r.Request.Subtype == "mcp_message" && r.Request.ServerName == toolServer && p.set.tools != nil:
		var m jsonRPC
		if err := json.Unmarshal(r.Request.Message, &m); err != nil {
			return false, p.controlError(r.RequestID, "malformed MCP message")
		}
		result, rpcErr := p.set.tools.serve(ctx, &m)
		if rpcErr != nil {
			resp = mcpResponse(m.ID, "error", map[string]any{"code": -32601, "message": rpcErr.Error()})
		} else {
			resp = mcpResponse(m.ID, "result", result)
		}
		mcpReady = m.Method == "tools/list"
	default:
		return false, p.controlError(r.RequestID, "claudepool does not serve "+r.Request.Subtype)
	}
	return mcpReady, p.controlSuccess(r.RequestID, resp)
}

// mcpResponse is the answer to an mcp_message: the JSON-RPC reply to the
// message rpcID (nil for a notification), with its result or error.
func mcpResponse(rpcID json.RawMessage, kind string, v any) map[string]any {
	reply := map[string]any{"jsonrpc": "2.0", kind: v}
	if rpcID != nil {
		reply["id"] = rpcID
	}
	return map[string]any{"mcp_response": reply}
}

// controlSuccess answers the CLI's control request id with resp.
func (p *Process) controlSuccess(id string, resp any) error {
	return p.WriteLine(mustMarshal(map[string]any{"type": "control_response",
		"response": map[string]any{"subtype": "success", "request_id": id, "response": resp}}))
}

// controlError answers a control request of the CLI with an error.
func (p *Process) controlError(id, msg string) error {
	return p.WriteLine(mustMarshal(map[string]any{"type": "control_response",
		"response": map[string]any{"subtype": "error", "request_id": id, "error": msg}}))
}

// serve answers one MCP request.
func (ts *tools) serve(ctx context.Context, m *jsonRPC) (any, error) {
	switch m.Method {
	case "initialize":
		var params struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		_ = json.Unmarshal(m.Params, &params)
		if params.ProtocolVersion == "" {
			params.ProtocolVersion = "2025-06-18"
		}
		return map[string]any{"protocolVersion": params.ProtocolVersion, "capabilities": map[string]any{"tools": map[string]any{}},
			"serverInfo": map[string]any{"name": toolServer, "version": "1"}}, nil
	case "tools/list":
		return ts.list, nil
	case "tools/call":
		var params struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if err := json.Unmarshal(m.Params, &params); err != nil {
			return toolResult("claudepool: malformed tool call: "+err.Error(), true), nil
		}
		t := ts.byName[params.Name]
		if t == nil {
			return toolResult("claudepool: no tool named "+params.Name, true), nil
		}
		if t.Handler == nil {
			// Only a chat's stream passes the caller's calls on.
			return toolResult("claudepool: the caller answers "+params.Name+", and no chat is running", true), nil
		}
		input := params.Arguments
		if input == nil {
			input = json.RawMessage(`{}`)
		}
		text, err := runTool(ctx, t, input)
		if err != nil {
			return toolResult(err.Error(), true), nil
		}
		return toolResult(text, false), nil
	case "notifications/initialized", "ping":
		return map[string]any{}, nil
	}
	if strings.HasPrefix(m.Method, "notifications/") {
		return map[string]any{}, nil
	}
	return nil, fmt.Errorf("method %s not found", m.Method)
}

// runTool runs a tool's handler; a panic is the call's error.
func runTool(ctx context.Context, t *Tool, input json.RawMessage) (text string, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("claudepool: tool %s panicked: %v", t.Name, v)
		}
	}()
	return t.Handler(ctx, input)
}

func toolResult(text string, isError bool) map[string]any {
	return map[string]any{"content": []map[string]any{{"type": "text", "text": text}}, "isError": isError}
}

// callerNames renames the pool's tools in an assistant event's tool_use
// blocks from the CLI's names (mcp__claudepool__X) to the caller's (X).
func callerNames(ev *Event) {
	if ev.Type == EventPartial && ev.Partial != nil && ev.Partial.Type == "content_block_start" {
		// A tool_use block begins: {"type":"tool_use","id":...,"name":...}.
		ev.Partial.Event = bytes.Replace(ev.Partial.Event, []byte(`"name":"`+toolPrefix), []byte(`"name":"`), 1)
		return
	}
	if ev.Type != EventAssistant || ev.Message == nil {
		return
	}
	for i, b := range ev.Message.Content {
		if b.Type == "tool_use" && strings.HasPrefix(b.Name, toolPrefix) {
			ev.Message.Content[i].Name = strings.TrimPrefix(b.Name, toolPrefix)
		}
	}
}

// PermissionRequest is the CLI's question whether a tool call may run
// (see Config.CanUseTool).
type PermissionRequest struct {
	// Tool is the tool's name: a built-in tool's ("Bash", "Write", ...),
	// an MCP tool's as the CLI names it (mcp__server__tool), or for the
	// pool's Go tools their Name.
	Tool string
	// Input is the input the model gave the call.
	Input json.RawMessage
	// ToolUseID is the id of the call's tool_use block.
	ToolUseID string
}

// Permission is the answer to a PermissionRequest. The zero value allows
// the call as it is.
type Permission struct {
	// Deny refuses the call; the model receives Message as the call's
	// failure and goes on, unless Interrupt ends the turn.
	Deny      bool
	Message   string
	Interrupt bool
	// Input, when set, replaces the call's input (an allowed call only).
	Input json.RawMessage
}

// permissionFunc is the permission callback of a chat.
type permissionFunc func(context.Context, PermissionRequest) Permission

// askPermission answers a can_use_tool request with the chat's callback
// (nil: deny).
func (p *Process) askPermission(ctx context.Context, raw json.RawMessage, ask permissionFunc) map[string]any {
	var q struct {
		ToolName  string          `json:"tool_name"`
		Input     json.RawMessage `json:"input"`
		ToolUseID string          `json:"tool_use_id"`
	}
	_ = json.Unmarshal(raw, &q)
	if ask == nil {
		return map[string]any{"behavior": "deny", "message": "claudepool: no permission callback (Config.CanUseTool) allows " + q.ToolName}
	}
	pr := PermissionRequest{Tool: strings.TrimPrefix(q.ToolName, toolPrefix), Input: q.Input, ToolUseID: q.ToolUseID}
	perm := callPermission(ctx, ask, pr)
	if perm.Deny {
		return map[string]any{"behavior": "deny", "message": perm.Message, "interrupt": perm.Interrupt}
	}
	input := perm.Input
	if input == nil {
		input = q.Input
	}
	if input == nil {
		input = json.RawMessage(`{}`)
	}
	return map[string]any{"behavior": "allow", "updatedInput": input}
}

// callPermission runs a permission callback; a panic denies the call.
func callPermission(ctx context.Context, ask permissionFunc, pr PermissionRequest) (perm Permission) {
	defer func() {
		if v := recover(); v != nil {
			perm = Permission{Deny: true, Message: fmt.Sprintf("claudepool: the permission callback panicked: %v", v)}
		}
	}()
	return ask(ctx, pr)
}

// callerTool reports whether r is a call of one of the caller's tools (a
// Tool without a Handler), and returns its name and input.
func (ts *tools) callerTool(r *cliRequest) (name string, rpcID, input json.RawMessage, ok bool) {
	if ts == nil || r.Request.Subtype != "mcp_message" || r.Request.ServerName != toolServer {
		return "", nil, nil, false
	}
	var m jsonRPC
	if json.Unmarshal(r.Request.Message, &m) != nil || m.Method != "tools/call" {
		return "", nil, nil, false
	}
	var params struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if json.Unmarshal(m.Params, &params) != nil {
		return "", nil, nil, false
	}
	t := ts.byName[params.Name]
	if t == nil || t.Handler != nil {
		return "", nil, nil, false
	}
	if params.Arguments == nil {
		params.Arguments = json.RawMessage(`{}`)
	}
	return params.Name, m.ID, params.Arguments, true
}

// pausedTurn is a turn that waits for the caller's results of its tool
// calls: the process's output is left unread until a chat resumes it, or
// its reset ends it.
type pausedTurn struct {
	// pending are the calls the CLI asked for and the pool has not
	// answered, in order.
	pending []pendingCall
	// uses are the turn's calls of the caller's tools, from its last
	// assistant message, that no pending call has taken yet: calls the
	// CLI will ask for once the ones before are answered.
	uses []ToolCall
}

// pendingCall is a tools/call of the caller's tool the CLI waits for.
type pendingCall struct {
	requestID string
	rpcID     json.RawMessage
	call      ToolCall
}

// answerCall answers a pending call with the caller's result.
func (p *Process) answerCall(c pendingCall, text string, isError bool) error {
	return p.controlSuccess(c.requestID, mcpResponse(c.rpcID, "result", toolResult(text, isError)))
}

// endPaused ends a turn paused for the caller's tools, for a reset: the
// CLI is asked to stop the turn, each call it waits for fails, and the
// turn's output is read up to its result.
func (p *Process) endPaused(ctx context.Context) error {
	pt := p.paused
	if pt == nil {
		return nil
	}
	p.paused = nil
	if err := p.interrupt(); err != nil {
		return p.exitedBefore("the end of a paused turn", err)
	}
	for _, c := range pt.pending {
		if err := p.answerCall(c, "claudepool: the chat ended before its caller answered "+c.call.Name, true); err != nil {
			return p.exitedBefore("the end of a paused turn", err)
		}
	}
	defer p.exchange(ctx)()
	for {
		line, err := p.ReadLine()
		if err != nil {
			return p.readErr(ctx, "the end of a paused turn", err)
		}
		ev, _, perr := parseLine(line)
		if perr != nil {
			p.set.malformed.Add(1)
			continue
		}
		if err := p.answerIfAsked(ctx, ev); err != nil {
			return p.exitedBefore("the end of a paused turn", err)
		}
		if ev.Type == EventResult || (ev.Type == EventUnknown && ev.Subtype == "result") {
			return nil
		}
	}
}

// toolResults returns the tool results a message carries, by call id, and
// whether they are all it carries.
func toolResults(m Message) (only bool, results map[string]Block) {
	only = strings.TrimSpace(m.Content) == "" && len(m.Blocks) > 0
	for _, b := range m.Blocks {
		if b.Type != BlockToolResult {
			only = false
			continue
		}
		if results == nil {
			results = make(map[string]Block)
		}
		results[b.ToolUseID] = b
	}
	return only && results != nil, results
}

// noteCallerUses records the calls of the caller's tools in an assistant
// message: the CLI asks for them one by one.
func (s *Stream) noteCallerUses(p *pooled, ev Event) {
	if p.set.tools == nil || ev.Message == nil {
		return
	}
	for _, b := range ev.Message.Content {
		if b.Type != "tool_use" {
			continue
		}
		if t := p.set.tools.byName[b.Name]; t != nil && t.Handler == nil {
			s.callerUses = append(s.callerUses, ToolCall{ID: b.ID, Name: b.Name, Input: b.Input})
		}
	}
}

// callerCall takes the CLI's request for a call of the caller's tool: it
// answers at once with the result the chat's request brought, or keeps it
// pending and pauses the turn.
func (s *Stream) callerCall(p *pooled, requestID string, rpcID json.RawMessage, name string, input json.RawMessage) {
	call := ToolCall{Name: name, Input: input}
	for i, u := range s.callerUses {
		if u.Name == name {
			call = u
			s.callerUses = append(s.callerUses[:i:i], s.callerUses[i+1:]...)
			break
		}
	}
	c := pendingCall{requestID: requestID, rpcID: rpcID, call: call}
	if res, ok := s.req.results[call.ID]; ok && call.ID != "" {
		if err := p.answerCall(c, res.Text, res.IsError); err != nil {
			s.pool.log.Debug("claudepool: answer a tool call", "pid", p.pid, "err", err)
		}
		return
	}
	s.pending = append(s.pending, c)
	s.pauseNow = true
}

// pauseTurn ends the chat at a turn that waits for the caller's tool
// results: the process keeps the turn (pausedTurn), and the chat's result
// lists the calls to answer. The CLI reports the turn's usage with the
// result of the chat that finishes it.
func (s *Stream) pauseTurn(p *pooled) Event {
	p.paused = &pausedTurn{pending: s.pending, uses: s.callerUses}
	var calls []ToolCall
	for _, c := range s.pending {
		calls = append(calls, c.call)
	}
	calls = append(calls, s.callerUses...)
	r := &Result{Subtype: SubtypeToolUse, StopReason: "tool_use", Text: s.reply.String(),
		Thinking: s.thinking.String(), SessionID: p.life.session, ToolCalls: calls}
	return Event{Type: EventResult, SessionID: r.SessionID, Result: r}
}

// resume answers the calls a paused turn waits for with the results the
// chat's request brought; the turn then goes on, and the chat reads it.
func (s *Stream) resume(p *pooled) error {
	pt := p.paused
	p.paused = nil
	s.callerUses = pt.uses
	s.mu.Lock()
	s.sawInit = true // a resumed turn prints no init line
	s.mu.Unlock()
	for _, c := range pt.pending {
		text, isError := "claudepool: the request carries no result for this call", true
		if res, ok := s.req.results[c.call.ID]; ok {
			text, isError = res.Text, res.IsError
		}
		if err := p.answerCall(c, text, isError); err != nil {
			return p.exitedBefore("the tool results", err)
		}
	}
	return nil
}

// knowsTools reports a request that names a tool the pool does not offer.
func (p *Pool) knowsTools(r *Request) error {
	names := slices.Clone(r.GoTools)
	switch r.ToolChoice {
	case "", "auto", "any", "none":
	default:
		names = append(names, r.ToolChoice)
	}
	for _, n := range names {
		if p.set.tools == nil || p.set.tools.byName[n] == nil {
			return fmt.Errorf("%w: %q is not one of the pool's GoTools", ErrInvalidRequest, n)
		}
	}
	return nil
}

// applyTools keeps, of the pool's tools in a call, those the chat offers,
// and sets its tool_choice, both under the CLI's names of the tools.
func applyTools(obj *jsonObject, r *Request) {
	if r.GoTools != nil {
		var tools []json.RawMessage
		if json.Unmarshal(obj.get("tools"), &tools) == nil {
			kept := tools[:0]
			for _, t := range tools {
				var d struct {
					Name string `json:"name"`
				}
				_ = json.Unmarshal(t, &d)
				name, ours := strings.CutPrefix(d.Name, toolPrefix)
				if ours && !slices.Contains(r.GoTools, name) {
					continue
				}
				kept = append(kept, t)
			}
			obj.set("tools", joinRaw(kept))
		}
	}
	if r.ToolChoice != "" && r.ToolChoice != "auto" && r.ToolChoice != "none" && r.Thinking == nil {
		// The API refuses extended thinking with a forced tool choice.
		dropThinking(obj)
	}
	switch r.ToolChoice {
	case "":
	case "auto", "any", "none":
		obj.set("tool_choice", mustMarshal(map[string]string{"type": r.ToolChoice}))
	default:
		obj.set("tool_choice", mustMarshal(map[string]string{"type": "tool", "name": toolPrefix + r.ToolChoice}))
	}
}
