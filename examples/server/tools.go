package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/claudepool/claudepool"
)

// Tools the client answers.
//
// The server offers the model the tools of its -tools file, as the pool's
// GoTools without a Handler: the CLI lists them once, when it starts, so
// they are fixed for the server's life. A request offers some of them
// (its "tools", each as the server has it) with its "tool_choice"; a
// reply that calls them ends with their tool_use blocks and stop_reason
// "tool_use", while the process that ran it holds the turn, paused; the
// request that brings the tool_result blocks resumes that turn there.

// toolDef is a tool as the Messages API defines it.
type toolDef struct {
	Name        string
	Description string
	InputSchema json.RawMessage
	schema      any // InputSchema decoded, to compare a request's with
}

// toolName is what the pool takes as a tool's name.
var toolName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// parseToolDef reads a tool definition: name, input_schema (an object)
// and an optional description; a "type" other than "custom" (the API's
// own tools: bash, web search, ...) is an error, cache_control is
// ignored.
func parseToolDef(where string, raw json.RawMessage) (toolDef, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return toolDef{}, fmt.Errorf("%s: must be a tool object", where)
	}
	for _, name := range sortedKeys(fields) {
		if !slices.Contains([]string{"name", "description", "input_schema", "type", "cache_control"}, name) {
			return toolDef{}, fmt.Errorf("%s.%s: unsupported field: a tool takes name, description and input_schema", where, name)
		}
	}
	if v := fields["type"]; !isNull(v) {
		var kind string
		if err := json.Unmarshal(v, &kind); err != nil || kind != "custom" {
			return toolDef{}, fmt.Errorf("%s.type: %s tools are not supported by this server, which offers custom tools only", where, v)
		}
	}
	var d toolDef
	if err := json.Unmarshal(fields["name"], &d.Name); err != nil || d.Name == "" {
		return toolDef{}, fmt.Errorf("%s.name: field required, a string", where)
	}
	if !toolName.MatchString(d.Name) {
		return toolDef{}, fmt.Errorf("%s.name: %q is not 1 to 64 letters, digits, _ or -", where, d.Name)
	}
	if v := fields["description"]; !isNull(v) {
		if err := json.Unmarshal(v, &d.Description); err != nil {
			return toolDef{}, fmt.Errorf("%s.description: must be a string", where)
		}
	}
	switch _, ok, err := objectField(fields, "input_schema"); {
	case err != nil:
		return toolDef{}, fmt.Errorf("%s.input_schema: must be a JSON schema object", where)
	case !ok:
		return toolDef{}, fmt.Errorf("%s.input_schema: field required", where)
	}
	d.InputSchema = append(json.RawMessage(nil), fields["input_schema"]...)
	if err := json.Unmarshal(d.InputSchema, &d.schema); err != nil {
		return toolDef{}, fmt.Errorf("%s.input_schema: %w", where, err)
	}
	return d, nil
}

// toolSet is the tools a server offers: those of its -tools file.
type toolSet struct {
	defs []toolDef
}

// newToolSet checks defs (unique names) and returns their set, nil for
// none.
func newToolSet(defs []toolDef) (*toolSet, error) {
	if len(defs) == 0 {
		return nil, nil
	}
	seen := map[string]bool{}
	for i, d := range defs {
		if seen[d.Name] {
			return nil, fmt.Errorf("tools.%d.name: two tools are named %q", i, d.Name)
		}
		seen[d.Name] = true
	}
	return &toolSet{defs: defs}, nil
}

// loadTools reads a -tools file: a JSON list of Messages API tool
// definitions, [{"name", "description", "input_schema"}, ...].
func loadTools(path string) (*toolSet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	var list []json.RawMessage
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("%s: must be a JSON list of tool definitions: %w", path, err)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%s: lists no tools", path)
	}
	defs := make([]toolDef, len(list))
	for i, raw := range list {
		if defs[i], err = parseToolDef(fmt.Sprintf("tools.%d", i), raw); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	ts, err := newToolSet(defs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ts, nil
}

// goTools are the pool's tools: each answered by the client (no
// Handler).
func (ts *toolSet) goTools() []claudepool.Tool {
	if ts == nil {
		return nil
	}
	out := make([]claudepool.Tool, len(ts.defs))
	for i, d := range ts.defs {
		out[i] = claudepool.Tool{Name: d.Name, Description: d.Description, InputSchema: d.InputSchema}
	}
	return out
}

// lookup returns the server's tool named name, nil for none.
func (ts *toolSet) lookup(name string) *toolDef {
	if ts == nil {
		return nil
	}
	for i := range ts.defs {
		if ts.defs[i].Name == name {
			return &ts.defs[i]
		}
	}
	return nil
}

// has reports whether the server offers a tool named name.
func (ts *toolSet) has(name string) bool { return ts.lookup(name) != nil }

// names lists the server's tools for an error message.
func (ts *toolSet) names() string {
	if ts == nil {
		return "none: it was started without -tools"
	}
	names := make([]string, len(ts.defs))
	for i, d := range ts.defs {
		names[i] = d.Name
	}
	return strings.Join(names, ", ")
}

// toolParams reads a request's tools and tool_choice into req.GoTools and
// req.ToolChoice. Each tool must be one of the server's, with the same
// input_schema (its description is the server's); a tool_choice that
// forces a call (any, or a tool) turns the CLI's thinking off, as the API
// takes no thinking with it, and is a 400 with thinking asked for.
// disable_parallel_tool_use true is a 400: the pool cannot ask for it.
// req.Thinking must be set.
func toolParams(fields map[string]json.RawMessage, req *claudepool.Request, tools *toolSet) error {
	var offered []string
	if v := fields["tools"]; !isNull(v) {
		var list []json.RawMessage
		if err := json.Unmarshal(v, &list); err != nil {
			return errors.New("tools: must be a list")
		}
		for i, raw := range list {
			where := fmt.Sprintf("tools.%d", i)
			d, err := parseToolDef(where, raw)
			if err != nil {
				return err
			}
			own := tools.lookup(d.Name)
			switch {
			case own == nil:
				return fmt.Errorf("%s.name: %q is not one of this server's tools: it offers only the tools it was started with (%s)", where, d.Name, tools.names())
			case !reflect.DeepEqual(own.schema, d.schema):
				return fmt.Errorf("%s.input_schema: differs from that of this server's tool %q: it offers only the tools it was started with, as they were defined", where, d.Name)
			case slices.Contains(offered, d.Name):
				return fmt.Errorf("%s.name: %q is offered twice; tool names must be unique", where, d.Name)
			}
			offered = append(offered, d.Name)
		}
	}
	choice, err := toolChoice(fields, offered)
	if err != nil {
		return err
	}
	if len(offered) == 0 {
		// No tools: tool_choice auto or none asks for nothing. A server
		// with tools offers none (serveChat).
		return nil
	}
	req.GoTools, req.ToolChoice = offered, choice
	if choice != "" && choice != "auto" && choice != "none" {
		switch {
		case req.Thinking == nil:
			req.Thinking = &claudepool.Thinking{Type: claudepool.ThinkingDisabled}
		case req.Thinking.Type != claudepool.ThinkingDisabled:
			return errors.New("thinking: not with a tool_choice that forces tool use (\"any\" or \"tool\"), as in the API")
		}
	}
	return nil
}

// toolChoice reads a request's tool_choice: "" when absent, else "auto",
// "any", "none" or the name of a tool of offered.
func toolChoice(fields map[string]json.RawMessage, offered []string) (string, error) {
	tc, ok, err := objectField(fields, "tool_choice")
	if err != nil || !ok {
		return "", err
	}
	for _, name := range sortedKeys(tc) {
		if !slices.Contains([]string{"type", "name", "disable_parallel_tool_use"}, name) {
			return "", fmt.Errorf("tool_choice.%s: unsupported field", name)
		}
	}
	if v := tc["disable_parallel_tool_use"]; !isNull(v) {
		var b bool
		if err := json.Unmarshal(v, &b); err != nil {
			return "", errors.New("tool_choice.disable_parallel_tool_use: must be a boolean")
		}
		if b {
			return "", errors.New("tool_choice.disable_parallel_tool_use: not supported by this server: the model may call several tools in one reply")
		}
	}
	var kind string
	if err := json.Unmarshal(tc["type"], &kind); err != nil {
		return "", errors.New("tool_choice.type: field required: \"auto\", \"any\", \"tool\" or \"none\"")
	}
	name := tc["name"]
	switch kind {
	case "auto", "any", "none":
		if !isNull(name) {
			return "", fmt.Errorf("tool_choice.name: only with type \"tool\", not %q", kind)
		}
		if kind == "any" && len(offered) == 0 {
			return "", errors.New("tool_choice: type \"any\" needs tools")
		}
		return kind, nil
	case "tool":
		var n string
		if err := json.Unmarshal(name, &n); err != nil || n == "" {
			return "", errors.New("tool_choice.name: field required with type \"tool\"")
		}
		if !slices.Contains(offered, n) {
			return "", fmt.Errorf("tool_choice.name: %q is not one of the request's tools", n)
		}
		return n, nil
	}
	return "", fmt.Errorf("tool_choice.type: must be \"auto\", \"any\", \"tool\" or \"none\", got %q", kind)
}

// toolUseBlock reads an assistant turn's tool_use block. Its input is
// re-encoded as JavaScript's JSON.stringify writes it (jsJSON): the CLI
// wrote it so, and the pool finds the process that holds the paused turn
// by the bytes of its calls, which a client that decoded the reply and
// encoded its history again may have changed.
func toolUseBlock(where string, raw json.RawMessage) (claudepool.Block, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return claudepool.Block{}, fmt.Errorf("%s: must be a content block object", where)
	}
	for _, name := range sortedKeys(fields) {
		if !slices.Contains([]string{"type", "id", "name", "input", "cache_control"}, name) {
			return claudepool.Block{}, fmt.Errorf("%s.%s: unsupported field for tool_use blocks", where, name)
		}
	}
	var id, name string
	if err := json.Unmarshal(fields["id"], &id); err != nil || id == "" {
		return claudepool.Block{}, fmt.Errorf("%s.id: field required, a string", where)
	}
	if err := json.Unmarshal(fields["name"], &name); err != nil || name == "" {
		return claudepool.Block{}, fmt.Errorf("%s.name: field required, a string", where)
	}
	if _, ok, err := objectField(fields, "input"); err != nil || !ok {
		return claudepool.Block{}, fmt.Errorf("%s.input: field required, an object", where)
	}
	input, err := jsJSON(fields["input"])
	if err != nil {
		return claudepool.Block{}, fmt.Errorf("%s.input: %w", where, err)
	}
	return claudepool.ToolUseBlock(id, name, input), nil
}

// answeredCalls checks, as the API does, that the user message after
// each assistant message with tool_use blocks answers every call with a
// tool_result. (The pool checks the converse: each tool_result answers a
// call of the message before.)
func answeredCalls(msgs []claudepool.Message) error {
	for i, m := range msgs[:len(msgs)-1] {
		for _, b := range m.Blocks {
			if b.Type != claudepool.BlockToolUse {
				continue
			}
			if !slices.ContainsFunc(msgs[i+1].Blocks, func(r claudepool.Block) bool {
				return r.Type == claudepool.BlockToolResult && r.ToolUseID == b.ID
			}) {
				return fmt.Errorf("messages.%d: tool_use %q has no tool_result in the message after it; each call needs its result there", i+1, b.ID)
			}
		}
	}
	return nil
}

// toolResultBlock reads a user turn's tool_result block: its content is
// a string, or a list of text blocks, joined by "\n" (other blocks, such
// as images, are an error).
func toolResultBlock(where string, raw json.RawMessage) (claudepool.Block, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return claudepool.Block{}, fmt.Errorf("%s: must be a content block object", where)
	}
	for _, name := range sortedKeys(fields) {
		if !slices.Contains([]string{"type", "tool_use_id", "content", "is_error", "cache_control"}, name) {
			return claudepool.Block{}, fmt.Errorf("%s.%s: unsupported field for tool_result blocks", where, name)
		}
	}
	var id string
	if err := json.Unmarshal(fields["tool_use_id"], &id); err != nil || id == "" {
		return claudepool.Block{}, fmt.Errorf("%s.tool_use_id: field required, a string", where)
	}
	var isError bool
	if v := fields["is_error"]; !isNull(v) {
		if err := json.Unmarshal(v, &isError); err != nil {
			return claudepool.Block{}, fmt.Errorf("%s.is_error: must be a boolean", where)
		}
	}
	var text string
	if v := fields["content"]; !isNull(v) {
		if err := json.Unmarshal(v, &text); err != nil {
			var blocks []json.RawMessage
			if err := json.Unmarshal(v, &blocks); err != nil {
				return claudepool.Block{}, fmt.Errorf("%s.content: must be a string or a list of text blocks", where)
			}
			texts := make([]string, len(blocks))
			for i, b := range blocks {
				var tb struct {
					Type string  `json:"type"`
					Text *string `json:"text"`
				}
				if err := json.Unmarshal(b, &tb); err != nil || tb.Type != "text" || tb.Text == nil {
					return claudepool.Block{}, fmt.Errorf("%s.content.%d: this server takes text blocks only in a tool_result", where, i)
				}
				texts[i] = *tb.Text
			}
			text = strings.Join(texts, "\n")
		}
	}
	return claudepool.ToolResultBlock(id, text, isError), nil
}

// jsJSON re-encodes the JSON value raw as JavaScript's
// JSON.stringify(JSON.parse(raw)) does: without white space, the keys in
// their order, strings escaped as JSON.stringify escapes them (only ",
// \ and control characters) and numbers as JavaScript writes them.
func jsJSON(raw []byte) ([]byte, error) {
	if !json.Valid(raw) {
		return nil, errors.New("not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out bytes.Buffer
	type frame struct {
		object bool
		n      int // keys and values, or elements, written so far
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			out.WriteByte(byte(d))
			stack = stack[:len(stack)-1]
			continue
		}
		if n := len(stack); n > 0 {
			f := &stack[n-1]
			switch {
			case f.object && f.n%2 == 1:
				out.WriteByte(':')
			case f.n > 0:
				out.WriteByte(',')
			}
			f.n++
		}
		switch t := tok.(type) {
		case json.Delim:
			out.WriteByte(byte(t))
			stack = append(stack, frame{object: t == '{'})
		case string:
			jsString(&out, t)
		case json.Number:
			out.WriteString(jsNumber(t))
		case bool:
			out.WriteString(strconv.FormatBool(t))
		case nil:
			out.WriteString("null")
		}
	}
}

// jsString writes s as JSON.stringify writes a string.
func jsString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 {
				fmt.Fprintf(b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// jsNumber writes a JSON number as JavaScript writes the double it parses
// to (Number.prototype.toString): 1.0 as 1, 1E3 as 1000, 1e21 as 1e+21.
// A number beyond the doubles is null, as JSON.stringify writes Infinity.
func jsNumber(n json.Number) string {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return "null"
	}
	if f == 0 {
		return "0"
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // -d.ddde±x
	sign := ""
	if s[0] == '-' {
		sign, s = "-", s[1:]
	}
	mant, exp, _ := strings.Cut(s, "e")
	digits := strings.Replace(mant, ".", "", 1)
	e, _ := strconv.Atoi(exp)
	k, pt := len(digits), e+1 // the value is 0.digits × 10^pt
	switch {
	case k <= pt && pt <= 21:
		return sign + digits + strings.Repeat("0", pt-k)
	case 0 < pt && pt <= 21:
		return sign + digits[:pt] + "." + digits[pt:]
	case -6 < pt && pt <= 0:
		return sign + "0." + strings.Repeat("0", -pt) + digits
	}
	es := "+"
	if e < 0 {
		es, e = "-", -e
	}
	if k > 1 {
		digits = digits[:1] + "." + digits[1:]
	}
	return sign + digits + "e" + es + strconv.Itoa(e)
}
