package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// TestMessagesAPIParamsParsed: the Messages API's parameters land in the
// Request fields the pool's gateway sets on the chat's API calls; null is
// an absent field.
func TestMessagesAPIParamsParsed(t *testing.T) {
	c, err := messagesFormat{}.parse([]byte(messagesBody(t, false, map[string]any{
		"max_tokens": 300, "temperature": 0.25, "top_p": 0.75, "top_k": 7,
		"stop_sequences": []string{"END", "\n\nHuman:"}, "metadata": map[string]any{"user_id": "tenant-42"},
	}, "hi")))
	require.NoError(t, err)
	r := c.req
	require.Equal(t, 300, r.MaxTokens)
	require.Equal(t, 0.25, *r.Temperature)
	require.Equal(t, 0.75, *r.TopP)
	require.Equal(t, 7, *r.TopK)
	require.Equal(t, []string{"END", "\n\nHuman:"}, r.StopSequences)
	require.Equal(t, "tenant-42", r.UserID)
	require.Empty(t, r.APIKey, "the client's key is no parameter of the body")

	c, err = messagesFormat{}.parse([]byte(messagesBody(t, false, map[string]any{
		"temperature": nil, "top_p": nil, "top_k": nil, "stop_sequences": nil, "metadata": map[string]any{"user_id": nil},
	}, "hi")))
	require.NoError(t, err)
	r = c.req
	require.Equal(t, 64, r.MaxTokens)
	require.Nil(t, r.Temperature)
	require.Nil(t, r.TopP)
	require.Nil(t, r.TopK)
	require.Nil(t, r.StopSequences)
	require.Empty(t, r.UserID)

	c, err = messagesFormat{}.parse([]byte(messagesBody(t, false, map[string]any{
		"temperature": 0, "top_p": 1, "top_k": 0, "stop_sequences": []string{}, "metadata": map[string]any{},
	}, "hi")))
	require.NoError(t, err)
	require.Equal(t, 0.0, *c.req.Temperature, "0 is a temperature, not an absent one")
	require.Equal(t, 1.0, *c.req.TopP)
	require.Equal(t, 0, *c.req.TopK)
	require.Empty(t, c.req.StopSequences)
}

// TestMessagesAPIParamsInvalid: a malformed parameter is a 400
// invalid_request_error in the API's shape that names the field, and takes
// no process.
func TestMessagesAPIParamsInvalid(t *testing.T) {
	ts := newTestServer(t)
	body := func(extra map[string]any) string { return messagesBody(t, false, extra, "hi") }
	for _, tt := range []struct {
		name, body, want string
	}{
		{"max_tokens null", `{"model":"m","max_tokens":null,"messages":[{"role":"user","content":"hi"}]}`, "max_tokens: field required"},
		{"max_tokens 0", body(map[string]any{"max_tokens": 0}), "max_tokens: must be at least 1, got 0"},
		{"max_tokens negative", body(map[string]any{"max_tokens": -5}), "max_tokens: must be at least 1, got -5"},
		{"max_tokens fraction", body(map[string]any{"max_tokens": 1.5}), "max_tokens: must be an integer, got 1.5"},
		{"max_tokens string", body(map[string]any{"max_tokens": "100"}), "max_tokens: must be a number"},
		{"max_tokens huge", body(map[string]any{"max_tokens": 1e12}), "max_tokens: 1000000000000 is out of range"},
		{"temperature above 1", body(map[string]any{"temperature": 1.5}), "temperature: must be from 0 to 1, got 1.5"},
		{"temperature negative", body(map[string]any{"temperature": -0.1}), "temperature: must be from 0 to 1, got -0.1"},
		{"temperature string", body(map[string]any{"temperature": "hot"}), "temperature: must be a number"},
		{"top_p above 1", body(map[string]any{"top_p": 2}), "top_p: must be from 0 to 1, got 2"},
		{"top_p bool", body(map[string]any{"top_p": true}), "top_p: must be a number"},
		{"top_k negative", body(map[string]any{"top_k": -1}), "top_k: must be at least 0, got -1"},
		{"top_k fraction", body(map[string]any{"top_k": 2.5}), "top_k: must be an integer, got 2.5"},
		{"stop_sequences string", body(map[string]any{"stop_sequences": "END"}), "stop_sequences: must be a list of strings"},
		{"stop_sequences number", body(map[string]any{"stop_sequences": []any{"END", 7}}), "stop_sequences.1: must be a string"},
		{"stop_sequences empty", body(map[string]any{"stop_sequences": []string{""}}), "stop_sequences.0: must not be empty"},
		{"metadata list", body(map[string]any{"metadata": []string{"u"}}), "metadata: must be an object"},
		{"metadata user_id number", body(map[string]any{"metadata": map[string]any{"user_id": 42}}), "metadata.user_id: must be a string"},
		{"metadata user_id long", body(map[string]any{"metadata": map[string]any{"user_id": strings.Repeat("é", 257)}}),
			"metadata.user_id: must be at most 256 characters, got 257"},
		{"metadata other key", body(map[string]any{"metadata": map[string]any{"user_id": "u", "plan": "pro"}}),
			"metadata.plan: unsupported field"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.postTo(t, context.Background(), "/v1/messages", tt.body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			e := apiErrorBody(t, resp.Body)
			require.Equal(t, "invalid_request_error", e.Error.Type)
			require.True(t, strings.HasPrefix(e.Error.Message, tt.want), "message %q, want %q", e.Error.Message, tt.want)
			require.Equal(t, resp.Header.Get("Request-Id"), e.RequestID)
		})
	}
	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires, "a bad request took a process")
}

// TestMessagesWithoutGateway: a pool without the gateway cannot set a
// request's parameters on the API's calls. The chat runs without those
// that only tune the reply; stop sequences, which change what the reply
// is, and a forwarded key, which changes who pays for it, fail it before
// it takes a process. The streamed reply's message_start comes with the
// first text, with no usage.
func TestMessagesWithoutGateway(t *testing.T) {
	ts := newTestServer(t, fakecli.EnvChunks+"=2", fakecli.EnvReply+"=one two")
	tuned := map[string]any{"max_tokens": 5, "temperature": 0.5, "top_p": 0.5, "top_k": 3, "metadata": map[string]any{"user_id": "u1"}}

	resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, tuned, "hello"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var m message
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	require.Equal(t, []contentBlock{{Type: "text", Text: "one two"}}, m.Content, "max_tokens 5 did not cut it: nothing applied it")
	require.Equal(t, "end_turn", *m.StopReason)
	require.Nil(t, m.StopSequence)

	resp = ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, true, tuned, "hello"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	events := readEvents(t, resp)
	require.Equal(t, []string{"message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
		"content_block_stop", "message_delta", "message_stop"}, eventNames(events))
	start := events[0].data["message"].(map[string]any)
	require.Equal(t, map[string]any{"input_tokens": 0.0, "output_tokens": 0.0, "cache_creation_input_tokens": 0.0,
		"cache_read_input_tokens": 0.0}, start["usage"], "no gateway: no input tokens before the end")
	delta := events[6].data["delta"].(map[string]any)
	require.Equal(t, "end_turn", delta["stop_reason"])
	require.Nil(t, delta["stop_sequence"])
	require.Contains(t, delta, "stop_sequence", "null, as the API sends it")
	st := ts.pool.Stats()
	require.EqualValues(t, 2, st.WarmAcquires+st.ColdAcquires)

	resp = ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, map[string]any{"stop_sequences": []string{"END"}}, "hello"))
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	e := apiErrorBody(t, resp.Body)
	require.Equal(t, "invalid_request_error", e.Error.Type)
	require.Equal(t, errNoStopSequences.Error(), e.Error.Message)

	ts.api.forwardKey = true
	require.False(t, ts.api.hasGateway())
	for _, stream := range []bool{false, true} {
		resp = ts.postToWith(t, "/v1/messages", messagesBody(t, stream, nil, "hello"), "X-Api-Key", "sk-tenant")
		require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
		e = apiErrorBody(t, resp.Body)
		require.Equal(t, "api_error", e.Error.Type)
		require.Equal(t, errNoKeyForwarding.Error(), e.Error.Message)
	}
	require.Contains(t, ts.logs.String(), "-forward-key: the pool runs no gateway")
	require.NotContains(t, ts.logs.String(), "sk-tenant", "keys stay out of the log")
	st = ts.pool.Stats()
	require.EqualValues(t, 2, st.WarmAcquires+st.ColdAcquires, "no process for a chat that cannot run as asked")
}

// TestForwardKeyRequired: with -forward-key, a chat without a usable key
// of its client is refused with the API's 401 on both endpoints, before
// it takes a process.
func TestForwardKeyRequired(t *testing.T) {
	ts := newTestServer(t)
	ts.api.forwardKey = true
	for _, tt := range []struct {
		name, header, value, want string
	}{
		{"none", "", "", "x-api-key header is required"},
		{"empty", "X-Api-Key", " ", "x-api-key header is required"},
		{"basic auth", "Authorization", "Basic dXNlcjpwYXNz", "x-api-key header is required"},
		{"bearer without token", "Authorization", "Bearer ", "x-api-key header is required"},
		{"space in key", "X-Api-Key", "sk-a b", "invalid x-api-key"},
		{"non-ASCII key", "Authorization", "Bearer sk-é", "invalid x-api-key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.postToWith(t, "/v1/messages", messagesBody(t, false, nil, "hi"), tt.header, tt.value)
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			e := apiErrorBody(t, resp.Body)
			require.Equal(t, "authentication_error", e.Error.Type)
			require.Equal(t, tt.want, e.Error.Message)

			resp = ts.postToWith(t, "/chat", chatBody("hi"), tt.header, tt.value)
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			var ce chatError
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&ce))
			require.Equal(t, chatError{tt.want, "authentication_error"}, ce)
		})
	}
	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires)
}

func TestClientKey(t *testing.T) {
	for _, tt := range []struct {
		headers map[string]string
		want    string
	}{
		{map[string]string{"X-Api-Key": "sk-1"}, "sk-1"},
		{map[string]string{"Authorization": "Bearer sk-2"}, "sk-2"},
		{map[string]string{"Authorization": "bearer  sk-3 "}, "sk-3"},
		{map[string]string{"X-Api-Key": "sk-4", "Authorization": "Bearer sk-5"}, "sk-4"},
	} {
		r, err := http.NewRequest(http.MethodPost, "/", nil)
		require.NoError(t, err)
		for k, v := range tt.headers {
			r.Header.Set(k, v)
		}
		key, e := clientKey(r)
		require.Nil(t, e)
		require.Equal(t, tt.want, key, "%v", tt.headers)
	}
}

// TestClassifyAPIError: an error the API answered through the gateway
// reaches the client as the API sent it, its message unscrubbed; an
// error event inside a streamed reply gets its type's status; a body that
// is not the API's error leaves the turn to upstreamError's scrubbing.
func TestClassifyAPIError(t *testing.T) {
	s := &server{scrubber: newScrubber()}
	apiBody := func(kind, msg string) []byte {
		b, err := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": kind, "message": msg}})
		require.NoError(t, err)
		return b
	}
	const msg = "max_tokens: 999999 > 64000, which is the maximum allowed; see https://docs.example.com/limits"
	for _, tt := range []struct {
		name   string
		err    *claudepool.ResultError
		status int
		kind   string
		msg    string
	}{
		{"400", &claudepool.ResultError{APIErrorStatus: 400, Message: msg,
			API: &claudepool.APIError{Status: 400, Type: "invalid_request_error", Message: msg, Body: apiBody("invalid_request_error", msg)}},
			400, "invalid_request_error", msg},
		{"500 with the API's text", &claudepool.ResultError{APIErrorStatus: 500, Message: "Internal server error (req 1)",
			API: &claudepool.APIError{Status: 500, Type: "api_error", Message: "Internal server error (req 1)", Body: apiBody("api_error", "Internal server error (req 1)")}},
			500, "api_error", "Internal server error (req 1)"},
		{"a type the server does not know", &claudepool.ResultError{APIErrorStatus: 402, Message: "credit balance too low",
			API: &claudepool.APIError{Status: 402, Type: "billing_error", Message: "credit balance too low", Body: apiBody("billing_error", "credit balance too low")}},
			402, "billing_error", "credit balance too low"},
		{"in a stream", &claudepool.ResultError{Message: "Overloaded",
			API: &claudepool.APIError{Type: "overloaded_error", Message: "Overloaded", Body: apiBody("overloaded_error", "Overloaded")}},
			529, "overloaded_error", "Overloaded"},
		{"in a stream, the CLI's status", &claudepool.ResultError{APIErrorStatus: 503, Message: "Unavailable",
			API: &claudepool.APIError{Type: "api_error", Message: "Unavailable", Body: apiBody("api_error", "Unavailable")}},
			503, "api_error", "Unavailable"},
		{"a proxy's page", &claudepool.ResultError{APIErrorStatus: 502, Message: "<html>bad gateway at 10.0.0.9:80</html>",
			API: &claudepool.APIError{Status: 502, Type: "api_error", Message: "<html>bad gateway at 10.0.0.9:80</html>", Body: []byte("<html>bad gateway at 10.0.0.9:80</html>")}},
			502, "api_error", "upstream API error: bad gateway"},
		{"a proxy's 4xx", &claudepool.ResultError{APIErrorStatus: 403, Message: "denied by gw.corp:8443",
			API: &claudepool.APIError{Status: 403, Type: "api_error", Message: "denied by gw.corp:8443", Body: []byte("denied by gw.corp:8443")}},
			403, "permission_error", "denied by [upstream]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := s.classify(context.Background(), tt.err)
			require.Equal(t, apiError{tt.status, tt.kind, tt.msg}, e)
		})
	}
}

// postToWith sends body to POST path with one header, none when name is
// empty.
func (ts *testServer) postToWith(t *testing.T, path, body, name, value string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	setAPIVersion(req)
	if name != "" {
		req.Header.Set(name, value)
	}
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// decodedEvent is a server-sent event whose data is a JSON object.
type decodedEvent struct {
	name string
	data map[string]any
}

// readEvents reads a streamed reply to its end.
func readEvents(t *testing.T, resp *http.Response) []decodedEvent {
	t.Helper()
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	var out []decodedEvent
	sc := bufio.NewScanner(resp.Body)
	for ev, ok := readEvent(sc); ok; ev, ok = readEvent(sc) {
		var data map[string]any
		require.NoError(t, json.Unmarshal([]byte(ev.data), &data), ev.data)
		out = append(out, decodedEvent{ev.name, data})
	}
	require.NoError(t, sc.Err())
	return out
}

func eventNames(evs []decodedEvent) []string {
	names := make([]string, len(evs))
	for i, ev := range evs {
		names[i] = ev.name
	}
	return names
}
