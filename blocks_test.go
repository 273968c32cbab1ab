package claudepool

import (
	"bytes"
	"encoding/base64"
	"image"
	"image/color"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testPNG is a small PNG image whose bytes depend on seed.
func testPNG(t testing.TB, seed uint8) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 4, 4))
	img.Set(1, 1, color.RGBA{R: seed, G: 2, B: 3, A: 255})
	var b bytes.Buffer
	require.NoError(t, png.Encode(&b, img))
	return b.Bytes()
}

// testPDF is the start of a PDF file: enough for its media type.
var testPDF = []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")

// lineContent returns the content blocks of the last user line of a chat
// process pid received (its reset may have come since).
func lineContent(t *testing.T, fp *fakePool, pid int) []map[string]any {
	t.Helper()
	var last map[string]any
	for _, m := range sentLines(t, fp, pid) {
		if m["type"] == "user" && m["text_not_typed"] == true {
			last = m
		}
	}
	require.NotNil(t, last)
	var out []map[string]any
	for _, b := range last["message"].(map[string]any)["content"].([]any) {
		out = append(out, b.(map[string]any))
	}
	return out
}

func blockTypes(blocks []map[string]any) []string {
	var out []string
	for _, b := range blocks {
		out = append(out, b["type"].(string))
	}
	return out
}

// A message's image, document and text blocks reach the CLI's user line
// as blocks, in order, after the message's text.
func TestBlocksReachTheUserLine(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 0})
	img := testPNG(t, 1)
	req := Request{Messages: []Message{{Role: RoleUser, Content: "look at these", Blocks: []Block{
		ImageBlock("image/png", img),
		ImageURL("https://example.com/cat.jpg"),
		DocumentBlock("application/pdf", testPDF),
		TextDocument("notes", "plain notes"),
		TextBlock("and answer briefly"),
	}}}}
	s, _ := chatOK(t, ctx, NewAdapter(fp.Pool), req)
	got := lineContent(t, fp, s.Acquire().PID)
	require.Equal(t, []string{"text", "image", "image", "document", "document", "text"}, blockTypes(got))
	require.Equal(t, "look at these", got[0]["text"])
	require.Equal(t, map[string]any{"type": "base64", "media_type": "image/png", "data": base64.StdEncoding.EncodeToString(img)}, got[1]["source"])
	require.Equal(t, map[string]any{"type": "url", "url": "https://example.com/cat.jpg"}, got[2]["source"])
	require.Equal(t, map[string]any{"type": "base64", "media_type": "application/pdf", "data": base64.StdEncoding.EncodeToString(testPDF)}, got[3]["source"])
	require.Equal(t, map[string]any{"type": "text", "media_type": "text/plain", "data": "plain notes"}, got[4]["source"])
	require.Equal(t, "notes", got[4]["title"])
	require.Equal(t, "and answer briefly", got[5]["text"])
}

// In a rendered transcript, each image and document stays a block in its
// turn's place; the text around it carries the turns.
func TestRenderBlocksKeepsMediaInPlace(t *testing.T) {
	img := testPNG(t, 2)
	msgs := []Message{
		{Role: RoleUser, Content: "what is this?", Blocks: []Block{ImageBlock("image/png", img)}},
		{Role: RoleAssistant, Content: "a dot"},
		{Role: RoleUser, Blocks: []Block{TextBlock("and this?"), DocumentBlock("application/pdf", testPDF), TextBlock("thanks")}},
	}
	got := renderBlocks(msgs)
	var types []string
	for _, b := range got {
		types = append(types, b.Type)
	}
	require.Equal(t, []string{"text", "image", "text", "document", "text"}, types)
	require.Equal(t, "<conversation_history>\n<turn role=\"user\">\nwhat is this?", got[0].Text)
	require.Equal(t, "\n</turn>\n<turn role=\"assistant\">\na dot\n</turn>\n</conversation_history>\n\n<current_message>\nand this?", got[2].Text)
	require.Equal(t, "thanks\n</current_message>", got[4].Text)
	require.Equal(t, base64.StdEncoding.EncodeToString(img), got[1].Source.Data)
	// The text alone, as RenderTranscript gives it.
	require.Equal(t, got[0].Text+got[2].Text+got[4].Text, RenderTranscript(msgs))
	// Text-only conversations render as before: one text block.
	plain := []Message{{Role: RoleUser, Content: "q"}, {Role: RoleAssistant, Content: "a"}, {Role: RoleUser, Content: "q2"}}
	require.Len(t, renderBlocks(plain), 1)
	require.Equal(t, RenderTranscript(plain), renderBlocks(plain)[0].Text)
}

func TestBlockValidation(t *testing.T) {
	img := testPNG(t, 3)
	big := append(append([]byte(nil), img...), make([]byte, MaxImageBytes)...)
	many := make([]Block, MaxImages+1)
	for i := range many {
		many[i] = ImageURL("https://example.com/i.png")
	}
	tests := []struct {
		name  string
		msg   Message
		want  string
		valid bool
	}{
		{"blocks alone", Message{Role: RoleUser, Blocks: []Block{ImageBlock("image/png", img)}}, "", true},
		{"image type unknown", Message{Role: RoleUser, Blocks: []Block{ImageBlock("image/bmp", img)}}, `media type "image/bmp"`, false},
		{"image bytes not its type", Message{Role: RoleUser, Blocks: []Block{ImageBlock("image/jpeg", img)}}, "the data is image/png, not image/jpeg", false},
		{"image too large", Message{Role: RoleUser, Blocks: []Block{ImageBlock("image/png", big)}}, "the API takes at most", false},
		{"image without data", Message{Role: RoleUser, Blocks: []Block{ImageBlock("image/png", nil)}}, "needs data or a URL", false},
		{"data and URL", Message{Role: RoleUser, Blocks: []Block{{Type: BlockImage, MediaType: "image/png", Data: img, URL: "https://x/y.png"}}}, "not both", false},
		{"URL not http", Message{Role: RoleUser, Blocks: []Block{ImageURL("file:///etc/passwd")}}, "is not an http(s) URL", false},
		{"PDF not a PDF", Message{Role: RoleUser, Blocks: []Block{DocumentBlock("application/pdf", []byte("hello"))}}, "not application/pdf", false},
		{"document type unknown", Message{Role: RoleUser, Blocks: []Block{DocumentBlock("application/msword", testPDF)}}, `media type "application/msword"`, false},
		{"text document empty", Message{Role: RoleUser, Blocks: []Block{TextDocument("t", "")}}, "plain-text document", false},
		{"empty text block", Message{Role: RoleUser, Blocks: []Block{TextBlock(" ")}}, "a text block must hold", false},
		{"unknown block", Message{Role: RoleUser, Blocks: []Block{{Type: "audio"}}}, `unknown block type "audio"`, false},
		{"assistant image", Message{Role: RoleAssistant, Blocks: []Block{ImageBlock("image/png", img)}}, "an assistant message carries text and tool_use blocks only", false},
		{"too many images", Message{Role: RoleUser, Blocks: many}, "at most 100 in a request", false},
	}
	ctx := testCtx(t)
	fp := newFakePool(t, Config{})
	a := NewAdapter(fp.Pool)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs := []Message{tt.msg}
			if tt.msg.Role == RoleAssistant {
				msgs = []Message{{Role: RoleUser, Content: "q"}, tt.msg, {Role: RoleUser, Content: "q2"}}
			}
			req := Request{Messages: msgs}
			err := req.validate()
			if tt.valid {
				require.NoError(t, err)
				return
			}
			s, err := a.StreamChat(ctx, req)
			require.Nil(t, s)
			requireErrorIs(t, err, ErrInvalidRequest)
			require.ErrorContains(t, err, tt.want)
		})
	}
	require.Empty(t, fp.pids(), "a bad request took a process")
}

// A held conversation's key covers its blocks: the same history with the
// same image continues on its process, with another image it does not.
func TestHeldConversationWithBlocks(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{HoldConversations: time.Minute}, echoHistory)
	a := NewAdapter(fp.Pool)
	first := Request{Messages: []Message{{Role: RoleUser, Content: "what is this?", Blocks: []Block{ImageBlock("image/png", testPNG(t, 4))}}}}
	s1, _ := chatOK(t, ctx, a, first)

	next := continued(first, s1.Result().Text, "and its colour?")
	next.Messages[2].Blocks = []Block{ImageBlock("image/png", testPNG(t, 5))}
	s2, _ := chatOK(t, ctx, a, next)
	require.True(t, s2.Acquire().Continued)
	require.Equal(t, s1.Acquire().PID, s2.Acquire().PID)
	// The process received the new message alone, its image included.
	require.Equal(t, []string{"text", "image"}, blockTypes(lineContent(t, fp, s2.Acquire().PID)))

	other := continued(first, s1.Result().Text, "and its colour?")
	other.Messages[0].Blocks = []Block{ImageBlock("image/png", testPNG(t, 6))}
	s3, _ := chatOK(t, ctx, a, other)
	require.False(t, s3.Acquire().Continued, "another image is another conversation")
	got := lineContent(t, fp, s3.Acquire().PID)
	require.Equal(t, []string{"text", "image", "text"}, blockTypes(got), "rendered, the image in its place")
	require.True(t, strings.HasPrefix(got[0]["text"].(string), "<conversation_history>"))
}
