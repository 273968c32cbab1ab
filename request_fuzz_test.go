package claudepool

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzSep separates the messages packed into one fuzzed string.
const fuzzSep = "\x1e"

// fuzzRequest builds a request from fuzzed values: contents holds the
// messages separated by fuzzSep; roles[i] picks the role of message i
// (user, assistant, or an unknown one), user when roles is short.
func fuzzRequest(roles []byte, contents, system, appendSystem, model string) Request {
	req := Request{System: system, AppendSystem: appendSystem, Model: model}
	if contents == "" {
		return req
	}
	for i, c := range strings.Split(contents, fuzzSep) {
		role := RoleUser
		if i < len(roles) {
			switch roles[i] % 3 {
			case 1:
				role = RoleAssistant
			case 2:
				role = Role("system")
			}
		}
		req.Messages = append(req.Messages, Message{Role: role, Content: c})
	}
	return req
}

// wantValid restates the documented rules of a valid request, apart from
// validate.
func wantValid(r Request) bool {
	if len(r.Messages) == 0 || r.Messages[len(r.Messages)-1].Role != RoleUser {
		return false
	}
	for _, m := range r.Messages {
		if m.Role != RoleUser && m.Role != RoleAssistant {
			return false
		}
		if strings.TrimSpace(m.Content) == "" || !utf8.ValidString(m.Content) {
			return false
		}
	}
	if !utf8.ValidString(r.System) || !utf8.ValidString(r.AppendSystem) || !utf8.ValidString(r.Model) {
		return false
	}
	return !strings.ContainsAny(r.Model, " \t\r\n")
}

// FuzzEncodeRequest checks the request encoder: it never panics; it
// accepts exactly the valid requests, and rejects the others with an
// error wrapping ErrInvalidRequest; a valid request becomes one stdin line
// (no raw newline) of valid JSON whose text is RenderTranscript of its
// messages, and control requests that carry its settings unchanged.
func FuzzEncodeRequest(f *testing.F) {
	f.Add([]byte{0}, "hello", "", "", "")
	f.Add([]byte{0, 1, 0}, "What is 2+2?"+fuzzSep+"4"+fuzzSep+"And times 3?", "Be terse.", "", "sonnet")
	f.Add([]byte{0}, "line one\nline two\r\n\u2028\u2029\x00\"\\</turn>", "sys\n", "append\n", "claude-x-1")
	f.Add([]byte{1}, "assistant last", "", "", "")
	f.Add([]byte{2, 0}, "bad role"+fuzzSep+"q", "", "", "")
	f.Add([]byte{0}, " \t\n", "", "", "")
	f.Add([]byte{0}, "a\xffb", "", "", "")
	f.Add([]byte{0}, "q", "\xff", "", "")
	f.Add([]byte{0}, "q", "", "", "so net")
	f.Add([]byte{}, "", "", "", "")
	f.Fuzz(func(t *testing.T, roles []byte, contents, system, appendSystem, model string) {
		req := fuzzRequest(roles, contents, system, appendSystem, model)
		transcript := RenderTranscript(req.Messages)
		enc, err := req.encode()
		if !wantValid(req) {
			if err == nil {
				t.Fatalf("invalid request accepted: %+v", req)
			}
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %q does not wrap ErrInvalidRequest", err)
			}
			if enc != nil {
				t.Fatal("an encoded request came with the error")
			}
			return
		}
		if err != nil {
			t.Fatalf("valid request rejected: %v", err)
		}

		// The user line: one line of JSON carrying the transcript.
		if bytes.ContainsAny(enc.user, "\n\r") {
			t.Fatalf("user line holds a raw line break: %q", enc.user)
		}
		if !json.Valid(enc.user) {
			t.Fatalf("user line is not JSON: %q", enc.user)
		}
		var line struct {
			Type            string  `json:"type"`
			SessionID       *string `json:"session_id"`
			ParentToolUseID *string `json:"parent_tool_use_id"`
			Message         struct {
				Role    string `json:"role"`
				Content []struct {
					Type string `json:"type"`
					Text string `json:"text"`
				} `json:"content"`
			} `json:"message"`
		}
		if err := json.Unmarshal(enc.user, &line); err != nil {
			t.Fatal(err)
		}
		if line.Type != "user" || line.Message.Role != "user" || line.SessionID == nil || *line.SessionID != "" || line.ParentToolUseID != nil {
			t.Fatalf("user line has the wrong shape: %s", enc.user)
		}
		if len(line.Message.Content) != 1 || line.Message.Content[0].Type != "text" {
			t.Fatalf("user line content is not one text block: %s", enc.user)
		}
		if got := line.Message.Content[0].Text; got != transcript {
			t.Fatalf("user text %q, want RenderTranscript %q", got, transcript)
		}
		if len(req.Messages) == 1 && transcript != req.Messages[0].Content {
			t.Fatalf("a single message renders as %q, not itself", transcript)
		}

		// The control requests: one line each, settings unchanged.
		ctrl, err := json.Marshal(controlRequest{Type: "control_request", RequestID: "cp_1", Request: enc.prompt.initialize()})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.ContainsAny(ctrl, "\n\r") {
			t.Fatalf("initialize line holds a raw line break: %q", ctrl)
		}
		var init struct {
			Request struct {
				Subtype            string   `json:"subtype"`
				SystemPrompt       []string `json:"systemPrompt"`
				AppendSystemPrompt *string  `json:"appendSystemPrompt"`
			} `json:"request"`
		}
		if err := json.Unmarshal(ctrl, &init); err != nil {
			t.Fatal(err)
		}
		wantSystem := []string{system}
		if system == "" && appendSystem != "" {
			wantSystem = nil // keep the CLI's own prompt and append to it
		}
		if init.Request.Subtype != "initialize" || !slices.Equal(init.Request.SystemPrompt, wantSystem) {
			t.Fatalf("initialize %+v, want systemPrompt %q", init.Request, wantSystem)
		}
		if (init.Request.AppendSystemPrompt != nil) != (appendSystem != "") ||
			(appendSystem != "" && *init.Request.AppendSystemPrompt != appendSystem) {
			t.Fatalf("appendSystemPrompt %v, want %q", init.Request.AppendSystemPrompt, appendSystem)
		}
		if enc.model != model {
			t.Fatalf("model %q, want %q", enc.model, model)
		}
	})
}
