package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseCORSOrigins(t *testing.T) {
	p, err := parseCORSOrigins("")
	require.NoError(t, err)
	require.Nil(t, p)
	require.False(t, p.allows("https://app.example.com"))

	p, err = parseCORSOrigins("*")
	require.NoError(t, err)
	require.True(t, p.allows("https://anything.example"))
	require.False(t, p.allows(""), "a request without Origin is no browser's cross-origin request")

	p, err = parseCORSOrigins(" https://App.example.com , http://localhost:3000")
	require.NoError(t, err)
	require.True(t, p.allows("https://app.example.com"))
	require.True(t, p.allows("http://localhost:3000"))
	require.False(t, p.allows("http://app.example.com"), "another scheme")
	require.False(t, p.allows("http://localhost:3001"), "another port")
	require.False(t, p.allows("https://app.example.com.evil.example"))

	for _, bad := range []string{"app.example.com", "https://app.example.com/", "https://a.example/path", "ftp://a.example",
		"https://a.example,*", "https://a.example,", "https://user@a.example"} {
		_, err := parseCORSOrigins(bad)
		require.Error(t, err, bad)
	}

	o, err := parseOptions(nil, envOf(map[string]string{"CLAUDEPOOL_CORS_ORIGINS": "https://app.example.com"}), io.Discard)
	require.NoError(t, err)
	require.True(t, o.cors.allows("https://app.example.com"))
	_, err = parseOptions([]string{"-cors-origins", "app.example.com"}, noEnv, io.Discard)
	require.ErrorContains(t, err, "-cors-origins")
}

// TestCORS: with -cors-origins, a preflight from an allowed origin is a
// 204 with the methods and the headers the API and the SDKs use, without
// a key even when keys are required; from another origin a 403. Answers
// to an allowed origin, errors included, carry Access-Control-Allow-Origin
// and expose the request ids; others carry none.
func TestCORS(t *testing.T) {
	ts := newTestServer(t)
	var err error
	ts.api.cors, err = parseCORSOrigins("https://app.example.com")
	require.NoError(t, err)
	ts.api.clientKeys, err = parseClientKeys([]byte("sk-browser\n"))
	require.NoError(t, err)
	const origin = "https://app.example.com"

	resp, body := ts.do(t, http.MethodOptions, "/v1/messages", "", "Origin", origin,
		"Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "x-api-key,anthropic-version,content-type,anthropic-dangerous-direct-browser-access,x-stainless-new-header")
	require.Equal(t, http.StatusNoContent, resp.StatusCode, body)
	require.Empty(t, body)
	h := resp.Header
	require.Equal(t, origin, h.Get("Access-Control-Allow-Origin"))
	require.Equal(t, "GET, POST, OPTIONS", h.Get("Access-Control-Allow-Methods"))
	allowed := strings.Split(h.Get("Access-Control-Allow-Headers"), ", ")
	for _, name := range []string{"x-api-key", "authorization", "anthropic-version", "anthropic-beta", "content-type",
		"anthropic-dangerous-direct-browser-access", "x-stainless-retry-count", "x-stainless-new-header"} {
		require.Contains(t, allowed, name)
	}
	require.NotEmpty(t, h.Get("Access-Control-Max-Age"))
	require.Contains(t, h.Values("Vary"), "Origin")

	// Another origin's preflight.
	resp, body = ts.do(t, http.MethodOptions, "/v1/messages", "", "Origin", "https://evil.example", "Access-Control-Request-Method", "POST")
	require.Contains(t, requireAPIError(t, resp, body, http.StatusForbidden, errPermission), "https://evil.example")
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))

	// Requests from the page: the answers carry the origin, errors too.
	version := []string{"Anthropic-Version", testAPIVersion, "Origin", origin}
	resp, body = ts.do(t, http.MethodGet, "/v1/models", "", version...)
	requireAPIError(t, resp, body, http.StatusUnauthorized, errAuthentication)
	require.Equal(t, origin, resp.Header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, resp.Header.Get("Access-Control-Expose-Headers"), "Request-Id")
	resp, body = ts.do(t, http.MethodPost, "/v1/messages", messagesBody(t, false, nil, "from a browser"),
		append(version, "X-Api-Key", "sk-browser", "Anthropic-Dangerous-Direct-Browser-Access", "true")...)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, origin, resp.Header.Get("Access-Control-Allow-Origin"))
	resp, _ = ts.do(t, http.MethodGet, "/v1/models", "", "Anthropic-Version", testAPIVersion, "Origin", "https://evil.example", "X-Api-Key", "sk-browser")
	require.Equal(t, http.StatusOK, resp.StatusCode, "the server answers; the browser keeps the answer from the page")
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))

	// Without -cors-origins: no CORS header, and OPTIONS is a method no
	// route takes.
	ts.api.cors = nil
	resp, body = ts.do(t, http.MethodOptions, "/v1/messages", "", "Origin", origin, "Access-Control-Request-Method", "POST", "X-Api-Key", "sk-browser")
	requireAPIError(t, resp, body, http.StatusMethodNotAllowed, errInvalidRequest)
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
	resp, _ = ts.do(t, http.MethodGet, "/healthz", "", "Origin", origin)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
}
