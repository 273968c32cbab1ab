package claudepool

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// BlockType names the kind of a Block.
type BlockType string

// The kinds of Block.
const (
	BlockText       BlockType = "text"        // more text
	BlockImage      BlockType = "image"       // an image: bytes or a URL
	BlockDocument   BlockType = "document"    // a PDF (bytes or a URL) or a plain-text document
	BlockToolUse    BlockType = "tool_use"    // an assistant's call of a tool the caller answers
	BlockToolResult BlockType = "tool_result" // the caller's result of such a call
)

// Block is a content block of a Message beside its text: an image, a
// document, or more text. Build one with TextBlock, ImageBlock, ImageURL,
// DocumentBlock, DocumentURL or TextDocument. The blocks reach the API as
// blocks, in order, in the first message of a chat, in the new message of
// a held conversation, and in their places in a rendered transcript.
type Block struct {
	Type BlockType
	// Text is a BlockText's text, or a plain-text document's.
	Text string
	// MediaType is an image's ("image/jpeg", "image/png", "image/gif",
	// "image/webp") or a document's ("application/pdf", or "text/plain"
	// for a TextDocument). Blocks by URL have none.
	MediaType string
	// Data holds the bytes of an image or a PDF, sent base64-encoded.
	Data []byte
	// URL is where the API fetches an image or a PDF from.
	URL string
	// Title is a document's title, "" for none.
	Title string
	// ID, Name and Input are a BlockToolUse's: the call's id, the tool's
	// name and its input (a JSON object).
	ID    string
	Name  string
	Input json.RawMessage
	// ToolUseID names the call a BlockToolResult answers; Text holds its
	// result, and IsError says the call failed.
	ToolUseID string
	IsError   bool
}

// ToolUseBlock is an assistant's call of a tool, as Result.ToolCalls
// reports it.
func ToolUseBlock(id, name string, input json.RawMessage) Block {
	return Block{Type: BlockToolUse, ID: id, Name: name, Input: input}
}

// ToolResultBlock is the caller's result of the call toolUseID: its text,
// or the reason it failed when isError is set.
func ToolResultBlock(toolUseID, result string, isError bool) Block {
	return Block{Type: BlockToolResult, ToolUseID: toolUseID, Text: result, IsError: isError}
}

// TextBlock is a block of text.
func TextBlock(text string) Block { return Block{Type: BlockText, Text: text} }

// ImageBlock is an image given as its bytes, of mediaType "image/jpeg",
// "image/png", "image/gif" or "image/webp".
func ImageBlock(mediaType string, data []byte) Block {
	return Block{Type: BlockImage, MediaType: mediaType, Data: data}
}

// ImageURL is an image the API fetches from u.
func ImageURL(u string) Block { return Block{Type: BlockImage, URL: u} }

// DocumentBlock is a PDF given as its bytes (mediaType
// "application/pdf").
func DocumentBlock(mediaType string, data []byte) Block {
	return Block{Type: BlockDocument, MediaType: mediaType, Data: data}
}

// DocumentURL is a PDF the API fetches from u.
func DocumentURL(u string) Block { return Block{Type: BlockDocument, URL: u} }

// TextDocument is a plain-text document with a title ("" for none).
func TextDocument(title, text string) Block {
	return Block{Type: BlockDocument, MediaType: "text/plain", Text: text, Title: title}
}

// The API's limits on what a chat can carry.
const (
	// MaxImageBytes is the largest image the Messages API takes (5 MB).
	MaxImageBytes = 5 << 20
	// MaxRequestBytes is the largest Messages API request (32 MB): the
	// base64 of every image and PDF of a request counts toward it.
	MaxRequestBytes = 32 << 20
	// MaxImages is the most images one request may carry.
	MaxImages = 100
)

// imageTypes are the image media types the API takes.
var imageTypes = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true}

// validate reports what is wrong with b, the i-th block of message m.
func (b *Block) validate(m, i int, role Role) error {
	where := fmt.Sprintf("message %d block %d", m, i)
	if role == RoleAssistant && b.Type != BlockText && b.Type != BlockToolUse {
		return fmt.Errorf("%w: %s: an assistant message carries text and tool_use blocks only, not %q", ErrInvalidRequest, where, b.Type)
	}
	if role == RoleUser && b.Type == BlockToolUse {
		return fmt.Errorf("%w: %s: a tool_use block belongs to an assistant message", ErrInvalidRequest, where)
	}
	switch b.Type {
	case BlockToolUse:
		var input map[string]json.RawMessage
		switch {
		case b.ID == "" || !toolName.MatchString(b.Name):
			return fmt.Errorf("%w: %s: a tool_use block needs an ID and a tool's Name", ErrInvalidRequest, where)
		case json.Unmarshal(b.Input, &input) != nil:
			return fmt.Errorf("%w: %s: the Input of tool_use %s is not a JSON object", ErrInvalidRequest, where, b.ID)
		}
		return nil
	case BlockToolResult:
		if b.ToolUseID == "" || !utf8.ValidString(b.Text) {
			return fmt.Errorf("%w: %s: a tool_result block needs a ToolUseID and valid UTF-8 Text", ErrInvalidRequest, where)
		}
		return nil
	case BlockText:
		if strings.TrimSpace(b.Text) == "" || !utf8.ValidString(b.Text) {
			return fmt.Errorf("%w: %s: a text block must hold valid UTF-8 text", ErrInvalidRequest, where)
		}
		if b.MediaType != "" || b.Data != nil || b.URL != "" {
			return fmt.Errorf("%w: %s: a text block has no media type, data or URL", ErrInvalidRequest, where)
		}
	case BlockImage:
		if err := b.validateSource(where, func(mt string) bool { return imageTypes[mt] }, "image/jpeg, image/png, image/gif or image/webp"); err != nil {
			return err
		}
		if len(b.Data) > MaxImageBytes {
			return fmt.Errorf("%w: %s: the image is %d bytes; the API takes at most %d", ErrInvalidRequest, where, len(b.Data), MaxImageBytes)
		}
	case BlockDocument:
		if b.MediaType == "text/plain" {
			if b.Text == "" || !utf8.ValidString(b.Text) || b.Data != nil || b.URL != "" {
				return fmt.Errorf("%w: %s: a plain-text document holds valid UTF-8 Text and no data or URL", ErrInvalidRequest, where)
			}
			break
		}
		if err := b.validateSource(where, func(mt string) bool { return mt == "application/pdf" }, "application/pdf (or text/plain with Text)"); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: %s: unknown block type %q", ErrInvalidRequest, where, b.Type)
	}
	if !utf8.ValidString(b.Title) {
		return fmt.Errorf("%w: %s: the title is not valid UTF-8", ErrInvalidRequest, where)
	}
	return nil
}

// validateSource checks the bytes or URL of an image or a PDF.
func (b *Block) validateSource(where string, accepts func(string) bool, want string) error {
	switch {
	case b.Text != "":
		return fmt.Errorf("%w: %s: a %s block has no Text", ErrInvalidRequest, where, b.Type)
	case b.URL != "" && b.Data != nil:
		return fmt.Errorf("%w: %s: a %s block has data or a URL, not both", ErrInvalidRequest, where, b.Type)
	case b.URL != "":
		u, err := url.Parse(b.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("%w: %s: %q is not an http(s) URL", ErrInvalidRequest, where, b.URL)
		}
		if b.MediaType != "" {
			return fmt.Errorf("%w: %s: a %s by URL has no media type (the API reads it from the response)", ErrInvalidRequest, where, b.Type)
		}
		return nil
	case len(b.Data) == 0:
		return fmt.Errorf("%w: %s: a %s block needs data or a URL", ErrInvalidRequest, where, b.Type)
	case !accepts(b.MediaType):
		return fmt.Errorf("%w: %s: media type %q; the API takes %s", ErrInvalidRequest, where, b.MediaType, want)
	}
	// The bytes must be what the media type says: a PNG labelled JPEG is
	// refused by the API after the chat has taken a process.
	if got := sniff(b.Data); got != b.MediaType {
		return fmt.Errorf("%w: %s: the data is %s, not %s", ErrInvalidRequest, where, got, b.MediaType)
	}
	return nil
}

// sniff names the media type of data as the API would see it.
func sniff(data []byte) string {
	t, _, _ := strings.Cut(http.DetectContentType(data), ";")
	return t
}

// lineBlock is a content block as the CLI's user line carries it, and as
// the API takes it.
type lineBlock struct {
	Type   string      `json:"type"`
	Text   string      `json:"text,omitempty"`
	Source *lineSource `json:"source,omitempty"`
	Title  string      `json:"title,omitempty"`
}

type lineSource struct {
	Type      string `json:"type"`
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
}

// wire is b as a content block of the user line.
func (b *Block) wire() lineBlock {
	switch {
	case b.Type == BlockText:
		return lineBlock{Type: "text", Text: b.Text}
	case b.Type == BlockToolUse, b.Type == BlockToolResult:
		// The CLI takes neither in a user line: a transcript marks them
		// as text (see renderBlocks).
		return lineBlock{Type: "text", Text: b.marked()}
	case b.URL != "":
		return lineBlock{Type: string(b.Type), Source: &lineSource{Type: "url", URL: b.URL}, Title: b.Title}
	case b.MediaType == "text/plain":
		return lineBlock{Type: string(b.Type), Source: &lineSource{Type: "text", MediaType: "text/plain", Data: b.Text}, Title: b.Title}
	}
	return lineBlock{Type: string(b.Type), Source: &lineSource{Type: "base64", MediaType: b.MediaType,
		Data: base64.StdEncoding.EncodeToString(b.Data)}, Title: b.Title}
}

// digest writes b into a conversation key.
func (b *Block) digest(w interface{ Write([]byte) (int, error) }) {
	writeField(w, string(b.Type))
	writeField(w, b.Text)
	writeField(w, b.MediaType)
	writeField(w, b.URL)
	writeField(w, b.Title)
	sum := sha256.Sum256(b.Data)
	writeField(w, string(sum[:]))
	writeField(w, b.ID)
	writeField(w, b.Name)
	writeField(w, canonicalJSON(b.Input))
	writeField(w, b.ToolUseID)
	writeField(w, fmt.Sprint(b.IsError))
}

// marked renders a tool_use or tool_result block as the text a
// transcript carries, marked so that the model reads it as a call and
// its result, and escaped as any text of a transcript is.
func (b *Block) marked() string {
	var t strings.Builder
	if b.Type == BlockToolUse {
		fmt.Fprintf(&t, "<tool_use id=%q name=%q>\n", b.ID, b.Name)
		transcriptEscaper.WriteString(&t, string(b.Input))
		t.WriteString("\n</tool_use>")
		return t.String()
	}
	fmt.Fprintf(&t, "<tool_result tool_use_id=%q is_error=\"%t\">\n", b.ToolUseID, b.IsError)
	transcriptEscaper.WriteString(&t, b.Text)
	t.WriteString("\n</tool_result>")
	return t.String()
}

// messageBlocks is the content of one message as blocks: its text first,
// then its blocks.
func messageBlocks(m Message) []lineBlock {
	var out []lineBlock
	if strings.TrimSpace(m.Content) != "" {
		out = append(out, lineBlock{Type: "text", Text: m.Content})
	}
	for i := range m.Blocks {
		out = append(out, m.Blocks[i].wire())
	}
	return out
}

// renderBlocks renders a conversation into the content of the single
// user line the CLI receives: RenderTranscript's text, with each image
// and document of every turn as a block of its own in its place.
func renderBlocks(msgs []Message) []lineBlock {
	switch len(msgs) {
	case 0:
		return nil
	case 1:
		return messageBlocks(msgs[0])
	}
	var out []lineBlock
	var text strings.Builder
	flush := func() {
		if text.Len() > 0 {
			out = append(out, lineBlock{Type: "text", Text: text.String()})
			text.Reset()
		}
	}
	turn := func(m Message) {
		transcriptEscaper.WriteString(&text, m.Content)
		for _, b := range m.Blocks {
			if b.Type == BlockText || b.Type == BlockToolUse || b.Type == BlockToolResult {
				if s := text.String(); s != "" && !strings.HasSuffix(s, "\n") {
					text.WriteString("\n")
				}
				if b.Type == BlockText {
					transcriptEscaper.WriteString(&text, b.Text)
				} else {
					text.WriteString(b.marked())
				}
				continue
			}
			flush()
			out = append(out, b.wire())
		}
	}
	text.WriteString("<conversation_history>\n")
	for _, m := range msgs[:len(msgs)-1] {
		fmt.Fprintf(&text, "<turn role=%q>\n", m.Role)
		turn(m)
		text.WriteString("\n</turn>\n")
	}
	text.WriteString("</conversation_history>\n\n<current_message>\n")
	turn(msgs[len(msgs)-1])
	text.WriteString("\n</current_message>")
	flush()
	return out
}

// canonicalJSON is raw re-encoded with its object keys sorted and no
// white space, so that two encodings of one value (a client that decodes
// and re-encodes a tool call's input) digest alike. raw itself when it
// is not JSON.
func canonicalJSON(raw json.RawMessage) string {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if raw == nil || dec.Decode(&v) != nil {
		return string(raw)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return string(raw)
	}
	return string(b)
}
