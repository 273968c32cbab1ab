package claudepool

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// readEventTranscript returns the lines of a recorded transcript under
// testdata/transcripts.
func readEventTranscript(tb testing.TB, name string) [][]byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "transcripts", name))
	require.NoError(tb, err)
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	require.NoError(tb, sc.Err())
	require.NotEmpty(tb, lines, "transcript %s is empty", name)
	return lines
}

// mustParseEvent parses a line that must be an event and checks the invariants
// every event keeps.
func mustParseEvent(t *testing.T, line []byte) Event {
	t.Helper()
	ev, ctrl, err := parseLine(line)
	require.NoError(t, err)
	require.Nil(t, ctrl)
	require.Equal(t, json.RawMessage(line), ev.Raw, "Raw is the line as received")
	requireEventShape(t, ev)
	return ev
}

// requireEventShape checks that exactly the pointer field matching the type
// is set.
func requireEventShape(t testing.TB, ev Event) {
	t.Helper()
	require.Equal(t, ev.Type == EventInit, ev.Init != nil, "Init set iff EventInit")
	require.Equal(t, ev.Type == EventAssistant || ev.Type == EventUser, ev.Message != nil, "Message set iff EventAssistant/EventUser")
	require.Equal(t, ev.Type == EventPartial, ev.Partial != nil, "Partial set iff EventPartial")
	require.Equal(t, ev.Type == EventRetry, ev.Retry != nil, "Retry set iff EventRetry")
	require.Equal(t, ev.Type == EventResult, ev.Result != nil, "Result set iff EventResult")
	require.Equal(t, ev.Type == EventConversationReset, ev.Reset != nil, "Reset set iff EventConversationReset")
}

func TestParseTranscripts(t *testing.T) {
	type step struct {
		typ     EventType
		subtype string
	}
	tests := []struct {
		file    string
		steps   []step
		session string // session of the last line
		text    string // concatenated Event.Text of all lines
		isError bool   // the result's IsError
	}{
		{
			file:    "ok.jsonl",
			steps:   []step{{EventInit, "init"}, {EventAssistant, ""}, {EventResult, ""}},
			session: "7dfd0c9f-dbaf-4bde-adf1-2fe3980b6cdf",
			text:    "mock reply to: hello",
		},
		{
			file:    "partial.jsonl",
			steps:   []step{{EventInit, "init"}, {EventSystem, "status"}, {EventPartial, ""}, {EventAssistant, ""}, {EventResult, ""}},
			session: "7dfd0c9f-dbaf-4bde-adf1-2fe3980b6cdf",
			text:    "Hellomock reply to: hello",
		},
		{
			file:    "sigint_midstream.jsonl",
			steps:   []step{{EventInit, "init"}, {EventAssistant, ""}, {EventUser, ""}, {EventResult, ""}},
			session: "f640c0ad-40c8-416c-bff0-d6cea40f6372",
			text:    "Hello there",
			isError: true,
		},
		{
			file:    "retry.jsonl",
			steps:   []step{{EventRetry, "api_retry"}, {EventRetry, "api_retry"}},
			session: "0b1e2f21-8560-4c82-8b9c-605bbcb5bc5c",
		},
		{
			file:    "err_notloggedin.jsonl",
			steps:   []step{{EventAssistant, ""}, {EventResult, ""}},
			session: "ad202f30-3d52-45f7-b502-b3f6cf33c869",
			text:    "Not logged in · Please run /login",
			isError: true,
		},
		{
			file:    "err_enotfound.jsonl",
			steps:   []step{{EventRetry, "api_retry"}, {EventAssistant, ""}, {EventResult, ""}},
			session: "0b1e2f21-8560-4c82-8b9c-605bbcb5bc5c",
			text:    "API Error: Can't reach the API server — check your internet or DNS (ENOTFOUND)",
			isError: true,
		},
		{
			file:    "err_500.jsonl",
			steps:   []step{{EventRetry, "api_retry"}, {EventResult, ""}},
			session: "b8dd5192-f43a-46ea-8946-99eb040c5099",
			isError: true,
		},
		{file: "err_401.jsonl", steps: []step{{EventResult, ""}}, session: "8980a1a6-1cd2-4024-bfc5-293de56701c7", isError: true},
		{file: "err_429.jsonl", steps: []step{{EventResult, ""}}, session: "2b4e10e8-69f7-420b-a763-4ec9f7f22ba3", isError: true},
		{file: "err_timeout.jsonl", steps: []step{{EventResult, ""}}, session: "383386fc-7cbd-4bec-a0cb-3b8640331ac9", isError: true},
		{
			file:    "clear.jsonl",
			steps:   []step{{EventConversationReset, ""}, {EventSystem, "background_tasks_changed"}, {EventInit, "init"}, {EventResult, ""}},
			session: "6fed83bc-a34d-4ed1-957f-127b9974c4ea",
		},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSuffix(tt.file, ".jsonl"), func(t *testing.T) {
			lines := readEventTranscript(t, tt.file)
			require.Len(t, lines, len(tt.steps))
			var text strings.Builder
			var last Event
			for i, line := range lines {
				ev := mustParseEvent(t, line)
				require.Equal(t, tt.steps[i], step{ev.Type, ev.Subtype}, "line %d", i+1)
				require.NotEmpty(t, ev.SessionID, "line %d", i+1)
				text.WriteString(ev.Text())
				last = ev
			}
			require.Equal(t, tt.session, last.SessionID)
			require.Equal(t, tt.text, text.String())
			if last.Type == EventResult {
				require.Equal(t, tt.isError, last.Result.IsError)
				require.Equal(t, last.SessionID, last.Result.SessionID)
			}
		})
	}
}

func TestParseSampleLines(t *testing.T) {
	ok := readEventTranscript(t, "ok.jsonl")
	partial := readEventTranscript(t, "partial.jsonl")
	sigint := readEventTranscript(t, "sigint_midstream.jsonl")
	retry := readEventTranscript(t, "retry.jsonl")
	notLoggedIn := readEventTranscript(t, "err_notloggedin.jsonl")
	enotfound := readEventTranscript(t, "err_enotfound.jsonl")
	status401 := readEventTranscript(t, "err_401.jsonl")
	clear := readEventTranscript(t, "clear.jsonl")

	t.Run("init", func(t *testing.T) {
		ev := mustParseEvent(t, ok[0])
		in := ev.Init
		require.Equal(t, "claude-opus-5-5", in.Model)
		require.Equal(t, "/srv/chat", in.Cwd)
		require.Equal(t, "default", in.PermissionMode)
		require.Equal(t, "2.1.330", in.Version)
		require.Len(t, in.Tools, 23)
		require.Equal(t, "Task", in.Tools[0])
		require.Equal(t, "Write", in.Tools[22])
	})
	t.Run("assistant ok", func(t *testing.T) {
		ev := mustParseEvent(t, ok[1])
		require.Equal(t, &ChatMessage{
			ID:      "msg_mock_000001",
			Model:   "claude-opus-5-5",
			Role:    "assistant",
			Content: []ContentBlock{{Type: "text", Text: "mock reply to: hello"}},
			Usage:   Usage{InputTokens: 12001, OutputTokens: 1},
		}, ev.Message)
	})
	t.Run("result ok", func(t *testing.T) {
		ev := mustParseEvent(t, ok[2])
		require.Equal(t, &Result{
			Text:           "mock reply to: hello",
			Subtype:        "success",
			SessionID:      "7dfd0c9f-dbaf-4bde-adf1-2fe3980b6cdf",
			NumTurns:       1,
			Duration:       222 * time.Millisecond,
			APIDuration:    43 * time.Millisecond,
			TotalCostUSD:   0.048083999999999995,
			Usage:          Usage{InputTokens: 12001, OutputTokens: 4},
			StopReason:     "end_turn",
			TerminalReason: "completed",
			TTFT:           203 * time.Millisecond,
		}, ev.Result)
		require.Empty(t, ev.Text(), "the result repeats the assistant text")
	})
	t.Run("status", func(t *testing.T) {
		ev := mustParseEvent(t, partial[1])
		require.Equal(t, EventSystem, ev.Type)
		require.Equal(t, "status", ev.Subtype)
		require.Equal(t, "a7f67f88-3f6b-4ad8-9f2a-43d024735665", ev.SessionID)
	})
	t.Run("text delta", func(t *testing.T) {
		ev := mustParseEvent(t, partial[2])
		require.Equal(t, &Partial{
			Type:      "content_block_delta",
			DeltaType: "text_delta",
			Text:      "Hello",
			Event:     json.RawMessage(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}`),
		}, ev.Partial)
		require.Equal(t, "Hello", ev.Text())
	})
	t.Run("aborted assistant", func(t *testing.T) {
		ev := mustParseEvent(t, sigint[1])
		require.True(t, ev.Message.Aborted)
		require.Equal(t, "Hello there", ev.Text())
	})
	t.Run("interrupted user", func(t *testing.T) {
		ev := mustParseEvent(t, sigint[2])
		require.Equal(t, &ChatMessage{
			Role:    "user",
			Content: []ContentBlock{{Type: "text", Text: "[Request interrupted by user]"}},
		}, ev.Message)
		require.Empty(t, ev.Text(), "user messages are not printed")
	})
	t.Run("aborted result", func(t *testing.T) {
		r := mustParseEvent(t, sigint[3]).Result
		require.True(t, r.IsError)
		require.Equal(t, "error_during_execution", r.Subtype)
		require.Equal(t, "aborted_streaming", r.TerminalReason)
		require.Empty(t, r.StopReason, "null stop_reason")
		require.Equal(t, 2, r.NumTurns)
		require.Equal(t, []string{"[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"}, r.Errors)
	})
	t.Run("retry 500", func(t *testing.T) {
		ev := mustParseEvent(t, retry[0])
		require.Equal(t, &Retry{Attempt: 1, MaxRetries: 2, Delay: 621 * time.Millisecond, ErrorStatus: 500, Error: "server_error"}, ev.Retry)
	})
	t.Run("retry no status", func(t *testing.T) {
		ev := mustParseEvent(t, retry[1])
		require.Equal(t, &Retry{Attempt: 1, MaxRetries: 10, Delay: 505 * time.Millisecond, Error: "unknown"}, ev.Retry)
	})
	t.Run("not logged in", func(t *testing.T) {
		m := mustParseEvent(t, notLoggedIn[0]).Message
		require.True(t, m.IsAPIErrorMessage)
		require.Equal(t, "authentication_failed", m.APIError, "falls back to \"error\"")
		require.Equal(t, "<synthetic>", m.Model)
		require.Equal(t, "stop_sequence", m.StopReason)

		r := mustParseEvent(t, notLoggedIn[1]).Result
		require.True(t, r.IsError)
		require.Equal(t, "success", r.Subtype, "failure hides behind subtype success")
		require.Zero(t, r.APIErrorStatus)
		require.Empty(t, r.APIErrorType)
	})
	t.Run("unreachable", func(t *testing.T) {
		m := mustParseEvent(t, enotfound[1]).Message
		require.True(t, m.IsAPIErrorMessage)
		require.Equal(t, "connection_failed", m.APIError, "api_error wins over error")

		r := mustParseEvent(t, enotfound[2]).Result
		require.True(t, r.IsError)
		require.Zero(t, r.APIErrorStatus, "null api_error_status")
		require.Equal(t, "connection_failed", r.APIErrorType, "from api_error")
		require.Equal(t, 179712*time.Millisecond, r.Duration)
		require.Zero(t, r.TTFT, "no ttft_ms")
	})
	t.Run("401", func(t *testing.T) {
		r := mustParseEvent(t, status401[0]).Result
		require.True(t, r.IsError)
		require.Equal(t, 401, r.APIErrorStatus)
		require.Equal(t, "authentication_error", r.APIErrorType)
		require.Equal(t, "api_error", r.TerminalReason)
		require.Equal(t, "Invalid API key · Fix external API key", r.Text)
	})
	t.Run("conversation reset", func(t *testing.T) {
		ev := mustParseEvent(t, clear[0])
		require.Equal(t, EventConversationReset, ev.Type)
		require.Equal(t, "54106215-7e4e-4796-8746-b143f2d0bc8a", ev.SessionID, "the old session")
		require.Equal(t, &ConversationReset{NewConversationID: "8ce00a22-3db0-4d03-a2c2-ba52928299a7", Trigger: "clear"}, ev.Reset)
		require.Empty(t, ev.Text())
	})
	t.Run("clear result", func(t *testing.T) {
		r := mustParseEvent(t, clear[3]).Result
		require.Equal(t, &Result{
			Subtype:      "success",
			SessionID:    "6fed83bc-a34d-4ed1-957f-127b9974c4ea",
			Duration:     39 * time.Millisecond,
			LocalCommand: "clear",
		}, r)
	})
	t.Run("ordinary result has no local command", func(t *testing.T) {
		require.Empty(t, mustParseEvent(t, ok[2]).Result.LocalCommand)
	})
}

func TestParseLineEvents(t *testing.T) {
	tests := []struct {
		name string
		line string
		want Event // Raw is checked against line, not here
	}{
		{
			name: "type last",
			line: `{"subtype":"status","session_id":"s1","type":"system"}`,
			want: Event{Type: EventSystem, Subtype: "status", SessionID: "s1"},
		},
		{
			name: "unknown system subtype",
			line: `{"type":"system","subtype":"background_tasks_changed","tasks":[]}`,
			want: Event{Type: EventSystem, Subtype: "background_tasks_changed"},
		},
		{
			name: "system without subtype",
			line: `{"type":"system"}`,
			want: Event{Type: EventSystem},
		},
		{
			name: "unknown type",
			line: `{"type":"keep_alive","session_id":"s2"}`,
			want: Event{Type: EventUnknown, Subtype: "keep_alive", SessionID: "s2"},
		},
		{
			name: "control request from the CLI",
			line: `{"type":"control_request","request_id":"r9","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{}}}`,
			want: Event{Type: EventUnknown, Subtype: "control_request"},
		},
		{
			name: "leading and trailing space",
			line: " \t{\"type\":\"system\",\"subtype\":\"status\"}\r",
			want: Event{Type: EventSystem, Subtype: "status"},
		},
		{
			name: "nulls are zero values",
			line: `{"type":"result","session_id":null,"subtype":null,"is_error":null,"result":null,"num_turns":null,` +
				`"duration_ms":null,"usage":null,"stop_reason":null,"api_error_status":null,"errors":null,"ttft_ms":null}`,
			want: Event{Type: EventResult, Result: &Result{}},
		},
		{
			name: "bare result",
			line: `{"type":"result","is_error":true}`,
			want: Event{Type: EventResult, Result: &Result{IsError: true}},
		},
		{
			name: "fractional milliseconds",
			line: `{"type":"result","duration_ms":1.5,"ttft_ms":0.25}`,
			want: Event{Type: EventResult, Result: &Result{Duration: 1500 * time.Microsecond, TTFT: 250 * time.Microsecond}},
		},
		{
			name: "absurd milliseconds saturate",
			line: `{"type":"result","duration_ms":1e300,"duration_api_ms":-1e300}`,
			want: Event{Type: EventResult, Result: &Result{Duration: time.Duration(1<<63 - 1), APIDuration: time.Duration(-1 << 63)}},
		},
		{
			name: "wrong-typed field of another line type is ignored",
			line: `{"type":"result","is_error":false,"message":"x","tools":5,"event":[],"attempt":"one"}`,
			want: Event{Type: EventResult, Result: &Result{}},
		},
		{
			name: "assistant without message",
			line: `{"type":"assistant","session_id":"s3"}`,
			want: Event{Type: EventAssistant, SessionID: "s3", Message: &ChatMessage{}},
		},
		{
			name: "user content as a string",
			line: `{"type":"user","message":{"role":"user","content":"hi there"}}`,
			want: Event{Type: EventUser, Message: &ChatMessage{Role: "user", Content: []ContentBlock{{Type: "text", Text: "hi there"}}}},
		},
		{
			name: "thinking and tool use",
			line: `{"type":"assistant","parent_tool_use_id":"toolu_0","message":{"role":"assistant","stop_reason":"tool_use","content":[` +
				`{"type":"thinking","thinking":"hmm","signature":"sig"},` +
				`{"type":"text","text":"Let me look. "},` +
				`{"type":"tool_use","id":"toolu_1","name":"Read","input":{"file_path":"/x"}},` +
				`{"type":"text","text":"Done."},` +
				`{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":null}]}}`,
			want: Event{Type: EventAssistant, Message: &ChatMessage{
				Role:            "assistant",
				StopReason:      "tool_use",
				ParentToolUseID: "toolu_0",
				Content: []ContentBlock{
					{Type: "thinking", Thinking: "hmm", Signature: "sig"},
					{Type: "text", Text: "Let me look. "},
					{Type: "tool_use", ID: "toolu_1", Name: "Read", Input: json.RawMessage(`{"file_path":"/x"}`)},
					{Type: "text", Text: "Done."},
					{Type: "server_tool_use", ID: "srvtoolu_1", Name: "web_search"},
				},
			}},
		},
		{
			name: "tool results",
			line: `{"type":"user","message":{"role":"user","content":[` +
				`{"type":"tool_result","tool_use_id":"toolu_1","content":"file body","is_error":false},` +
				`{"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"denied"}],"is_error":true},` +
				`{"type":"tool_result","tool_use_id":"toolu_3","content":null}]}}`,
			want: Event{Type: EventUser, Message: &ChatMessage{Role: "user", Content: []ContentBlock{
				{Type: "tool_result", ToolUseID: "toolu_1", Content: json.RawMessage(`"file body"`)},
				{Type: "tool_result", ToolUseID: "toolu_2", Content: json.RawMessage(`[{"type":"text","text":"denied"}]`), IsError: true},
				{Type: "tool_result", ToolUseID: "toolu_3"},
			}}},
		},
		{
			name: "thinking delta",
			line: `{"type":"stream_event","event":{"type":"content_block_delta","index":1,"delta":{"type":"thinking_delta","thinking":"so"}}}`,
			want: Event{Type: EventPartial, Partial: &Partial{
				Type: "content_block_delta", Index: 1, DeltaType: "thinking_delta", Text: "so",
				Event: json.RawMessage(`{"type":"content_block_delta","index":1,"delta":{"type":"thinking_delta","thinking":"so"}}`),
			}},
		},
		{
			name: "input json delta",
			line: `{"type":"stream_event","event":{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}}`,
			want: Event{Type: EventPartial, Partial: &Partial{
				Type: "content_block_delta", Index: 2, DeltaType: "input_json_delta",
				Event: json.RawMessage(`{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}`),
			}},
		},
		{
			name: "message delta",
			line: `{"type":"stream_event","event":{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":4}}}`,
			want: Event{Type: EventPartial, Partial: &Partial{
				Type:  "message_delta",
				Event: json.RawMessage(`{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":4}}`),
			}},
		},
		{
			name: "stream event without event",
			line: `{"type":"stream_event","event":null}`,
			want: Event{Type: EventPartial, Partial: &Partial{}},
		},
		{
			name: "conversation reset type last",
			line: `{"trigger":"clear","new_conversation_id":"c1","session_id":"s4","type":"conversation_reset"}`,
			want: Event{Type: EventConversationReset, SessionID: "s4", Reset: &ConversationReset{NewConversationID: "c1", Trigger: "clear"}},
		},
		{
			name: "bare conversation reset",
			line: `{"type":"conversation_reset","new_conversation_id":null}`,
			want: Event{Type: EventConversationReset, Reset: &ConversationReset{}},
		},
		{
			name: "local command",
			line: `{"type":"result","subtype":"success","result":"","local_command":"compact"}`,
			want: Event{Type: EventResult, Result: &Result{Subtype: "success", LocalCommand: "compact"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := mustParseEvent(t, []byte(tt.line))
			ev.Raw = nil
			require.Equal(t, tt.want, ev)
		})
	}
}

// TestParseLineWrongTypes: a line with a string "type" is never malformed;
// when the fields its type needs have the wrong shape it is passed through
// whole as EventUnknown.
func TestParseLineWrongTypes(t *testing.T) {
	tests := []struct {
		name, line, subtype string
	}{
		{"is_error a string", `{"type":"result","is_error":"true","result":"x"}`, "result"},
		{"usage a list", `{"type":"result","usage":[1]}`, "result"},
		{"errors of objects", `{"type":"result","errors":[{"msg":"x"}]}`, "result"},
		{"message a string", `{"type":"assistant","message":"hi"}`, "assistant"},
		{"content a number", `{"type":"assistant","message":{"content":5}}`, "assistant"},
		{"text a number", `{"type":"user","message":{"content":[{"type":"text","text":5}]}}`, "user"},
		{"aborted a string", `{"type":"assistant","aborted":"yes"}`, "assistant"},
		{"event a string", `{"type":"stream_event","event":"x"}`, "stream_event"},
		{"index a string", `{"type":"stream_event","event":{"type":"content_block_delta","index":"0"}}`, "stream_event"},
		{"attempt a string", `{"type":"system","subtype":"api_retry","attempt":"1"}`, "system"},
		{"tools a string", `{"type":"system","subtype":"init","tools":"Bash"}`, "system"},
		{"subtype a number", `{"type":"system","subtype":5}`, "system"},
		{"session_id an object", `{"type":"result","session_id":{}}`, "result"},
		{"local_command a number", `{"type":"result","local_command":1}`, "result"},
		{"trigger an object", `{"type":"conversation_reset","trigger":{}}`, "conversation_reset"},
		{"new_conversation_id a number", `{"type":"conversation_reset","new_conversation_id":7}`, "conversation_reset"},
		{"response a string", `{"type":"control_response","response":"ok"}`, "control_response"},
		{"request_id a number", `{"type":"control_response","response":{"subtype":"success","request_id":7}}`, "control_response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := mustParseEvent(t, []byte(tt.line))
			require.Equal(t, EventUnknown, ev.Type)
			require.Equal(t, tt.subtype, ev.Subtype)
		})
	}
}

func TestParseLineMalformed(t *testing.T) {
	tests := []struct {
		name, line string
	}{
		{"empty", ""},
		{"blank", "  \r"},
		{"not JSON", "Error: Input must be provided either through stdin or as a prompt argument when using --print"},
		{"empty object", "{}"},
		{"null", "null"},
		{"array", `[{"type":"result"}]`},
		{"string", `"result"`},
		{"number", "42"},
		{"type a number", `{"type":5}`},
		{"type an object", `{"type":{"name":"result"},"is_error":true}`},
		{"type null", `{"type":null}`},
		{"type empty", `{"type":""}`},
		{"truncated", `{"type":"result","is_error":tr`},
		{"trailing garbage", `{"type":"result"} {"type":"result"}`},
		{"too deep", `{"type":"x","a":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`},
		{"invalid UTF-8 outside strings", "{\"type\":\"x\"}\xff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, ctrl, err := parseLine([]byte(tt.line))
			require.ErrorIs(t, err, errMalformedLine)
			require.True(t, strings.HasPrefix(err.Error(), "claudepool: "), "got %q", err)
			require.Nil(t, ctrl)
			require.Equal(t, Event{}, ev)
		})
	}
}

func TestParseLineControlResponse(t *testing.T) {
	tests := []struct {
		name string
		line string
		want *controlResponse
	}{
		{
			name: "success",
			line: `{"type":"control_response","response":{"subtype":"success","request_id":"req_1","response":{"mcpServers":[]}}}`,
			want: &controlResponse{RequestID: "req_1", Subtype: "success", Response: json.RawMessage(`{"mcpServers":[]}`)},
		},
		{
			name: "success type last",
			line: `{"response":{"response":{"model":"claude-sonnet-5-5"},"request_id":"req_2","subtype":"success"},"type":"control_response"}`,
			want: &controlResponse{RequestID: "req_2", Subtype: "success", Response: json.RawMessage(`{"model":"claude-sonnet-5-5"}`)},
		},
		{
			name: "error",
			line: `{"type":"control_response","response":{"subtype":"error","request_id":"req_3","error":"Unknown subtype: nope"}}`,
			want: &controlResponse{RequestID: "req_3", Subtype: "error", Error: "Unknown subtype: nope"},
		},
		{
			name: "error not a string",
			line: `{"type":"control_response","response":{"subtype":"error","request_id":"req_4","error":{"code":1}}}`,
			want: &controlResponse{RequestID: "req_4", Subtype: "error", Error: `{"code":1}`},
		},
		{
			name: "nulls",
			line: `{"type":"control_response","response":{"subtype":"success","request_id":"req_5","response":null,"error":null}}`,
			want: &controlResponse{RequestID: "req_5", Subtype: "success"},
		},
		{
			name: "no response",
			line: `{"type":"control_response"}`,
			want: &controlResponse{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, ctrl, err := parseLine([]byte(tt.line))
			require.NoError(t, err)
			require.Equal(t, Event{}, ev)
			require.Equal(t, tt.want, ctrl)
		})
	}
}

// TestParseLineOwnsMemory: the reader reuses its buffer, so nothing parsed
// may point into it.
func TestParseLineOwnsMemory(t *testing.T) {
	lines := []string{
		`{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t","name":"n","input":{"k":"v"}}]}}`,
		`{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"x"}]}]}}`,
		`{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}}`,
		`{"type":"control_response","response":{"subtype":"success","request_id":"r","response":{"a":1}}}`,
		`{"type":"result","result":"done","is_error":false}`,
		`{"type":"conversation_reset","new_conversation_id":"c","trigger":"clear"}`,
		`{"type":"something_new","x":1}`,
		`{"type":"result","is_error":"wrong"}`,
	}
	for _, line := range lines {
		buf := []byte(line)
		ev, ctrl, err := parseLine(buf)
		require.NoError(t, err)
		// Snapshot, scribble over the buffer, compare.
		before := eventSnapshot(t, ev, ctrl)
		for i := range buf {
			buf[i] = 'X'
		}
		require.Equal(t, before, eventSnapshot(t, ev, ctrl), "parsed from %s", line)
		if ctrl == nil {
			require.Equal(t, line, string(ev.Raw))
		}
	}
}

// eventSnapshot renders everything parseLine returned, to compare later.
func eventSnapshot(t *testing.T, ev Event, ctrl *controlResponse) string {
	t.Helper()
	b, err := json.Marshal(struct {
		Ev   Event
		Ctrl *controlResponse
	}{ev, ctrl})
	require.NoError(t, err)
	return string(b)
}

func TestEventText(t *testing.T) {
	tests := []struct {
		name string
		ev   Event
		want string
	}{
		{"zero", Event{}, ""},
		{"assistant without message", Event{Type: EventAssistant}, ""},
		{"assistant one block", Event{Type: EventAssistant, Message: &ChatMessage{Content: []ContentBlock{{Type: "text", Text: "a"}}}}, "a"},
		{"assistant skips other blocks", Event{Type: EventAssistant, Message: &ChatMessage{Content: []ContentBlock{
			{Type: "thinking", Thinking: "t"}, {Type: "text", Text: "a"}, {Type: "tool_use", Name: "Read"}, {Type: "text", Text: "b"},
		}}}, "ab"},
		{"user", Event{Type: EventUser, Message: &ChatMessage{Content: []ContentBlock{{Type: "text", Text: "u"}}}}, ""},
		{"text delta", Event{Type: EventPartial, Partial: &Partial{DeltaType: "text_delta", Text: "d"}}, "d"},
		{"thinking delta", Event{Type: EventPartial, Partial: &Partial{DeltaType: "thinking_delta", Text: "t"}}, ""},
		{"partial without data", Event{Type: EventPartial}, ""},
		{"result", Event{Type: EventResult, Result: &Result{Text: "r"}}, ""},
		{"conversation reset", Event{Type: EventConversationReset, Reset: &ConversationReset{Trigger: "clear"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, tt.ev.Text())
		})
	}
}

func TestParseLineErrorWraps(t *testing.T) {
	_, _, err := parseLine([]byte("{"))
	require.ErrorIs(t, err, errMalformedLine)
	var syntax *json.SyntaxError
	require.True(t, errors.As(err, &syntax), "the JSON error stays reachable: %v", err)
}

func TestScanHeader(t *testing.T) {
	tests := []struct {
		name string
		line string
		want lineHeader
		ok   bool
	}{
		{"ordinary", `{"type":"system","subtype":"status","session_id":"s"}`, lineHeader{"system", "status", "s"}, true},
		{"type last after nesting", `{"a":{"type":"x","b":[1,{"c":"}"}]},"n":-1.5e3,"t":true,"s":"q\"}","type":"result"}`, lineHeader{Type: "result"}, true},
		{"spaces", " { \"type\" : \"user\" , \"session_id\" : null } ", lineHeader{Type: "user"}, true},
		{"empty object", `{}`, lineHeader{}, true},
		{"not an object", `[]`, lineHeader{}, false},
		{"escaped value", `{"type":"res\u0075lt"}`, lineHeader{}, false},
		{"escaped key", `{"typ\u0065":"result"}`, lineHeader{}, false},
		{"non-ASCII value", `{"type":"résult"}`, lineHeader{}, false},
		{"case-folded key", `{"Type":"result"}`, lineHeader{}, false},
		{"repeated key", `{"type":"result","type":"user"}`, lineHeader{}, false},
		{"number value", `{"type":"result","subtype":1}`, lineHeader{}, false},
		{"trailing data", `{"type":"result"}x`, lineHeader{}, false},
		{"truncated", `{"type":"result",`, lineHeader{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := scanHeader([]byte(tt.line))
			require.Equal(t, tt.ok, ok)
			if !ok {
				return
			}
			require.Equal(t, tt.want, got)
			var want lineHeader
			require.NoError(t, json.Unmarshal([]byte(tt.line), &want))
			require.Equal(t, want, got, "agrees with encoding/json")
		})
	}
}
