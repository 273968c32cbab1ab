package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseClientKeys(t *testing.T) {
	ks, err := parseClientKeys([]byte("# the tenants' keys\n\nsk-one\n  sk-two  \n# sk-commented\nsk-one\r\n"))
	require.NoError(t, err)
	require.Len(t, ks.digests, 2, "a key twice is one key")
	require.True(t, ks.has("sk-one"))
	require.True(t, ks.has("sk-two"))
	for _, k := range []string{"sk-commented", "# sk-commented", "sk-on", "sk-one ", "", "sk-two\n"} {
		require.False(t, ks.has(k), "%q", k)
	}

	for _, tt := range []struct{ data, want string }{
		{"", "no key"},
		{"# only comments\n\n", "no key"},
		{"sk-one\nsk two\n", "line 2"},
		{"sk-é\n", "line 1"},
	} {
		_, err := parseClientKeys([]byte(tt.data))
		require.ErrorContains(t, err, tt.want, "%q", tt.data)
		require.NotContains(t, err.Error(), "sk", "an error does not quote a key")
	}

	path := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(path, []byte("sk-file\n"), 0o600))
	ks, err = loadClientKeys(path)
	require.NoError(t, err)
	require.True(t, ks.has("sk-file"))
	_, err = loadClientKeys(filepath.Join(t.TempDir(), "missing"))
	require.Error(t, err)
}

// TestClientKeys: with -client-keys, every path but the probes and the
// metrics needs one of the keys, in x-api-key or Authorization: Bearer,
// else a 401 in the API's shape before anything else (no process taken,
// no route revealed); with a key, requests are served as without the
// flag.
func TestClientKeys(t *testing.T) {
	ts := newTestServer(t)
	var err error
	ts.api.clientKeys, err = parseClientKeys([]byte("sk-alpha\nsk-beta\n"))
	require.NoError(t, err)
	version := []string{"Anthropic-Version", testAPIVersion}

	for _, tt := range []struct {
		name    string
		headers []string
		want    string
	}{
		{"none", nil, "x-api-key header is required"},
		{"empty", []string{"X-Api-Key", ""}, "x-api-key header is required"},
		{"basic auth", []string{"Authorization", "Basic c2stYWxwaGE6"}, "x-api-key header is required"},
		{"wrong", []string{"X-Api-Key", "sk-gamma"}, "invalid x-api-key"},
		{"prefix", []string{"X-Api-Key", "sk-alph"}, "invalid x-api-key"},
		{"wrong bearer", []string{"Authorization", "Bearer sk-gamma"}, "invalid x-api-key"},
		{"x-api-key wins", []string{"X-Api-Key", "sk-gamma", "Authorization", "Bearer sk-alpha"}, "invalid x-api-key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range []struct{ method, path, body string }{
				{http.MethodPost, "/v1/messages", messagesBody(t, false, nil, "hi")},
				{http.MethodPost, "/v1/messages/count_tokens", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`},
				{http.MethodGet, "/v1/models", ""},
				{http.MethodPost, "/chat", chatBody("hi")},
				{http.MethodGet, "/v1/nothing", ""},
				{http.MethodGet, "/stats", ""},
			} {
				resp, body := ts.do(t, r.method, r.path, r.body, append(tt.headers, version...)...)
				require.Equal(t, tt.want, requireAPIError(t, resp, body, http.StatusUnauthorized, errAuthentication), r.path)
			}
		})
	}
	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires, "no process for a client without a key")
	require.NotContains(t, ts.logs.String(), "sk-gamma", "keys stay out of the log")
	require.Contains(t, ts.logs.String(), `msg="client key refused"`)

	// The probes and the metrics need no key.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, _ := ts.do(t, http.MethodGet, path, "")
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
	}

	// Either header, either key.
	resp, body := ts.do(t, http.MethodPost, "/v1/messages", messagesBody(t, false, nil, "with a key"), append(version, "X-Api-Key", "sk-alpha")...)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Contains(t, body, "with a key")
	resp, body = ts.do(t, http.MethodGet, "/v1/models", "", append(version, "Authorization", "Bearer sk-beta")...)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	resp, body = ts.do(t, http.MethodGet, "/v1/nothing", "", append(version, "X-Api-Key", "sk-beta")...)
	requireAPIError(t, resp, body, http.StatusNotFound, errNotFound)

	// /chat, the server's own, too.
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, ts.URL+"/chat", strings.NewReader(chatBody("chat with a key")))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer sk-alpha")
	cresp, err := ts.Client().Do(req)
	require.NoError(t, err)
	defer cresp.Body.Close()
	require.Equal(t, http.StatusOK, cresp.StatusCode)
	b, err := io.ReadAll(cresp.Body)
	require.NoError(t, err)
	require.Contains(t, string(b), "event: result")
}

// TestClientKeysOptions: -client-keys and -forward-key exclude each
// other; -client-keys comes from the environment as the other flags do,
// and a file without a key stops the start.
func TestClientKeysOptions(t *testing.T) {
	_, err := parseOptions([]string{"-client-keys", "keys", "-forward-key"}, noEnv, io.Discard)
	require.ErrorContains(t, err, "-client-keys and -forward-key")
	_, err = parseOptions(nil, envOf(map[string]string{"CLAUDEPOOL_CLIENT_KEYS": "keys", "CLAUDEPOOL_FORWARD_KEY": "true"}), io.Discard)
	require.ErrorContains(t, err, "-client-keys and -forward-key")

	path := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(path, []byte("# no key yet\n"), 0o600))
	o, err := parseOptions([]string{"-size", "1", "-cli", fakeCLI}, envOf(map[string]string{"CLAUDEPOOL_CLIENT_KEYS": path}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, path, o.clientKeys)
	err = run(context.Background(), o, newTextLogger(io.Discard))
	require.ErrorContains(t, err, "-client-keys: no key")
}
