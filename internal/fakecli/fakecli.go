// Package fakecli builds and configures a fake `claude` executable for tests.
//
// The fake (testdata/fakeclaude) speaks the same stdin/stdout protocol as the
// real Claude Code CLI in print mode with stream-json input and output, so the
// pool and adapter can be tested without the real CLI or a network. Its
// behaviour is chosen with environment variables (the Env* constants) and,
// per turn, with a Marker in the user text.
//
// Like the real CLI, the fake serves turns until stdin EOF, and a user line
// whose text starts with "/" (after white space) runs as a slash command
// unless the line is marked "text_not_typed": true, which makes any text a
// message. "/clear" resets the conversation in place: it prints a
// conversation_reset line, a system/background_tasks_changed line, a
// system/init line with a new session_id and a result with an empty result
// and local_command "clear", then serves the next turn in the new session
// with the same system prompt and model. "/model X" switches the model,
// "/config key=value" writes settings.json in $CLAUDE_CONFIG_DIR (else
// $HOME/.claude), and any other command answers that it is not available;
// none of them is a turn. The Reset* modes, set with EnvResetMode or armed
// by a ResetMarker, make a reset fail.
//
// # SDK MCP servers
//
// Like the real CLI (2.1.330), the fake talks to the SDK MCP servers
// declared with --mcp-config (a JSON object, or a file holding one, as
// SDKMCPConfig builds; servers of other types are ignored; the flag may
// come more than once or with several values) through mcp_message control
// requests on stdout, answered by control_response lines on stdin. The
// JSON-RPC ids count per server from 0. --allowedTools (or
// --allowed-tools; comma or space separated, one or more values) is
// recorded, not enforced: the system/init line lists it as
// fake_allowed_tools.
//
// The handshake comes first, before any other line is answered (after
// EnvStartupDelay, when set): the fake sends one initialize request per
// server, in the order of the config, all at once, and waits for every
// answer, holding every stdin line but control responses meanwhile (an
// mcp_status sent meanwhile is answered only then, as on the real CLI).
// Once all are answered it answers the held lines in order, then, server
// by server and each request after the answer to the one before, sends
// notifications/initialized and tools/list to every server whose
// initialize succeeded. No turn starts before the handshake ends. A
// server whose initialize got an error response (or a JSON-RPC error in
// mcp_response) is "failed" and gets no further request; else it is
// "connected", with the tools of its tools/list answer (none if that is
// an error). Every system/init line then lists each listed tool as
// MCPToolName(server, tool) after the built-in tools, and mcp_servers
// lists every SDK server as {"name","status","source":"sdk"}. An
// mcp_status answer lists them as {"name","status"}, with the serverInfo
// of the initialize result when it had one and the "error" of a failed
// server.
//
// A ToolCallMarker in a user message makes the model call that tool: the
// turn prints system/init, then (stream events first with partial
// messages on) an assistant line whose content has one tool_use block
// per marker, in the order of the text, with ids "toolu_fake_N" (N
// counts the process's calls from 1) and stop_reason "tool_use". It then
// calls the tools one after another: for each, it sends a tools/call
// request, waits for its answer and prints a user line with one
// tool_result (content: one text block with the texts of the result's
// text blocks joined by "\n"; is_error: the result's isError). An error
// response, a JSON-RPC error or an answer with no mcp_response gives an
// is_error result with that error's text; a tool no server listed is not
// called and gives NoSuchTool(name). Then, with partial messages on, a
// system/status line; then the reply, chunked and streamed like any
// other, whose text holds one line per call, "tool TOOL said: TEXT" or
// "tool TOOL failed: TEXT" (TOOL without its mcp__NAME__ prefix), and a
// result with num_turns 2. An interrupt (or SIGINT) while a call waits
// ends the turn: a user line with an is_error tool_result
// InterruptedToolUse for that call and each one not yet sent, then the
// "[Request interrupted by user]" user line and an error_during_execution
// result with terminal_reason "aborted_tools"; a late answer is ignored.
// Once stdin has ended no answer can come: every request waiting and
// every later one fails at once with StreamClosedError, and the turn ends
// with that error as the tool's result.
package fakecli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Environment variables read by the fake CLI.
const (
	// EnvMode selects a fault mode (one of the Mode* constants); default ModeNormal.
	EnvMode = "FAKE_MODE"
	// EnvReply is the reply text; unset means "echo: " followed by the user text.
	EnvReply = "FAKE_REPLY"
	// EnvChunks is the number of text_delta chunks a reply is split into; default 3.
	EnvChunks = "FAKE_CHUNKS"
	// EnvChunkDelay is a Go duration waited between chunks, and before the
	// assistant line when partial messages are off; default 0.
	EnvChunkDelay = "FAKE_CHUNK_DELAY"
	// EnvStartupDelay is a Go duration before which no stdin line is answered
	// (lines are read and recorded meanwhile, then answered in order); default 0.
	EnvStartupDelay = "FAKE_STARTUP_DELAY"
	// EnvExitCode is the exit code after stdin EOF once a turn has run
	// (default 0, and 1 when the last result was one of ModeErrorResult),
	// and in ModeExitEarly (default 1). A /clear is not a turn here, but its
	// result counts as the last result.
	EnvExitCode = "FAKE_EXIT_CODE"
	// EnvTextTimeout is a Go duration that text mode (no --input-format
	// stream-json) waits for the first stdin byte; default 3s.
	EnvTextTimeout = "FAKE_TEXT_TIMEOUT"
	// EnvIgnoreSIGTERM set to 1 makes the fake ignore SIGTERM and SIGINT, so
	// only SIGKILL stops it.
	EnvIgnoreSIGTERM = "FAKE_IGNORE_SIGTERM"
	// EnvRecordDir names a directory where the fake writes its argv, one
	// argument a line with the program path first, to <pid>.args at start,
	// and appends every stdin line to <pid>.jsonl as it arrives.
	EnvRecordDir = "FAKE_RECORD_DIR"
	// EnvHugeBytes is the reply size in ModeHuge; default 10,000,000.
	EnvHugeBytes = "FAKE_HUGE_BYTES"
	// EnvErrorText is the error text in ModeErrorResult; default DefaultErrorText.
	EnvErrorText = "FAKE_ERROR_TEXT"
	// EnvAPIStatus is api_error_status in ModeErrorResult; default 401, and 0
	// prints null.
	EnvAPIStatus = "FAKE_API_STATUS"
	// EnvRetries is the number of system/api_retry lines in ModeRetry; default 2.
	EnvRetries = "FAKE_RETRIES"
	// EnvEchoHistory set to 1 makes the echo reply (EnvReply unset) "echo: "
	// followed by the texts of every user turn of the conversation since the
	// last reset, joined by " | ". A single-turn conversation still gets
	// "echo: " and its text, and text that survived a reset shows up in the
	// reply. Default off: the echo holds the current user text only.
	EnvEchoHistory = "FAKE_ECHO_HISTORY"
	// EnvResetMode selects the fault of every /clear of the process (one of
	// the Reset* constants); default ResetNormal. A ResetMarker overrides it
	// for one /clear.
	EnvResetMode = "FAKE_RESET_MODE"
	// EnvGrowBytes makes every user turn (not a /clear) allocate that many
	// bytes, write to each page and keep them referenced until the process
	// exits, so that its resident memory (VmRSS) grows by about that much a
	// turn; default 0.
	EnvGrowBytes = "FAKE_GROW_BYTES"
	// EnvRetryDelay is a Go duration: the first wait between the retries
	// of ModeErrorResult, doubling after each; default 100ms (the real
	// CLI waits about 0.6 s, then 1, 2, 5 s, ...).
	EnvRetryDelay = "FAKE_RETRY_DELAY"
)

// Fault modes, set process-wide with EnvMode or for one turn with Marker.
const (
	// ModeNormal answers every request successfully.
	ModeNormal = "normal"
	// ModeExitEarly writes "fatal: fake start-up failure" to stderr and exits
	// (EnvExitCode, default 1) before reading stdin. Only meaningful via EnvMode.
	ModeExitEarly = "exit-early"
	// ModeNoReady never answers anything: it reads stdin until EOF (then
	// exits 0) or a signal. Only meaningful via EnvMode.
	ModeNoReady = "no-ready"
	// ModeCrash prints init and the first chunk (a stream_event when partial
	// messages are on), writes "panic: fake crash" to stderr and exits 2
	// without a result.
	ModeCrash = "crash"
	// ModeHang prints nothing after the user line and never ends the turn:
	// stdin EOF is ignored, signals act as usual.
	ModeHang = "hang"
	// ModeHangMid prints init and the first chunk, then hangs like ModeHang.
	ModeHangMid = "hang-mid"
	// ModeGarbage prints GarbageLine between init and the assistant line,
	// then finishes the turn normally.
	ModeGarbage = "garbage"
	// ModeHuge replies with EnvHugeBytes bytes of letters on one line.
	ModeHuge = "huge"
	// ModeErrorResult replies like the real CLI on an API error: unless
	// EnvAPIStatus is 400, it retries first as the real CLI does, with a
	// system/api_retry line (error_status EnvAPIStatus) before each of
	// CLAUDE_CODE_MAX_RETRIES (default 10) waits of EnvRetryDelay, doubling;
	// an interrupt or SIGINT during a wait ends the turn as any other.
	// Then an assistant line with EnvErrorText, a result with is_error
	// true, subtype "success", api_error_status EnvAPIStatus and
	// terminal_reason "api_error". Like the real CLI, the process then keeps
	// serving (a /clear and further turns work); at stdin EOF it exits with
	// EnvExitCode, default 1, if that result is still the last one.
	ModeErrorResult = "error-result"
	// ModeRetry prints EnvRetries system/api_retry lines before a normal reply.
	ModeRetry = "retry"
	// ModeGrandchild calls a tool as the real CLI's Bash tool does with
	// run_in_background (an assistant line with a tool_use block), starts a
	// child process that inherits stdout and stderr and sleeps until
	// killed, prints the tool's result (a user line), then replies
	// normally; the child keeps the pipes open after the fake exits.
	ModeGrandchild = "grandchild"
	// ModeGrandchildUnasked starts the same child with no tool call, as
	// the CLI's own work (or a hook) would, then replies normally.
	ModeGrandchildUnasked = "grandchild-unasked"
	// ModeCloseStdout closes stdout after the user line and keeps running
	// until a signal ends it (stdin EOF is ignored).
	ModeCloseStdout = "close-stdout"
	// ModeSleeper sleeps until killed; ModeGrandchild uses it for its child.
	ModeSleeper = "sleeper"
	// ModeRejectInit answers every initialize control request with an
	// error response (RejectInitError) and works normally otherwise. Only
	// meaningful via EnvMode.
	ModeRejectInit = "reject-init"
	// ModeUnknownLines prints a system/ui_invalidate line and a line of an
	// unknown type between init and the assistant line, then finishes normally.
	ModeUnknownLines = "unknown-lines"
)

// Reset fault modes, applied to a /clear: to every one with EnvResetMode, or
// to the next one after a user turn whose text holds ResetMarker.
const (
	// ResetNormal resets like the real CLI: conversation_reset (session_id
	// the old session), system/background_tasks_changed (old session),
	// system/init with a new session_id, then a result (new session, empty
	// result, num_turns 0, local_command "clear"). The history is cleared.
	ResetNormal = "normal"
	// ResetExit writes "fatal: fake reset failure" to stderr and exits 1 at
	// once, printing nothing for the /clear.
	ResetExit = "exit"
	// ResetHang prints nothing for the /clear and serves no further user
	// line; control requests are still answered, stdin EOF exits as when
	// idle, and signals act as usual (an interrupt ends the hung /clear with
	// no output, and later user lines are served in the old conversation).
	ResetHang = "hang"
	// ResetNoReset resets (new session, history cleared) but prints no
	// conversation_reset line: background_tasks_changed, init and the result
	// only.
	ResetNoReset = "no-reset"
	// ResetSameSession prints conversation_reset, background_tasks_changed,
	// then an init and a result that keep the old session_id, and does not
	// clear the history.
	ResetSameSession = "same-session"
	// ResetGarbage prints GarbageLine before the conversation_reset line,
	// then resets normally.
	ResetGarbage = "garbage"
	// ResetOtherModel resets normally, but the new conversation runs
	// OtherModel, which its system/init names; set_model switches it as
	// usual.
	ResetOtherModel = "other-model"
	// ResetStuckModel resets like ResetOtherModel, and from then on
	// set_model answers success without leaving OtherModel.
	ResetStuckModel = "stuck-model"
)

// Fixed texts and values of the fake.
const (
	// RejectInitError is the error of an initialize under ModeRejectInit.
	RejectInitError = "fake initialize rejected"
	// DefaultModel is the model before any set_model request.
	DefaultModel = "claude-opus-5-5"
	// DefaultErrorText is the error text of ModeErrorResult.
	DefaultErrorText = "Invalid API key · Fix external API key"
	// OtherModel is the model of ResetOtherModel and ResetStuckModel.
	OtherModel = "claude-other-1"
	// RejectedModel, anywhere in a model name, makes set_model refuse it
	// as the real CLI refuses a model the API does not know: an error
	// answer "Model '<name>' not found" with error_code "not_found" and
	// the model it keeps.
	RejectedModel = "bogus"
	// GarbageLine is the non-JSON stdout line of ModeGarbage and ResetGarbage.
	GarbageLine = "this is not json {"
	// MCPProtocolVersion is the protocolVersion of the fake's initialize
	// requests to SDK MCP servers, as the real CLI's.
	MCPProtocolVersion = "2025-11-25"
	// InterruptedToolUse is the text of the result of a tool call that an
	// interrupt cut short.
	InterruptedToolUse = "[Request interrupted by user for tool use]"
	// StreamClosedError is the error of a request to an SDK MCP server
	// that waits when stdin ends, or is sent after.
	StreamClosedError = "Stream closed"
)

// Marker returns the text that, anywhere in a user message, switches that
// turn to mode.
func Marker(mode string) string {
	return "[fake:" + mode + "]"
}

// ResetMarker returns the text that, anywhere in a user message, arms mode
// (one of the Reset* constants) for the next /clear of the process only.
// When several appear, the first in the text counts; a later marked turn
// before the /clear replaces it.
func ResetMarker(mode string) string {
	return "[fake-reset:" + mode + "]"
}

// ToolCallMarker returns the text that, anywhere in a user message, makes
// the model of that turn call the tool name (as the model names it, e.g.
// MCPToolName("srv", "echo")) with input, the text of a JSON object; ""
// stands for {}. Several markers make one message with several calls. A
// marker whose input is not a JSON object is no marker.
func ToolCallMarker(name, input string) string {
	if input == "" {
		input = "{}"
	}
	return "[fake-tool:" + name + " " + input + "]"
}

// MCPToolName returns the name under which the model sees tool of the MCP
// server named server: "mcp__SERVER__TOOL".
func MCPToolName(server, tool string) string {
	return "mcp__" + server + "__" + tool
}

// NoSuchTool is the error result of a call of a tool that no server
// listed, name as the model calls it.
func NoSuchTool(name string) string {
	return "No such tool available: " + name
}

// SDKMCPConfig returns the --mcp-config value that declares an SDK MCP
// server for each name, in order:
// {"mcpServers":{"NAME":{"type":"sdk","name":"NAME"},...}}.
func SDKMCPConfig(names ...string) string {
	var b strings.Builder
	b.WriteString(`{"mcpServers":{`)
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		q, _ := json.Marshal(n)
		fmt.Fprintf(&b, `%s:{"type":"sdk","name":%s}`, q, q)
	}
	b.WriteString("}}")
	return b.String()
}

// BuildTemp builds the fake CLI into a new temporary directory. It returns
// the executable's path and a function that removes the directory.
func BuildTemp() (path string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "claudepool-fakecli-")
	if err != nil {
		return "", nil, fmt.Errorf("claudepool: fakecli: %w", err)
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	if path, err = Build(dir); err != nil {
		cleanup()
		return "", nil, err
	}
	return path, cleanup, nil
}

// Build compiles the fake CLI into dir and returns the path of the
// executable, named claude (claude.exe on Windows). Test packages call it
// once from TestMain.
func Build(dir string) (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("claudepool: fakecli: cannot locate source")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	name := "claude"
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	out, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("claudepool: fakecli: %w", err)
	}
	cmd := exec.Command("go", "build", "-o", out, "github.com/claudepool/claudepool/testdata/fakeclaude")
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("claudepool: fakecli: go build: %w: %s", err, bytes.TrimSpace(msg))
	}
	return out, nil
}
