package claudepooltest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func newServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	s := NewServer(cfg)
	t.Cleanup(s.Close)
	return s
}

// chatBody returns a Messages request body with one user message.
func chatBody(stream bool, text string) map[string]any {
	return map[string]any{
		"model":      "claude-sonnet-5-5",
		"max_tokens": 1024,
		"stream":     stream,
		"system":     []any{map[string]any{"type": "text", "text": "billing"}, map[string]any{"type": "text", "text": "You are terse."}},
		"tools":      []any{},
		"messages": []any{
			map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": text}}},
		},
	}
}

// post sends body as JSON. It reports errors instead of failing the test,
// so that it can run on a goroutine other than the test's.
func post(ctx context.Context, s *Server, path string, body any) (*http.Response, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Api-Key", "mock-key")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	return s.Client().Do(req)
}

func mustPost(t *testing.T, s *Server, path string, body any) *http.Response {
	t.Helper()
	resp, err := post(context.Background(), s, path, body)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func decode(t *testing.T, r io.Reader) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.NewDecoder(r).Decode(&m))
	return m
}

type sseEvent struct {
	name string
	data map[string]any
}

// sseReader reads server-sent events one at a time.
type sseReader struct {
	t  *testing.T
	sc *bufio.Scanner
}

func newSSEReader(t *testing.T, r io.Reader) *sseReader {
	return &sseReader{t: t, sc: bufio.NewScanner(r)}
}

// next returns the next event, or false at the end of the stream.
func (r *sseReader) next() (sseEvent, bool) {
	r.t.Helper()
	var ev sseEvent
	for r.sc.Scan() {
		line := r.sc.Text()
		switch {
		case line == "":
			if ev.name != "" {
				return ev, true
			}
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			require.NoError(r.t, json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data))
		default:
			require.FailNow(r.t, "unexpected SSE line", "%q", line)
		}
	}
	require.NoError(r.t, r.sc.Err())
	require.Empty(r.t, ev.name, "stream ended inside an event")
	return ev, false
}

func readSSE(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	sr := newSSEReader(t, r)
	var evs []sseEvent
	for {
		ev, ok := sr.next()
		if !ok {
			return evs
		}
		evs = append(evs, ev)
	}
}

// deltas returns the text of each text_delta event.
func deltas(evs []sseEvent) []string { return deltasOf(evs, "text_delta", "text") }

// deltasOf returns the given field of each content_block_delta event whose
// delta has the given type.
func deltasOf(evs []sseEvent, typ, field string) []string {
	var out []string
	for _, ev := range evs {
		if ev.name != "content_block_delta" {
			continue
		}
		if d := ev.data["delta"].(map[string]any); d["type"] == typ {
			out = append(out, d[field].(string))
		}
	}
	return out
}

func names(evs []sseEvent) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.name)
	}
	return out
}

func waitCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestListensOnLoopback(t *testing.T) {
	s := newServer(t, Config{})
	u, err := url.Parse(s.URL())
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", u.Hostname())
}

func TestHello(t *testing.T) {
	s := newServer(t, Config{})
	req, err := http.NewRequest(http.MethodHead, s.URL()+"/api/hello", nil)
	require.NoError(t, err)
	resp, err := s.Client().Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)

	got := s.Requests()
	require.Len(t, got, 1)
	require.Equal(t, KindHello, got[0].Kind)
	require.Equal(t, http.MethodHead, got[0].Method)
	require.Empty(t, s.ChatRequests())
}

func TestNotFound(t *testing.T) {
	s := newServer(t, Config{})
	resp, err := s.Client().Get(s.URL() + "/v1/models")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	body := decode(t, resp.Body)
	require.Equal(t, "error", body["type"])
	require.Equal(t, "not_found_error", body["error"].(map[string]any)["type"])

	got := s.Requests()
	require.Len(t, got, 1)
	require.Equal(t, KindOther, got[0].Kind)
	require.Equal(t, "/v1/models", got[0].Path)
}

func TestStreamEcho(t *testing.T) {
	s := newServer(t, Config{})
	resp := mustPost(t, s, "/v1/messages?beta=true", chatBody(true, "hi there"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))

	evs := readSSE(t, resp.Body)
	require.Equal(t, []string{
		"message_start", "content_block_start", "ping", "content_block_delta",
		"content_block_stop", "message_delta", "message_stop",
	}, names(evs))
	require.Equal(t, []string{EchoPrefix + "hi there"}, deltas(evs))

	msg := evs[0].data["message"].(map[string]any)
	require.Equal(t, "claude-sonnet-5-5", msg["model"])
	require.Equal(t, "assistant", msg["role"])
	require.Equal(t, "msg_mock_000001", msg["id"])
	require.Equal(t, "text", evs[1].data["content_block"].(map[string]any)["type"])
	delta := evs[5].data["delta"].(map[string]any)
	require.Equal(t, "end_turn", delta["stop_reason"])
	require.NotNil(t, evs[5].data["usage"].(map[string]any)["output_tokens"])
	for _, ev := range evs {
		require.Equal(t, ev.name, ev.data["type"], "event name and data type agree")
	}
}

func TestNonStreamed(t *testing.T) {
	s := newServer(t, Config{})
	resp := mustPost(t, s, "/v1/messages", chatBody(false, "title please"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	body := decode(t, resp.Body)
	require.Equal(t, "message", body["type"])
	require.Equal(t, "end_turn", body["stop_reason"])
	content := body["content"].([]any)
	require.Len(t, content, 1)
	require.Equal(t, EchoPrefix+"title please", content[0].(map[string]any)["text"])

	got := s.ChatRequests()
	require.Len(t, got, 1, "the CLI's non-streamed fallback is a chat request")
	require.False(t, got[0].Stream)
}

func TestCountTokens(t *testing.T) {
	s := newServer(t, Config{})
	resp := mustPost(t, s, "/v1/messages/count_tokens?beta=true", chatBody(false, strings.Repeat("word ", 100)))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body := decode(t, resp.Body)
	require.Greater(t, body["input_tokens"], 100.0)
	require.Equal(t, KindCountTokens, s.Requests()[0].Kind)
}

func TestBadJSON(t *testing.T) {
	s := newServer(t, Config{})
	resp, err := s.Client().Post(s.URL()+"/v1/messages", "application/json", strings.NewReader("{not json"))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	body := decode(t, resp.Body)
	require.Equal(t, "invalid_request_error", body["error"].(map[string]any)["type"])
	require.Len(t, s.Requests(), 1, "a bad request is recorded too")
}

func TestScriptedReplies(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		reply ReplyFunc
		want  []string
	}{
		{"fixed text", Config{Reply: Text("fixed")}, nil, []string{"fixed"}},
		{"config chunks", Config{Reply: Text("abcdef"), Chunks: 3}, nil, []string{"ab", "cd", "ef"}},
		{"reply chunks win", Config{Chunks: 3}, func(Request) Reply { return Reply{Text: "abcd", Chunks: 2} }, []string{"ab", "cd"}},
		{"more chunks than characters", Config{}, func(Request) Reply { return Reply{Text: "héé", Chunks: 10} }, []string{"h", "é", "é"}},
		{"empty text", Config{Reply: Text("")}, nil, nil},
		{"by request", Config{}, func(r Request) Reply { return Reply{Text: strings.ToUpper(r.LastUserText())} }, []string{"HELLO"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.cfg)
			if tc.reply != nil {
				s.SetReply(tc.reply)
			}
			resp := mustPost(t, s, "/v1/messages", chatBody(true, "hello"))
			require.Equal(t, http.StatusOK, resp.StatusCode)
			evs := readSSE(t, resp.Body)
			require.Equal(t, tc.want, deltas(evs))
			require.Equal(t, "message_stop", evs[len(evs)-1].name)
		})
	}
}

func TestSplitChunks(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want []string
	}{
		{"", 3, nil},
		{"abc", 0, []string{"abc"}},
		{"abc", 1, []string{"abc"}},
		{"abcdefg", 3, []string{"ab", "cd", "efg"}},
		{"ab", 5, []string{"a", "b"}},
		{"日本語", 2, []string{"日", "本語"}},
	}
	for _, tc := range tests {
		got := splitChunks(tc.s, tc.n)
		require.Equal(t, tc.want, got, "splitChunks(%q, %d)", tc.s, tc.n)
	}
}

func TestChunkDelay(t *testing.T) {
	const delay = 40 * time.Millisecond
	s := newServer(t, Config{Reply: Text("abcd"), Chunks: 4, ChunkDelay: delay})
	start := time.Now()
	resp := mustPost(t, s, "/v1/messages", chatBody(true, "x"))
	evs := readSSE(t, resp.Body)
	require.Equal(t, []string{"a", "b", "c", "d"}, deltas(evs))
	require.GreaterOrEqual(t, time.Since(start), 3*delay, "three pauses between four chunks")
}

func TestHoldPausesAfterFirstChunk(t *testing.T) {
	hold := make(chan struct{})
	s := newServer(t, Config{Reply: func(Request) Reply { return Reply{Text: "first second", Chunks: 2, Hold: hold} }})
	resp := mustPost(t, s, "/v1/messages", chatBody(true, "x"))
	sr := newSSEReader(t, resp.Body)
	for {
		ev, ok := sr.next()
		require.True(t, ok)
		if ev.name == "content_block_delta" {
			require.Equal(t, "first ", deltas([]sseEvent{ev})[0])
			break
		}
	}
	close(hold)
	var rest []sseEvent
	for {
		ev, ok := sr.next()
		if !ok {
			break
		}
		rest = append(rest, ev)
	}
	require.Equal(t, []string{"second"}, deltas(rest))
	require.Equal(t, "message_stop", rest[len(rest)-1].name)
}

func TestCancelMidStream(t *testing.T) {
	hold := make(chan struct{}) // never closed: the client leaves first
	s := newServer(t, Config{Reply: func(Request) Reply { return Reply{Text: "ab", Chunks: 2, Hold: hold} }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := post(ctx, s, "/v1/messages", chatBody(true, "x"))
	require.NoError(t, err)
	defer resp.Body.Close()
	sr := newSSEReader(t, resp.Body)
	for ev, ok := sr.next(); ok && ev.name != "content_block_delta"; ev, ok = sr.next() {
	}
	cancel()
	_, err = io.ReadAll(resp.Body)
	require.ErrorIs(t, err, context.Canceled)
}

func TestFailures(t *testing.T) {
	tests := []struct {
		fail    Failure
		status  int
		errType string
	}{
		{FailBadRequest, 400, "invalid_request_error"},
		{FailUnauthorized, 401, "authentication_error"},
		{FailRateLimit, 429, "rate_limit_error"},
		{FailServer, 500, "api_error"},
		{FailOverloaded, 529, "overloaded_error"},
	}
	for _, tc := range tests {
		t.Run(tc.fail.String(), func(t *testing.T) {
			require.Equal(t, tc.status, tc.fail.HTTPStatus())
			require.Equal(t, tc.errType, tc.fail.ErrorType())
			for _, stream := range []bool{true, false} {
				s := newServer(t, Config{Reply: Fail(tc.fail)})
				resp := mustPost(t, s, "/v1/messages?beta=true", chatBody(stream, "x"))
				require.Equal(t, tc.status, resp.StatusCode)
				require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
				body := decode(t, resp.Body)
				require.Equal(t, "error", body["type"])
				e := body["error"].(map[string]any)
				require.Equal(t, tc.errType, e["type"])
				require.NotEmpty(t, e["message"])
				require.Len(t, s.Requests(), 1, "a failed request is recorded")
			}
		})
	}

	t.Run("message override", func(t *testing.T) {
		s := newServer(t, Config{Reply: func(Request) Reply {
			return Reply{Fail: FailUnauthorized, ErrorMessage: "bad key"}
		}})
		resp := mustPost(t, s, "/v1/messages", chatBody(true, "x"))
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		require.Equal(t, "bad key", decode(t, resp.Body)["error"].(map[string]any)["message"])
	})

	t.Run("per request", func(t *testing.T) {
		s := newServer(t, Config{Reply: func(r Request) Reply {
			if r.Seq == 1 {
				return Reply{Fail: FailServer}
			}
			return Echo(r)
		}})
		resp := mustPost(t, s, "/v1/messages", chatBody(true, "x"))
		require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
		resp = mustPost(t, s, "/v1/messages", chatBody(true, "y"))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, []string{EchoPrefix + "y"}, deltas(readSSE(t, resp.Body)))
	})
}

func TestFailureString(t *testing.T) {
	require.Equal(t, "none", FailNone.String())
	require.Equal(t, "hang", FailHang.String())
	require.Equal(t, "429", FailRateLimit.String())
	require.Equal(t, "Failure(99)", Failure(99).String())
	require.Zero(t, FailHang.HTTPStatus())
}

func TestHangUntilClientLeaves(t *testing.T) {
	s := newServer(t, Config{Reply: Fail(FailHang)})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		resp, err := post(ctx, s, "/v1/messages", chatBody(true, "x"))
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	_, err := s.WaitChatRequests(waitCtx(t), 1)
	require.NoError(t, err)
	select {
	case err := <-errc:
		require.FailNow(t, "a hanging request was answered", "err: %v", err)
	default:
	}
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
}

func TestCloseEndsOpenRequests(t *testing.T) {
	hold := make(chan struct{}) // never closed
	tests := []struct {
		name  string
		cfg   Config
		reply Reply
	}{
		{"hang", Config{}, Reply{Fail: FailHang}},
		{"delay", Config{}, Reply{Text: "x", Delay: time.Hour}},
		{"first byte delay", Config{FirstByteDelay: time.Hour}, Reply{Text: "x"}},
		{"first byte delay of an error", Config{FirstByteDelay: time.Hour}, Reply{Fail: FailServer}},
		{"chunk delay", Config{}, Reply{Text: "ab", Chunks: 2, ChunkDelay: time.Hour}},
		{"pace between deltas", Config{TokensPerSecond: 1e-9}, Reply{Text: "ab"}},
		{"pace before the end", Config{}, Reply{Text: "", TokensPerSecond: 1e-9}},
		{"hold", Config{}, Reply{Text: "ab", Chunks: 2, Hold: hold}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Reply = func(Request) Reply { return tc.reply }
			s := NewServer(cfg)
			defer s.Close()
			errc := make(chan error, 1)
			go func() {
				resp, err := post(context.Background(), s, "/v1/messages", chatBody(true, "x"))
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				errc <- err
			}()
			_, err := s.WaitChatRequests(waitCtx(t), 1)
			require.NoError(t, err)

			closed := make(chan struct{})
			go func() {
				s.Close()
				close(closed)
			}()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				require.FailNow(t, "Close hangs on an open request")
			}
			require.Error(t, <-errc, "the client sees the connection end")
			s.Close() // a second Close is harmless
		})
	}
}

func TestRecording(t *testing.T) {
	s := newServer(t, Config{})
	body := map[string]any{
		"model":      "claude-opus-5-5",
		"max_tokens": 128000,
		"stream":     true,
		"system":     "plain system",
		"tools":      []any{map[string]any{"name": "Bash"}, map[string]any{"name": "Read"}},
		"messages": []any{
			map[string]any{"role": "user", "content": "first"},
			map[string]any{"role": "assistant", "content": []any{
				map[string]any{"type": "thinking", "thinking": "hmm"},
				map[string]any{"type": "text", "text": "answer"},
			}},
			map[string]any{"role": "user", "content": []any{
				map[string]any{"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
				map[string]any{"type": "text", "text": "second"},
			}},
			map[string]any{"role": "system", "content": []any{map[string]any{"type": "text", "text": "# Environment"}}},
		},
	}
	resp := mustPost(t, s, "/v1/messages?beta=true", body)
	require.Equal(t, []string{EchoPrefix + "second"}, deltas(readSSE(t, resp.Body)))

	got := s.Requests()
	require.Len(t, got, 1)
	r := got[0]
	require.Equal(t, 1, r.Seq)
	require.Equal(t, KindChat, r.Kind)
	require.Equal(t, http.MethodPost, r.Method)
	require.Equal(t, "/v1/messages", r.Path)
	require.Equal(t, "beta=true", r.Query)
	require.Equal(t, "mock-key", r.Header.Get("X-Api-Key"))
	require.Equal(t, "claude-opus-5-5", r.Model)
	require.Equal(t, []string{"plain system"}, r.System)
	require.True(t, r.Stream)
	require.Equal(t, 128000, r.MaxTokens)
	require.Equal(t, []string{"Bash", "Read"}, r.Tools)
	require.Equal(t, []Message{
		{Role: "user", Texts: []string{"first"}, Types: []string{"text"}},
		{Role: "assistant", Texts: []string{"answer"}, Types: []string{"thinking", "text"}},
		{Role: "user", Texts: []string{"<system-reminder>ctx</system-reminder>", "second"}, Types: []string{"text", "text"}},
		{Role: "system", Texts: []string{"# Environment"}, Types: []string{"text"}},
	}, r.Messages)
	require.Equal(t, "second", r.LastUserText())
	require.Equal(t, "<system-reminder>ctx</system-reminder>\nsecond", r.Messages[2].Text())
	require.False(t, r.Time.IsZero())
	require.False(t, r.FirstByte.Before(r.Time), "first byte %v before arrival", r.Time.Sub(r.FirstByte))
	require.JSONEq(t, string(mustJSON(t, body)), string(r.Body))

	// Requests returns copies: changing one leaves the record alone.
	got[0].System[0] = "changed"
	got[0].Messages[0].Texts[0] = "changed"
	got[0].Messages[1].Types[0] = "changed"
	got[0].Header.Set("X-Api-Key", "changed")
	again := s.Requests()[0]
	require.Equal(t, "plain system", again.System[0])
	require.Equal(t, "first", again.Messages[0].Texts[0])
	require.Equal(t, "thinking", again.Messages[1].Types[0])
	require.Equal(t, "mock-key", again.Header.Get("X-Api-Key"))
}

// Message.Types names every content block, text or not, in order; Texts
// keeps the text blocks alone.
func TestRecordingBlockTypes(t *testing.T) {
	s := newServer(t, Config{})
	body := chatBody(true, "x")
	body["messages"] = []any{
		map[string]any{"role": "user", "content": "plain"},
		map[string]any{"role": "user", "content": []any{
			map[string]any{"type": "image", "source": map[string]any{"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
			map[string]any{"type": "text", "text": "what is this?"},
			map[string]any{"type": "document", "source": map[string]any{"type": "text", "media_type": "text/plain", "data": "notes"}},
			map[string]any{"type": "text", "text": "and this?"},
		}},
		map[string]any{"role": "assistant", "content": []any{
			map[string]any{"type": "thinking", "thinking": "hmm", "signature": "c2ln"},
			map[string]any{"type": "redacted_thinking", "data": "xx"},
			map[string]any{"type": "tool_use", "id": "t1", "name": "Read", "input": map[string]any{}},
		}},
		map[string]any{"role": "user", "content": []any{
			map[string]any{"type": "tool_result", "tool_use_id": "t1", "content": "file"},
			map[string]any{"text": "a block without a type"},
		}},
		map[string]any{"role": "user", "content": []any{}},
		map[string]any{"role": "user", "content": nil},
		map[string]any{"role": "user"},
		map[string]any{"role": "user", "content": ""},
	}
	resp := mustPost(t, s, "/v1/messages", body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	readSSE(t, resp.Body)

	got := s.Requests()
	require.Len(t, got, 1)
	require.Equal(t, []Message{
		{Role: "user", Texts: []string{"plain"}, Types: []string{"text"}},
		{Role: "user", Texts: []string{"what is this?", "and this?"}, Types: []string{"image", "text", "document", "text"}},
		{Role: "assistant", Types: []string{"thinking", "redacted_thinking", "tool_use"},
			ToolUses: []ToolCall{{ID: "t1", Name: "Read", Input: json.RawMessage(`{}`)}}},
		{Role: "user", Types: []string{"tool_result", ""},
			ToolResults: []ToolResult{{ToolUseID: "t1", Content: "file"}}},
		{Role: "user"},
		{Role: "user"},
		{Role: "user"},
		{Role: "user", Texts: []string{""}, Types: []string{"text"}},
	}, got[0].Messages)
}

// output_config is recorded as raw JSON; absent and null leave it nil.
func TestRecordingOutputConfig(t *testing.T) {
	const structured = `{"effort":"medium","format":{"type":"json_schema",` +
		`"schema":{"type":"object","properties":{"answer":{"type":"string"}},"required":["answer"]}}}`
	tests := []struct {
		name  string
		value any // the body's output_config; absent when omit
		omit  bool
		want  string // "" for nil
	}{
		{"effort", json.RawMessage(`{"effort":"medium"}`), false, `{"effort":"medium"}`},
		{"structured output", json.RawMessage(structured), false, structured},
		{"null", nil, false, ""},
		{"absent", nil, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Config{})
			body := chatBody(true, "x")
			if !tc.omit {
				body["output_config"] = tc.value
			}
			readSSE(t, mustPost(t, s, "/v1/messages", body).Body)
			got := s.Requests()
			require.Len(t, got, 1)
			if tc.want == "" {
				require.Nil(t, got[0].OutputConfig)
				return
			}
			require.JSONEq(t, tc.want, string(got[0].OutputConfig))

			// Requests returns copies: changing one leaves the record alone.
			got[0].OutputConfig[0] = 'X'
			require.JSONEq(t, tc.want, string(s.Requests()[0].OutputConfig))
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func TestChatRequestsFilter(t *testing.T) {
	s := newServer(t, Config{})
	noTools := chatBody(false, "title")
	delete(noTools, "tools")
	noUser := chatBody(true, "x")
	noUser["messages"] = []any{}

	mustPost(t, s, "/v1/messages/count_tokens", chatBody(false, "count"))
	mustPost(t, s, "/v1/messages", noTools)
	mustPost(t, s, "/v1/messages", noUser)
	mustPost(t, s, "/v1/messages", chatBody(false, "fallback"))
	resp := mustPost(t, s, "/v1/messages", chatBody(true, "chat"))
	readSSE(t, resp.Body)

	all := s.Requests()
	require.Len(t, all, 5)
	var kinds []Kind
	for _, r := range all {
		kinds = append(kinds, r.Kind)
	}
	require.Equal(t, []Kind{KindCountTokens, KindSide, KindSide, KindChat, KindChat}, kinds)
	chats := s.ChatRequests()
	require.Len(t, chats, 2)
	require.Equal(t, "fallback", chats[0].LastUserText())
	require.Equal(t, "chat", chats[1].LastUserText())
	require.Equal(t, 5, chats[1].Seq)
}

func TestWaitRequests(t *testing.T) {
	s := newServer(t, Config{})
	ctx := waitCtx(t)
	done := make(chan []Request, 1)
	go func() {
		got, err := s.WaitChatRequests(ctx, 2)
		if err != nil {
			got = nil
		}
		done <- got
	}()
	for _, text := range []string{"one", "two"} {
		resp := mustPost(t, s, "/v1/messages", chatBody(true, text))
		readSSE(t, resp.Body)
	}
	got := <-done
	require.Len(t, got, 2)
	require.Equal(t, "one", got[0].LastUserText())
	require.Equal(t, "two", got[1].LastUserText())

	all, err := s.WaitRequests(ctx, 2)
	require.NoError(t, err)
	require.Len(t, all, 2)

	short, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err = s.WaitRequests(short, 3)
	require.True(t, errors.Is(err, context.DeadlineExceeded), "got %v", err)
}

func TestReset(t *testing.T) {
	s := newServer(t, Config{})
	resp := mustPost(t, s, "/v1/messages", chatBody(true, "one"))
	readSSE(t, resp.Body)
	s.Reset()
	require.Empty(t, s.Requests())
	resp = mustPost(t, s, "/v1/messages", chatBody(true, "two"))
	readSSE(t, resp.Body)
	got := s.Requests()
	require.Len(t, got, 1)
	require.Equal(t, 2, got[0].Seq, "numbering goes on after Reset")
}

func TestEnv(t *testing.T) {
	s := newServer(t, Config{})
	env := s.Env()
	require.Contains(t, env, "ANTHROPIC_BASE_URL="+s.URL())
	require.Contains(t, env, "ANTHROPIC_API_KEY=mock-key")
	for _, kv := range env {
		require.NotContains(t, kv, "CLAUDE_CODE_MAX_RETRIES", "the CLI's retries are production's unless a test says otherwise")
	}
	require.Contains(t, env, "API_TIMEOUT_MS=5000")
	require.Contains(t, env, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1")

	s2 := newServer(t, Config{MaxRetries: 2, APITimeout: 1500 * time.Millisecond})
	env = s2.Env()
	require.Contains(t, env, "CLAUDE_CODE_MAX_RETRIES=2")
	require.Contains(t, env, "API_TIMEOUT_MS=1500")

	s3 := newServer(t, Config{NoRetries: true, MaxRetries: 2})
	require.Contains(t, s3.Env(), "CLAUDE_CODE_MAX_RETRIES=0")
}

// A sandbox points the CLI at its server, with a HOME of its own that
// stop removes.
func TestSandbox(t *testing.T) {
	env, stop, err := Sandbox(Config{Reply: Text("hi")})
	require.NoError(t, err)
	var home, base string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "HOME="); ok {
			home = v
		}
		if v, ok := strings.CutPrefix(kv, "ANTHROPIC_BASE_URL="); ok {
			base = v
		}
	}
	require.DirExists(t, home)
	resp, err := http.Post(base+"/v1/messages", "application/json",
		strings.NewReader(`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}`))
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Contains(t, string(body), `"text":"hi"`)
	stop()
	require.NoDirExists(t, home)
}
