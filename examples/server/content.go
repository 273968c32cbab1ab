package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/claudepool/claudepool"
)

// The media types the API takes in an image's or a PDF's base64 source.
var (
	imageMediaTypes    = []string{"image/jpeg", "image/png", "image/gif", "image/webp"}
	documentMediaTypes = []string{"application/pdf"}
)

// textBlock is a text content block, of a message or of the system
// prompt.
type textBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// messageContent maps the content of a message, a string or a list of
// content blocks, to a claudepool.Message. where is the message's path in
// the request ("messages.0").
//
// A list of text blocks alone is one text, the blocks joined by a blank
// line. A list with image, document or tool_result blocks (user turns
// only) keeps every block in its place, as Message.Blocks. An assistant
// turn with tool_use blocks is the message that continues a chat after a
// reply that called the server's tools (Result.AssistantMessage): its
// text, the text blocks joined as the reply split them (without a
// separator), then its calls (Message.Blocks). The thinking blocks of an
// assistant turn, which a client sends back with the turn, are dropped,
// as the API drops those of earlier turns. Any other block
// (search_result, ...) is an error.
func messageContent(where string, role claudepool.Role, v json.RawMessage) (claudepool.Message, error) {
	msg := claudepool.Message{Role: role}
	where += ".content"
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		msg.Content = s
		return msg, nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(v, &raws); err != nil {
		return msg, fmt.Errorf("%s: must be a string or a list of content blocks", where)
	}
	var texts []string
	var calls []claudepool.Block
	inPlace := false
	for i, raw := range raws {
		at := fmt.Sprintf("%s.%d", where, i)
		var head struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			return msg, fmt.Errorf("%s: must be a content block object", at)
		}
		switch {
		case head.Type == "text":
			var b textBlock
			if err := json.Unmarshal(raw, &b); err != nil {
				return msg, fmt.Errorf("%s.text: must be a string", at)
			}
			texts = append(texts, b.Text)
			msg.Blocks = append(msg.Blocks, claudepool.TextBlock(b.Text))
		case (head.Type == "image" || head.Type == "document") && role == claudepool.RoleUser:
			b, err := mediaBlock(at, head.Type, raw)
			if err != nil {
				return msg, err
			}
			inPlace = true
			msg.Blocks = append(msg.Blocks, b)
		case head.Type == "image" || head.Type == "document":
			return msg, fmt.Errorf("%s.type: %q blocks belong in user turns, not in the assistant's", at, head.Type)
		case head.Type == "tool_use" && role == claudepool.RoleAssistant:
			b, err := toolUseBlock(at, raw)
			if err != nil {
				return msg, err
			}
			calls = append(calls, b)
		case head.Type == "tool_result" && role == claudepool.RoleUser:
			b, err := toolResultBlock(at, raw)
			if err != nil {
				return msg, err
			}
			inPlace = true
			msg.Blocks = append(msg.Blocks, b)
		case head.Type == "tool_use" || head.Type == "tool_result":
			want := "assistant"
			if head.Type == "tool_result" {
				want = "user"
			}
			return msg, fmt.Errorf("%s.type: %q blocks belong in %s turns", at, head.Type, want)
		case (head.Type == "thinking" || head.Type == "redacted_thinking") && role == claudepool.RoleAssistant:
		default:
			return msg, fmt.Errorf("%s.type: %q blocks are not supported by this server, which takes text, image, document, tool_use and tool_result blocks", at, head.Type)
		}
	}
	switch {
	case calls != nil:
		msg.Content, msg.Blocks = strings.Join(texts, ""), calls
	case !inPlace:
		msg.Content, msg.Blocks = strings.Join(texts, "\n\n"), nil
	}
	return msg, nil
}

// mediaBlock maps an image or document content block to a Block: a
// base64 source (decoded to its bytes), a URL, or for a document a
// plain-text source. Malformed sources and fields the pool cannot honour
// are errors; the pool checks the rest (the bytes against their media
// type, the sizes and counts of images) before the chat takes a process.
func mediaBlock(where, kind string, raw json.RawMessage) (claudepool.Block, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return claudepool.Block{}, fmt.Errorf("%s: must be a content block object", where)
	}
	allowed := []string{"type", "source", "cache_control"}
	if kind == "document" {
		allowed = append(allowed, "title", "context", "citations")
	}
	for _, name := range sortedKeys(fields) {
		if !slices.Contains(allowed, name) {
			return claudepool.Block{}, fmt.Errorf("%s.%s: unsupported field for %s blocks", where, name, kind)
		}
	}
	var title string
	if v := fields["title"]; !isNull(v) {
		if err := json.Unmarshal(v, &title); err != nil {
			return claudepool.Block{}, fmt.Errorf("%s.title: must be a string", where)
		}
	}
	if v := fields["context"]; !isNull(v) {
		return claudepool.Block{}, fmt.Errorf("%s.context: not supported by this server; put the context in a text block", where)
	}
	if v := fields["citations"]; !isNull(v) {
		var c struct {
			Enabled bool `json:"enabled"`
		}
		if err := json.Unmarshal(v, &c); err != nil {
			return claudepool.Block{}, fmt.Errorf("%s.citations: must be an object", where)
		}
		if c.Enabled {
			return claudepool.Block{}, fmt.Errorf("%s.citations: citations are not supported by this server", where)
		}
	}

	where += ".source"
	v := fields["source"]
	if isNull(v) {
		return claudepool.Block{}, fmt.Errorf("%s: field required", where)
	}
	var src struct {
		Type      string  `json:"type"`
		MediaType string  `json:"media_type"`
		Data      *string `json:"data"`
		URL       string  `json:"url"`
	}
	if err := json.Unmarshal(v, &src); err != nil {
		return claudepool.Block{}, fmt.Errorf("%s: must be an object with a type and a media_type and data, or a url", where)
	}
	types := imageMediaTypes
	if kind == "document" {
		types = documentMediaTypes
	}
	switch src.Type {
	case "base64":
		if !slices.Contains(types, src.MediaType) {
			return claudepool.Block{}, fmt.Errorf("%s.media_type: %q is not supported for %s blocks; the API takes %s",
				where, src.MediaType, kind, strings.Join(types, ", "))
		}
		if src.Data == nil || *src.Data == "" {
			return claudepool.Block{}, fmt.Errorf("%s.data: field required: the %s's bytes, base64-encoded", where, kind)
		}
		data, err := base64.StdEncoding.DecodeString(*src.Data)
		if err != nil {
			return claudepool.Block{}, fmt.Errorf("%s.data: not valid base64: %w", where, err)
		}
		if kind == "image" {
			return claudepool.ImageBlock(src.MediaType, data), nil
		}
		b := claudepool.DocumentBlock(src.MediaType, data)
		b.Title = title
		return b, nil
	case "url":
		if src.URL == "" {
			return claudepool.Block{}, fmt.Errorf("%s.url: field required", where)
		}
		if kind == "image" {
			return claudepool.ImageURL(src.URL), nil
		}
		b := claudepool.DocumentURL(src.URL)
		b.Title = title
		return b, nil
	case "text":
		if kind != "document" {
			break
		}
		if src.MediaType != "text/plain" {
			return claudepool.Block{}, fmt.Errorf("%s.media_type: must be \"text/plain\" for a text source, got %q", where, src.MediaType)
		}
		if src.Data == nil || *src.Data == "" {
			return claudepool.Block{}, fmt.Errorf("%s.data: field required: the document's text", where)
		}
		return claudepool.TextDocument(title, *src.Data), nil
	case "file", "content":
		return claudepool.Block{}, fmt.Errorf("%s.type: %q sources are not supported by this server; send the %s as base64 or by url", where, src.Type, kind)
	}
	want := `"base64" or "url"`
	if kind == "document" {
		want = `"base64", "url" or "text"`
	}
	return claudepool.Block{}, fmt.Errorf("%s.type: must be %s for %s blocks, got %q", where, want, kind, src.Type)
}

// textContent returns the text of a string or of a list of text blocks,
// the blocks joined by a blank line: the system prompt. Any other block
// is an error.
func textContent(where string, v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return s, nil
	}
	var blocks []textBlock
	if err := json.Unmarshal(v, &blocks); err != nil {
		return "", fmt.Errorf("%s: must be a string or a list of content blocks", where)
	}
	texts := make([]string, 0, len(blocks))
	for i, b := range blocks {
		if b.Type != "text" {
			return "", fmt.Errorf("%s.%d.type: %q blocks are not supported here, only text", where, i, b.Type)
		}
		texts = append(texts, b.Text)
	}
	return strings.Join(texts, "\n\n"), nil
}

// sortedKeys returns the keys of an object, sorted, so that the first
// error of several is always the same.
func sortedKeys(fields map[string]json.RawMessage) []string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// objectField decodes fields[name] as a JSON object; ok is false when the
// field is absent or null.
func objectField(fields map[string]json.RawMessage, name string) (obj map[string]json.RawMessage, ok bool, err error) {
	v := fields[name]
	if isNull(v) {
		return nil, false, nil
	}
	if !bytes.HasPrefix(bytes.TrimSpace(v), []byte("{")) || json.Unmarshal(v, &obj) != nil {
		return nil, false, fmt.Errorf("%s: must be an object", name)
	}
	return obj, true, nil
}
