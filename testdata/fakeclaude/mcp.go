package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/claudepool/claudepool/internal/fakecli"
)

// The SDK MCP servers of --mcp-config live in the process that spawned
// the CLI: the CLI sends them MCP (JSON-RPC) messages inside mcp_message
// control requests on stdout and reads the answers from control_response
// lines on stdin, as the real CLI (2.1.330) does.

// sdkServers returns the names of the servers of type "sdk" in an
// --mcp-config value, a JSON object or the path of a file holding one, in
// the order of the JSON text. Servers of other types are ignored.
func sdkServers(value string) ([]string, error) {
	text := []byte(strings.TrimSpace(value))
	if !bytes.HasPrefix(text, []byte("{")) {
		b, err := os.ReadFile(value)
		if err != nil {
			return nil, err
		}
		text = b
	}
	var cfg struct {
		MCPServers json.RawMessage `json:"mcpServers"`
	}
	if err := json.Unmarshal(text, &cfg); err != nil {
		return nil, err
	}
	if len(cfg.MCPServers) == 0 || string(cfg.MCPServers) == "null" {
		return nil, nil
	}
	keys, values, err := objectFields(cfg.MCPServers)
	if err != nil {
		return nil, fmt.Errorf("mcpServers: %w", err)
	}
	var names []string
	for i, k := range keys {
		var server struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(values[i], &server); err != nil {
			return nil, fmt.Errorf("mcpServers.%s: %w", k, err)
		}
		if server.Type == "sdk" {
			names = append(names, k)
		}
	}
	return names, nil
}

// objectFields returns the keys and values of a JSON object in order.
func objectFields(raw json.RawMessage) (keys []string, values []json.RawMessage, err error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, errors.New("not an object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		keys, values = append(keys, tok.(string)), append(values, v)
	}
	return keys, values, nil
}

// mcpTool is one tool of a server's tools/list answer.
type mcpTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"inputSchema"`
}

// sdkServer is the state of one SDK MCP server.
type sdkServer struct {
	name       string
	status     string // "pending", then "connected" or "failed"
	err        string // why it failed
	serverInfo json.RawMessage
	tools      []mcpTool
	nextID     int // the next JSON-RPC request id
}

// controlReply is the answer to a control request the fake sent.
type controlReply struct {
	ok       bool            // subtype "success"
	response json.RawMessage // response.response of a success
	err      string          // response.error of an error
}

// mcp holds the SDK MCP servers and the control requests the fake has
// sent and not yet seen answered. The handshake, the turns and the
// session's loop share it.
type mcp struct {
	out *output

	mu        sync.Mutex
	servers   []*sdkServer
	pending   map[string]chan controlReply
	closedErr string // set at stdin EOF: the error of every request from then on
}

func newMCP(out *output, names []string) *mcp {
	m := &mcp{out: out, pending: map[string]chan controlReply{}}
	for _, n := range names {
		m.servers = append(m.servers, &sdkServer{name: n, status: "pending"})
	}
	return m
}

// request sends message, built with the server's next JSON-RPC id (or
// none when hasID is false), to server in an mcp_message control request,
// and returns the request id and the channel its answer comes on.
func (m *mcp) request(srv *sdkServer, hasID bool, message func(id int) object) (string, <-chan controlReply) {
	id := newUUID()
	ch := make(chan controlReply, 1)
	m.mu.Lock()
	rpcID := srv.nextID
	if hasID {
		srv.nextID++
	}
	if m.closedErr != "" {
		ch <- controlReply{err: m.closedErr}
	} else {
		m.pending[id] = ch
	}
	m.mu.Unlock()
	m.out.line(obj("type", "control_request", "request_id", id, "request", obj(
		"subtype", "mcp_message", "server_name", srv.name, "message", message(rpcID))))
	return id, ch
}

// deliver hands the control_response of request id to its waiter; an
// answer to no request in flight is ignored.
func (m *mcp) deliver(id string, r controlReply) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ch, ok := m.pending[id]; ok {
		delete(m.pending, id)
		ch <- r
	}
}

// cancel forgets request id: a later answer is ignored.
func (m *mcp) cancel(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pending, id)
}

// closeAll fails every request in flight, and every later one, with
// fakecli.StreamClosedError: no answer can come once stdin has ended.
func (m *mcp) closeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closedErr = fakecli.StreamClosedError
	for id, ch := range m.pending {
		delete(m.pending, id)
		ch <- controlReply{err: m.closedErr}
	}
}

// rpc returns the result of the JSON-RPC answer in r, or the text of its
// error: the error of an error response, the message of a JSON-RPC error,
// or a note that the answer holds no mcp_response.
func (r controlReply) rpc() (result json.RawMessage, errText string) {
	if !r.ok {
		if r.err == "" {
			return nil, "error"
		}
		return nil, r.err
	}
	var resp struct {
		MCPResponse *struct {
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		} `json:"mcp_response"`
	}
	if json.Unmarshal(r.response, &resp) != nil || resp.MCPResponse == nil {
		return nil, "Invalid MCP response: no mcp_response"
	}
	if e := resp.MCPResponse.Error; e != nil {
		return nil, e.Message
	}
	return resp.MCPResponse.Result, ""
}

// handshake connects every server as the real CLI does: it sends every
// initialize at once, in the order of --mcp-config, and waits for all the
// answers; then it closes initDone and waits for resume (the session
// answers the lines it held meanwhile); then, server by server, it sends
// notifications/initialized and tools/list to every connected server,
// each after the answer to the one before. It closes done at the end.
func (m *mcp) handshake(initDone chan<- struct{}, resume <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	waits := make([]<-chan controlReply, len(m.servers))
	for i, srv := range m.servers {
		_, waits[i] = m.request(srv, true, func(id int) object {
			return obj("method", "initialize", "params", obj(
				"protocolVersion", fakecli.MCPProtocolVersion, "capabilities", obj(),
				"clientInfo", obj("name", "claude-code", "version", "2.1.330")),
				"jsonrpc", "2.0", "id", id)
		})
	}
	for i, srv := range m.servers {
		result, errText := (<-waits[i]).rpc()
		var init struct {
			ServerInfo json.RawMessage `json:"serverInfo"`
		}
		_ = json.Unmarshal(result, &init)
		m.mu.Lock()
		if errText != "" {
			srv.status, srv.err = "failed", errText
		} else {
			srv.status, srv.serverInfo = "connected", init.ServerInfo
		}
		m.mu.Unlock()
	}
	close(initDone)
	<-resume
	for _, srv := range m.servers {
		if srv.status != "connected" {
			continue
		}
		_, wait := m.request(srv, false, func(int) object {
			return obj("jsonrpc", "2.0", "method", "notifications/initialized")
		})
		<-wait
		_, wait = m.request(srv, true, func(id int) object {
			return obj("method", "tools/list", "jsonrpc", "2.0", "id", id)
		})
		result, errText := (<-wait).rpc()
		var list struct {
			Tools []mcpTool `json:"tools"`
		}
		if errText == "" {
			_ = json.Unmarshal(result, &list)
		}
		m.mu.Lock()
		srv.tools = list.Tools
		m.mu.Unlock()
	}
}

// status is the mcpServers list of an mcp_status answer.
func (m *mcp) status() []any {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := []any{}
	for _, srv := range m.servers {
		o := obj("name", srv.name, "status", srv.status)
		if srv.serverInfo != nil {
			o = append(o, field{"serverInfo", srv.serverInfo})
		}
		if srv.err != "" {
			o = append(o, field{"error", srv.err})
		}
		list = append(list, o)
	}
	return list
}

// initFields returns the MCP tools ("mcp__NAME__TOOL") and the
// mcp_servers list of a system/init line.
func (m *mcp) initFields() (tools []string, servers []any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	servers = []any{}
	for _, srv := range m.servers {
		for _, t := range srv.tools {
			tools = append(tools, fakecli.MCPToolName(srv.name, t.Name))
		}
		servers = append(servers, obj("name", srv.name, "status", srv.status, "source", "sdk"))
	}
	return tools, servers
}

// lookup finds the server and tool that the model-side name
// mcp__NAME__TOOL stands for, among the tools the servers listed.
func (m *mcp) lookup(name string) (*sdkServer, string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, srv := range m.servers {
		tool, ok := strings.CutPrefix(name, fakecli.MCPToolName(srv.name, ""))
		if !ok {
			continue
		}
		for _, t := range srv.tools {
			if t.Name == tool {
				return srv, tool, true
			}
		}
	}
	return nil, "", false
}

// shortToolName is the name of tool name on its server: TOOL for
// mcp__NAME__TOOL when NAME is a declared server (else the part after the
// second "__"), and name itself for any other name.
func (m *mcp) shortToolName(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, srv := range m.servers {
		if tool, ok := strings.CutPrefix(name, fakecli.MCPToolName(srv.name, "")); ok {
			return tool
		}
	}
	if rest, ok := strings.CutPrefix(name, "mcp__"); ok {
		if _, tool, ok := strings.Cut(rest, "__"); ok {
			return tool
		}
	}
	return name
}

// toolCall is a tool_use block of the model's reply, asked for with a
// fakecli.ToolCallMarker.
type toolCall struct {
	id    string          // toolu_fake_N
	name  string          // as the model names it: mcp__NAME__TOOL
	input json.RawMessage // a JSON object
}

// toolMarkerPrefix starts a fakecli.ToolCallMarker.
const toolMarkerPrefix = "[fake-tool:"

// parseToolCalls returns the tool calls that the markers in text ask for,
// in the order of the text, without ids. A marker whose input is not a
// JSON object followed by "]" is no marker.
func parseToolCalls(text string) []toolCall {
	var calls []toolCall
	for {
		i := strings.Index(text, toolMarkerPrefix)
		if i < 0 {
			return calls
		}
		text = text[i+len(toolMarkerPrefix):]
		name, rest, ok := strings.Cut(text, " ")
		if !ok || name == "" || strings.ContainsAny(name, "[]") {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(rest))
		var input json.RawMessage
		if dec.Decode(&input) != nil || !bytes.HasPrefix(input, []byte("{")) {
			continue
		}
		after := rest[dec.InputOffset():]
		if !strings.HasPrefix(after, "]") {
			continue
		}
		calls = append(calls, toolCall{name: name, input: input})
		text = after[1:]
	}
}
