package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/claudepool/claudepool"
)

// The OpenAI Chat Completions API (POST /v1/chat/completions), so that
// clients written for OpenAI, its official SDKs among them, can use the
// pool by changing their base URL.
//
// The endpoint runs on the handler of /v1/messages (serveChat): the same
// claudepool.Request, the same chat, the same reply reader; only the
// request's parsing and the reply's rendering are its own. A request
// maps to the Messages API's terms:
//
//   - system and developer messages, before the conversation, are the
//     system prompt (joined by a blank line); user messages take text,
//     images (image_url: a base64 data URL, or an http(s) URL the API
//     fetches) and files (file_data: a PDF or a plain-text file as a data
//     URL); assistant messages take text and tool_calls, and tool
//     messages their results;
//   - max_completion_tokens (or max_tokens), temperature (0 to 1: the
//     model's range, not OpenAI's 0 to 2), top_p, stop, user (or
//     safety_identifier, as metadata.user_id) and response_format
//     json_schema (structured output) are set on the chat's API calls by
//     the pool's gateway;
//   - tools are the server's tools (-tools), offered as OpenAI function
//     tools with the server's input schema as their parameters;
//     tool_choice "required" is the API's "any"; the client answers the
//     calls, and the request that brings the tool messages resumes the
//     paused turn on its process, as on /v1/messages.
//
// A field the server cannot honour is a 400 that names it, unless it
// holds the value that asks for nothing (n 1, logprobs false, ...); so is
// a json_object response format, as the model follows JSON schemas, not a
// free-form JSON mode. The reply is a chat.completion, or
// chat.completion.chunk events ending with data: [DONE], without the
// model's thinking; errors have OpenAI's shape, {"error": {"message",
// "type", "param", "code"}}.

// chatCompletions is the handler of POST /v1/chat/completions.
func (s *server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	s.serveChat(w, r, &openaiFormat{tools: s.tools})
}

// openaiFormat is the Chat Completions format. A value serves one
// request: parse keeps what the reply needs beyond the call.
type openaiFormat struct {
	tools *toolSet // the server's tools (-tools); nil for none
	// includeUsage sends a last chunk with the usage
	// (stream_options.include_usage).
	includeUsage bool
}

// openaiFields are the request fields the server knows. Those of
// openaiDefaults it takes only with the value that asks for nothing;
// metadata, service_tier and prompt_cache_key, which say nothing of the
// reply, it takes and ignores.
var openaiFields = map[string]bool{
	"model": true, "messages": true, "stream": true, "stream_options": true,
	// Set on the chat's API calls by the pool's gateway.
	"max_completion_tokens": true, "max_tokens": true, "temperature": true, "top_p": true, "stop": true,
	"response_format": true, "tools": true, "tool_choice": true, "user": true, "safety_identifier": true,
	// Ignored: bookkeeping, not what a reply means.
	"metadata": true, "service_tier": true, "prompt_cache_key": true,
	// openaiDefaults.
	"n": true, "logprobs": true, "top_logprobs": true, "presence_penalty": true, "frequency_penalty": true,
	"logit_bias": true, "seed": true, "store": true, "modalities": true, "parallel_tool_calls": true,
}

// openaiDefaults are the fields the server takes only with the value that
// asks for nothing (or null): want, as JSON; "" for none but null.
var openaiDefaults = []struct{ name, want, why string }{
	{"n", "1", "it returns one choice"},
	{"logprobs", "false", "it returns no log probabilities"},
	{"top_logprobs", "0", "it returns no log probabilities"},
	{"presence_penalty", "0", "its model takes no presence penalty"},
	{"frequency_penalty", "0", "its model takes no frequency penalty"},
	{"logit_bias", "{}", "its model takes no logit bias"},
	{"seed", "", "its model's sampling cannot be seeded"},
	{"store", "false", "it stores no completions"},
	{"modalities", `["text"]`, "it replies with text only"},
	{"parallel_tool_calls", "true", "the model may call several tools in one reply"},
}

// openaiFieldList names the fields the server honours, for an error.
const openaiFieldList = "model, messages, stream, stream_options, max_completion_tokens (or max_tokens), temperature, top_p, stop, " +
	"response_format, tools, tool_choice and user"

func (f *openaiFormat) parse(body []byte) (call, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return call{}, fmt.Errorf("malformed request: %w", err)
	}
	for _, name := range sortedKeys(fields) {
		switch {
		case name == "functions" || name == "function_call":
			return call{}, fmt.Errorf("%s: not supported by this server: send tools and tool_choice", name)
		case !openaiFields[name]:
			return call{}, fmt.Errorf("%s: unsupported field: this server takes %s", name, openaiFieldList)
		}
	}
	for _, d := range openaiDefaults {
		if err := defaultOnly(fields, d.name, d.want, d.why); err != nil {
			return call{}, err
		}
	}
	var model string
	if err := json.Unmarshal(fields["model"], &model); err != nil || model == "" {
		return call{}, errors.New("model: field required, a string")
	}
	req := claudepool.Request{Model: model}
	stream, err := f.streamParams(fields)
	if err != nil {
		return call{}, err
	}
	for _, parse := range []func(map[string]json.RawMessage, *claudepool.Request) error{
		openaiSampling, openaiUser, openaiResponseFormat,
	} {
		if err := parse(fields, &req); err != nil {
			return call{}, err
		}
	}
	if err := openaiTools(fields, &req, f.tools); err != nil {
		return call{}, err
	}
	if req.System, req.Messages, err = openaiMessages(fields["messages"]); err != nil {
		return call{}, err
	}
	return call{req: req, stream: stream, announce: true}, nil
}

// defaultOnly checks a field the server takes only with the value want
// (JSON), or null.
func defaultOnly(fields map[string]json.RawMessage, name, want, why string) error {
	v := fields[name]
	if isNull(v) {
		return nil
	}
	if want != "" {
		var got, w any
		_ = json.Unmarshal([]byte(want), &w)
		if json.Unmarshal(v, &got) == nil && reflect.DeepEqual(got, w) {
			return nil
		}
		return fmt.Errorf("%s: not supported by this server: %s; send %s or leave it out", name, why, want)
	}
	return fmt.Errorf("%s: not supported by this server: %s; leave it out", name, why)
}

// streamParams reads stream and stream_options.
func (f *openaiFormat) streamParams(fields map[string]json.RawMessage) (bool, error) {
	var stream bool
	if v := fields["stream"]; !isNull(v) {
		if err := json.Unmarshal(v, &stream); err != nil {
			return false, errors.New("stream: must be a boolean")
		}
	}
	opts, ok, err := objectField(fields, "stream_options")
	if err != nil || !ok {
		return stream, err
	}
	if !stream {
		return false, errors.New("stream_options: only with stream true")
	}
	for _, name := range sortedKeys(opts) {
		var b bool
		v := opts[name]
		if !isNull(v) && json.Unmarshal(v, &b) != nil {
			return false, fmt.Errorf("stream_options.%s: must be a boolean", name)
		}
		switch name {
		case "include_usage":
			f.includeUsage = b
		case "include_obfuscation":
			if b {
				return false, errors.New("stream_options.include_obfuscation: not supported by this server, which pads no chunks; send false or leave it out")
			}
		default:
			return false, fmt.Errorf("stream_options.%s: unsupported field: stream_options takes include_usage", name)
		}
	}
	return stream, nil
}

// openaiSampling reads max_completion_tokens (or max_tokens), temperature,
// top_p and stop.
func openaiSampling(fields map[string]json.RawMessage, req *claudepool.Request) error {
	for _, name := range []string{"max_completion_tokens", "max_tokens"} {
		n, ok, err := integerField(fields, name)
		switch {
		case err != nil:
			return err
		case !ok:
			continue
		case n < 1:
			return fmt.Errorf("%s: must be at least 1, got %d", name, n)
		case req.MaxTokens != 0:
			return errors.New("max_tokens: not with max_completion_tokens, which replaces it; send one")
		}
		req.MaxTokens = n
	}
	if t, ok, err := numberField(fields, "temperature"); err != nil {
		return err
	} else if ok {
		switch {
		case t < 0 || t > 2:
			return fmt.Errorf("temperature: must be from 0 to 2, got %v", t)
		case t > 1:
			return fmt.Errorf("temperature: must be at most 1 on this server, got %v: its model samples at temperatures from 0 to 1, the Messages API's range", t)
		}
		req.Temperature = &t
	}
	if p, ok, err := numberField(fields, "top_p"); err != nil {
		return err
	} else if ok {
		if p < 0 || p > 1 {
			return fmt.Errorf("top_p: must be from 0 to 1, got %v", p)
		}
		req.TopP = &p
	}
	v := fields["stop"]
	if isNull(v) {
		return nil
	}
	var one string
	if json.Unmarshal(v, &one) == nil {
		if one == "" {
			return errors.New("stop: must not be empty")
		}
		req.StopSequences = []string{one}
		return nil
	}
	var seqs []json.RawMessage
	if err := json.Unmarshal(v, &seqs); err != nil {
		return errors.New("stop: must be a string or a list of strings")
	}
	for i, raw := range seqs {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("stop.%d: must be a string", i)
		}
		if s == "" {
			return fmt.Errorf("stop.%d: must not be empty", i)
		}
		req.StopSequences = append(req.StopSequences, s)
	}
	return nil
}

// openaiUser reads user, or its successor safety_identifier, the end
// user's id: the chat's metadata.user_id.
func openaiUser(fields map[string]json.RawMessage, req *claudepool.Request) error {
	for _, name := range []string{"user", "safety_identifier"} {
		v := fields[name]
		if isNull(v) {
			continue
		}
		var id string
		if err := json.Unmarshal(v, &id); err != nil {
			return fmt.Errorf("%s: must be a string", name)
		}
		if n := utf8.RuneCountInString(id); n > maxUserIDChars {
			return fmt.Errorf("%s: must be at most %d characters, got %d", name, maxUserIDChars, n)
		}
		if req.UserID != "" && id != "" && id != req.UserID {
			return errors.New("safety_identifier: differs from user; send one")
		}
		req.UserID = orDefault(id, req.UserID)
	}
	return nil
}

// openaiResponseFormat reads response_format: "text", or "json_schema",
// whose schema the reply follows (Request.OutputSchema). "json_object",
// OpenAI's JSON mode without a schema, is a 400: the model's structured
// output follows a schema.
func openaiResponseFormat(fields map[string]json.RawMessage, req *claudepool.Request) error {
	rf, ok, err := objectField(fields, "response_format")
	if err != nil || !ok {
		return err
	}
	for _, name := range sortedKeys(rf) {
		if name != "type" && name != "json_schema" {
			return fmt.Errorf("response_format.%s: unsupported field", name)
		}
	}
	var kind string
	if err := json.Unmarshal(rf["type"], &kind); err != nil {
		return errors.New(`response_format.type: field required: "text" or "json_schema"`)
	}
	switch kind {
	case "text":
		if !isNull(rf["json_schema"]) {
			return errors.New(`response_format.json_schema: only with type "json_schema"`)
		}
		return nil
	case "json_object":
		return errors.New(`response_format.type: "json_object" is not supported by this server: its model follows a JSON schema, not a JSON mode; send {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}`)
	case "json_schema":
	default:
		return fmt.Errorf(`response_format.type: must be "text" or "json_schema", got %q`, kind)
	}
	js, ok, err := objectField(rf, "json_schema")
	if err != nil || !ok {
		return errors.New("response_format.json_schema: field required, an object with the schema")
	}
	for _, name := range sortedKeys(js) {
		switch name {
		case "name":
			var s string
			if json.Unmarshal(js[name], &s) != nil {
				return errors.New("response_format.json_schema.name: must be a string")
			}
		case "strict":
			// The model follows the schema strictly: what strict asks,
			// and a valid reply without it.
			var b bool
			if !isNull(js[name]) && json.Unmarshal(js[name], &b) != nil {
				return errors.New("response_format.json_schema.strict: must be a boolean")
			}
		case "description":
			var s string
			if json.Unmarshal(js[name], &s) != nil || s != "" {
				return errors.New("response_format.json_schema.description: not supported by this server: its model sees the schema alone; say what the reply is for in a message")
			}
		case "schema":
		default:
			return fmt.Errorf("response_format.json_schema.%s: unsupported field", name)
		}
	}
	if _, ok, err := objectField(js, "schema"); err != nil {
		return errors.New("response_format.json_schema.schema: must be a JSON schema object")
	} else if !ok {
		return errors.New("response_format.json_schema.schema: field required")
	}
	req.OutputSchema = append(json.RawMessage(nil), js["schema"]...)
	return nil
}

// openaiTools reads tools and tool_choice into req.GoTools and
// req.ToolChoice, as toolParams does for the Messages API: each tool is
// one of the server's, a function whose parameters are the server's
// input schema (its description is the server's); a choice that forces a
// call ("required", or a function) runs without the CLI's thinking, which
// the API does not take with it.
func openaiTools(fields map[string]json.RawMessage, req *claudepool.Request, tools *toolSet) error {
	var offered []string
	if v := fields["tools"]; !isNull(v) {
		var list []json.RawMessage
		if err := json.Unmarshal(v, &list); err != nil {
			return errors.New("tools: must be a list")
		}
		for i, raw := range list {
			where := fmt.Sprintf("tools.%d", i)
			name, err := openaiTool(where, raw, tools)
			if err != nil {
				return err
			}
			if slices.Contains(offered, name) {
				return fmt.Errorf("%s.function.name: %q is offered twice; tool names must be unique", where, name)
			}
			offered = append(offered, name)
		}
	}
	choice, err := openaiToolChoice(fields["tool_choice"], offered)
	if err != nil || len(offered) == 0 {
		// No tools: tool_choice auto or none asks for nothing. A server
		// with tools offers none (serveChat).
		return err
	}
	req.GoTools, req.ToolChoice = offered, choice
	if choice != "" && choice != "auto" && choice != "none" {
		req.Thinking = &claudepool.Thinking{Type: claudepool.ThinkingDisabled}
	}
	return nil
}

// openaiTool reads a function tool, which must be one of the server's, and
// returns its name.
func openaiTool(where string, raw json.RawMessage, tools *toolSet) (string, error) {
	var t map[string]json.RawMessage
	if err := json.Unmarshal(raw, &t); err != nil || t == nil {
		return "", fmt.Errorf("%s: must be a tool object", where)
	}
	for _, name := range sortedKeys(t) {
		if name != "type" && name != "function" {
			return "", fmt.Errorf("%s.%s: unsupported field: a tool takes type and function", where, name)
		}
	}
	var kind string
	if err := json.Unmarshal(t["type"], &kind); err != nil || kind != "function" {
		return "", fmt.Errorf(`%s.type: must be "function": this server offers function tools only, got %s`, where, orDefault(string(t["type"]), "none"))
	}
	fn, ok, err := objectField(t, "function")
	if err != nil || !ok {
		return "", fmt.Errorf("%s.function: field required, an object", where)
	}
	where += ".function"
	for _, name := range sortedKeys(fn) {
		if !slices.Contains([]string{"name", "description", "parameters", "strict"}, name) {
			return "", fmt.Errorf("%s.%s: unsupported field: a function takes name, description and parameters", where, name)
		}
	}
	var name string
	if err := json.Unmarshal(fn["name"], &name); err != nil || name == "" {
		return "", fmt.Errorf("%s.name: field required, a string", where)
	}
	if v := fn["description"]; !isNull(v) {
		var d string
		if err := json.Unmarshal(v, &d); err != nil {
			return "", fmt.Errorf("%s.description: must be a string", where)
		}
	}
	var strict bool
	if v := fn["strict"]; !isNull(v) && (json.Unmarshal(v, &strict) != nil || strict) {
		return "", fmt.Errorf("%s.strict: not supported by this server, whose tools take the model's input as it writes it; send false or leave it out", where)
	}
	own := tools.lookup(name)
	if own == nil {
		return "", fmt.Errorf("%s.name: %q is not one of this server's tools: it offers only the tools it was started with (%s)", where, name, tools.names())
	}
	switch _, ok, err := objectField(fn, "parameters"); {
	case err != nil:
		return "", fmt.Errorf("%s.parameters: must be a JSON schema object", where)
	case !ok:
		return "", fmt.Errorf("%s.parameters: field required: the input schema of this server's tool %q", where, name)
	}
	var schema any
	if err := json.Unmarshal(fn["parameters"], &schema); err != nil || !reflect.DeepEqual(schema, own.schema) {
		return "", fmt.Errorf("%s.parameters: differs from the input schema of this server's tool %q: it offers only the tools it was started with, as they were defined", where, name)
	}
	return name, nil
}

// openaiToolChoice reads tool_choice: "" when absent, else "auto",
// "none", "any" (for "required") or the name of a function of offered.
func openaiToolChoice(v json.RawMessage, offered []string) (string, error) {
	if isNull(v) {
		return "", nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		switch s {
		case "auto", "none":
			return s, nil
		case "required":
			if len(offered) == 0 {
				return "", errors.New(`tool_choice: "required" needs tools`)
			}
			return "any", nil
		}
		return "", fmt.Errorf(`tool_choice: must be "auto", "none", "required" or a function, got %q`, s)
	}
	var tc map[string]json.RawMessage
	if err := json.Unmarshal(v, &tc); err != nil || tc == nil {
		return "", errors.New(`tool_choice: must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}`)
	}
	var kind string
	_ = json.Unmarshal(tc["type"], &kind)
	if kind != "function" {
		return "", fmt.Errorf(`tool_choice.type: must be "function": this server offers function tools only, got %s`, orDefault(string(tc["type"]), "none"))
	}
	for _, name := range sortedKeys(tc) {
		if name != "type" && name != "function" {
			return "", fmt.Errorf("tool_choice.%s: unsupported field", name)
		}
	}
	var fn struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(tc["function"], &fn); err != nil || fn.Name == "" {
		return "", errors.New("tool_choice.function.name: field required")
	}
	if !slices.Contains(offered, fn.Name) {
		return "", fmt.Errorf("tool_choice.function.name: %q is not one of the request's tools", fn.Name)
	}
	return fn.Name, nil
}

// openaiMessages maps the messages of a request to the system prompt and
// the conversation. The tool messages after an assistant message with
// tool_calls are one user message of tool results, with a user message
// that follows them; every call needs its result.
func openaiMessages(v json.RawMessage) (string, []claudepool.Message, error) {
	var list []json.RawMessage
	if isNull(v) {
		return "", nil, errors.New("messages: field required")
	}
	if err := json.Unmarshal(v, &list); err != nil {
		return "", nil, errors.New("messages: must be a list of messages")
	}
	var system []string
	var msgs []claudepool.Message
	// calls are the ids of the last assistant message's tool calls, at
	// index callsAt, while the messages after it are its tool messages;
	// answered holds those that have one.
	var calls []string
	callsAt := 0
	answered := map[string]bool{}
	afterTool := false // the last message was a tool message
	for i, raw := range list {
		where := fmt.Sprintf("messages.%d", i)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil || m == nil {
			return "", nil, fmt.Errorf("%s: must be a message object", where)
		}
		var role string
		if err := json.Unmarshal(m["role"], &role); err != nil {
			return "", nil, fmt.Errorf("%s.role: field required, a string", where)
		}
		if role != "tool" && calls != nil {
			if err := unanswered(callsAt, calls, answered); err != nil {
				return "", nil, err
			}
			calls = nil
		}
		if err := messageFields(where, role, m); err != nil {
			return "", nil, err
		}
		switch role {
		case "system", "developer":
			if len(msgs) > 0 {
				return "", nil, fmt.Errorf("%s.role: a %s message after the conversation began is not supported by this server: its model takes one system prompt, before the conversation", where, role)
			}
			text, err := openaiText(where+".content", m["content"], "\n\n", false)
			if err != nil {
				return "", nil, err
			}
			system = append(system, text)
		case "user":
			msg, err := openaiUserContent(where+".content", m["content"])
			if err != nil {
				return "", nil, err
			}
			if afterTool {
				// The tool results and this message are one user turn.
				last := &msgs[len(msgs)-1]
				if msg.Content != "" {
					last.Blocks = append(last.Blocks, claudepool.TextBlock(msg.Content))
				}
				last.Blocks = append(last.Blocks, msg.Blocks...)
			} else {
				msgs = append(msgs, msg)
			}
		case "assistant":
			msg, err := openaiAssistant(where, m)
			if err != nil {
				return "", nil, err
			}
			msgs = append(msgs, msg)
			if len(msg.Blocks) > 0 {
				calls, callsAt = []string{}, i
				clear(answered)
				for _, b := range msg.Blocks {
					calls = append(calls, b.ID)
				}
			}
		case "tool":
			b, err := openaiToolResult(where, m)
			if err != nil {
				return "", nil, err
			}
			switch {
			case !slices.Contains(calls, b.ToolUseID):
				return "", nil, fmt.Errorf("%s.tool_call_id: %q answers no tool call of the assistant message before the tool messages", where, b.ToolUseID)
			case answered[b.ToolUseID]:
				return "", nil, fmt.Errorf("%s.tool_call_id: %q is answered twice", where, b.ToolUseID)
			}
			answered[b.ToolUseID] = true
			if !afterTool {
				msgs = append(msgs, claudepool.Message{Role: claudepool.RoleUser})
			}
			last := &msgs[len(msgs)-1]
			last.Blocks = append(last.Blocks, b)
		}
		afterTool = role == "tool"
	}
	if calls != nil {
		if err := unanswered(callsAt, calls, answered); err != nil {
			return "", nil, err
		}
	}
	switch {
	case len(msgs) == 0:
		return "", nil, errors.New("messages: at least one user message is required")
	case msgs[len(msgs)-1].Role != claudepool.RoleUser:
		return "", nil, errors.New("messages: the last message must be a user or tool message: this server cannot continue a prefilled assistant message")
	}
	return strings.Join(system, "\n\n"), msgs, nil
}

// unanswered reports the tool calls of the assistant message at index i
// that no tool message answered.
func unanswered(i int, calls []string, answered map[string]bool) error {
	var missing []string
	for _, id := range calls {
		if !answered[id] {
			missing = append(missing, strconv.Quote(id))
		}
	}
	if missing == nil {
		return nil
	}
	return fmt.Errorf("messages.%d.tool_calls: an assistant message with tool_calls must be followed by a tool message for each call; none answers %s",
		i, strings.Join(missing, ", "))
}

// messageFields checks the fields of a message of role.
func messageFields(where, role string, m map[string]json.RawMessage) error {
	var allowed []string
	switch role {
	case "system", "developer", "user":
		allowed = []string{"role", "content", "name"}
	case "assistant":
		allowed = []string{"role", "content", "name", "refusal", "tool_calls", "annotations", "audio", "function_call"}
	case "tool":
		allowed = []string{"role", "content", "tool_call_id"}
	case "function":
		return fmt.Errorf(`%s.role: "function" messages are not supported by this server: send tool messages`, where)
	default:
		return fmt.Errorf(`%s.role: must be "system", "developer", "user", "assistant" or "tool", got %q`, where, role)
	}
	for _, name := range sortedKeys(m) {
		if !slices.Contains(allowed, name) {
			return fmt.Errorf("%s.%s: unsupported field for %s messages", where, name, role)
		}
	}
	if v := m["name"]; !isNull(v) {
		var s string
		if json.Unmarshal(v, &s) != nil || s != "" {
			return fmt.Errorf("%s.name: not supported by this server: its model sees no names of participants", where)
		}
	}
	for _, name := range []string{"audio", "function_call"} {
		if !isNull(m[name]) {
			return fmt.Errorf("%s.%s: not supported by this server", where, name)
		}
	}
	return nil
}

// openaiText returns the text of a string or of a list of text parts,
// joined by sep; with refusal, refusal parts are text too.
func openaiText(where string, v json.RawMessage, sep string, refusal bool) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return s, nil
	}
	var parts []json.RawMessage
	if isNull(v) || json.Unmarshal(v, &parts) != nil {
		return "", fmt.Errorf("%s: must be a string or a list of text parts", where)
	}
	texts := make([]string, 0, len(parts))
	for i, raw := range parts {
		var p struct {
			Type    string  `json:"type"`
			Text    *string `json:"text"`
			Refusal *string `json:"refusal"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return "", fmt.Errorf("%s.%d: must be a content part object", where, i)
		}
		switch {
		case p.Type == "text" && p.Text != nil:
			texts = append(texts, *p.Text)
		case p.Type == "refusal" && refusal && p.Refusal != nil:
			texts = append(texts, *p.Refusal)
		default:
			return "", fmt.Errorf("%s.%d.type: %q parts are not supported here, only text", where, i, p.Type)
		}
	}
	return strings.Join(texts, sep), nil
}

// openaiUserContent maps a user message's content, a string or a list of
// parts, to a claudepool.Message: text parts alone are one text, joined
// by a blank line; with images or files every part keeps its place, as
// Message.Blocks.
func openaiUserContent(where string, v json.RawMessage) (claudepool.Message, error) {
	msg := claudepool.Message{Role: claudepool.RoleUser}
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		if strings.TrimSpace(s) == "" {
			return msg, fmt.Errorf("%s: must not be empty", where)
		}
		msg.Content = s
		return msg, nil
	}
	var parts []json.RawMessage
	if isNull(v) || json.Unmarshal(v, &parts) != nil || len(parts) == 0 {
		return msg, fmt.Errorf("%s: must be a string or a list of content parts", where)
	}
	var texts []string
	media := false
	for i, raw := range parts {
		at := fmt.Sprintf("%s.%d", where, i)
		var p map[string]json.RawMessage
		if err := json.Unmarshal(raw, &p); err != nil || p == nil {
			return msg, fmt.Errorf("%s: must be a content part object", at)
		}
		var kind string
		_ = json.Unmarshal(p["type"], &kind)
		switch {
		case kind == "input_audio":
			return msg, fmt.Errorf("%s.type: \"input_audio\" parts are not supported by this server, whose model takes no audio", at)
		case !slices.Contains([]string{"text", "image_url", "file"}, kind):
			return msg, fmt.Errorf("%s.type: %q parts are not supported by this server, which takes text, image_url and file parts", at, kind)
		}
		for _, name := range sortedKeys(p) {
			if name != "type" && name != kind {
				return msg, fmt.Errorf("%s.%s: unsupported field for %q parts", at, name, kind)
			}
		}
		switch kind {
		case "text":
			var t string
			if err := json.Unmarshal(p["text"], &t); err != nil {
				return msg, fmt.Errorf("%s.text: field required, a string", at)
			}
			if strings.TrimSpace(t) == "" {
				return msg, fmt.Errorf("%s.text: must not be empty", at)
			}
			texts = append(texts, t)
			msg.Blocks = append(msg.Blocks, claudepool.TextBlock(t))
		case "image_url":
			b, err := openaiImage(at+".image_url", p["image_url"])
			if err != nil {
				return msg, err
			}
			media = true
			msg.Blocks = append(msg.Blocks, b)
		case "file":
			b, err := openaiFile(at+".file", p["file"])
			if err != nil {
				return msg, err
			}
			media = true
			msg.Blocks = append(msg.Blocks, b)
		}
	}
	if !media {
		msg.Content, msg.Blocks = strings.Join(texts, "\n\n"), nil
	}
	return msg, nil
}

// openaiImage maps an image_url part: a base64 data URL, decoded to its
// bytes, or an http(s) URL, which the API fetches. OpenAI's detail is
// taken as "auto" alone: the model sees an image at its own resolution.
func openaiImage(where string, v json.RawMessage) (claudepool.Block, error) {
	var img map[string]json.RawMessage
	if err := json.Unmarshal(v, &img); err != nil || img == nil {
		return claudepool.Block{}, fmt.Errorf("%s: field required, an object with a url", where)
	}
	for _, name := range sortedKeys(img) {
		if name != "url" && name != "detail" {
			return claudepool.Block{}, fmt.Errorf("%s.%s: unsupported field: image_url takes url and detail", where, name)
		}
	}
	if d := img["detail"]; !isNull(d) {
		var detail string
		if json.Unmarshal(d, &detail) != nil || detail != "auto" {
			return claudepool.Block{}, fmt.Errorf(`%s.detail: only "auto" is supported by this server: its model sees each image at its own resolution, got %s`, where, d)
		}
	}
	var u string
	if err := json.Unmarshal(img["url"], &u); err != nil || u == "" {
		return claudepool.Block{}, fmt.Errorf("%s.url: field required, a string", where)
	}
	where += ".url"
	if strings.HasPrefix(u, "data:") {
		mediaType, data, err := dataURL(u)
		if err != nil {
			return claudepool.Block{}, fmt.Errorf("%s: %w", where, err)
		}
		if !slices.Contains(imageMediaTypes, mediaType) {
			return claudepool.Block{}, fmt.Errorf("%s: a data URL of %q; the model takes %s", where, mediaType, strings.Join(imageMediaTypes, ", "))
		}
		return claudepool.ImageBlock(mediaType, data), nil
	}
	if p, err := url.Parse(u); err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
		return claudepool.Block{}, fmt.Errorf("%s: must be an https URL or a base64 data URL (data:image/png;base64,...)", where)
	}
	return claudepool.ImageURL(u), nil
}

// openaiFile maps a file part: its file_data, a base64 data URL of a PDF
// or of plain text (or the PDF's base64 alone), with its filename as the
// document's title.
func openaiFile(where string, v json.RawMessage) (claudepool.Block, error) {
	var f map[string]json.RawMessage
	if err := json.Unmarshal(v, &f); err != nil || f == nil {
		return claudepool.Block{}, fmt.Errorf("%s: field required, an object with file_data", where)
	}
	for _, name := range sortedKeys(f) {
		if !slices.Contains([]string{"file_data", "filename", "file_id"}, name) {
			return claudepool.Block{}, fmt.Errorf("%s.%s: unsupported field: file takes file_data and filename", where, name)
		}
	}
	if !isNull(f["file_id"]) {
		return claudepool.Block{}, fmt.Errorf("%s.file_id: not supported by this server, which stores no files; send the file's bytes in file_data", where)
	}
	var title string
	if v := f["filename"]; !isNull(v) && json.Unmarshal(v, &title) != nil {
		return claudepool.Block{}, fmt.Errorf("%s.filename: must be a string", where)
	}
	var s string
	if err := json.Unmarshal(f["file_data"], &s); err != nil || s == "" {
		return claudepool.Block{}, fmt.Errorf("%s.file_data: field required: the file as a base64 data URL (data:application/pdf;base64,...)", where)
	}
	mediaType := "application/pdf"
	var data []byte
	var err error
	if strings.HasPrefix(s, "data:") {
		mediaType, data, err = dataURL(s)
	} else if data, err = base64.StdEncoding.DecodeString(s); err != nil {
		err = fmt.Errorf("not a data URL, nor valid base64: %w", err)
	}
	if err != nil {
		return claudepool.Block{}, fmt.Errorf("%s.file_data: %w", where, err)
	}
	switch mediaType {
	case "application/pdf":
		b := claudepool.DocumentBlock(mediaType, data)
		b.Title = title
		return b, nil
	case "text/plain":
		if !utf8.Valid(data) {
			return claudepool.Block{}, fmt.Errorf("%s.file_data: the text is not valid UTF-8", where)
		}
		return claudepool.TextDocument(title, string(data)), nil
	}
	return claudepool.Block{}, fmt.Errorf("%s.file_data: a file of %q; this server takes application/pdf and text/plain files", where, mediaType)
}

// dataURL decodes a base64 data URL: data:<media type>[;params];base64,<data>.
func dataURL(u string) (string, []byte, error) {
	meta, payload, ok := strings.Cut(strings.TrimPrefix(u, "data:"), ",")
	if !ok {
		return "", nil, errors.New("a data URL needs a comma before its data")
	}
	params := strings.Split(meta, ";")
	if !slices.Contains(params[1:], "base64") {
		return "", nil, errors.New("a data URL must be base64-encoded (data:<media type>;base64,...)")
	}
	data, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		return "", nil, fmt.Errorf("not valid base64: %w", err)
	}
	return strings.ToLower(strings.TrimSpace(params[0])), data, nil
}

// openaiAssistant maps an assistant message: its text (its content, or
// its refusal), then, with tool_calls, a ToolUseBlock for each call, its
// arguments re-encoded as JSON.stringify writes them (jsJSON), as the
// pool finds the paused turn by them. An assistant message with calls is
// what Result.AssistantMessage returns for the reply that made them.
func openaiAssistant(where string, m map[string]json.RawMessage) (claudepool.Message, error) {
	msg := claudepool.Message{Role: claudepool.RoleAssistant}
	var raws []json.RawMessage
	if v := m["tool_calls"]; !isNull(v) {
		if err := json.Unmarshal(v, &raws); err != nil {
			return msg, fmt.Errorf("%s.tool_calls: must be a list", where)
		}
	}
	sep := "\n\n"
	if len(raws) > 0 {
		sep = "" // the text of a reply, its blocks joined as it came
	}
	var texts []string
	if v := m["content"]; !isNull(v) {
		t, err := openaiText(where+".content", v, sep, true)
		if err != nil {
			return msg, err
		}
		texts = append(texts, t)
	}
	if v := m["refusal"]; !isNull(v) {
		var r string
		if err := json.Unmarshal(v, &r); err != nil {
			return msg, fmt.Errorf("%s.refusal: must be a string", where)
		}
		if r != "" {
			texts = append(texts, r)
		}
	}
	msg.Content = strings.Join(texts, sep)
	for i, raw := range raws {
		at := fmt.Sprintf("%s.tool_calls.%d", where, i)
		b, err := openaiCallBlock(at, raw)
		if err != nil {
			return msg, err
		}
		if slices.ContainsFunc(msg.Blocks, func(c claudepool.Block) bool { return c.ID == b.ID }) {
			return msg, fmt.Errorf("%s.id: %q names two calls", at, b.ID)
		}
		msg.Blocks = append(msg.Blocks, b)
	}
	if strings.TrimSpace(msg.Content) == "" && len(msg.Blocks) == 0 {
		return msg, fmt.Errorf("%s.content: an assistant message needs content or tool_calls", where)
	}
	return msg, nil
}

// openaiCallBlock reads an assistant message's call of a function.
func openaiCallBlock(where string, raw json.RawMessage) (claudepool.Block, error) {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(raw, &c); err != nil || c == nil {
		return claudepool.Block{}, fmt.Errorf("%s: must be a tool call object", where)
	}
	for _, name := range sortedKeys(c) {
		if name != "id" && name != "type" && name != "function" {
			return claudepool.Block{}, fmt.Errorf("%s.%s: unsupported field for tool calls", where, name)
		}
	}
	var id, kind string
	if err := json.Unmarshal(c["id"], &id); err != nil || id == "" {
		return claudepool.Block{}, fmt.Errorf("%s.id: field required, a string", where)
	}
	if v := c["type"]; !isNull(v) && (json.Unmarshal(v, &kind) != nil || kind != "function") {
		return claudepool.Block{}, fmt.Errorf(`%s.type: must be "function", got %s`, where, v)
	}
	var fn struct {
		Name      string  `json:"name"`
		Arguments *string `json:"arguments"`
	}
	if err := json.Unmarshal(c["function"], &fn); err != nil || fn.Name == "" {
		return claudepool.Block{}, fmt.Errorf("%s.function.name: field required, a string", where)
	}
	args := "{}"
	if fn.Arguments != nil && strings.TrimSpace(*fn.Arguments) != "" {
		args = *fn.Arguments
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(args), &obj); err != nil || obj == nil {
		return claudepool.Block{}, fmt.Errorf("%s.function.arguments: must be a JSON object, as text", where)
	}
	input, err := jsJSON([]byte(args))
	if err != nil {
		return claudepool.Block{}, fmt.Errorf("%s.function.arguments: %w", where, err)
	}
	return claudepool.ToolUseBlock(id, fn.Name, input), nil
}

// openaiToolResult maps a tool message to the result of the call it
// names: its content, a string or text parts joined by "\n".
func openaiToolResult(where string, m map[string]json.RawMessage) (claudepool.Block, error) {
	var id string
	if err := json.Unmarshal(m["tool_call_id"], &id); err != nil || id == "" {
		return claudepool.Block{}, fmt.Errorf("%s.tool_call_id: field required, a string", where)
	}
	text, err := openaiText(where+".content", m["content"], "\n", false)
	if err != nil {
		return claudepool.Block{}, err
	}
	return claudepool.ToolResultBlock(id, text, false), nil
}

// The reply.

// openaiCompletion is a chat.completion, the body of a reply that is not
// streamed.
type openaiCompletion struct {
	ID      string         `json:"id"`
	Object  string         `json:"object"` // "chat.completion"
	Created int64          `json:"created"`
	Model   string         `json:"model"`
	Choices []openaiChoice `json:"choices"`
	Usage   openaiUsage    `json:"usage"`
}

type openaiChoice struct {
	Index        int           `json:"index"`
	Message      openaiMessage `json:"message"`
	Logprobs     *struct{}     `json:"logprobs"` // null
	FinishReason string        `json:"finish_reason"`
}

// openaiMessage is the assistant message of a reply: its text (null when
// it calls tools without text) and its calls.
type openaiMessage struct {
	Role      string           `json:"role"` // "assistant"
	Content   *string          `json:"content"`
	Refusal   *string          `json:"refusal"` // null
	ToolCalls []openaiToolCall `json:"tool_calls,omitempty"`
}

// openaiToolCall is a call of a function: whole in a message, or a piece
// of one in a chunk (Index set, the rest only in its first piece).
type openaiToolCall struct {
	Index    *int           `json:"index,omitempty"`
	ID       string         `json:"id,omitempty"`
	Type     string         `json:"type,omitempty"` // "function"
	Function openaiFunction `json:"function"`
}

type openaiFunction struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// openaiChunk is a chat.completion.chunk, an event of a streamed reply.
type openaiChunk struct {
	ID      string              `json:"id"`
	Object  string              `json:"object"` // "chat.completion.chunk"
	Created int64               `json:"created"`
	Model   string              `json:"model"`
	Choices []openaiChunkChoice `json:"choices"`
	// Usage is null in each chunk but the last, which has it, when the
	// request asked for it; absent otherwise.
	Usage json.RawMessage `json:"usage,omitempty"`
}

type openaiChunkChoice struct {
	Index        int         `json:"index"`
	Delta        openaiDelta `json:"delta"`
	Logprobs     *struct{}   `json:"logprobs"` // null
	FinishReason *string     `json:"finish_reason"`
}

type openaiDelta struct {
	Role      string           `json:"role,omitempty"`
	Content   *string          `json:"content,omitempty"`
	ToolCalls []openaiToolCall `json:"tool_calls,omitempty"`
}

// openaiUsage is a reply's usage in OpenAI's terms: its prompt tokens
// count those read from and written to the cache too, which the Messages
// API counts apart.
type openaiUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func openaiUsageOf(u claudepool.Usage) openaiUsage {
	prompt := u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
	o := openaiUsage{PromptTokens: prompt, CompletionTokens: u.OutputTokens, TotalTokens: prompt + u.OutputTokens}
	o.PromptTokensDetails.CachedTokens = u.CacheReadInputTokens
	return o
}

// openaiFinishReason maps a result's stop reason: a reply cut by
// max_tokens is "length", one that calls tools "tool_calls", one the
// model refused "content_filter", any other "stop" (a stop sequence
// among them).
func openaiFinishReason(res *claudepool.Result) string {
	if len(res.ToolCalls) > 0 {
		return "tool_calls"
	}
	switch res.StopReason {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	}
	return "stop"
}

func (f *openaiFormat) respond(w http.ResponseWriter, _ *http.Request, c call) reply {
	return &openaiReply{w: w, sse: newSSE(w), stream: c.stream, usage: f.includeUsage,
		id: newCompletionID(), created: time.Now().Unix()}
}

// openaiReply renders a reply as a chat.completion, or streamed as
// chat.completion.chunk events.
type openaiReply struct {
	w       http.ResponseWriter
	sse     *sseWriter
	stream  bool
	usage   bool // a last chunk with the usage
	id      string
	created int64
	model   string
	text    strings.Builder // a reply that is not streamed: its text
	// calls are the ids of the tool calls a streamed reply sent, in
	// order; inCall is set while the last one's arguments stream.
	calls  []string
	inCall bool
}

// begin sends the first chunk: the assistant's role.
func (o *openaiReply) begin(model string, _ *claudepool.Usage) {
	o.model = model
	o.sse.open()
	empty := ""
	o.chunk(openaiDelta{Role: "assistant", Content: &empty}, nil)
}

// add takes a piece of the reply: a streamed reply sends text as content
// deltas, and each call of a tool as a tool_calls delta with its id and
// name, then its arguments as they stream. A reply that is not streamed
// gathers the text; its calls come from the result (end). The model's
// thinking does not show.
func (o *openaiReply) add(p piece) {
	switch {
	case !o.stream:
		if p.kind == pieceText {
			o.text.WriteString(p.text)
		}
	case p.kind == pieceText:
		o.inCall = false
		if p.text != "" {
			o.chunk(openaiDelta{Content: &p.text}, nil)
		}
	case p.kind == pieceToolUse:
		o.startCall(p.id, p.name)
	case p.kind == pieceToolInput && o.inCall && p.text != "":
		i := len(o.calls) - 1
		o.chunk(openaiDelta{ToolCalls: []openaiToolCall{{Index: &i, Function: openaiFunction{Arguments: p.text}}}}, nil)
	}
}

// startCall sends the first piece of a tool call.
func (o *openaiReply) startCall(id, name string) {
	i := len(o.calls)
	o.calls, o.inCall = append(o.calls, id), true
	o.chunk(openaiDelta{ToolCalls: []openaiToolCall{{Index: &i, ID: id, Type: "function", Function: openaiFunction{Name: name}}}}, nil)
}

// chunk sends a chunk with delta d, and finish reason finish when not nil.
func (o *openaiReply) chunk(d openaiDelta, finish *string) {
	c := openaiChunk{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.model,
		Choices: []openaiChunkChoice{{Delta: d, FinishReason: finish}}}
	if o.usage {
		c.Usage = json.RawMessage("null")
	}
	openaiData(o.sse, c)
}

// ping sends an SSE comment, which clients skip.
func (o *openaiReply) ping() { o.sse.comment("ping") }

func (o *openaiReply) fail(e apiError) {
	_, body := openaiErrorOf(e)
	openaiData(o.sse, body)
}

func (o *openaiReply) err() error { return o.sse.err }

// end sends the end of the reply. Not streamed: the completion, its text
// (the result's when no text came as pieces), null when it calls tools
// without text, and its calls. Streamed: the calls that did not stream,
// whole, the last chunk with the finish reason, the usage chunk when the
// request asked for it, and [DONE].
func (o *openaiReply) end(res *claudepool.Result, model string, _ claudepool.AcquireInfo, _ claudepool.StreamLatency) {
	finish := openaiFinishReason(res)
	if !o.stream {
		text := o.text.String()
		if text == "" {
			text = res.Text
		}
		msg := openaiMessage{Role: "assistant", Content: &text}
		if text == "" && len(res.ToolCalls) > 0 {
			msg.Content = nil
		}
		for _, c := range res.ToolCalls {
			msg.ToolCalls = append(msg.ToolCalls, openaiToolCall{ID: c.ID, Type: "function",
				Function: openaiFunction{Name: c.Name, Arguments: string(c.Input)}})
		}
		writeJSON(o.w, http.StatusOK, openaiCompletion{ID: o.id, Object: "chat.completion", Created: o.created, Model: model,
			Choices: []openaiChoice{{Message: msg, FinishReason: finish}}, Usage: openaiUsageOf(res.Usage)})
		return
	}
	for _, c := range res.ToolCalls {
		if !slices.Contains(o.calls, c.ID) {
			o.startCall(c.ID, c.Name)
			o.add(piece{kind: pieceToolInput, text: string(c.Input)})
		}
	}
	o.chunk(openaiDelta{}, &finish)
	if o.usage {
		u, _ := marshal(openaiUsageOf(res.Usage))
		openaiData(o.sse, openaiChunk{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.model,
			Choices: []openaiChunkChoice{}, Usage: u})
	}
	openaiDone(o.sse)
}

// openaiData sends an event whose data is v as one line of JSON, without
// an event name, as OpenAI streams.
func openaiData(e *sseWriter, v any) {
	if e.err != nil {
		return
	}
	b, err := marshal(v)
	if err != nil {
		e.err = err
		return
	}
	if _, e.err = fmt.Fprintf(e.w, "data: %s\n\n", b); e.err == nil {
		e.flush()
	}
}

// openaiDone ends a stream as OpenAI does.
func openaiDone(e *sseWriter) {
	if e.err != nil {
		return
	}
	if _, e.err = fmt.Fprint(e.w, "data: [DONE]\n\n"); e.err == nil {
		e.flush()
	}
}

// newCompletionID returns an id in the shape of OpenAI's: chatcmpl- and
// random hex digits.
func newCompletionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "chatcmpl-" + hex.EncodeToString(b[:])
}

// Errors.

// openaiErrorBody is an error answer in OpenAI's shape, and the data of
// the event that ends a stream that failed.
type openaiErrorBody struct {
	Error openaiErrorDetail `json:"error"`
}

type openaiErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// openaiErrorOf maps an error to its status and body on the OpenAI path.
// The type is OpenAI's (invalid_request_error, authentication_error, ...,
// server_error for the API's 5xx); the code tells the cases a client
// acts on (invalid_api_key, rate_limit_exceeded, overloaded, timeout,
// ...); param names the request's field a 400 is about. An overload is a
// 503, which OpenAI's clients know, not the Messages API's 529.
func openaiErrorOf(e apiError) (int, openaiErrorBody) {
	status, kind := e.status, e.kind
	var code string
	switch kind {
	case errNotFound, errTooLarge:
		code, kind = kind, errInvalidRequest
	case errAuthentication:
		code = "invalid_api_key"
	case errRateLimit:
		code = "rate_limit_exceeded"
	case errOverloaded:
		code, kind = "overloaded", "server_error"
		if status == 529 {
			status = http.StatusServiceUnavailable
		}
	case errTimeout:
		code, kind = "timeout", "server_error"
	case errAPI:
		kind = "server_error"
	}
	if status >= 500 {
		kind = "server_error"
	}
	msg := e.msg
	if status == http.StatusBadRequest {
		for _, r := range openaiRenames {
			if rest, ok := strings.CutPrefix(msg, r.from); ok {
				msg = r.to + rest
			}
		}
	}
	body := openaiErrorBody{Error: openaiErrorDetail{Message: msg, Type: kind}}
	if code != "" {
		body.Error.Code = &code
	}
	if status == http.StatusBadRequest {
		if p := errorParam(msg); p != "" {
			body.Error.Param = &p
		}
	}
	return status, body
}

// openaiRenames are the Messages API's names of the fields that the
// server's errors about a request begin with, and OpenAI's names of the
// same fields.
var openaiRenames = []struct{ from, to string }{
	{"stop_sequences: ", "stop: "},
	{"output_config.format: ", "response_format: "},
}

// errorParam returns the request field an error message begins with
// ("temperature: must be ...", "messages.0.content: ..."), "" for none.
// The pool's own messages begin with its name.
func errorParam(msg string) string {
	p, _, ok := strings.Cut(msg, ": ")
	if !ok || p == "claudepool" || !fieldPath.MatchString(p) {
		return ""
	}
	return p
}

// fieldPath matches the path of a field of a request.
var fieldPath = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$`)

func (*openaiFormat) writeError(w http.ResponseWriter, r *http.Request, e apiError) {
	writeOpenAIError(w, r, e)
}

// writeOpenAIError answers with e in OpenAI's error shape: for the paths
// of the OpenAI API, whose clients read that shape.
func writeOpenAIError(w http.ResponseWriter, _ *http.Request, e apiError) {
	status, body := openaiErrorOf(e)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, body)
}
