package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/claudepool/claudepool"
	"github.com/stretchr/testify/require"
)

func TestResolveUpstream(t *testing.T) {
	for _, tt := range []struct {
		name   string
		cfg    claudepool.Config
		parent []string
		want   *upstreamAPI
	}{
		{"none", claudepool.Config{}, nil, nil},
		{"the environment's key", claudepool.Config{}, []string{"ANTHROPIC_API_KEY=sk-env"},
			&upstreamAPI{url: defaultAPIURL, key: "sk-env"}},
		{"Env wins, last entry wins", claudepool.Config{Env: []string{"ANTHROPIC_API_KEY=sk-a", "ANTHROPIC_API_KEY=sk-b", "ANTHROPIC_BASE_URL=http://127.0.0.1:9/"}},
			[]string{"ANTHROPIC_API_KEY=sk-env", "ANTHROPIC_BASE_URL=http://other"}, &upstreamAPI{url: "http://127.0.0.1:9", key: "sk-b"}},
		{"Config wins", claudepool.Config{APIURL: "https://proxy.example", APIKey: "sk-cfg", Env: []string{"ANTHROPIC_API_KEY=sk-a"}}, nil,
			&upstreamAPI{url: "https://proxy.example", key: "sk-cfg"}},
		{"auth token", claudepool.Config{}, []string{"ANTHROPIC_AUTH_TOKEN=tok"}, &upstreamAPI{url: defaultAPIURL, key: "tok", bearer: true}},
		{"NoGateway", claudepool.Config{NoGateway: true}, []string{"ANTHROPIC_API_KEY=sk-env"}, nil},
		{"Bedrock", claudepool.Config{Env: []string{"CLAUDE_CODE_USE_BEDROCK=1"}}, []string{"ANTHROPIC_API_KEY=sk-env"}, nil},
		{"Vertex off", claudepool.Config{Env: []string{"CLAUDE_CODE_USE_VERTEX=0"}}, []string{"ANTHROPIC_API_KEY=sk-env"},
			&upstreamAPI{url: defaultAPIURL, key: "sk-env"}},
	} {
		require.Equal(t, tt.want, resolveUpstream(tt.cfg, tt.parent), tt.name)
	}
}

// fakeUpstream is an upstream API that records the count_tokens calls it
// gets and answers each with status and body.
type fakeUpstream struct {
	*httptest.Server
	mu     sync.Mutex
	calls  []*http.Request
	bodies []string
	status int
	body   string
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	f := &fakeUpstream{status: http.StatusOK, body: `{"input_tokens":42}`}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.calls = append(f.calls, r)
		f.bodies = append(f.bodies, string(b))
		status, body := f.status, f.body
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Request-Id", "req_upstream")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeUpstream) answer(status int, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.body = status, body
}

func (f *fakeUpstream) last(t *testing.T) (*http.Request, string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.NotEmpty(t, f.calls)
	return f.calls[len(f.calls)-1], f.bodies[len(f.bodies)-1]
}

func (f *fakeUpstream) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// TestCountTokensForwarded: a valid count_tokens request goes upstream
// as it came, with the server's key, the client's anthropic-version and
// anthropic-beta, and the API's answer comes back as it sent it, the
// server's request id on it; with -forward-key the client's key goes
// instead. No process is taken.
func TestCountTokensForwarded(t *testing.T) {
	ts := newTestServer(t)
	up := newFakeUpstream(t)
	ts.api.upstream = &upstreamAPI{url: up.URL, key: "sk-server"}
	const body = `{"model":"claude-test","system":"Be brief.","messages":[{"role":"user","content":"count me"}]}`

	resp, got := ts.do(t, http.MethodPost, "/v1/messages/count_tokens", body,
		"Anthropic-Version", version20261021, "Anthropic-Beta", "beta-one", "Anthropic-Beta", "beta-two", "X-Api-Key", "sk-client")
	require.Equal(t, http.StatusOK, resp.StatusCode, got)
	require.JSONEq(t, `{"input_tokens":42}`, got)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.Equal(t, resp.Header.Get("X-Request-Id"), resp.Header.Get("Request-Id"), "the server's request id, not the API's")
	r, sent := up.last(t)
	require.Equal(t, "/v1/messages/count_tokens", r.URL.Path)
	require.Equal(t, body, sent, "the body as the client sent it")
	require.Equal(t, "sk-server", r.Header.Get("X-Api-Key"), "the server's key pays, not the client's")
	require.Empty(t, r.Header.Get("Authorization"))
	require.Equal(t, version20261021, r.Header.Get("Anthropic-Version"))
	require.Equal(t, "beta-one,beta-two", r.Header.Get("Anthropic-Beta"))
	require.Contains(t, ts.logs.String(), "api_request_id=req_upstream")

	// An ANTHROPIC_AUTH_TOKEN goes as a bearer token.
	ts.api.upstream.bearer = true
	resp, got = ts.do(t, http.MethodPost, "/v1/messages/count_tokens", body, "Anthropic-Version", testAPIVersion)
	require.Equal(t, http.StatusOK, resp.StatusCode, got)
	r, _ = up.last(t)
	require.Equal(t, "Bearer sk-server", r.Header.Get("Authorization"))
	require.Empty(t, r.Header.Get("X-Api-Key"))
	require.Empty(t, r.Header.Get("Anthropic-Beta"))

	// With -forward-key the client's key counts, and one is required.
	ts.api.forwardKey = true
	resp, got = ts.do(t, http.MethodPost, "/v1/messages/count_tokens", body, "Anthropic-Version", testAPIVersion, "Authorization", "Bearer sk-tenant")
	require.Equal(t, http.StatusOK, resp.StatusCode, got)
	r, _ = up.last(t)
	require.Equal(t, "sk-tenant", r.Header.Get("X-Api-Key"))
	require.Empty(t, r.Header.Get("Authorization"))
	n := up.count()
	resp, got = ts.do(t, http.MethodPost, "/v1/messages/count_tokens", body, "Anthropic-Version", testAPIVersion)
	requireAPIError(t, resp, got, http.StatusUnauthorized, errAuthentication)
	require.Equal(t, n, up.count())
	require.NotContains(t, ts.logs.String(), "sk-tenant")

	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires, "counting takes no process")
}

// TestCountTokensInvalid: a count_tokens request is validated as a
// Messages request is, and one that is not valid never goes upstream;
// nor does any without an upstream (a pool without the gateway).
func TestCountTokensInvalid(t *testing.T) {
	ts := newTestServer(t)
	ts.api.tools = testTools(t)
	up := newFakeUpstream(t)
	ts.api.upstream = &upstreamAPI{url: up.URL, key: "sk-server"}
	user := `"messages":[{"role":"user","content":"hi"}]`
	for _, tt := range []struct{ body, want string }{
		{`{"model":"m",` + user + `,"max_tokens":5}`, "max_tokens: unsupported field: count_tokens takes"},
		{`{"model":"m",` + user + `,"stream":true}`, "stream: unsupported field"},
		{`{"model":"m",` + user + `,"mcp_servers":[]}`, "mcp_servers: unsupported field"},
		{`{` + user + `}`, "model: field required"},
		{`{"model":"m"}`, "messages: at least one message"},
		{`{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}`, "the last message must be the user's"},
		{`{"model":"m",` + user + `,"system":5}`, "system"},
		{`{"model":"m",` + user + `,"tools":[{"name":"get_time","input_schema":{"type":"object"}}]}`, "not one of this server's tools"},
		{`{"model":"m",` + user + `,"thinking":{"type":"enabled","budget_tokens":10}}`, "thinking.budget_tokens: must be at least 1024"},
		{`{"model":"m","messages":[{"role":"user","content":[{"type":"search_result"}]}]}`, `"search_result" blocks are not supported`},
		{`not json`, "malformed request"},
	} {
		resp, got := ts.do(t, http.MethodPost, "/v1/messages/count_tokens", tt.body, "Anthropic-Version", testAPIVersion)
		require.Contains(t, requireAPIError(t, resp, got, http.StatusBadRequest, errInvalidRequest), tt.want, tt.body)
	}
	require.Zero(t, up.count(), "nothing invalid went upstream")

	// What the Messages API takes, counting takes: thinking with a budget
	// (no max_tokens bounds it), output_config, the server's tools.
	resp, got := ts.do(t, http.MethodPost, "/v1/messages/count_tokens",
		`{"model":"m",`+user+`,"thinking":{"type":"enabled","budget_tokens":4096},"output_config":{"effort":"low"},`+
			`"tools":[`+lookupToolJSON(t)+`],"tool_choice":{"type":"auto"}}`, "Anthropic-Version", testAPIVersion)
	require.Equal(t, http.StatusOK, resp.StatusCode, got)

	ts.api.upstream = nil
	resp, got = ts.do(t, http.MethodPost, "/v1/messages/count_tokens", `{"model":"m",`+user+`}`, "Anthropic-Version", testAPIVersion)
	require.Contains(t, requireAPIError(t, resp, got, http.StatusBadRequest, errInvalidRequest), "count_tokens: not supported by this server")
	require.Equal(t, 1, up.count())
}

// lookupToolJSON is the definition of the server's lookup tool, as a
// client sends it.
func lookupToolJSON(t *testing.T) string {
	t.Helper()
	b, err := marshal(toolsJSON(t)[0])
	require.NoError(t, err)
	return string(b)
}

// TestCountTokensUpstreamErrors: the API's errors come back as it sent
// them; a body in another shape gets the status's fixed text, without
// what it said; an upstream that cannot be reached is a 502.
func TestCountTokensUpstreamErrors(t *testing.T) {
	ts := newTestServer(t)
	up := newFakeUpstream(t)
	ts.api.upstream = &upstreamAPI{url: up.URL, key: "sk-server"}
	const body = `{"model":"claude-nope","messages":[{"role":"user","content":"hi"}]}`
	for _, tt := range []struct {
		status     int
		body       string
		wantStatus int
		kind, msg  string
	}{
		{404, `{"type":"error","error":{"type":"not_found_error","message":"model: claude-nope"},"request_id":"req_x"}`, 404, errNotFound, "model: claude-nope"},
		{529, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, 529, errOverloaded, "Overloaded"},
		{502, `<html>bad gateway at 10.0.0.7:8443</html>`, 502, errAPI, "upstream API error: bad gateway"},
		{403, `forbidden by proxy.internal:3128`, 403, errPermission, "Forbidden"},
		{200, `{"tokens":1}`, 502, errAPI, "the upstream API's answer had no input_tokens"},
	} {
		up.answer(tt.status, tt.body)
		resp, got := ts.do(t, http.MethodPost, "/v1/messages/count_tokens", body, "Anthropic-Version", testAPIVersion)
		require.Equal(t, tt.msg, requireAPIError(t, resp, got, tt.wantStatus, tt.kind), tt.body)
		require.NotContains(t, got, "req_x", "the server's request id replaces the API's")
	}

	up.Close()
	resp, got := ts.do(t, http.MethodPost, "/v1/messages/count_tokens", body, "Anthropic-Version", testAPIVersion)
	require.Equal(t, "upstream API unavailable", requireAPIError(t, resp, got, http.StatusBadGateway, errAPI))
	require.NotContains(t, got, strings.TrimPrefix(up.URL, "http://"))
}
