package main

import (
	"fmt"
	"os"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
)

// playReset answers a /clear as its reset mode asks, like the real CLI
// (2.1.330, testdata/transcripts/clear.jsonl) when the mode is normal. It
// reports whether it printed a result.
func (t *turn) playReset() bool {
	switch t.reset {
	case fakecli.ResetExit:
		fmt.Fprintln(os.Stderr, "fatal: fake reset failure")
		os.Exit(1)
	case fakecli.ResetHang:
		return t.hang()
	case fakecli.ResetGarbage:
		t.out.raw(fakecli.GarbageLine)
	}
	if t.reset != fakecli.ResetNoReset {
		t.out.line(t.conversationReset())
	}
	t.out.line(obj("type", "system", "subtype", "background_tasks_changed", "tasks", []any{},
		"uuid", newUUID(), "session_id", t.sessionID))
	t.out.line(t.init)
	t.out.line(t.clearResult())
	return true
}

// conversationReset is the first line of a reset; session_id is still the
// old session.
func (t *turn) conversationReset() object {
	id := newUUID()
	return obj("type", "conversation_reset", "new_conversation_id", id, "uuid", id,
		"trigger", "clear", "user_message_uuid", newUUID(),
		"timestamp", timestamp(time.Now()), "session_id", t.sessionID)
}

// clearResult is the result of a /clear, in the new session. Like every
// result, it does not start with "type".
func (t *turn) clearResult() object {
	return obj("is_error", false, "duration_api_ms", 0, "num_turns", 0, "stop_reason", nil,
		"session_id", t.newSessionID, "total_cost_usd", 0,
		"usage", obj("input_tokens", 0, "cache_creation_input_tokens", 0,
			"cache_read_input_tokens", 0, "output_tokens", 0,
			"server_tool_use", obj("web_search_requests", 0, "web_fetch_requests", 0),
			"service_tier", "standard"),
		"modelUsage", obj(), "permission_denials", []any{}, "fast_mode_state", "off",
		"subtype", "success", "result", "", "local_command", "clear", "type", "result",
		"duration_ms", time.Since(t.start).Milliseconds(), "uuid", newUUID())
}
