package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/claudepool/claudepool"
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

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// imageJSON and documentJSON are content blocks as a client sends them.
func imageJSON(mediaType string, data []byte) map[string]any {
	return map[string]any{"type": "image", "source": map[string]any{"type": "base64", "media_type": mediaType, "data": b64(data)}}
}

func documentJSON(source map[string]any, extra map[string]any) map[string]any {
	b := map[string]any{"type": "document", "source": source}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

func textJSON(text string) map[string]any { return map[string]any{"type": "text", "text": text} }

// TestMessagesBlocksParsed: image and document blocks of a user turn
// become its Message.Blocks in their places among its text blocks; a
// list of text blocks alone stays one text; the thinking blocks a client
// sends back in an assistant turn are dropped.
func TestMessagesBlocksParsed(t *testing.T) {
	img := testPNG(t, 1)
	c, err := messagesFormat{}.parse([]byte(messagesBody(t, false, nil,
		[]map[string]any{textJSON("first"), textJSON("second")},
		[]map[string]any{{"type": "thinking", "thinking": "hmm", "signature": "c2ln"}, {"type": "redacted_thinking", "data": "eA=="}, textJSON("an answer")},
		[]map[string]any{
			textJSON("look at these"),
			imageJSON("image/png", img),
			{"type": "image", "source": map[string]any{"type": "url", "url": "https://example.com/cat.jpg"}, "cache_control": map[string]any{"type": "ephemeral"}},
			documentJSON(map[string]any{"type": "base64", "media_type": "application/pdf", "data": b64(testPDF)}, map[string]any{"title": "The report", "citations": map[string]any{"enabled": false}}),
			documentJSON(map[string]any{"type": "url", "url": "https://example.com/paper.pdf"}, nil),
			documentJSON(map[string]any{"type": "text", "media_type": "text/plain", "data": "plain notes"}, map[string]any{"title": "Notes", "context": nil}),
			textJSON("and answer briefly"),
		},
	)))
	require.NoError(t, err)
	pdf := claudepool.DocumentBlock("application/pdf", testPDF)
	pdf.Title = "The report"
	require.Equal(t, []claudepool.Message{
		{Role: claudepool.RoleUser, Content: "first\n\nsecond"},
		{Role: claudepool.RoleAssistant, Content: "an answer"},
		{Role: claudepool.RoleUser, Blocks: []claudepool.Block{
			claudepool.TextBlock("look at these"),
			claudepool.ImageBlock("image/png", img),
			claudepool.ImageURL("https://example.com/cat.jpg"),
			pdf,
			claudepool.DocumentURL("https://example.com/paper.pdf"),
			claudepool.TextDocument("Notes", "plain notes"),
			claudepool.TextBlock("and answer briefly"),
		}},
	}, c.req.Messages)

	c, err = messagesFormat{}.parse([]byte(messagesBody(t, false, nil, []map[string]any{imageJSON("image/gif", []byte("GIF89a\x01\x00\x01\x00"))})))
	require.NoError(t, err)
	require.Equal(t, []claudepool.Message{{Role: claudepool.RoleUser, Blocks: []claudepool.Block{
		claudepool.ImageBlock("image/gif", []byte("GIF89a\x01\x00\x01\x00"))}}}, c.req.Messages, "an image alone, without text")
}

// recordedUserContent returns the content blocks of the user lines the
// fake CLIs of ts received, in order.
func recordedUserContent(t *testing.T, ts *testServer) [][]map[string]any {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(ts.rec, "*.jsonl"))
	require.NoError(t, err)
	var out [][]map[string]any
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			var line struct {
				Type         string `json:"type"`
				TextNotTyped bool   `json:"text_not_typed"`
				Message      struct {
					Content []map[string]any `json:"content"`
				} `json:"message"`
			}
			require.NoError(t, json.Unmarshal(sc.Bytes(), &line))
			if line.Type == "user" && line.TextNotTyped {
				out = append(out, line.Message.Content)
			}
		}
		require.NoError(t, sc.Err())
	}
	return out
}

// TestMessagesBlocksReachTheCLI: an image, a PDF and a plain-text
// document reach the CLI's user line as blocks, in order with the text
// blocks, their bytes whole; a later turn that carries an image keeps it
// in its place in the rendered conversation.
func TestMessagesBlocksReachTheCLI(t *testing.T) {
	ts := newTestServer(t)
	img := testPNG(t, 7)
	resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, nil, []map[string]any{
		textJSON("compare"),
		imageJSON("image/png", img),
		documentJSON(map[string]any{"type": "base64", "media_type": "application/pdf", "data": b64(testPDF)}, map[string]any{"title": "Report"}),
		documentJSON(map[string]any{"type": "text", "media_type": "text/plain", "data": "some notes"}, nil),
		textJSON("briefly"),
	}))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var m message
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	require.Equal(t, []contentBlock{{Type: "text", Text: "echo: compare\nbriefly"}}, m.Content, "the fake echoes the text blocks")

	resp = ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, true, nil,
		[]map[string]any{textJSON("what is this?"), imageJSON("image/png", img)},
		"a picture",
		[]map[string]any{textJSON("and this one?"), imageJSON("image/png", testPNG(t, 8))},
	))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	readEvents(t, resp)

	lines := recordedUserContent(t, ts)
	require.Len(t, lines, 2)
	first := lines[0]
	require.Equal(t, []string{"text", "image", "document", "document", "text"}, contentTypes(first))
	require.Equal(t, map[string]any{"type": "base64", "media_type": "image/png", "data": b64(img)}, first[1]["source"])
	require.Equal(t, map[string]any{"type": "base64", "media_type": "application/pdf", "data": b64(testPDF)}, first[2]["source"])
	require.Equal(t, "Report", first[2]["title"])
	require.Equal(t, map[string]any{"type": "text", "media_type": "text/plain", "data": "some notes"}, first[3]["source"])

	second := lines[1]
	require.Equal(t, []string{"text", "image", "text", "image", "text"}, contentTypes(second), "each image in its place in the rendered conversation")
	require.Contains(t, second[0]["text"], "what is this?")
	require.Equal(t, b64(img), second[1]["source"].(map[string]any)["data"])
	require.Contains(t, second[2]["text"], "a picture")
	require.Contains(t, second[2]["text"], "and this one?")
	require.Equal(t, b64(testPNG(t, 8)), second[3]["source"].(map[string]any)["data"])
}

func contentTypes(blocks []map[string]any) []string {
	var out []string
	for _, b := range blocks {
		out = append(out, b["type"].(string))
	}
	return out
}

// TestMessagesBlocksInvalid: a malformed image or document block is a
// 400 invalid_request_error in the API's shape that says what is wrong,
// whether the server finds it (the block's shape, its base64, its media
// type) or the pool does (bytes that are not what their media type says,
// an image over 5 MB, more than 100 images, a URL that is not http(s)),
// and takes no process.
func TestMessagesBlocksInvalid(t *testing.T) {
	ts := newTestServer(t)
	img := testPNG(t, 1)
	user := func(blocks ...map[string]any) string {
		return messagesBody(t, false, nil, append([]map[string]any{textJSON("what is it?")}, blocks...))
	}
	src := func(kv ...string) map[string]any {
		m := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	manyImages := []map[string]any{}
	for range 101 {
		manyImages = append(manyImages, imageJSON("image/png", img))
	}
	bigPNG := append(append([]byte{}, img...), make([]byte, claudepool.MaxImageBytes)...)
	for _, tt := range []struct {
		name, body, want string
	}{
		{"bad base64", user(map[string]any{"type": "image", "source": src("type", "base64", "media_type", "image/png", "data", "not base64!")}),
			"messages.0.content.1.source.data: not valid base64"},
		{"unsupported image type", user(imageJSON("image/bmp", []byte("BM...."))),
			`messages.0.content.1.source.media_type: "image/bmp" is not supported for image blocks; the API takes image/jpeg, image/png, image/gif, image/webp`},
		{"no media type", user(map[string]any{"type": "image", "source": src("type", "base64", "data", b64(img))}),
			`messages.0.content.1.source.media_type: "" is not supported for image blocks`},
		{"unsupported document type", user(documentJSON(src("type", "base64", "media_type", "text/html", "data", b64([]byte("<p>hi</p>"))), nil)),
			`messages.0.content.1.source.media_type: "text/html" is not supported for document blocks; the API takes application/pdf`},
		{"no data", user(map[string]any{"type": "image", "source": src("type", "base64", "media_type", "image/png")}),
			"messages.0.content.1.source.data: field required"},
		{"no source", user(map[string]any{"type": "image"}), "messages.0.content.1.source: field required"},
		{"source not an object", user(map[string]any{"type": "image", "source": "https://example.com/a.png"}), "messages.0.content.1.source: must be an object"},
		{"no url", user(map[string]any{"type": "image", "source": src("type", "url")}), "messages.0.content.1.source.url: field required"},
		{"file source", user(map[string]any{"type": "image", "source": src("type", "file", "file_id", "file_1")}),
			`messages.0.content.1.source.type: "file" sources are not supported by this server`},
		{"text source for an image", user(map[string]any{"type": "image", "source": src("type", "text", "media_type", "text/plain", "data", "x")}),
			`messages.0.content.1.source.type: must be "base64" or "url" for image blocks, got "text"`},
		{"content source", user(documentJSON(map[string]any{"type": "content", "content": []any{textJSON("x")}}, nil)),
			`messages.0.content.1.source.type: "content" sources are not supported by this server`},
		{"text source of another type", user(documentJSON(src("type", "text", "media_type", "text/markdown", "data", "# x"), nil)),
			`messages.0.content.1.source.media_type: must be "text/plain" for a text source, got "text/markdown"`},
		{"empty text source", user(documentJSON(src("type", "text", "media_type", "text/plain", "data", ""), nil)),
			"messages.0.content.1.source.data: field required: the document's text"},
		{"citations", user(documentJSON(src("type", "url", "url", "https://example.com/a.pdf"), map[string]any{"citations": map[string]any{"enabled": true}})),
			"messages.0.content.1.citations: citations are not supported by this server"},
		{"context", user(documentJSON(src("type", "url", "url", "https://example.com/a.pdf"), map[string]any{"context": "from the archive"})),
			"messages.0.content.1.context: not supported by this server"},
		{"title not a string", user(documentJSON(src("type", "url", "url", "https://example.com/a.pdf"), map[string]any{"title": 7})),
			"messages.0.content.1.title: must be a string"},
		{"unknown block field", user(map[string]any{"type": "image", "source": src("type", "url", "url", "https://example.com/a.png"), "transformations": map[string]any{}}),
			"messages.0.content.1.transformations: unsupported field for image blocks"},
		{"image in an assistant turn", messagesBody(t, false, nil, "hi", []map[string]any{imageJSON("image/png", img)}, "and?"),
			`messages.1.content.0.type: "image" blocks belong in user turns`},
		{"thinking in a user turn", user(map[string]any{"type": "thinking", "thinking": "x", "signature": "y"}),
			`messages.0.content.1.type: "thinking" blocks are not supported`},
		{"text block not text", user(map[string]any{"type": "text", "text": 7}), "messages.0.content.1.text: must be a string"},

		// The pool's checks.
		{"bytes of another type", user(imageJSON("image/jpeg", img)), "message 0 block 1: the data is image/png, not image/jpeg"},
		{"a PDF that is not", user(documentJSON(src("type", "base64", "media_type", "application/pdf", "data", b64([]byte("just text"))), nil)),
			"message 0 block 1: the data is text/plain, not application/pdf"},
		{"image over 5 MB", user(imageJSON("image/png", bigPNG)), "message 0 block 1: the image is"},
		{"101 images", user(manyImages...), "101 images; the API takes at most 100"},
		{"not an http URL", user(map[string]any{"type": "image", "source": src("type", "url", "url", "ftp://example.com/a.png")}),
			`message 0 block 1: "ftp://example.com/a.png" is not an http(s) URL`},
		{"empty text block", user(imageJSON("image/png", img), textJSON(" ")), "message 0 block 2: a text block must hold valid UTF-8 text"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.postTo(t, context.Background(), "/v1/messages", tt.body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			e := apiErrorBody(t, resp.Body)
			require.Equal(t, "invalid_request_error", e.Error.Type)
			require.Contains(t, e.Error.Message, tt.want)
			require.Equal(t, resp.Header.Get("Request-Id"), e.RequestID)
		})
	}
	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires, "a bad request took a process")
}

// TestMessagesBodyLimit: the default body limit is the API's, 32 MiB,
// room for images and PDFs; a larger body is the API's 413.
func TestMessagesBodyLimit(t *testing.T) {
	ts := newTestServer(t)
	require.EqualValues(t, claudepool.MaxRequestBytes, ts.api.maxBody)
	ts.api.maxBody = 1 << 16
	resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, nil,
		[]map[string]any{textJSON("big"), imageJSON("image/png", append(testPNG(t, 1), make([]byte, 1<<16)...))}))
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	e := apiErrorBody(t, resp.Body)
	require.Equal(t, "request_too_large", e.Error.Type)
	require.True(t, strings.HasPrefix(e.Error.Message, "malformed request: body larger than 65536 bytes"), e.Error.Message)
}
