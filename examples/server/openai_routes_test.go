package main

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// On the OpenAI paths, the router's own refusals (a client key, an unknown
// path, a wrong method) come in OpenAI's error shape, as the handler's do.
func TestOpenAIPathsRefuseInOpenAIShape(t *testing.T) {
	ts := newTestServer(t)
	var err error
	ts.api.clientKeys, err = parseClientKeys([]byte("sk-alpha\n"))
	require.NoError(t, err)
	openaiErr := func(resp *http.Response, body string, status int) (typ, msg string) {
		t.Helper()
		require.Equal(t, status, resp.StatusCode, body)
		var e struct {
			Error struct{ Message, Type string } `json:"error"`
			Type  string                         `json:"type"`
		}
		require.NoError(t, json.Unmarshal([]byte(body), &e), body)
		require.Empty(t, e.Type, "not the Messages API's shape: %s", body)
		return e.Error.Type, e.Error.Message
	}
	resp, body := ts.do(t, http.MethodPost, "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	_, msg := openaiErr(resp, body, http.StatusUnauthorized)
	require.NotEmpty(t, msg)
	resp, body = ts.do(t, http.MethodPost, "/v1/chat/completions", `{}`, "Authorization", "Bearer sk-wrong")
	openaiErr(resp, body, http.StatusUnauthorized)

	key := []string{"Authorization", "Bearer sk-alpha"}
	resp, body = ts.do(t, http.MethodGet, "/v1/chat/completions", "", key...)
	openaiErr(resp, body, http.StatusMethodNotAllowed)
	require.Equal(t, "POST", resp.Header.Get("Allow"))
	resp, body = ts.do(t, http.MethodPost, "/v1/chat/nothing", "{}", key...)
	openaiErr(resp, body, http.StatusNotFound)
}
