package main

import (
	"os"
	"slices"
	"time"
)

// The builders below make lines shaped like those of the real CLI (2.1.330),
// with their keys in the same order and the fields a client reads.

// initLine is the system/init line printed at the start of every turn.
// fake_system_prompt and fake_append_system_prompt, absent from the real
// line, show which system prompt the turn would send, and
// fake_allowed_tools the tools of --allowedTools.
func (s *session) initLine() object {
	cwd, _ := os.Getwd()
	mcpTools, mcpServers := s.mcp.initFields()
	tools := append(slices.Clone(s.cfg.tools), mcpTools...)
	o := obj("type", "system", "subtype", "init", "cwd", cwd, "session_id", s.sessionID,
		"tools", tools, "mcp_servers", mcpServers, "model", s.model,
		"permissionMode", "default",
		"slash_commands", []string{"clear", "compact", "config", "context", "cost", "init", "model", "review"},
		"apiKeySource", "ANTHROPIC_API_KEY", "claude_code_version", "2.1.330",
		"output_style", "default", "agents", []string{"general-purpose"},
		"skills", []any{}, "plugins", []any{},
		"uuid", newUUID(), "original_cwd", cwd, "additional_directories", []any{},
		"fast_mode_state", "off")
	if s.systemPrompt != nil {
		o = append(o, field{"fake_system_prompt", s.systemPrompt})
	}
	if s.appendPrompt != nil {
		o = append(o, field{"fake_append_system_prompt", *s.appendPrompt})
	}
	if s.cfg.allowedTools != nil {
		o = append(o, field{"fake_allowed_tools", s.cfg.allowedTools})
	}
	return o
}

func (t *turn) systemLine(subtype string, kv ...any) object {
	o := obj("type", "system", "subtype", subtype)
	o = append(o, obj(kv...)...)
	return append(o, obj("session_id", t.sessionID, "uuid", newUUID())...)
}

func (t *turn) streamEvent(event object) object {
	return obj("type", "stream_event", "event", event, "session_id", t.sessionID,
		"parent_tool_use_id", nil, "uuid", newUUID(), "api_message_id", t.msgID)
}

func (t *turn) usage() object {
	return obj("input_tokens", 12001, "output_tokens", t.outputTokens(),
		"cache_creation_input_tokens", 0, "cache_read_input_tokens", 0)
}

func (t *turn) outputTokens() int {
	return max(1, t.produced.Len()/4)
}

func (t *turn) messageStart() object {
	return t.streamEvent(obj("type", "message_start", "message", obj(
		"id", t.msgID, "type", "message", "role", "assistant", "model", t.model,
		"content", []any{}, "stop_reason", nil, "stop_sequence", nil,
		"usage", obj("input_tokens", 12001, "output_tokens", 1,
			"cache_creation_input_tokens", 0, "cache_read_input_tokens", 0))))
}

func (t *turn) textDelta(text string) object {
	return t.streamEvent(obj("type", "content_block_delta", "index", 0,
		"delta", obj("type", "text_delta", "text", text)))
}

// assistant is the whole assistant message; aborted marks one cut short by
// an interrupt.
func (t *turn) assistant(aborted bool) object {
	o := obj("type", "assistant", "message", obj(
		"id", t.msgID, "type", "message", "role", "assistant", "model", t.model,
		"content", []any{obj("type", "text", "text", t.produced.String())},
		"stop_reason", nil, "stop_sequence", nil, "usage", t.usage(),
		"context_management", nil),
		"parent_tool_use_id", nil, "session_id", t.sessionID, "uuid", newUUID(),
		"timestamp", timestamp(time.Now()), "request_id", "req_fake_"+t.msgID[9:])
	if aborted {
		o = append(o, field{"aborted", true})
	}
	return o
}

// modelUsage is the per-model usage of a result.
func (t *turn) modelUsage() object {
	return obj(t.model, obj("inputTokens", 12001, "outputTokens", t.outputTokens(),
		"cacheReadInputTokens", 0, "cacheCreationInputTokens", 0, "webSearchRequests", 0,
		"costUSD", 0.048, "contextWindow", 1000000, "maxOutputTokens", 128000,
		"canonicalModel", t.model, "provider", "firstParty"))
}

// resultUsage is the usage block of a result.
func resultUsage(outputTokens int) object {
	return obj("input_tokens", 12001, "cache_creation_input_tokens", 0,
		"cache_read_input_tokens", 0, "output_tokens", outputTokens,
		"server_tool_use", obj("web_search_requests", 0, "web_fetch_requests", 0),
		"service_tier", "standard")
}

// okResult is the result of a completed turn. Like the real one, it does
// not start with "type".
func (t *turn) okResult() object {
	d := time.Since(t.start).Milliseconds()
	return obj("duration_api_ms", d, "stop_reason", "end_turn", "session_id", t.sessionID,
		"total_cost_usd", 0.048, "usage", resultUsage(t.outputTokens()),
		"modelUsage", t.modelUsage(), "permission_denials", []any{},
		"terminal_reason", "completed", "fast_mode_state", "off",
		"is_error", false, "num_turns", t.numTurns(), "subtype", "success",
		"api_error_status", nil, "result", t.produced.String(), "ttft_ms", d,
		"type", "result", "duration_ms", d, "uuid", newUUID())
}

// abortedResult is the result after an interrupt in the middle of a turn.
func (t *turn) abortedResult() object {
	return obj("duration_api_ms", 0, "stop_reason", nil, "session_id", t.sessionID,
		"total_cost_usd", 0.048, "usage", resultUsage(0),
		"modelUsage", t.modelUsage(), "permission_denials", []any{},
		"terminal_reason", t.abortReason(), "fast_mode_state", "off",
		"is_error", true, "num_turns", 2, "subtype", "error_during_execution",
		"errors", []string{"[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"},
		"type", "result", "duration_ms", time.Since(t.start).Milliseconds(), "uuid", newUUID())
}

// interruptedUser is the user line the CLI prints after an interrupt.
func (t *turn) interruptedUser() object {
	return obj("type", "user", "message", obj("role", "user", "content",
		[]any{obj("type", "text", "text", "[Request interrupted by user]")}),
		"parent_tool_use_id", nil, "session_id", t.sessionID, "uuid", newUUID(),
		"timestamp", timestamp(time.Now()))
}

// apiErrorAssistant is the synthetic assistant message of an API error.
func (t *turn) apiErrorAssistant() object {
	return obj("type", "assistant", "message", obj(
		"id", newUUID(), "container", nil, "model", "<synthetic>", "role", "assistant",
		"stop_reason", "stop_sequence", "stop_sequence", "", "type", "message",
		"usage", obj("input_tokens", 0, "output_tokens", 0,
			"cache_creation_input_tokens", 0, "cache_read_input_tokens", 0),
		"content", []any{obj("type", "text", "text", t.cfg.errorText)},
		"context_management", nil),
		"parent_tool_use_id", nil, "session_id", t.sessionID, "uuid", newUUID(),
		"timestamp", timestamp(time.Now()), "error", "authentication_failed",
		"is_api_error_message", true)
}

// apiErrorResult is the result of a turn that failed with an API error:
// is_error is true although subtype is "success".
func (t *turn) apiErrorResult() object {
	var status any
	if t.cfg.apiStatus != 0 {
		status = t.cfg.apiStatus
	}
	return obj("duration_api_ms", 0, "stop_reason", "stop_sequence", "session_id", t.sessionID,
		"total_cost_usd", 0, "usage", resultUsage(0), "modelUsage", obj(),
		"permission_denials", []any{}, "terminal_reason", "api_error",
		"fast_mode_state", "off", "is_error", true, "num_turns", 1, "subtype", "success",
		"api_error_status", status, "api_error_type", "authentication_error",
		"result", t.cfg.errorText, "type", "result",
		"duration_ms", time.Since(t.start).Milliseconds(), "uuid", newUUID())
}

// commandAssistant is the synthetic assistant message with a slash
// command's output.
func (t *turn) commandAssistant() object {
	return obj("type", "assistant", "message", obj(
		"id", newUUID(), "model", "<synthetic>", "role", "assistant",
		"stop_reason", "end_turn", "stop_sequence", nil, "type", "message",
		"usage", obj("input_tokens", 0, "output_tokens", 0,
			"cache_creation_input_tokens", 0, "cache_read_input_tokens", 0),
		"content", []any{obj("type", "text", "text", t.command)}, "context_management", nil),
		"parent_tool_use_id", nil, "session_id", t.sessionID, "uuid", newUUID())
}

// commandResult is the result of a slash command: no API request, no turn.
func (t *turn) commandResult() object {
	return obj("is_error", false, "duration_api_ms", 0, "num_turns", 0, "stop_reason", nil,
		"session_id", t.sessionID, "total_cost_usd", 0, "usage", resultUsage(0),
		"modelUsage", obj(), "permission_denials", []any{}, "fast_mode_state", "off",
		"subtype", "success", "result", t.command, "type", "result",
		"duration_ms", time.Since(t.start).Milliseconds(), "uuid", newUUID())
}

// numTurns is the number of model requests of a completed turn: two when
// the model called tools (the call, then the answer after the results).
func (t *turn) numTurns() int {
	if len(t.calls) > 0 {
		return 2
	}
	return 1
}

// abortReason is the terminal_reason of an interrupted turn.
func (t *turn) abortReason() string {
	if t.toolsAborted {
		return "aborted_tools"
	}
	return "aborted_streaming"
}

// toolUseAssistant is the assistant message that calls the turn's tools,
// one tool_use block per call.
func (t *turn) toolUseAssistant() object {
	blocks := make([]any, len(t.calls))
	for i, c := range t.calls {
		blocks[i] = obj("type", "tool_use", "id", c.id, "name", c.name, "input", c.input)
	}
	return obj("type", "assistant", "message", obj(
		"id", t.msgID, "type", "message", "role", "assistant", "model", t.model,
		"content", blocks, "stop_reason", "tool_use", "stop_sequence", nil,
		"usage", t.toolUseUsage(), "context_management", nil),
		"parent_tool_use_id", nil, "session_id", t.sessionID, "uuid", newUUID(),
		"timestamp", timestamp(time.Now()), "request_id", "req_fake_"+t.msgID[9:])
}

// toolUseUsage is the usage of the tool_use message.
func (t *turn) toolUseUsage() object {
	return obj("input_tokens", 12001, "output_tokens", 10*len(t.calls),
		"cache_creation_input_tokens", 0, "cache_read_input_tokens", 0)
}

// toolUseEvents prints the stream events of the tool_use message.
func (t *turn) toolUseEvents() {
	t.out.line(t.messageStart())
	for i, c := range t.calls {
		t.out.line(t.streamEvent(obj("type", "content_block_start", "index", i,
			"content_block", obj("type", "tool_use", "id", c.id, "name", c.name, "input", obj()))))
		t.out.line(t.streamEvent(obj("type", "content_block_delta", "index", i,
			"delta", obj("type", "input_json_delta", "partial_json", string(c.input)))))
		t.out.line(t.streamEvent(obj("type", "content_block_stop", "index", i)))
	}
	t.out.line(t.streamEvent(obj("type", "message_delta",
		"delta", obj("stop_reason", "tool_use", "stop_sequence", nil),
		"usage", obj("output_tokens", 10*len(t.calls)))))
	t.out.line(t.streamEvent(obj("type", "message_stop")))
}

// toolResultUser is the user line with the result of one tool call.
func (t *turn) toolResultUser(c toolCall, text string, isError bool) object {
	return obj("type", "user", "message", obj("role", "user", "content", []any{obj(
		"tool_use_id", c.id, "type", "tool_result",
		"content", []any{obj("type", "text", "text", text)}, "is_error", isError)}),
		"parent_tool_use_id", nil, "session_id", t.sessionID, "uuid", newUUID(),
		"timestamp", timestamp(time.Now()))
}
