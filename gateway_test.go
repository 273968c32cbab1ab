package claudepool

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// These tests talk HTTP to a gateway in front of a claudepooltest server,
// as a pool's process would.

// gwFixture is a gateway in front of a mock API, and a client for it.
type gwFixture struct {
	api    *claudepooltest.Server
	gw     *gateway
	client *http.Client
}

func newGWFixture(t *testing.T, cfg claudepooltest.Config, key string, bearer bool) *gwFixture {
	t.Helper()
	api := claudepooltest.NewServer(cfg)
	gw, err := newGateway(&upstreamAPI{url: api.URL(), key: key, bearer: bearer}, slog.New(slog.DiscardHandler))
	if err != nil {
		api.Close()
		require.NoError(t, err)
	}
	f := &gwFixture{api: api, gw: gw, client: &http.Client{Transport: &http.Transport{}}}
	t.Cleanup(func() {
		f.client.CloseIdleConnections()
		gw.close()
		api.Close()
	})
	return f
}

// process registers a process and binds a chat with r's parameters to it.
func (f *gwFixture) process(r *Request) (token string, turn *apiTurn) {
	token = f.gw.register()
	if r != nil {
		turn = newAPITurn(r)
		f.gw.bind(token, turn)
	}
	return token, turn
}

// gwResponse is a response read whole.
type gwResponse struct {
	status int
	header http.Header
	body   []byte
	took   time.Duration // until the response headers
}

// send makes a request to the gateway as the CLI does, with token as its
// API key, and reads the whole response.
func (f *gwFixture) send(t *testing.T, method, path, token, body string) gwResponse {
	t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("X-Api-Key", token)
	}
	return gwDo(t, f.client, method, f.gw.url+path, h, body)
}

// messages posts a Messages call as the CLI does.
func (f *gwFixture) messages(t *testing.T, token, body string) gwResponse {
	t.Helper()
	return f.send(t, http.MethodPost, "/v1/messages?beta=true", token, body)
}

func gwDo(t *testing.T, c *http.Client, method, url string, h http.Header, body string) gwResponse {
	t.Helper()
	resp, err := gwTry(c, method, url, h, body)
	require.NoError(t, err)
	return resp
}

func gwTry(c *http.Client, method, url string, h http.Header, body string) (gwResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return gwResponse{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	req.Header.Set("Anthropic-Beta", "claude-code-20250219,context-management-2025-06-27")
	req.Header.Set("User-Agent", "claude-cli/2.1.330 (external, sdk-cli)")
	for k, vs := range h {
		req.Header[k] = vs
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return gwResponse{}, err
	}
	defer resp.Body.Close()
	took := time.Since(start)
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return gwResponse{}, err
	}
	return gwResponse{status: resp.StatusCode, header: resp.Header, body: data, took: took}, nil
}

// lastRequest returns the last request the mock API received.
func (f *gwFixture) lastRequest(t *testing.T) claudepooltest.Request {
	t.Helper()
	reqs := f.api.Requests()
	require.NotEmpty(t, reqs, "no request reached the API")
	return reqs[len(reqs)-1]
}

// requireUpstream checks how many requests reached the API. A call the
// gateway forwards is recorded before its answer, so once the client has
// the answer the count is final.
func (f *gwFixture) requireUpstream(t *testing.T, n int) {
	t.Helper()
	require.Len(t, f.api.Requests(), n, "requests that reached the API")
}

// requireNoToken checks that a process's token went nowhere upstream.
func requireNoToken(t *testing.T, r claudepooltest.Request, token string) {
	t.Helper()
	for k, vs := range r.Header {
		for _, v := range vs {
			require.NotContains(t, v, token, "header %s", k)
		}
	}
	require.NotContains(t, string(r.Body), token)
	require.NotContains(t, r.Query, token)
}

// CLI bodies. noteBlocks is the CLI's note of /clear, as it opens the first
// user message after one.
const (
	userBlock  = `{"type":"text","text":"hello","cache_control":{"type":"ephemeral"}}`
	noteBlocks = `{"type":"text","text":"<local-command-caveat>The command below was run directly in Claude Code, not sent to you as a request, and its output goes straight to the user. It's recorded here as context for later messages.</local-command-caveat>\n"},` +
		`{"type":"text","text":"<command-name>/clear</command-name>\n            <command-message>clear</command-message>\n            <command-args></command-args>\n"},` +
		`{"type":"text","text":"<local-command-stdout></local-command-stdout>\n"}`
)

// cliBody is cliBodyExample with the first user message's content blocks
// replaced.
func cliBody(blocks string) string {
	return strings.Replace(cliBodyExample, "["+userBlock+"]", "["+blocks+"]", 1)
}

// chatBody is a CLI body whose user says text.
func chatBody(text string, stream bool) string {
	b := cliBody(`{"type":"text","text":` + string(mustMarshal(text)) + `}`)
	if !stream {
		b = strings.Replace(b, `"stream":true`, `"stream":false`, 1)
	}
	return b
}

// gwEvent is one event of an SSE stream.
type gwEvent struct {
	name string
	data map[string]any
}

func gwEvents(t *testing.T, body []byte) []gwEvent {
	t.Helper()
	var evs []gwEvent
	for _, chunk := range strings.Split(strings.TrimSpace(string(body)), "\n\n") {
		var ev gwEvent
		for _, line := range strings.Split(chunk, "\n") {
			if name, ok := strings.CutPrefix(line, "event: "); ok {
				ev.name = name
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				require.NoError(t, json.Unmarshal([]byte(data), &ev.data), "%s", data)
			}
		}
		require.NotEmpty(t, ev.name, "event without a name in %q", chunk)
		require.Equal(t, ev.name, ev.data["type"])
		evs = append(evs, ev)
	}
	return evs
}

func gwEventNames(evs []gwEvent) []string {
	var names []string
	for _, ev := range evs {
		names = append(names, ev.name)
	}
	return names
}

// gwText returns the text of a reply, streamed or not.
func gwText(t *testing.T, resp gwResponse) string {
	t.Helper()
	var sb strings.Builder
	if strings.HasPrefix(resp.header.Get("Content-Type"), "text/event-stream") {
		for _, ev := range gwEvents(t, resp.body) {
			if ev.name == "content_block_delta" {
				sb.WriteString(ev.data["delta"].(map[string]any)["text"].(string))
			}
		}
		return sb.String()
	}
	var m struct {
		Content []struct{ Type, Text string }
	}
	require.NoError(t, json.Unmarshal(resp.body, &m), "%s", resp.body)
	for _, b := range m.Content {
		sb.WriteString(b.Text)
	}
	return sb.String()
}

// requireLocalAnswer checks a reply of the gateway's own: model echoed,
// text, stop reason end_turn, in the form the call asked for.
func requireLocalAnswer(t *testing.T, resp gwResponse, stream bool, model, text string) {
	t.Helper()
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	require.Equal(t, text, gwText(t, resp))
	if !stream {
		require.Equal(t, "application/json", resp.header.Get("Content-Type"))
		var m map[string]any
		require.NoError(t, json.Unmarshal(resp.body, &m))
		require.Equal(t, "message", m["type"])
		require.Equal(t, "assistant", m["role"])
		require.Equal(t, model, m["model"])
		require.Equal(t, "end_turn", m["stop_reason"])
		require.True(t, strings.HasPrefix(m["id"].(string), "msg_"), "id %v", m["id"])
		return
	}
	require.Equal(t, "text/event-stream", resp.header.Get("Content-Type"))
	evs := gwEvents(t, resp.body)
	want := []string{"message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"}
	if text == "" {
		want = []string{"message_start", "message_delta", "message_stop"}
	}
	require.Equal(t, want, gwEventNames(evs))
	msg := evs[0].data["message"].(map[string]any)
	require.Equal(t, model, msg["model"])
	require.Equal(t, "end_turn", evs[len(evs)-2].data["delta"].(map[string]any)["stop_reason"])
}

// gwErrorBody decodes a body in the API's error shape.
func gwErrorBody(t *testing.T, body []byte) (typ, msg string) {
	t.Helper()
	var e struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	require.NoError(t, json.Unmarshal(body, &e), "%s", body)
	require.Equal(t, "error", e.Type)
	return e.Error.Type, e.Error.Message
}

func TestGatewayUnknownToken(t *testing.T) {
	f := newGWFixture(t, claudepooltest.Config{}, "sk-pool", false)
	forgotten, _ := f.process(&Request{})
	f.gw.forget(forgotten)

	for _, tc := range []struct {
		name         string
		method, path string
		header       http.Header
	}{
		{"no key", http.MethodPost, "/v1/messages?beta=true", nil},
		{"unknown key", http.MethodPost, "/v1/messages?beta=true", http.Header{"X-Api-Key": {"claudepool-0123"}}},
		{"the pool's own key", http.MethodPost, "/v1/messages", http.Header{"X-Api-Key": {"sk-pool"}}},
		{"unknown bearer", http.MethodPost, "/v1/messages", http.Header{"Authorization": {"Bearer claudepool-0123"}}},
		{"forgotten process", http.MethodPost, "/v1/messages", http.Header{"X-Api-Key": {forgotten}}},
		{"count_tokens", http.MethodPost, "/v1/messages/count_tokens", http.Header{"X-Api-Key": {"nope"}}},
		{"hello", http.MethodHead, "/api/hello", nil},
		{"other path", http.MethodGet, "/v1/models", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := ""
			if tc.method == http.MethodPost {
				body = chatBody("hello", true)
			}
			resp := gwDo(t, f.client, tc.method, f.gw.url+tc.path, tc.header, body)
			require.Equal(t, http.StatusUnauthorized, resp.status)
			require.Equal(t, "application/json", resp.header.Get("Content-Type"))
			if tc.method == http.MethodHead {
				return
			}
			typ, msg := gwErrorBody(t, resp.body)
			require.Equal(t, "authentication_error", typ)
			require.NotEmpty(t, msg)
		})
	}
	f.requireUpstream(t, 0)
}

func TestGatewayCredentials(t *testing.T) {
	for _, tc := range []struct {
		name       string
		poolKey    string
		bearer     bool
		chatKey    string      // the bound chat's own key
		unbound    bool        // no chat bound
		viaBearer  bool        // the process sends its token as Authorization: Bearer
		wantHeader http.Header // the credential headers upstream
	}{
		{name: "pool key", poolKey: "sk-pool", wantHeader: http.Header{"X-Api-Key": {"sk-pool"}}},
		{name: "pool bearer", poolKey: "tok-pool", bearer: true, viaBearer: true, wantHeader: http.Header{"Authorization": {"Bearer tok-pool"}}},
		{name: "pool key, process sends bearer", poolKey: "sk-pool", viaBearer: true, wantHeader: http.Header{"X-Api-Key": {"sk-pool"}}},
		{name: "chat key", poolKey: "sk-pool", chatKey: "sk-tenant", wantHeader: http.Header{"X-Api-Key": {"sk-tenant"}}},
		{name: "chat key over pool bearer", poolKey: "tok-pool", bearer: true, chatKey: "sk-tenant", wantHeader: http.Header{"X-Api-Key": {"sk-tenant"}}},
		{name: "no chat bound", poolKey: "sk-pool", unbound: true, wantHeader: http.Header{"X-Api-Key": {"sk-pool"}}},
		{name: "no pool key", wantHeader: http.Header{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGWFixture(t, claudepooltest.Config{}, tc.poolKey, tc.bearer)
			req := &Request{APIKey: tc.chatKey}
			if tc.unbound {
				req = nil
			}
			token, _ := f.process(req)
			h := http.Header{"X-Api-Key": {token}}
			if tc.viaBearer {
				h = http.Header{"Authorization": {"Bearer " + token}}
			}
			// A Messages call, and one the gateway proxies as is.
			for _, path := range []string{"/v1/messages?beta=true", "/v1/messages/count_tokens?beta=true"} {
				body := chatBody("hello", true)
				resp := gwDo(t, f.client, http.MethodPost, f.gw.url+path, h, body)
				require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
				r := f.lastRequest(t)
				require.Equal(t, tc.wantHeader.Get("X-Api-Key"), r.Header.Get("X-Api-Key"), path)
				require.Equal(t, tc.wantHeader.Get("Authorization"), r.Header.Get("Authorization"), path)
				requireNoToken(t, r, token)
				require.Equal(t, body, string(r.Body), "a chat without parameters goes unchanged")
				require.Equal(t, "2023-06-01", r.Header.Get("Anthropic-Version"), "the CLI's other headers go along")
				require.Equal(t, "claude-code-20250219,context-management-2025-06-27", r.Header.Get("Anthropic-Beta"))
				require.Equal(t, "beta=true", r.Query)
			}
		})
	}

	t.Run("unbind", func(t *testing.T) {
		f := newGWFixture(t, claudepooltest.Config{}, "sk-pool", false)
		token, turn := f.process(&Request{APIKey: "sk-tenant"})
		f.messages(t, token, chatBody("one", true))
		require.Equal(t, "sk-tenant", f.lastRequest(t).Header.Get("X-Api-Key"))
		f.gw.unbind(token, newAPITurn(&Request{}))
		f.messages(t, token, chatBody("two", true))
		require.Equal(t, "sk-tenant", f.lastRequest(t).Header.Get("X-Api-Key"), "unbinding another chat leaves this one")
		f.gw.unbind(token, turn)
		f.messages(t, token, chatBody("three", true))
		require.Equal(t, "sk-pool", f.lastRequest(t).Header.Get("X-Api-Key"), "between chats the pool's key")
	})
}

func TestGatewayParameters(t *testing.T) {
	const (
		thinking = `,"thinking":{"type":"adaptive","display":"updates"}`
		ctxMgmt  = `,"context_management":{"edits":[{"type":"clear_thinking_20251015","keep":"all"}]}`
		tail     = `,"stream":true}`
	)
	without := func(body string, parts ...string) string {
		for _, p := range parts {
			require.Contains(t, body, p)
			body = strings.Replace(body, p, "", 1)
		}
		return body
	}
	appended := func(body, members string) string {
		return strings.TrimSuffix(body, "}") + members + "}"
	}
	replaced := func(body, old, new string) string {
		require.Contains(t, body, old)
		return strings.Replace(body, old, new, 1)
	}
	temp, topP, topK := 0.25, 0.9, 40
	budget := replaced(cliBodyExample, `"thinking":{"type":"adaptive","display":"updates"}`, `"thinking":{"type":"enabled","budget_tokens":8000}`)
	twoEdits := replaced(cliBodyExample, `{"type":"clear_thinking_20251015","keep":"all"}]`, `{"type":"clear_thinking_20251015","keep":"all"},{"type":"clear_tool_uses_20250919"}]`)

	for _, tc := range []struct {
		name string
		req  Request
		in   string // the CLI's body; cliBodyExample when ""
		want string // the body upstream
		// what the API read
		check func(t *testing.T, r claudepooltest.Request)
	}{
		{name: "none", want: cliBodyExample, check: func(t *testing.T, r claudepooltest.Request) {
			require.Equal(t, 128000, r.MaxTokens)
			require.JSONEq(t, `{"type":"adaptive","display":"updates"}`, string(r.Thinking))
			require.Nil(t, r.Temperature)
			require.Nil(t, r.StopSequences)
		}},
		{name: "max_tokens", req: Request{MaxTokens: 4096},
			want: replaced(cliBodyExample, `"max_tokens":128000`, `"max_tokens":4096`),
			check: func(t *testing.T, r claudepooltest.Request) {
				require.Equal(t, 4096, r.MaxTokens)
				require.NotNil(t, r.Thinking, "adaptive thinking has no budget to exceed max_tokens")
			}},
		{name: "max_tokens under the thinking budget", req: Request{MaxTokens: 4096}, in: budget,
			want: without(replaced(budget, `"max_tokens":128000`, `"max_tokens":4096`), `,"thinking":{"type":"enabled","budget_tokens":8000}`, ctxMgmt),
			check: func(t *testing.T, r claudepooltest.Request) {
				require.Equal(t, 4096, r.MaxTokens)
				require.Nil(t, r.Thinking)
			}},
		{name: "max_tokens over the thinking budget", req: Request{MaxTokens: 16000}, in: budget,
			want: replaced(budget, `"max_tokens":128000`, `"max_tokens":16000`)},
		{name: "temperature", req: Request{Temperature: &temp},
			want: appended(without(cliBodyExample, thinking, ctxMgmt), `,"temperature":0.25`),
			check: func(t *testing.T, r claudepooltest.Request) {
				require.Equal(t, temp, *r.Temperature)
				require.Nil(t, r.Thinking)
				require.Nil(t, r.TopP)
			}},
		{name: "top_p", req: Request{TopP: &topP},
			want:  appended(without(cliBodyExample, thinking, ctxMgmt), `,"top_p":0.9`),
			check: func(t *testing.T, r claudepooltest.Request) { require.Equal(t, topP, *r.TopP) }},
		{name: "top_k", req: Request{TopK: &topK},
			want:  appended(without(cliBodyExample, thinking, ctxMgmt), `,"top_k":40`),
			check: func(t *testing.T, r claudepooltest.Request) { require.Equal(t, topK, *r.TopK) }},
		{name: "sampling keeps other context edits", req: Request{Temperature: &temp, TopP: &topP, TopK: &topK}, in: twoEdits,
			want: appended(replaced(without(twoEdits, thinking), `{"edits":[{"type":"clear_thinking_20251015","keep":"all"},{"type":"clear_tool_uses_20250919"}]}`, `{"edits":[{"type":"clear_tool_uses_20250919"}]}`),
				`,"temperature":0.25,"top_p":0.9,"top_k":40`)},
		{name: "stop_sequences", req: Request{StopSequences: []string{"END", "\n\nHuman:"}},
			want: appended(cliBodyExample, `,"stop_sequences":["END","\n\nHuman:"]`),
			check: func(t *testing.T, r claudepooltest.Request) {
				require.Equal(t, []string{"END", "\n\nHuman:"}, r.StopSequences)
			}},
		{name: "user id", req: Request{UserID: "tenant-7/user-42"},
			want:  replaced(cliBodyExample, `"metadata":{"user_id":"{\"device_id\":\"db4e\",\"account_uuid\":\"\",\"session_id\":\"f50c\"}"}`, `"metadata":{"user_id":"tenant-7/user-42"}`),
			check: func(t *testing.T, r claudepooltest.Request) { require.Equal(t, "tenant-7/user-42", r.MetadataUserID) }},
		{name: "API field, new", req: Request{APIFields: map[string]json.RawMessage{"service_tier": json.RawMessage(`"auto"`)}},
			want: appended(cliBodyExample, `,"service_tier":"auto"`)},
		{name: "API field, replaced in place", req: Request{APIFields: map[string]json.RawMessage{"output_config": json.RawMessage(`{"effort":"high"}`)}},
			want: replaced(cliBodyExample, `"output_config":{"effort":"medium"},"stream"`, `"output_config":{"effort":"high"},"stream"`)},
		{name: "thinking enabled", req: Request{Thinking: &Thinking{Type: ThinkingEnabled, BudgetTokens: 2048}},
			want: replaced(cliBodyExample, `"thinking":{"type":"adaptive","display":"updates"}`, `"thinking":{"type":"enabled","display":"updates","budget_tokens":2048}`),
			check: func(t *testing.T, r claudepooltest.Request) {
				require.JSONEq(t, `{"type":"enabled","display":"updates","budget_tokens":2048}`, string(r.Thinking))
			}},
		{name: "thinking adaptive with effort", req: Request{Thinking: &Thinking{Type: ThinkingAdaptive, Effort: "high"}}, in: budget,
			want: replaced(replaced(budget, `"thinking":{"type":"enabled","budget_tokens":8000}`, `"thinking":{"type":"adaptive"}`),
				`"output_config":{"effort":"medium"},"stream"`, `"output_config":{"effort":"high"},"stream"`)},
		{name: "thinking disabled", req: Request{Thinking: &Thinking{Type: ThinkingDisabled}},
			want:  without(cliBodyExample, thinking, ctxMgmt),
			check: func(t *testing.T, r claudepooltest.Request) { require.Nil(t, r.Thinking) }},
		{name: "output schema", req: Request{OutputSchema: json.RawMessage(`{"type":"object","properties":{"n":{"type":"integer"}}}`)},
			want: replaced(cliBodyExample, `"output_config":{"effort":"medium"},"stream"`,
				`"output_config":{"effort":"medium","format":{"type":"json_schema","schema":{"type":"object","properties":{"n":{"type":"integer"}}}}},"stream"`)},
		{name: "all", req: Request{MaxTokens: 100, Temperature: &temp, StopSequences: []string{"STOP"}, UserID: "u"},
			want: appended(without(replaced(replaced(cliBodyExample,
				`"metadata":{"user_id":"{\"device_id\":\"db4e\",\"account_uuid\":\"\",\"session_id\":\"f50c\"}"}`, `"metadata":{"user_id":"u"}`),
				`"max_tokens":128000`, `"max_tokens":100`), thinking, ctxMgmt),
				`,"temperature":0.25,"stop_sequences":["STOP"]`),
			check: func(t *testing.T, r claudepooltest.Request) {
				require.Equal(t, 100, r.MaxTokens)
				require.Equal(t, []string{"STOP"}, r.StopSequences)
				require.Equal(t, "u", r.MetadataUserID)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.True(t, strings.HasSuffix(cliBodyExample, tail))
			f := newGWFixture(t, claudepooltest.Config{}, "sk-pool", false)
			token, _ := f.process(&tc.req)
			in := tc.in
			if in == "" {
				in = cliBodyExample
			}
			resp := f.messages(t, token, in)
			require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
			r := f.lastRequest(t)
			require.Equal(t, tc.want, string(r.Body))
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestGatewayClearNote(t *testing.T) {
	fresh := cliBody(userBlock)
	caveatOnly := `{"type":"text","text":"<local-command-caveat>my own words</local-command-caveat>"}`
	notePlus := func(blocks ...string) string {
		return cliBody(strings.Join(append([]string{noteBlocks}, blocks...), ","))
	}
	noteParts := strings.SplitAfter(noteBlocks, "},")
	require.Len(t, noteParts, 3)
	laterTurn := strings.Replace(notePlus(`{"type":"text","text":"first"}`),
		`{"role":"system","content":[]`,
		`{"role":"assistant","content":[{"type":"text","text":"reply"}]},{"role":"user","content":[`+userBlock+`]},{"role":"system","content":[]`, 1)

	for _, tc := range []struct {
		name    string
		cleared bool
		in      string
		want    string // "" when the body goes unchanged
	}{
		{"cleared process", true, notePlus(userBlock), fresh},
		{"cleared process, the user's several blocks", true, notePlus(`{"type":"text","text":"a"}`, userBlock), cliBody(`{"type":"text","text":"a"},` + userBlock)},
		{"cleared process, later turn of the conversation", true, laterTurn, strings.Replace(laterTurn, noteBlocks+",", "", 1)},
		{"cleared process, fresh conversation", true, fresh, ""},
		{"process never cleared", false, notePlus(userBlock), ""},
		{"note and nothing else", true, cliBody(noteBlocks), ""},
		{"user's single caveat-like block", true, cliBody(caveatOnly), ""},
		{"user's caveat-like block, then text", true, cliBody(caveatOnly + "," + userBlock), ""},
		{"user's text holding the whole note", true, cliBody(`{"type":"text","text":` + string(mustMarshal(noteBlocks)) + `}`), ""},
		{"two of three blocks", true, cliBody(noteParts[0] + noteParts[1] + userBlock), ""},
		{"blocks out of order", true, cliBody(noteParts[1] + noteParts[0] + noteParts[2] + "," + userBlock), ""},
		{"a note block with more members", true, cliBody(strings.Replace(noteBlocks, `</local-command-stdout>\n"}`, `</local-command-stdout>\n","cache_control":{"type":"ephemeral"}}`, 1) + "," + userBlock), ""},
		{"note after the user's text", true, cliBody(userBlock + "," + noteBlocks + "," + userBlock), ""},
		{"note in a string content", true, strings.Replace(fresh, "["+userBlock+"]", string(mustMarshal(noteBlocks)), 1), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGWFixture(t, claudepooltest.Config{}, "sk-pool", false)
			token, _ := f.process(&Request{})
			if tc.cleared {
				f.gw.cleared(token)
			}
			require.True(t, json.Valid([]byte(tc.in)), "%s", tc.in)
			resp := f.messages(t, token, tc.in)
			require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
			want := tc.want
			if want == "" {
				want = tc.in
			}
			require.Equal(t, want, string(f.lastRequest(t).Body))
		})
	}

	t.Run("outside a chat", func(t *testing.T) {
		f := newGWFixture(t, claudepooltest.Config{}, "sk-pool", false)
		token, _ := f.process(nil)
		f.gw.cleared(token)
		in := notePlus(userBlock)
		f.messages(t, token, in)
		require.Equal(t, in, string(f.lastRequest(t).Body), "only a chat's calls are edited")
	})

	t.Run("with parameters", func(t *testing.T) {
		// The fresh body and the cleared one reach the API alike, byte
		// for byte, parameters applied to both.
		f := newGWFixture(t, claudepooltest.Config{}, "sk-pool", false)
		temp := 0.5
		req := &Request{MaxTokens: 1000, Temperature: &temp, UserID: "u1"}
		freshTok, _ := f.process(req)
		clearedTok, _ := f.process(req)
		f.gw.cleared(clearedTok)
		f.messages(t, freshTok, fresh)
		a := f.lastRequest(t).Body
		f.messages(t, clearedTok, notePlus(userBlock))
		b := f.lastRequest(t).Body
		require.Equal(t, string(a), string(b))
		require.NotContains(t, string(b), "local-command")
	})
}

func TestGatewayModelConfirmation(t *testing.T) {
	bodies := map[string]string{
		"string content": `{"model":"claude-sonnet-5-5","max_tokens":1,"messages":[{"role":"user","content":"Hi"}]`,
		"block content":  `{"model":"claude-haiku-5","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text","text":"Hi","cache_control":{"type":"ephemeral"}}]}],"system":[{"type":"text","text":"x"}],"tools":[],"metadata":{"user_id":"x"}`,
	}
	for name, prefix := range bodies {
		for _, stream := range []bool{false, true} {
			for _, bound := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/stream=%v/chat=%v", name, stream, bound), func(t *testing.T) {
					f := newGWFixture(t, claudepooltest.Config{}, "sk-pool", false)
					var req *Request
					if bound {
						req = &Request{MaxTokens: 50}
					}
					token, turn := f.process(req)
					var started atomic.Bool
					if turn != nil {
						turn.onStart = func(Usage) { started.Store(true) }
					}
					body := prefix + fmt.Sprintf(`,"stream":%v}`, stream)
					var m struct{ Model string }
					require.NoError(t, json.Unmarshal([]byte(body), &m))
					resp := f.messages(t, token, body)
					requireLocalAnswer(t, resp, stream, m.Model, "Hi")
					f.requireUpstream(t, 0)
					if turn != nil {
						o := turn.outcome()
						require.Zero(t, o.calls)
						require.Empty(t, o.stop)
						require.False(t, started.Load())
					}
				})
			}
		}
	}

	// Calls that only look alike go to the API.
	for name, body := range map[string]string{
		"other text":    `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"Hello"}]}`,
		"two tokens":    `{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"Hi"}]}`,
		"two messages":  `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"Hi"},{"role":"user","content":"Hi"}]}`,
		"two blocks":    `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"Hi"}]}]}`,
		"assistant":     `{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":"Hi"}]}`,
		"a chat's body": chatBody("Hi", true),
	} {
		t.Run("not a confirmation/"+name, func(t *testing.T) {
			f := newGWFixture(t, claudepooltest.Config{}, "sk-pool", false)
			token, _ := f.process(&Request{})
			resp := f.messages(t, token, body)
			require.Equal(t, http.StatusOK, resp.status)
			f.requireUpstream(t, 1)
			require.Equal(t, body, string(f.lastRequest(t).Body))
		})
	}
}

func TestGatewayPriming(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			f := newGWFixture(t, claudepooltest.Config{}, "sk-pool", false)
			token := f.gw.register()
			turn := &apiTurn{prime: true}
			f.gw.bind(token, turn)
			resp := f.messages(t, token, chatBody("prime", stream))
			requireLocalAnswer(t, resp, stream, "claude-opus-5-5", primeReply)
			f.requireUpstream(t, 0)
			require.Zero(t, turn.outcome().calls)
		})
	}
}

func TestGatewayFollowUp(t *testing.T) {
	reply := func(r claudepooltest.Request) claudepooltest.Reply {
		text := r.LastUserText()
		if reason, ok := strings.CutPrefix(text, "stop:"); ok {
			return claudepooltest.Reply{Text: "partial reply", StopReason: reason}
		}
		return claudepooltest.Echo(r)
	}
	for _, tc := range []struct {
		reason string
		stream bool
		local  bool // the CLI's next call is answered by the gateway
	}{
		{claudepooltest.StopMaxTokens, true, true},
		{claudepooltest.StopMaxTokens, false, true},
		{claudepooltest.StopRefusal, true, true},
		{claudepooltest.StopEndTurn, true, true},
		{claudepooltest.StopToolUse, true, false},
		{claudepooltest.StopToolUse, false, false},
		{claudepooltest.StopPauseTurn, true, false},
	} {
		t.Run(fmt.Sprintf("%s/stream=%v", tc.reason, tc.stream), func(t *testing.T) {
			f := newGWFixture(t, claudepooltest.Config{Reply: reply}, "sk-pool", false)
			token, turn := f.process(&Request{})
			resp := f.messages(t, token, chatBody("stop:"+tc.reason, tc.stream))
			require.Equal(t, http.StatusOK, resp.status)
			require.Equal(t, "partial reply", gwText(t, resp))
			o := turn.outcome()
			require.Equal(t, tc.reason, o.stop)
			require.Equal(t, 1, o.calls)
			require.Equal(t, tc.local, turn.over())

			// The CLI asks again on its own.
			next := chatBody("Continue from where you left off.", tc.stream)
			resp = f.messages(t, token, next)
			o = turn.outcome()
			if tc.local {
				requireLocalAnswer(t, resp, tc.stream, "claude-opus-5-5", "")
				f.requireUpstream(t, 1)
				require.Equal(t, 1, o.followUps)
				require.Equal(t, 1, o.calls)
				require.Equal(t, tc.reason, o.stop, "the reply's stop reason stands")
				return
			}
			require.Equal(t, claudepooltest.EchoPrefix+"Continue from where you left off.", gwText(t, resp))
			f.requireUpstream(t, 2)
			require.Zero(t, o.followUps)
			require.Equal(t, 2, o.calls)
			require.Equal(t, claudepooltest.StopEndTurn, o.stop)
		})
	}

	t.Run("stop sequence", func(t *testing.T) {
		f := newGWFixture(t, claudepooltest.Config{Reply: claudepooltest.Text("one two STOP three")}, "sk-pool", false)
		token, turn := f.process(&Request{StopSequences: []string{"STOP"}})
		resp := f.messages(t, token, chatBody("x", true))
		require.Equal(t, "one two ", gwText(t, resp))
		o := turn.outcome()
		require.Equal(t, claudepooltest.StopSequence, o.stop)
		require.Equal(t, "STOP", o.stopSeq)
	})

	t.Run("a new chat", func(t *testing.T) {
		// The next chat on the process goes to the API again.
		f := newGWFixture(t, claudepooltest.Config{Reply: reply}, "sk-pool", false)
		token, turn := f.process(&Request{})
		f.messages(t, token, chatBody("stop:max_tokens", true))
		require.True(t, turn.over())
		f.gw.unbind(token, turn)
		next := newAPITurn(&Request{})
		f.gw.bind(token, next)
		resp := f.messages(t, token, chatBody("again", true))
		require.Equal(t, claudepooltest.EchoPrefix+"again", gwText(t, resp))
		f.requireUpstream(t, 2)
		require.Zero(t, turn.outcome().followUps)
	})
}

func TestGatewayAPIError(t *testing.T) {
	failures := []claudepooltest.Failure{
		claudepooltest.FailBadRequest, claudepooltest.FailUnauthorized, claudepooltest.FailForbidden,
		claudepooltest.FailNotFound, claudepooltest.FailTooLarge, claudepooltest.FailRateLimit,
		claudepooltest.FailServer, claudepooltest.FailOverloaded,
	}
	for _, fail := range failures {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/stream=%v", fail, stream), func(t *testing.T) {
				msg := fmt.Sprintf("mock %v: «try again» <later> & \"soon\"", fail)
				f := newGWFixture(t, claudepooltest.Config{Reply: func(claudepooltest.Request) claudepooltest.Reply {
					return claudepooltest.Reply{Fail: fail, ErrorMessage: msg}
				}}, "sk-pool", false)
				body := chatBody("hello", stream)
				direct := gwDo(t, f.api.Client(), http.MethodPost, f.api.URL()+"/v1/messages?beta=true", http.Header{"X-Api-Key": {"sk-pool"}}, body)
				require.Equal(t, fail.HTTPStatus(), direct.status)

				token, turn := f.process(&Request{})
				resp := f.messages(t, token, body)
				require.Equal(t, direct.status, resp.status)
				require.Equal(t, string(direct.body), string(resp.body), "the error reaches the process unchanged")
				require.Equal(t, direct.header.Get("Content-Type"), resp.header.Get("Content-Type"))
				require.Equal(t, direct.header.Get("Request-Id"), resp.header.Get("Request-Id"))

				o := turn.outcome()
				require.NotNil(t, o.apiErr)
				require.Equal(t, fail.HTTPStatus(), o.apiErr.Status)
				require.Equal(t, fail.ErrorType(), o.apiErr.Type)
				require.Equal(t, msg, o.apiErr.Message)
				require.Equal(t, "req_mock", o.apiErr.RequestID)
				require.Equal(t, string(direct.body), string(o.apiErr.Body))
				require.Empty(t, o.stop)
				require.False(t, turn.over(), "a failed call ends no reply")
			})
		}
	}

	t.Run("large body", func(t *testing.T) {
		msg := strings.Repeat("x", 100<<10)
		f := newGWFixture(t, claudepooltest.Config{Reply: func(claudepooltest.Request) claudepooltest.Reply {
			return claudepooltest.Reply{Fail: claudepooltest.FailServer, ErrorMessage: msg}
		}}, "sk-pool", false)
		token, turn := f.process(&Request{})
		resp := f.messages(t, token, chatBody("hello", true))
		require.Equal(t, http.StatusInternalServerError, resp.status)
		_, got := gwErrorBody(t, resp.body)
		require.Equal(t, msg, got, "the whole body reaches the process")
		o := turn.outcome()
		require.Equal(t, http.StatusInternalServerError, o.apiErr.Status)
		require.Equal(t, resp.body[:64<<10], o.apiErr.Body, "the record keeps the first 64 KiB")
	})

	t.Run("outside a chat", func(t *testing.T) {
		f := newGWFixture(t, claudepooltest.Config{Reply: claudepooltest.Fail(claudepooltest.FailRateLimit)}, "sk-pool", false)
		token, _ := f.process(nil)
		resp := f.messages(t, token, chatBody("hello", true))
		require.Equal(t, http.StatusTooManyRequests, resp.status)
		typ, _ := gwErrorBody(t, resp.body)
		require.Equal(t, "rate_limit_error", typ)
	})
}

// An API that streams its own events: usage with cache tokens, then an
// error in the middle of the stream.
func TestGatewayStreamError(t *testing.T) {
	const stream = "event: message_start\n" +
		`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":3,"cache_read_input_tokens":7,"output_tokens":1}}}` + "\n\n" +
		"event: ping\ndata: {\"type\": \"ping\"}\n\n" +
		"event: content_block_start\n" +
		`data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n" +
		"event: content_block_delta\r\n" +
		`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"the \"error\" and \"message_delta\" in text"}}` + "\r\n\r\n" +
		"event: error\n" +
		`data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}` + "\n\n"
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		// In pieces that cut lines and events.
		for rest := stream; rest != ""; {
			n := min(len(rest), 37)
			_, _ = io.WriteString(w, rest[:n])
			w.(http.Flusher).Flush()
			rest = rest[n:]
		}
	}))
	defer api.Close()
	gw, err := newGateway(&upstreamAPI{url: api.URL, key: "sk-pool"}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer gw.close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	token := gw.register()
	turn := newAPITurn(&Request{})
	var mu sync.Mutex
	var usages []Usage
	turn.onStart = func(u Usage) {
		mu.Lock()
		usages = append(usages, u)
		mu.Unlock()
	}
	gw.bind(token, turn)
	resp := gwDo(t, client, http.MethodPost, gw.url+"/v1/messages?beta=true", http.Header{"X-Api-Key": {token}}, chatBody("hello", true))
	require.Equal(t, http.StatusOK, resp.status)
	require.Equal(t, stream, string(resp.body), "the stream reaches the process unchanged")

	mu.Lock()
	require.Equal(t, []Usage{{InputTokens: 12, OutputTokens: 1, CacheCreationInputTokens: 3, CacheReadInputTokens: 7}}, usages)
	mu.Unlock()
	o := turn.outcome()
	require.NotNil(t, o.apiErr)
	require.Equal(t, "overloaded_error", o.apiErr.Type)
	require.Equal(t, "Overloaded", o.apiErr.Message)
	require.Zero(t, o.apiErr.Status)
	require.JSONEq(t, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, string(o.apiErr.Body))
	require.Empty(t, o.stop, "the text's words are no events")
}

func TestGatewayOnStart(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			f := newGWFixture(t, claudepooltest.Config{Reply: func(r claudepooltest.Request) claudepooltest.Reply {
				if r.LastUserText() == "use a tool" {
					return claudepooltest.Reply{Text: "calling", StopReason: claudepooltest.StopToolUse}
				}
				return claudepooltest.Echo(r)
			}}, "sk-pool", false)
			token, turn := f.process(&Request{})
			var mu sync.Mutex
			var usages []Usage
			turn.onStart = func(u Usage) {
				mu.Lock()
				usages = append(usages, u)
				mu.Unlock()
			}
			inputTokens := func(resp gwResponse) float64 {
				if !stream {
					var m struct {
						Usage struct {
							InputTokens float64 `json:"input_tokens"`
						} `json:"usage"`
					}
					require.NoError(t, json.Unmarshal(resp.body, &m))
					return m.Usage.InputTokens
				}
				ev := gwEvents(t, resp.body)[0]
				require.Equal(t, "message_start", ev.name)
				return ev.data["message"].(map[string]any)["usage"].(map[string]any)["input_tokens"].(float64)
			}
			resp := f.messages(t, token, chatBody("use a tool", stream))
			first := inputTokens(resp)
			require.Positive(t, first)
			mu.Lock()
			require.Len(t, usages, 1)
			require.Equal(t, int(first), usages[0].InputTokens)
			mu.Unlock()

			// The tool's result goes back: the chat's reply has begun already.
			resp = f.messages(t, token, chatBody(strings.Repeat("a long tool result ", 20), stream))
			require.NotEqual(t, first, inputTokens(resp))
			mu.Lock()
			require.Len(t, usages, 1, "onStart once per chat")
			mu.Unlock()
		})
	}
}

func TestGatewayFirstByte(t *testing.T) {
	const delay = 40 * time.Millisecond
	f := newGWFixture(t, claudepooltest.Config{FirstByteDelay: delay, Reply: func(r claudepooltest.Request) claudepooltest.Reply {
		if r.LastUserText() == "first" {
			return claudepooltest.Reply{Text: "tool", StopReason: claudepooltest.StopToolUse}
		}
		return claudepooltest.Reply{Text: "done", Delay: -1}
	}}, "sk-pool", false)
	token, turn := f.process(&Request{})
	require.Zero(t, turn.outcome().firstByte)

	resp := f.messages(t, token, chatBody("first", true))
	require.Equal(t, http.StatusOK, resp.status)
	r := f.lastRequest(t)
	apiTTFB := r.FirstByte.Sub(r.Time)
	o := turn.outcome()
	require.Equal(t, 1, o.calls)
	require.GreaterOrEqual(t, o.firstByte, delay)
	require.GreaterOrEqual(t, o.firstByte, apiTTFB, "what the API took, seen from the gateway")
	require.LessOrEqual(t, o.firstByte, resp.took, "no more than the process waited")

	// The second call of the chat, answered at once, leaves it.
	resp = f.messages(t, token, chatBody("second", true))
	require.Equal(t, "done", gwText(t, resp))
	o2 := turn.outcome()
	require.Equal(t, 2, o2.calls)
	require.Equal(t, o.firstByte, o2.firstByte)
}

func TestGatewayOtherPaths(t *testing.T) {
	f := newGWFixture(t, claudepooltest.Config{}, "sk-pool", false)
	token, _ := f.process(&Request{MaxTokens: 10, APIKey: "sk-tenant", UserID: "u"})
	unbound, _ := f.process(nil)

	// count_tokens is proxied as is: the chat's key, not its parameters.
	body := chatBody("count me", false)
	resp := f.send(t, http.MethodPost, "/v1/messages/count_tokens?beta=true", token, body)
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	var ct struct {
		InputTokens int `json:"input_tokens"`
	}
	require.NoError(t, json.Unmarshal(resp.body, &ct))
	require.Positive(t, ct.InputTokens)
	r := f.lastRequest(t)
	require.Equal(t, claudepooltest.KindCountTokens, r.Kind)
	require.Equal(t, "beta=true", r.Query)
	require.Equal(t, body, string(r.Body))
	require.Equal(t, "sk-tenant", r.Header.Get("X-Api-Key"))
	requireNoToken(t, r, token)

	resp = f.send(t, http.MethodHead, "/api/hello", unbound, "")
	require.Equal(t, http.StatusOK, resp.status)
	r = f.lastRequest(t)
	require.Equal(t, claudepooltest.KindHello, r.Kind)
	require.Equal(t, http.MethodHead, r.Method)
	require.Equal(t, "sk-pool", r.Header.Get("X-Api-Key"))
	requireNoToken(t, r, unbound)

	// The API's answer to a path it does not serve reaches the process.
	direct := gwDo(t, f.api.Client(), http.MethodGet, f.api.URL()+"/v1/models?limit=5", nil, "")
	resp = f.send(t, http.MethodGet, "/v1/models?limit=5", token, "")
	require.Equal(t, http.StatusNotFound, resp.status)
	require.Equal(t, string(direct.body), string(resp.body))
	r = f.lastRequest(t)
	require.Equal(t, claudepooltest.KindOther, r.Kind)
	require.Equal(t, "/v1/models", r.Path)
	require.Equal(t, "limit=5", r.Query)
	require.Equal(t, "sk-tenant", r.Header.Get("X-Api-Key"))
	requireNoToken(t, r, token)

	// A Messages path with another method is not a call to edit.
	resp = f.send(t, http.MethodGet, "/v1/messages", token, "")
	require.Equal(t, http.StatusNotFound, resp.status)
	require.Equal(t, http.MethodGet, f.lastRequest(t).Method)
}

func TestGatewayUnparsedBody(t *testing.T) {
	// A body the gateway cannot read goes to the API as it came, for the
	// API to judge; it is not edited.
	for name, body := range map[string]string{
		"not JSON":          `model=claude`,
		"an array":          `[` + cliBodyExample + `]`,
		"data after it":     cliBodyExample + ` {"max_tokens":5}`,
		"a second object":   cliBodyExample + cliBodyExample,
		"truncated":         cliBodyExample[:len(cliBodyExample)-1],
		"bad value":         strings.Replace(cliBodyExample, `"stream":true`, `"stream":tru`, 1),
		"closing brace too": cliBodyExample + `}`,
		"garbage after it":  cliBodyExample + "x",
	} {
		t.Run(name, func(t *testing.T) {
			f := newGWFixture(t, claudepooltest.Config{}, "sk-pool", false)
			token, turn := f.process(&Request{MaxTokens: 10})
			resp := f.messages(t, token, body)
			require.Equal(t, http.StatusBadRequest, resp.status, "%s", resp.body)
			f.requireUpstream(t, 1)
			r := f.lastRequest(t)
			require.Equal(t, body, string(r.Body))
			requireNoToken(t, r, token)
			require.Equal(t, "invalid_request_error", turn.outcome().apiErr.Type)
		})
	}
}

func TestGatewayUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := "http://" + ln.Addr().String()
	require.NoError(t, ln.Close())

	gw, err := newGateway(&upstreamAPI{url: closed, key: "sk-pool"}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer gw.close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	// Without the gateway the process would see a connection that fails.
	_, err = gwTry(client, http.MethodPost, closed+"/v1/messages", nil, chatBody("hello", true))
	require.Error(t, err)

	chat := gw.register()
	turn := newAPITurn(&Request{MaxTokens: 10})
	gw.bind(chat, turn)
	unbound := gw.register()
	for _, tc := range []struct{ name, token, method, path string }{
		{"chat", chat, http.MethodPost, "/v1/messages?beta=true"},
		{"outside a chat", unbound, http.MethodPost, "/v1/messages?beta=true"},
		{"count_tokens", chat, http.MethodPost, "/v1/messages/count_tokens?beta=true"},
		{"hello", unbound, http.MethodHead, "/api/hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := ""
			if tc.method == http.MethodPost {
				body = chatBody("hello", true)
			}
			resp, err := gwTry(client, tc.method, gw.url+tc.path, http.Header{"X-Api-Key": {tc.token}}, body)
			require.Error(t, err, "answered %d %s", resp.status, resp.body)
		})
	}
	require.Zero(t, turn.outcome().calls)
	require.Nil(t, turn.outcome().apiErr)

	// The gateway still answers what needs no API.
	resp := gwDo(t, client, http.MethodPost, gw.url+"/v1/messages", http.Header{"X-Api-Key": {chat}},
		`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"Hi"}]}`)
	requireLocalAnswer(t, resp, false, "m", "Hi")
}

// Processes of different chats, at once: each call goes with its own
// chat's key and parameters.
func TestGatewayConcurrentChats(t *testing.T) {
	f := newGWFixture(t, claudepooltest.Config{}, "sk-pool", false)
	const n = 8
	tokens := make([]string, n)
	turns := make([]*apiTurn, n)
	for i := range n {
		tokens[i], turns[i] = f.process(&Request{APIKey: fmt.Sprintf("sk-tenant-%d", i), UserID: fmt.Sprintf("user-%d", i)})
	}
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := gwTry(f.client, http.MethodPost, f.gw.url+"/v1/messages?beta=true",
				http.Header{"X-Api-Key": {tokens[i]}}, chatBody(fmt.Sprintf("from %d", i), i%2 == 0))
			if err == nil && resp.status != http.StatusOK {
				err = fmt.Errorf("status %d: %s", resp.status, resp.body)
			}
			if err == nil && !bytes.Contains(resp.body, []byte(fmt.Sprintf("mock reply to: from %d", i))) {
				err = fmt.Errorf("chat %d got another's reply: %s", i, resp.body)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	reqs := f.api.Requests()
	require.Len(t, reqs, n)
	for _, r := range reqs {
		var i int
		_, err := fmt.Sscanf(r.LastUserText(), "from %d", &i)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("sk-tenant-%d", i), r.Header.Get("X-Api-Key"))
		require.Equal(t, fmt.Sprintf("user-%d", i), r.MetadataUserID)
	}
	for i, turn := range turns {
		o := turn.outcome()
		require.Equal(t, 1, o.calls, "chat %d", i)
		require.Equal(t, claudepooltest.StopEndTurn, o.stop, "chat %d", i)
	}
}
