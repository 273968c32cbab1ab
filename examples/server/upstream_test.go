package main

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// noRetries makes the fake CLI fail a turn at once, without the retries
// the real CLI makes (and the api_retry lines the pool acts on).
const noRetries = "CLAUDE_CODE_MAX_RETRIES=0"

func TestScrubAddresses(t *testing.T) {
	s := newScrubber([]string{"HOME=/x", "ANTHROPIC_BASE_URL=https://Gateway.Corp.example"},
		[]string{"ANTHROPIC_BASE_URL=http://10.1.2.3:8080", "OTHER_URL=http://kept.example"})
	for in, want := range map[string]string{
		"check your inference gateway (127.0.0.1:18083).":             "check your inference gateway ([upstream]).",
		"POST https://api.example.com:8443/v1/messages?beta=1 failed": "POST [upstream] failed",
		"connect ECONNREFUSED [::1]:443":                              "connect ECONNREFUSED [upstream]",
		"connect ECONNREFUSED 10.0.0.7":                               "connect ECONNREFUSED [upstream]",
		"upstream gateway.internal:8443 said no":                      "upstream [upstream] said no",
		"getaddrinfo ENOTFOUND gateway.corp.example":                  "getaddrinfo ENOTFOUND [upstream]",
		// Left alone: no address.
		"messages.0.content: field required":           "messages.0.content: field required",
		"model: claude-3.5-sonnet not found":           "model: claude-3.5-sonnet not found",
		"API Error: 404 not found · Model 'x' unknown": "API Error: 404 not found · Model 'x' unknown",
		"prompt is too long: 210000 tokens > 200000":   "prompt is too long: 210000 tokens > 200000",
		"kept.example is not the upstream":             "kept.example is not the upstream",
	} {
		require.Equal(t, want, s.scrub(in), in)
	}
	require.Equal(t, "at [upstream]", newScrubber().scrub("at 127.0.0.1"), "no hosts known: the patterns still apply")
}

// TestClassifyResultErrors maps failed results, as the pool reports them,
// to what the client is told.
func TestClassifyResultErrors(t *testing.T) {
	s := &server{scrubber: newScrubber()}
	for _, tt := range []struct {
		name   string
		err    *claudepool.ResultError
		status int
		kind   string
		msg    string
	}{
		{"model rejected", &claudepool.ResultError{APIErrorStatus: 404, Subtype: "model_rejected", Message: "Model 'x' not found"},
			404, "not_found_error", "Model 'x' not found"},
		{"model refused to the account", &claudepool.ResultError{APIErrorStatus: 403, Subtype: "model_rejected", Message: "Model 'x' is not available"},
			403, "permission_error", "Model 'x' is not available"},
		{"model refused, auth", &claudepool.ResultError{APIErrorStatus: 401, Subtype: "model_rejected", Message: "Invalid API key"},
			401, "authentication_error", "Invalid API key"},
		{"4xx with an address", &claudepool.ResultError{APIErrorStatus: 400, Message: "API Error: 400 bad request from http://127.0.0.1:18083/v1/messages"},
			400, "invalid_request_error", "API Error: 400 bad request from [upstream]"},
		{"4xx all address", &claudepool.ResultError{APIErrorStatus: 429, Message: "gw.internal:443"},
			429, "rate_limit_error", "[upstream]"},
		{"5xx", &claudepool.ResultError{APIErrorStatus: 500, TerminalReason: "api_error",
			Message: "API Error: 500 mock internal error. If it persists, check your inference gateway (127.0.0.1:18083)."},
			500, "api_error", "Internal server error"},
		{"overloaded", &claudepool.ResultError{APIErrorStatus: 529, Message: "API Error: 529 at 10.0.0.1:80"},
			529, "overloaded_error", "Overloaded"},
		{"502", &claudepool.ResultError{APIErrorStatus: 502, Message: "API Error: 502 from gw:80"},
			502, "api_error", "upstream API error: bad gateway"},
		{"connection failed", &claudepool.ResultError{TerminalReason: "api_error",
			Message: "API Error: Can't reach the API server — check your internet or DNS (ENOTFOUND)",
			Result:  &claudepool.Result{APIErrorType: "connection_failed"}},
			502, "api_error", "upstream API unavailable"},
		{"connection failed, by its text", &claudepool.ResultError{TerminalReason: "api_error",
			Message: "API Error: Unable to connect to API (ECONNREFUSED 127.0.0.1:9)"},
			502, "api_error", "upstream API unavailable"},
		{"upstream timeout", &claudepool.ResultError{TerminalReason: "api_error",
			Message: "Request timed out. If the API is slow to answer, or a proxy or gateway holds responses, set API_TIMEOUT_MS above 5000."},
			504, "timeout_error", "the upstream API did not answer in time"},
		{"prompt too long", &claudepool.ResultError{Message: "Prompt is too long"},
			400, "invalid_request_error", "Prompt is too long"},
		{"prompt too long, 400", &claudepool.ResultError{APIErrorStatus: 400, Message: "Prompt is too long"},
			400, "invalid_request_error", "Prompt is too long"},
		{"not logged in", &claudepool.ResultError{TerminalReason: "api_error", Message: "Not logged in · Please run /login"},
			500, "api_error", "the Claude Code CLI failed to answer; the server's log has the details (request id )"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := s.classify(context.Background(), tt.err)
			require.Equal(t, apiError{tt.status, tt.kind, tt.msg}, e)
		})
	}
}

// TestUpstreamErrorsQuoteNoAddress: the CLI's texts about a failed API
// call name the upstream's address; no client sees it, on either
// endpoint, streamed or not.
func TestUpstreamErrorsQuoteNoAddress(t *testing.T) {
	for _, tt := range []struct {
		name, status, text string
		want               int
		kind, msg          string
	}{
		{"500", "500", "API Error: 500 mock internal error. This is a server-side issue, usually temporary — try again in a moment. If it persists, check your inference gateway (127.0.0.1:18083).",
			500, "api_error", "Internal server error"},
		{"connection failure", "0", "API Error: Can't reach the API server at https://127.0.0.1:18083 — check your internet or DNS (ECONNREFUSED 127.0.0.1:18083)",
			502, "api_error", "upstream API unavailable"},
		{"404", "404", "API Error: 404 no route at http://127.0.0.1:18083/v1/messages",
			404, "not_found_error", "API Error: 404 no route at [upstream]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, noRetries, fakecli.EnvAPIStatus+"="+tt.status, fakecli.EnvErrorText+"="+tt.text)
			marker := "x " + fakecli.Marker(fakecli.ModeErrorResult)
			for _, stream := range []bool{false, true} {
				resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, stream, nil, marker))
				require.Equal(t, tt.want, resp.StatusCode, "stream %v", stream)
				e := apiErrorBody(t, resp.Body)
				require.Equal(t, tt.kind, e.Error.Type)
				require.Equal(t, tt.msg, e.Error.Message)
			}
			resp := ts.post(t, context.Background(), chatBody(marker))
			require.Equal(t, tt.want, resp.StatusCode)
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.NotContains(t, string(b), "127.0.0.1")
			require.NotContains(t, string(b), "18083")
			ts.waitHandler(t)
			require.Contains(t, ts.logs.String(), "127.0.0.1:18083", "the operator sees the address")
		})
	}
}

// TestPromptTooLong: the CLI's "Prompt is too long", with or without an
// API status, is the API's 400 invalid_request_error.
func TestPromptTooLong(t *testing.T) {
	for _, status := range []string{"0", "400"} {
		t.Run(status, func(t *testing.T) {
			ts := newTestServer(t, noRetries, fakecli.EnvAPIStatus+"="+status, fakecli.EnvErrorText+"=Prompt is too long")
			resp := ts.postTo(t, context.Background(), "/v1/messages",
				messagesBody(t, false, nil, "x "+fakecli.Marker(fakecli.ModeErrorResult)))
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			e := apiErrorBody(t, resp.Body)
			require.Equal(t, "invalid_request_error", e.Error.Type)
			require.Equal(t, "Prompt is too long", e.Error.Message)
		})
	}
}
