package claudepool

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzParseLine checks that parseLine never panics, classifies every line
// exactly one way, and agrees with encoding/json about which lines carry a
// string "type"; and that scanHeader, when it answers, reads the header as
// encoding/json does. The seed corpus in testdata/fuzz/FuzzParseLine holds every
// captured CLI line and edge cases.
func FuzzParseLine(f *testing.F) {
	f.Fuzz(func(t *testing.T, line []byte) {
		orig := bytes.Clone(line)
		if h, ok := scanHeader(line); ok && json.Valid(line) {
			var want lineHeader
			if err := json.Unmarshal(line, &want); err != nil || h != want {
				t.Fatalf("scanHeader = %+v, encoding/json = %+v, %v", h, want, err)
			}
		}
		ev, ctrl, err := parseLine(line)
		_ = ev.Text()

		if err != nil {
			if !errors.Is(err, errMalformedLine) {
				t.Fatalf("error %v does not wrap errMalformedLine", err)
			}
			if ctrl != nil || ev.Type != "" || ev.Raw != nil {
				t.Fatalf("malformed line gave a result: %+v %+v", ev, ctrl)
			}
			if hasStringType(line) {
				t.Fatalf("line with a string type reported malformed: %v", err)
			}
			return
		}
		if !json.Valid(line) {
			t.Fatalf("invalid JSON accepted as %q", ev.Type)
		}
		if ctrl != nil {
			if ev.Type != "" {
				t.Fatalf("both an event %q and a control response", ev.Type)
			}
			return
		}
		switch ev.Type {
		case EventInit, EventSystem, EventAssistant, EventUser, EventPartial, EventRetry, EventResult, EventConversationReset, EventUnknown:
		default:
			t.Fatalf("unexpected event type %q", ev.Type)
		}
		requireEventShape(t, ev)
		if !bytes.Equal(ev.Raw, orig) {
			t.Fatalf("Raw %q differs from the line %q", ev.Raw, orig)
		}
		if len(line) > 0 && &ev.Raw[0] == &line[0] {
			t.Fatal("Raw aliases the line")
		}
	})
}

// hasStringType reports whether line is a JSON object whose "type" is a
// non-empty string, as encoding/json sees it when no other key could be
// taken for "type" (it matches keys case-insensitively).
func hasStringType(line []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(line, &m) != nil {
		return false
	}
	for k := range m {
		if k != "type" && strings.EqualFold(k, "type") {
			return false
		}
	}
	var s string
	return json.Unmarshal(m["type"], &s) == nil && s != ""
}
