package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/claudepool/claudepool"
)

// thinkingView says how a reply shows the model's thinking.
type thinkingView struct {
	// show puts thinking blocks in the reply: the request asked for
	// thinking ("enabled" or "adaptive"). A request that did not, or that
	// disabled it, gets the text alone, as from the API.
	show bool
	// omit leaves the thinking text out of the blocks, their signatures
	// in: the request's display "omitted".
	omit bool
}

// minThinkingBudget is the API's least thinking.budget_tokens.
const minThinkingBudget = 1024

// thinkingParams reads a request's thinking and output_config fields
// into req.Thinking and req.OutputSchema, for the pool's gateway to set
// on the chat's API calls:
//
//   - thinking: {"type": "enabled", "budget_tokens": N} (N at least 1024
//     and below max_tokens), {"type": "adaptive"} or {"type":
//     "disabled"}, each but the last with an optional display
//     ("summarized" or "omitted");
//   - output_config.format: {"type": "json_schema", "schema": {...}},
//     the structured output the reply's text follows;
//   - output_config.effort ("low", "medium", ...), with thinking only:
//     Thinking.Effort rides on a thinking setting, and without one the
//     chat keeps the CLI's.
//
// A null is an absent field. req.MaxTokens must be set.
func thinkingParams(fields map[string]json.RawMessage, req *claudepool.Request) (thinkingView, error) {
	var view thinkingView
	th, ok, err := objectField(fields, "thinking")
	if err != nil {
		return view, err
	}
	if ok {
		if req.Thinking, view, err = thinkingParam(th, req.MaxTokens); err != nil {
			return view, err
		}
	}
	oc, ok, err := objectField(fields, "output_config")
	if err != nil || !ok {
		return view, err
	}
	for _, name := range sortedKeys(oc) {
		if name != "effort" && name != "format" {
			return view, fmt.Errorf("output_config.%s: unsupported field: output_config takes format and effort", name)
		}
	}
	if v := oc["effort"]; !isNull(v) {
		var effort string
		if err := json.Unmarshal(v, &effort); err != nil || effort == "" {
			return view, errors.New("output_config.effort: must be an effort level: low, medium, high, xhigh or max")
		}
		if req.Thinking == nil {
			return view, errors.New("output_config.effort: this server sets effort together with thinking only; add thinking ({\"type\": \"adaptive\"}, \"enabled\" with budget_tokens, or \"disabled\")")
		}
		req.Thinking.Effort = effort
	}
	format, ok, err := objectField(oc, "format")
	if err != nil {
		return view, errors.New("output_config.format: must be an object")
	}
	if !ok {
		return view, nil
	}
	for _, name := range sortedKeys(format) {
		if name != "type" && name != "schema" {
			return view, fmt.Errorf("output_config.format.%s: unsupported field", name)
		}
	}
	var kind string
	if err := json.Unmarshal(format["type"], &kind); err != nil || kind != "json_schema" {
		return view, fmt.Errorf("output_config.format.type: must be \"json_schema\", got %s", orDefault(string(format["type"]), "none"))
	}
	if _, ok, err := objectField(format, "schema"); err != nil {
		return view, errors.New("output_config.format.schema: must be a JSON schema object")
	} else if !ok {
		return view, errors.New("output_config.format.schema: field required")
	}
	req.OutputSchema = append(json.RawMessage(nil), format["schema"]...)
	return view, nil
}

// thinkingParam reads the thinking object th.
func thinkingParam(th map[string]json.RawMessage, maxTokens int) (*claudepool.Thinking, thinkingView, error) {
	var view thinkingView
	for _, name := range sortedKeys(th) {
		if !slices.Contains([]string{"type", "budget_tokens", "display"}, name) {
			return nil, view, fmt.Errorf("thinking.%s: unsupported field", name)
		}
	}
	var kind string
	if isNull(th["type"]) {
		return nil, view, errors.New("thinking.type: field required")
	}
	if err := json.Unmarshal(th["type"], &kind); err != nil {
		return nil, view, errors.New("thinking.type: must be a string")
	}
	t := &claudepool.Thinking{}
	switch kind {
	case "enabled":
		n, ok, err := integerField(th, "budget_tokens")
		switch {
		case err != nil:
			return nil, view, fmt.Errorf("thinking.%w", err)
		case !ok:
			return nil, view, errors.New("thinking.budget_tokens: field required with type \"enabled\"")
		case n < minThinkingBudget:
			return nil, view, fmt.Errorf("thinking.budget_tokens: must be at least %d, got %d", minThinkingBudget, n)
		case n >= maxTokens:
			return nil, view, fmt.Errorf("thinking.budget_tokens: must be less than max_tokens (%d), got %d", maxTokens, n)
		}
		t.Type, t.BudgetTokens = claudepool.ThinkingEnabled, n
	case "adaptive":
		t.Type = claudepool.ThinkingAdaptive
	case "disabled":
		t.Type = claudepool.ThinkingDisabled
	default:
		return nil, view, fmt.Errorf("thinking.type: must be \"enabled\", \"adaptive\" or \"disabled\", got %q", kind)
	}
	if kind != "enabled" && !isNull(th["budget_tokens"]) {
		return nil, view, fmt.Errorf("thinking.budget_tokens: only with type \"enabled\", not %q", kind)
	}
	view.show = kind != "disabled"
	if v := th["display"]; !isNull(v) {
		var display string
		if err := json.Unmarshal(v, &display); err != nil || (display != "summarized" && display != "omitted") {
			return nil, view, fmt.Errorf("thinking.display: must be \"summarized\" or \"omitted\", got %s", v)
		}
		if kind == "disabled" {
			return nil, view, errors.New("thinking.display: not with type \"disabled\"")
		}
		view.omit = display == "omitted"
	}
	return t, view, nil
}

// replyReader turns a chat's events into the pieces of its reply. With
// partial messages on, the CLI sends each content block twice: as deltas
// (text_delta, thinking_delta and signature_delta events), then whole in
// an assistant message. The reader remembers which kinds of block of the
// current message came as deltas, so that their whole copies are skipped.
// A message the CLI made up to describe a failed API call is not a reply:
// the result's error reports it.
//
// The calls of the server's tools are pieces too: a tool_use block's
// start (content_block_start) and its input as it streams
// (input_json_delta), or, without partial messages, the block whole from
// the assistant message, its input in one piece.
type replyReader struct {
	view  thinkingView
	tools *toolSet // the server's tools: the calls the reply shows
	// textDeltas and thinkingDeltas: the current message's text, or its
	// thinking, came as deltas; signed: its thinking's signature did.
	textDeltas, thinkingDeltas, signed bool
	// toolAt is the index, in the API's current message, of the tool_use
	// block whose input streams, -1 (or toolOn false) for none; streamed
	// holds the ids of the tool_use blocks that came as stream events.
	toolAt   int
	toolOn   bool
	streamed map[string]bool
}

// cliToolPrefix is how the CLI names the pool's tools (mcp__claudepool__
// and the tool's name) in its API requests; the pool's events carry the
// tools' own names.
const cliToolPrefix = "mcp__claudepool__"

// toolPieces returns the pieces of a partial event of a tool_use block:
// its start, or a piece of its input.
func (r *replyReader) toolPieces(p *claudepool.Partial) []piece {
	switch {
	case p.Type == "content_block_start":
		r.toolOn = false
		var e struct {
			ContentBlock struct {
				Type string `json:"type"`
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"content_block"`
		}
		if json.Unmarshal(p.Event, &e) != nil || e.ContentBlock.Type != "tool_use" {
			return nil
		}
		// The pool names its tools by their own names in stream events
		// too.
		name := e.ContentBlock.Name
		if !r.tools.has(name) || e.ContentBlock.ID == "" {
			return nil
		}
		if r.streamed == nil {
			r.streamed = map[string]bool{}
		}
		r.streamed[e.ContentBlock.ID] = true
		r.toolOn, r.toolAt = true, p.Index
		return []piece{{kind: pieceToolUse, id: e.ContentBlock.ID, name: name}}
	case p.DeltaType == "input_json_delta" && r.toolOn && p.Index == r.toolAt:
		var e struct {
			Delta struct {
				PartialJSON string `json:"partial_json"`
			} `json:"delta"`
		}
		if json.Unmarshal(p.Event, &e) == nil && e.Delta.PartialJSON != "" {
			return []piece{{kind: pieceToolInput, text: e.Delta.PartialJSON}}
		}
	case p.Type == "message_start" || (p.Type == "content_block_stop" && p.Index == r.toolAt):
		r.toolOn = false
	}
	return nil
}

// pieces returns the pieces of ev to show.
func (r *replyReader) pieces(ev claudepool.Event) []piece {
	switch ev.Type {
	case claudepool.EventPartial:
		p := ev.Partial
		if p == nil {
			return nil
		}
		if out := r.toolPieces(p); out != nil {
			return out
		}
		switch p.DeltaType {
		case "text_delta":
			if p.Text != "" {
				r.textDeltas = true
				return []piece{{kind: pieceText, text: p.Text}}
			}
		case "thinking_delta":
			r.thinkingDeltas = true
			if r.view.show {
				return []piece{{kind: pieceThinking, text: r.thought(p.Text)}}
			}
		case "signature_delta":
			r.thinkingDeltas, r.signed = true, true
			var d struct {
				Delta struct {
					Signature string `json:"signature"`
				} `json:"delta"`
			}
			if r.view.show && json.Unmarshal(p.Event, &d) == nil {
				return []piece{{kind: pieceSignature, text: d.Delta.Signature}}
			}
		}
	case claudepool.EventAssistant:
		if ev.Message == nil {
			return nil
		}
		var out []piece
		hasText, hasThinking := false, false
		for _, b := range ev.Message.Content {
			switch b.Type {
			case "text":
				hasText = true
				if !r.textDeltas && b.Text != "" {
					out = append(out, piece{kind: pieceText, text: b.Text})
				}
			case "thinking":
				hasThinking = true
				if !r.view.show {
					continue
				}
				if !r.thinkingDeltas {
					out = append(out, piece{kind: pieceThinking, text: r.thought(b.Thinking)})
				}
				if !r.signed && b.Signature != "" {
					out = append(out, piece{kind: pieceSignature, text: b.Signature})
				}
			case "tool_use":
				if r.tools.has(b.Name) && !r.streamed[b.ID] {
					out = append(out, piece{kind: pieceToolUse, id: b.ID, name: b.Name},
						piece{kind: pieceToolInput, text: string(b.Input)})
				}
			}
		}
		if hasText {
			r.textDeltas = false
		}
		if hasThinking {
			r.thinkingDeltas, r.signed = false, false
		}
		if ev.Message.IsAPIErrorMessage {
			return nil
		}
		return out
	}
	return nil
}

// thought is the thinking text a reply shows: none with display
// "omitted".
func (r *replyReader) thought(t string) string {
	if r.view.omit {
		return ""
	}
	return t
}
