//go:build unix

package fakecli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudepool/claudepool/internal/fakecli"
)

// startMCP runs the fake in stream-json mode with the SDK MCP servers
// names declared, and extra flags after.
func startMCP(t *testing.T, env []string, names []string, extra ...string) *proc {
	t.Helper()
	args := append(slices.Clone(streamArgs), "--mcp-config", fakecli.SDKMCPConfig(names...))
	return start(t, env, append(args, extra...)...)
}

// request reads an mcp_message control request to server and returns its
// request id and the line with that id replaced by "ID".
func (p *proc) request(server string) (id, line string) {
	p.t.Helper()
	line = p.next()
	var m struct {
		Type      string `json:"type"`
		RequestID string `json:"request_id"`
		Request   struct {
			Subtype    string `json:"subtype"`
			ServerName string `json:"server_name"`
		} `json:"request"`
	}
	require.NoError(p.t, json.Unmarshal([]byte(line), &m), "line: %.300s", line)
	require.Equal(p.t, "control_request", m.Type, "line: %.300s", line)
	require.Equal(p.t, "mcp_message", m.Request.Subtype, "line: %.300s", line)
	require.Equal(p.t, server, m.Request.ServerName, "line: %.300s", line)
	require.Regexp(p.t, uuidRE, m.RequestID)
	return m.RequestID, strings.Replace(line, `"`+m.RequestID+`"`, `"ID"`, 1)
}

// mcpRequest is the line of an mcp_message control request with id "ID".
func mcpRequest(server, message string) string {
	return `{"type":"control_request","request_id":"ID","request":{"subtype":"mcp_message","server_name":"` +
		server + `","message":` + message + `}}`
}

// mcpAnswer is the success answer to request id with mcpResponse.
func mcpAnswer(id, mcpResponse string) string {
	return success(id, `{"mcp_response":`+mcpResponse+`}`)
}

// mcpError is the error answer to request id.
func mcpError(id, text string) string {
	return fmt.Sprintf(`{"type":"control_response","response":{"subtype":"error","request_id":%q,"error":%q}}`, id, text)
}

// initializeRequest is the initialize request the fake sends each server.
func initializeRequest(server string) string {
	return mcpRequest(server, `{"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},`+
		`"clientInfo":{"name":"claude-code","version":"2.1.330"}},"jsonrpc":"2.0","id":0}`)
}

// initializeResult is a server's answer to initialize.
func initializeResult(server string) string {
	return `{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},` +
		`"serverInfo":{"name":"` + server + `","version":"1.0.0"}}}`
}

// toolsResult is a server's answer to tools/list with tools.
func toolsResult(tools ...string) string {
	list := make([]string, len(tools))
	for i, name := range tools {
		list[i] = `{"name":"` + name + `","description":"the ` + name + ` tool",` +
			`"inputSchema":{"type":"object","properties":{}}}`
	}
	return `{"jsonrpc":"2.0","id":1,"result":{"tools":[` + strings.Join(list, ",") + `]}}`
}

// afterInitialize answers notifications/initialized and tools/list of
// server, which lists tools.
func (p *proc) afterInitialize(server string, tools ...string) {
	p.t.Helper()
	id, line := p.request(server)
	require.Equal(p.t, mcpRequest(server, `{"jsonrpc":"2.0","method":"notifications/initialized"}`), line)
	p.send(mcpAnswer(id, `{"jsonrpc":"2.0","result":{}}`))
	id, line = p.request(server)
	require.Equal(p.t, mcpRequest(server, `{"method":"tools/list","jsonrpc":"2.0","id":1}`), line)
	p.send(mcpAnswer(id, toolsResult(tools...)))
}

// connect runs the whole handshake of one server that lists tools.
func (p *proc) connect(server string, tools ...string) {
	p.t.Helper()
	id, line := p.request(server)
	require.Equal(p.t, initializeRequest(server), line)
	p.send(mcpAnswer(id, initializeResult(server)))
	p.afterInitialize(server, tools...)
}

// toolUses returns the tool_use blocks of an assistant line.
func toolUses(t *testing.T, a map[string]any) []map[string]any {
	t.Helper()
	msg := a["message"].(map[string]any)
	require.Equal(t, "tool_use", msg["stop_reason"])
	var out []map[string]any
	for _, c := range msg["content"].([]any) {
		b := c.(map[string]any)
		require.Equal(t, "tool_use", b["type"])
		out = append(out, b)
	}
	return out
}

// toolResult reads a user line with one tool_result and returns its
// tool_use_id, text and is_error.
func (p *proc) toolResult() (id, text string, isError bool) {
	p.t.Helper()
	u := p.expect("user", "")
	require.Nil(p.t, u["parent_tool_use_id"])
	require.Contains(p.t, u, "session_id")
	content := u["message"].(map[string]any)["content"].([]any)
	require.Len(p.t, content, 1)
	r := content[0].(map[string]any)
	require.Equal(p.t, "tool_result", r["type"])
	blocks := r["content"].([]any)
	require.Len(p.t, blocks, 1)
	b := blocks[0].(map[string]any)
	require.Equal(p.t, "text", b["type"])
	return r["tool_use_id"].(string), b["text"].(string), r["is_error"].(bool)
}

// toolCall reads the tools/call request of a call of tool on server with
// arguments and JSON-RPC id rpcID, and returns its request id.
func (p *proc) toolCall(server, tool, arguments string, rpcID int) string {
	p.t.Helper()
	id, line := p.request(server)
	require.Equal(p.t, mcpRequest(server, fmt.Sprintf(
		`{"method":"tools/call","params":{"name":%q,"arguments":%s},"jsonrpc":"2.0","id":%d}`,
		tool, arguments, rpcID)), line)
	return id
}

// textResult is a tools/call answer with one text block.
func textResult(rpcID int, text string, isError bool) string {
	q, _ := json.Marshal(text)
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text","text":%s}],"isError":%t}}`,
		rpcID, q, isError)
}

// finish reads the reply after tool results and the result line, and
// returns the reply.
func (p *proc) finish() string {
	p.t.Helper()
	reply := assistantText(p.t, p.expect("assistant", ""))
	r := p.expect("result", "success")
	require.Equal(p.t, false, r["is_error"])
	require.Equal(p.t, 2.0, r["num_turns"])
	require.Equal(p.t, "end_turn", r["stop_reason"])
	require.Equal(p.t, reply, r["result"])
	return reply
}

func TestMCPConfigHelpers(t *testing.T) {
	require.Equal(t, `{"mcpServers":{"a":{"type":"sdk","name":"a"},"b \"c\"":{"type":"sdk","name":"b \"c\""}}}`,
		fakecli.SDKMCPConfig("a", `b "c"`))
	require.Equal(t, `{"mcpServers":{}}`, fakecli.SDKMCPConfig())
	require.Equal(t, "mcp__srv__echo", fakecli.MCPToolName("srv", "echo"))
	require.Equal(t, `[fake-tool:mcp__srv__echo {}]`, fakecli.ToolCallMarker("mcp__srv__echo", ""))
	require.Equal(t, `[fake-tool:x {"a":[1]}]`, fakecli.ToolCallMarker("x", `{"a":[1]}`))
	require.Equal(t, "No such tool available: x", fakecli.NoSuchTool("x"))
}

func TestMCPHandshake(t *testing.T) {
	dir := t.TempDir()
	config := `{"mcpServers":{"s1":{"type":"sdk","name":"s1"},"web":{"type":"stdio","command":"nothing"},` +
		`"s2":{"type":"sdk","name":"s2"}}}`
	p := start(t, []string{fakecli.EnvRecordDir + "=" + dir}, append(slices.Clone(streamArgs),
		"--mcp-config", config, "--allowedTools", "mcp__s1__echo,Read", "Write")...)
	p.send(control("st", "mcp_status"), user("hello"))

	// Every initialize at once, in the order of the config; nothing else
	// before all are answered.
	id1, line := p.request("s1")
	require.Equal(t, initializeRequest("s1"), line)
	id2, line := p.request("s2")
	require.Equal(t, initializeRequest("s2"), line)
	p.send(mcpError(id2, "s2 is broken"))
	select {
	case l := <-p.lines:
		require.FailNow(t, "answered before every initialize was", "line: %s", l)
	case <-time.After(100 * time.Millisecond):
	}
	p.send(mcpAnswer(id1, initializeResult("s1")))

	// Then the held mcp_status, then the rest of the handshake of the
	// server that connected only.
	require.Equal(t, success("st", `{"mcpServers":[{"name":"s1","status":"connected","serverInfo":{"name":"s1","version":"1.0.0"}},`+
		`{"name":"s2","status":"failed","error":"s2 is broken"}]}`), p.next())
	p.afterInitialize("s1", "echo", "add")

	// The held user line runs once the handshake is over.
	init := p.expect("system", "init")
	require.Equal(t, []any{"mcp__s1__echo", "mcp__s1__add"}, init["tools"])
	require.Equal(t, []any{
		map[string]any{"name": "s1", "status": "connected", "source": "sdk"},
		map[string]any{"name": "s2", "status": "failed", "source": "sdk"},
	}, init["mcp_servers"])
	require.Equal(t, []any{"mcp__s1__echo", "Read", "Write"}, init["fake_allowed_tools"])
	require.Equal(t, "echo: hello", assistantText(t, p.expect("assistant", "")))
	p.expect("result", "success")

	// Later init lines, a /clear's too, list the servers as well.
	p.send(user("/clear"))
	p.expect("conversation_reset", "")
	p.expect("system", "background_tasks_changed")
	require.Equal(t, []any{"mcp__s1__echo", "mcp__s1__add"}, p.expect("system", "init")["tools"])
	p.expect("result", "success")
	p.closeStdin()
	p.eof()
	require.Equal(t, 0, p.exitCode())

	// The recorder has every line, answers included.
	b, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(p.cmd.Process.Pid)+".jsonl"))
	require.NoError(t, err)
	require.Equal(t, 4, strings.Count(string(b), `"type":"control_response"`))
	args, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(p.cmd.Process.Pid)+".args"))
	require.NoError(t, err)
	require.Contains(t, string(args), "\n--allowedTools\nmcp__s1__echo,Read\nWrite\n")
}

func TestMCPHandshakeBuiltinTools(t *testing.T) {
	// Without --tools, the default tools come first; a JSON-RPC error
	// answer to initialize fails the server too, and a config file works
	// like its text.
	file := filepath.Join(t.TempDir(), "mcp.json")
	require.NoError(t, os.WriteFile(file, []byte(fakecli.SDKMCPConfig("a", "b")), 0o644))
	p := start(t, nil, "-p", "--input-format", "stream-json", "--output-format", "stream-json",
		"--verbose", "--mcp-config", file)
	ida, _ := p.request("a")
	idb, _ := p.request("b")
	p.send(mcpAnswer(idb, `{"jsonrpc":"2.0","id":0,"error":{"code":-32603,"message":"no"}}`),
		mcpAnswer(ida, initializeResult("a")))
	p.afterInitialize("a", "t")
	p.send(control("st", "mcp_status"))
	require.Equal(t, success("st", `{"mcpServers":[{"name":"a","status":"connected","serverInfo":{"name":"a","version":"1.0.0"}},`+
		`{"name":"b","status":"failed","error":"no"}]}`), p.next())
	p.send(user("hi"))
	init := p.expect("system", "init")
	require.Equal(t, []any{"Task", "Bash", "Edit", "Read", "WebFetch", "WebSearch", "Write", "mcp__a__t"}, init["tools"])
	require.NotContains(t, init, "fake_allowed_tools")
	p.closeStdin()
	p.expect("assistant", "")
	p.expect("result", "success")
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestMCPEOFDuringHandshake(t *testing.T) {
	p := startMCP(t, nil, []string{"s"})
	p.request("s")
	p.send(user("hi"))
	p.closeStdin()
	// The initialize fails: the server is failed, and the held turn runs.
	init := p.expect("system", "init")
	require.Equal(t, []any{map[string]any{"name": "s", "status": "failed", "source": "sdk"}}, init["mcp_servers"])
	p.expect("assistant", "")
	p.expect("result", "success")
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestMCPToolCall(t *testing.T) {
	p := startMCP(t, nil, []string{"srv"})
	p.connect("srv", "echo")
	p.send(user("please " + fakecli.ToolCallMarker(fakecli.MCPToolName("srv", "echo"), `{"text":"ping","n":[1,2]}`)))
	sid := p.expect("system", "init")["session_id"]
	a := p.expect("assistant", "")
	require.Equal(t, sid, a["session_id"])
	uses := toolUses(t, a)
	require.Equal(t, []map[string]any{{"type": "tool_use", "id": "toolu_fake_1", "name": "mcp__srv__echo",
		"input": map[string]any{"text": "ping", "n": []any{1.0, 2.0}}}}, uses)
	id := p.toolCall("srv", "echo", `{"text":"ping","n":[1,2]}`, 2)
	p.send(mcpAnswer(id, `{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"pong"},`+
		`{"type":"text","text":"again"}]}}`))
	useID, text, isError := p.toolResult()
	require.Equal(t, "toolu_fake_1", useID)
	require.Equal(t, "pong\nagain", text)
	require.False(t, isError)
	require.Equal(t, "tool echo said: pong\nagain", p.finish())

	// The next call numbers on: tool_use id and JSON-RPC id.
	p.send(user(fakecli.ToolCallMarker("mcp__srv__echo", "")))
	p.expect("system", "init")
	require.Equal(t, "toolu_fake_2", toolUses(t, p.expect("assistant", ""))[0]["id"])
	id = p.toolCall("srv", "echo", `{}`, 3)
	p.send(mcpAnswer(id, textResult(3, "ok", false)))
	useID, text, _ = p.toolResult()
	require.Equal(t, "toolu_fake_2", useID)
	require.Equal(t, "ok", text)
	require.Equal(t, "tool echo said: ok", p.finish())

	// An answer to no request is ignored, and turns without markers are
	// as before.
	p.send(mcpAnswer(id, textResult(3, "late", false)))
	_, reply := p.turnOK("plain")
	require.Equal(t, "echo: plain", reply)
	p.closeStdin()
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestMCPToolCallPartialMessages(t *testing.T) {
	p := startMCP(t, nil, []string{"srv"}, "--include-partial-messages")
	p.connect("srv", "echo")
	p.send(user(fakecli.ToolCallMarker("mcp__srv__echo", `{"a":1}`)))
	p.expect("system", "init")
	p.expect("system", "status")
	var events []string
	for {
		m := p.nextJSON()
		if m["type"] == "assistant" {
			break
		}
		require.Equal(t, "stream_event", m["type"])
		ev := m["event"].(map[string]any)
		typ := ev["type"].(string)
		switch typ {
		case "content_block_start":
			typ += ":" + ev["content_block"].(map[string]any)["type"].(string)
		case "content_block_delta":
			d := ev["delta"].(map[string]any)
			require.Equal(t, `{"a":1}`, d["partial_json"])
			typ += ":" + d["type"].(string)
		case "message_delta":
			typ += ":" + ev["delta"].(map[string]any)["stop_reason"].(string)
		}
		events = append(events, typ)
	}
	require.Equal(t, []string{"message_start", "content_block_start:tool_use", "content_block_delta:input_json_delta",
		"content_block_stop", "message_delta:tool_use", "message_stop"}, events)
	id := p.toolCall("srv", "echo", `{"a":1}`, 2)
	p.send(mcpAnswer(id, textResult(2, "fine", false)))
	p.toolResult()
	// The reply streams as any other, in a message of its own.
	p.expect("system", "status")
	var deltas []string
	for {
		m := p.nextJSON()
		if m["type"] == "assistant" {
			require.Equal(t, "tool echo said: fine", assistantText(t, m))
			require.Equal(t, "msg_fake_000002", m["message"].(map[string]any)["id"])
			break
		}
		require.Equal(t, "stream_event", m["type"])
		require.Equal(t, "msg_fake_000002", m["api_message_id"])
		if d, ok := m["event"].(map[string]any)["delta"].(map[string]any); ok && d["type"] == "text_delta" {
			deltas = append(deltas, d["text"].(string))
		}
	}
	require.Equal(t, "tool echo said: fine", strings.Join(deltas, ""))
	require.Equal(t, 2.0, p.expect("result", "success")["num_turns"])
}

func TestMCPToolErrors(t *testing.T) {
	p := startMCP(t, nil, []string{"srv"})
	p.connect("srv", "echo")
	for i, tt := range []struct {
		name, answer, text string
	}{
		{"error response", `{"type":"control_response","response":{"subtype":"error","request_id":"ID","error":"boom"}}`, "boom"},
		{"isError", mcpAnswer("ID", textResult(2, "bad input", true)), "bad input"},
		{"JSON-RPC error", mcpAnswer("ID", `{"jsonrpc":"2.0","id":4,"error":{"code":-32602,"message":"invalid params"}}`), "invalid params"},
	} {
		p.send(user(fakecli.ToolCallMarker("mcp__srv__echo", "")))
		p.expect("system", "init")
		p.expect("assistant", "")
		id := p.toolCall("srv", "echo", `{}`, 2+i)
		p.send(strings.Replace(tt.answer, `"ID"`, `"`+id+`"`, 1))
		_, text, isError := p.toolResult()
		require.True(t, isError, tt.name)
		require.Equal(t, tt.text, text, tt.name)
		require.Equal(t, "tool echo failed: "+tt.text, p.finish(), tt.name)
	}
}

func TestMCPUnknownTool(t *testing.T) {
	p := startMCP(t, nil, []string{"srv"})
	p.connect("srv", "echo")
	p.send(user(fakecli.ToolCallMarker("mcp__srv__nope", `{"x":1}`) + " " +
		fakecli.ToolCallMarker("mcp__other__echo", "")))
	p.expect("system", "init")
	require.Len(t, toolUses(t, p.expect("assistant", "")), 2)
	// No request is sent: the results come at once.
	_, text, isError := p.toolResult()
	require.True(t, isError)
	require.Equal(t, "No such tool available: mcp__srv__nope", text)
	_, text, isError = p.toolResult()
	require.True(t, isError)
	require.Equal(t, fakecli.NoSuchTool("mcp__other__echo"), text)
	require.Equal(t, "tool nope failed: No such tool available: mcp__srv__nope\n"+
		"tool echo failed: No such tool available: mcp__other__echo", p.finish())

	// A marker whose input is no JSON object is no marker.
	_, reply := p.turnOK("[fake-tool:mcp__srv__echo nope]")
	require.Equal(t, "echo: [fake-tool:mcp__srv__echo nope]", reply)
	p.closeStdin()
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestMCPNoServersToolCall(t *testing.T) {
	// Without --mcp-config there is no handshake and no MCP tool.
	p := startStream(t)
	p.send(user(fakecli.ToolCallMarker("mcp__srv__echo", "")))
	init := p.expect("system", "init")
	require.Equal(t, []any{}, init["mcp_servers"])
	p.expect("assistant", "")
	_, text, _ := p.toolResult()
	require.Equal(t, fakecli.NoSuchTool("mcp__srv__echo"), text)
	p.finish()
}

func TestMCPTwoCalls(t *testing.T) {
	p := startMCP(t, nil, []string{"a", "b"})
	ida, _ := p.request("a")
	idb, _ := p.request("b")
	p.send(mcpAnswer(ida, initializeResult("a")), mcpAnswer(idb, initializeResult("b")))
	p.afterInitialize("a", "one")
	p.afterInitialize("b", "two")

	p.send(user("do both: " + fakecli.ToolCallMarker("mcp__a__one", `{"k":"v"}`) + " and " +
		fakecli.ToolCallMarker("mcp__b__two", `{"n":2}`)))
	p.expect("system", "init")
	uses := toolUses(t, p.expect("assistant", ""))
	require.Len(t, uses, 2)
	require.Equal(t, "toolu_fake_1", uses[0]["id"])
	require.Equal(t, "mcp__a__one", uses[0]["name"])
	require.Equal(t, "toolu_fake_2", uses[1]["id"])
	require.Equal(t, "mcp__b__two", uses[1]["name"])

	// One after another: the second request only after the first answer.
	id := p.toolCall("a", "one", `{"k":"v"}`, 2)
	select {
	case l := <-p.lines:
		require.FailNow(t, "second call before the first answer", "line: %s", l)
	case <-time.After(100 * time.Millisecond):
	}
	p.send(mcpAnswer(id, textResult(2, "first", false)))
	useID, text, _ := p.toolResult()
	require.Equal(t, "toolu_fake_1", useID)
	require.Equal(t, "first", text)
	id = p.toolCall("b", "two", `{"n":2}`, 2)
	p.send(mcpError(id, "second failed"))
	useID, text, isError := p.toolResult()
	require.Equal(t, "toolu_fake_2", useID)
	require.Equal(t, "second failed", text)
	require.True(t, isError)
	require.Equal(t, "tool one said: first\ntool two failed: second failed", p.finish())
}

func TestMCPInterruptWhileWaiting(t *testing.T) {
	p := startMCP(t, nil, []string{"srv"})
	p.connect("srv", "echo")
	p.send(user(fakecli.ToolCallMarker("mcp__srv__echo", `{"i":1}`) + fakecli.ToolCallMarker("mcp__srv__echo", `{"i":2}`)))
	p.expect("system", "init")
	p.expect("assistant", "")
	id := p.toolCall("srv", "echo", `{"i":1}`, 2)

	// Other control requests are answered while the call waits.
	p.send(control("st", "mcp_status"))
	require.Contains(t, p.next(), `"request_id":"st"`)
	p.send(control("int", "interrupt"))
	require.Equal(t, success("int", `{}`), p.next())
	for _, want := range []string{"toolu_fake_1", "toolu_fake_2"} {
		useID, text, isError := p.toolResult()
		require.Equal(t, want, useID)
		require.Equal(t, fakecli.InterruptedToolUse, text)
		require.True(t, isError)
	}
	u := p.expect("user", "")
	require.Equal(t, "[Request interrupted by user]", u["message"].(map[string]any)["content"].([]any)[0].(map[string]any)["text"])
	r := p.expect("result", "error_during_execution")
	require.Equal(t, true, r["is_error"])
	require.Equal(t, "aborted_tools", r["terminal_reason"])

	// A late answer is ignored; the process keeps serving.
	p.send(mcpAnswer(id, textResult(2, "late", false)))
	_, reply := p.turnOK("next")
	require.Equal(t, "echo: next", reply)
	p.closeStdin()
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestMCPEOFWhileWaiting(t *testing.T) {
	p := startMCP(t, nil, []string{"srv"})
	p.connect("srv", "echo")
	p.send(user(fakecli.ToolCallMarker("mcp__srv__echo", "")))
	p.expect("system", "init")
	p.expect("assistant", "")
	p.toolCall("srv", "echo", `{}`, 2)
	p.closeStdin()
	_, text, isError := p.toolResult()
	require.Equal(t, fakecli.StreamClosedError, text)
	require.True(t, isError)
	require.Equal(t, "tool echo failed: Stream closed", p.finish())
	p.eof()
	require.Equal(t, 0, p.exitCode())
}
