package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// do sends a request with a body (none when "") and headers, name-value
// pairs, and returns the response with its body read.
func (ts *testServer) do(t *testing.T, method, path, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.URL+path, rd)
	require.NoError(t, err)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

// requireAPIError checks an answer in the API's error shape: the status,
// the error type, the request id in the body and in Request-Id, and
// returns the message.
func requireAPIError(t *testing.T, resp *http.Response, body string, status int, kind string) string {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, body)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"), body)
	e := apiErrorBody(t, strings.NewReader(body))
	require.Equal(t, kind, e.Error.Type, body)
	require.NotEmpty(t, e.RequestID)
	require.Equal(t, e.RequestID, resp.Header.Get("Request-Id"))
	require.Equal(t, e.RequestID, resp.Header.Get("X-Request-Id"))
	return e.Error.Message
}

// TestUnroutedErrors: a path no route has is a 404, a method a path has
// no route for a 405 with Allow, both in the API's error shape, on every
// path: none of net/http's plain-text answers.
func TestUnroutedErrors(t *testing.T) {
	ts := newTestServer(t)
	for _, tt := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/", http.StatusNotFound, ""},
		{http.MethodGet, "/v1/nothing", http.StatusNotFound, ""},
		{http.MethodPost, "/v1/complete", http.StatusNotFound, ""},
		{http.MethodGet, "/debug/vars", http.StatusNotFound, ""},
		{http.MethodGet, "/v1/models/a/b", http.StatusNotFound, ""},
		{http.MethodGet, "/v1/messages", http.StatusMethodNotAllowed, "POST"},
		{http.MethodPut, "/v1/messages/count_tokens", http.StatusMethodNotAllowed, "POST"},
		{http.MethodGet, "/chat", http.StatusMethodNotAllowed, "POST"},
		{http.MethodPost, "/v1/models", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodDelete, "/v1/models/claude-test", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodOptions, "/v1/messages", http.StatusMethodNotAllowed, "POST"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, body := ts.do(t, tt.method, tt.path, "", "Anthropic-Version", testAPIVersion)
			kind := errNotFound
			if tt.status == http.StatusMethodNotAllowed {
				kind = errInvalidRequest
			}
			msg := requireAPIError(t, resp, body, tt.status, kind)
			require.Contains(t, msg, tt.path)
			require.Equal(t, tt.allow, resp.Header.Get("Allow"))
		})
	}
	// The routes still answer their methods.
	resp, _ := ts.do(t, http.MethodGet, "/healthz", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, _ = ts.do(t, http.MethodHead, "/readyz", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires, "no process for a request no route takes")
}

// TestAPIVersion: the Messages API's paths need an anthropic-version the
// API takes (2023-01-01, 2023-06-01, 2026-10-21), else a 400 with the
// API's messages; /chat, the server's own, does not.
func TestAPIVersion(t *testing.T) {
	ts := newTestServer(t)
	body := messagesBody(t, false, nil, "hello")
	for _, tt := range []struct {
		name    string
		headers []string
		want    string
	}{
		{"missing", nil, "anthropic-version: header is required"},
		{"empty", []string{"Anthropic-Version", ""}, "anthropic-version: header is required"},
		{"unknown", []string{"Anthropic-Version", "2023-10-01"}, `anthropic-version: "2023-10-01" is not a valid version`},
		{"twice", []string{"Anthropic-Version", "2023-06-01", "Anthropic-Version", "2023-06-01"}, `anthropic-version: "2023-06-01, 2023-06-01" is not a valid version`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{"/v1/messages", "/v1/messages/count_tokens", "/v1/models", "/v1/models/claude-test"} {
				method := http.MethodPost
				if strings.HasPrefix(path, "/v1/models") {
					method = http.MethodGet
				}
				resp, got := ts.do(t, method, path, body, tt.headers...)
				require.Equal(t, tt.want, requireAPIError(t, resp, got, http.StatusBadRequest, errInvalidRequest), path)
			}
		})
	}
	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires, "no process for a request without a version")

	for _, v := range apiVersions {
		resp, got := ts.do(t, http.MethodPost, "/v1/messages", body, "Anthropic-Version", v)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", v, got)
		require.Contains(t, got, `"type":"message"`)
	}
	resp := ts.post(t, context.Background(), chatBody("no version on /chat"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestAPIVersion20261021: with anthropic-version 2026-10-21 the sampling
// parameters are refused, even null, on /v1/messages and count_tokens,
// and so are citations on a user turn's text block, as in the API; the
// same requests pass with 2023-06-01.
func TestAPIVersion20261021(t *testing.T) {
	ts := newTestServer(t)
	cited := []any{map[string]any{"type": "text", "text": "quoted", "citations": []any{map[string]any{"type": "char_location"}}}}
	for _, tt := range []struct {
		name string
		body string
		want string
	}{
		{"temperature", messagesBody(t, false, map[string]any{"temperature": 1.0}, "hi"), "temperature: Extra inputs are not permitted"},
		{"top_p null", messagesBody(t, false, map[string]any{"top_p": nil}, "hi"), "top_p: Extra inputs are not permitted"},
		{"top_k", messagesBody(t, true, map[string]any{"top_k": 5}, "hi"), "top_k: Extra inputs are not permitted"},
		{"citations", messagesBody(t, false, nil, cited), "messages.0.content.0.citations: not permitted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, got := ts.do(t, http.MethodPost, "/v1/messages", tt.body, "Anthropic-Version", version20261021)
			require.Contains(t, requireAPIError(t, resp, got, http.StatusBadRequest, errInvalidRequest), tt.want)
		})
	}
	resp, got := ts.do(t, http.MethodPost, "/v1/messages/count_tokens", `{"model":"m","temperature":0.5,"messages":[{"role":"user","content":"hi"}]}`,
		"Anthropic-Version", version20261021)
	require.Contains(t, requireAPIError(t, resp, got, http.StatusBadRequest, errInvalidRequest), "temperature: Extra inputs are not permitted")
	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires)

	for _, body := range []string{messagesBody(t, false, map[string]any{"temperature": 0.5}, "hi"), messagesBody(t, false, nil, cited)} {
		resp, got := ts.do(t, http.MethodPost, "/v1/messages", body, "Anthropic-Version", version20230601)
		require.Equal(t, http.StatusOK, resp.StatusCode, got)
	}
}
