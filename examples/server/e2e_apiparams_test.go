package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// newE2EPool is a pool of real CLI processes (Size 1) whose API is
// claudepooltest's mock, through the pool's gateway.
func newE2EPool(t *testing.T, api *claudepooltest.Server) *claudepool.Pool {
	t.Helper()
	return newE2EPoolConfig(t, api, nil)
}

// newE2EPoolConfig is newE2EPool with the pool's Config changed by
// configure.
func newE2EPoolConfig(t *testing.T, api *claudepooltest.Server, configure func(*claudepool.Config)) *claudepool.Pool {
	t.Helper()
	cli := realCLI(t)
	cfg := claudepool.Config{
		Command:         cli,
		Dir:             t.TempDir(),
		Size:            1,
		MaxProcs:        2,
		PartialMessages: true,
		Env:             append(api.Env(), "HOME="+t.TempDir()),
	}
	if configure != nil {
		configure(&cfg)
	}
	pool, err := claudepool.NewPool(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		require.NoError(t, pool.Close(ctx))
		require.Zero(t, pool.Stats().Live, "processes left after Close")
	})
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	require.NoError(t, pool.WaitReady(ctx))
	return pool
}

// serveE2E is the example's handler over pool, with -forward-key or
// without.
func serveE2E(t *testing.T, pool *claudepool.Pool, forwardKey bool) *testServer {
	t.Helper()
	ts := &testServer{api: newServer(pool), pool: pool, done: make(chan struct{}, 256), logs: &syncBuffer{}}
	require.True(t, ts.api.hasGateway(), "the pool's gateway runs: the mock's environment has an API key")
	ts.api.forwardKey = forwardKey
	ts.api.log = newTextLogger(ts.logs)
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { ts.done <- struct{}{} }()
		ts.api.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.api.stop) // runs before the pool's Close
	t.Cleanup(ts.Close)    // runs first
	return ts
}

// chatRequestsFor returns the chat requests the mock API received whose
// last user text is text.
func chatRequestsFor(api *claudepooltest.Server, text string) []claudepooltest.Request {
	var out []claudepooltest.Request
	for _, r := range api.ChatRequests() {
		if r.LastUserText() == text {
			out = append(out, r)
		}
	}
	return out
}

// TestE2EMessagesAPIParams drives POST /v1/messages over real CLI
// processes and the pool's gateway: the request's parameters reach the
// API, the reply carries the API's stop_reason and stop_sequence and the
// streamed message_start its input tokens, the API's errors reach the
// client as the API sent them, and -forward-key pays each chat with its
// client's key.
func TestE2EMessagesAPIParams(t *testing.T) {
	api := claudepooltest.NewServer(claudepooltest.Config{NoRetries: true})
	t.Cleanup(api.Close) // after the pool's Close, registered later
	pool := newE2EPool(t, api)
	ts := serveE2E(t, pool, false)
	fwd := serveE2E(t, pool, true)

	t.Run("parameters and stop sequence", func(t *testing.T) {
		api.SetReply(claudepooltest.Text("alpha beta STOP gamma"))
		const text = "params question"
		resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, map[string]any{
			"max_tokens": 300, "temperature": 0.3, "top_p": 0.9, "top_k": 5,
			"stop_sequences": []string{"STOP", "never"}, "metadata": map[string]any{"user_id": "tenant-42"},
		}, text))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var m message
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		require.Equal(t, []contentBlock{{Type: "text", Text: "alpha beta "}}, m.Content, "cut before the stop sequence")
		require.Equal(t, "stop_sequence", *m.StopReason)
		require.NotNil(t, m.StopSequence)
		require.Equal(t, "STOP", *m.StopSequence)

		reqs := chatRequestsFor(api, text)
		require.NotEmpty(t, reqs)
		for _, r := range reqs {
			require.Equal(t, 300, r.MaxTokens)
			require.Equal(t, 0.3, *r.Temperature)
			require.Equal(t, 0.9, *r.TopP)
			require.Equal(t, 5, *r.TopK)
			require.Equal(t, []string{"STOP", "never"}, r.StopSequences)
			require.Equal(t, "tenant-42", r.MetadataUserID)
			require.Equal(t, "mock-key", r.Header.Get("X-Api-Key"), "the server's key: -forward-key is off")
		}
	})

	t.Run("max_tokens streamed, input tokens at message_start", func(t *testing.T) {
		api.SetReply(claudepooltest.Text("one two three four five six seven eight nine ten"))
		const text = "max tokens question"
		resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, true, map[string]any{"max_tokens": 3}, text))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		events := readEvents(t, resp)
		names := eventNames(events)
		require.Equal(t, []string{"message_start", "content_block_start", "ping"}, names[:3])
		require.Equal(t, []string{"content_block_stop", "message_delta", "message_stop"}, names[len(names)-3:])

		start := events[0].data["message"].(map[string]any)
		input := start["usage"].(map[string]any)["input_tokens"].(float64)
		require.Positive(t, input, "the input tokens the API reported as it began")
		var deltas strings.Builder
		for _, ev := range events {
			if ev.name == "content_block_delta" {
				deltas.WriteString(ev.data["delta"].(map[string]any)["text"].(string))
			}
		}
		require.Equal(t, "one two thr", deltas.String(), "the mock cuts at 4*max_tokens-1 characters")
		delta := events[len(events)-2].data["delta"].(map[string]any)
		require.Equal(t, "max_tokens", delta["stop_reason"])
		require.Nil(t, delta["stop_sequence"])

		reqs := chatRequestsFor(api, text)
		require.NotEmpty(t, reqs)
		require.Equal(t, 3, reqs[0].MaxTokens)
	})

	t.Run("refusal", func(t *testing.T) {
		api.SetReply(func(claudepooltest.Request) claudepooltest.Reply {
			return claudepooltest.Reply{Text: "I can't", StopReason: claudepooltest.StopRefusal}
		})
		resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, nil, "refusal question"))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var m message
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		require.Equal(t, "refusal", *m.StopReason)
		require.Nil(t, m.StopSequence)
	})

	t.Run("API errors as the API sent them", func(t *testing.T) {
		// The message names a URL, as the API's messages may: it is the
		// API's, not the CLI's paraphrase, and reaches the client whole.
		const msg = "max_tokens: 300 > 200, the maximum for this model; see https://docs.example.com/models"
		for _, tt := range []struct {
			fail   claudepooltest.Failure
			status int
			kind   string
		}{
			{claudepooltest.FailBadRequest, 400, "invalid_request_error"},
			{claudepooltest.FailRateLimit, 429, "rate_limit_error"},
			{claudepooltest.FailServer, 500, "api_error"},
		} {
			api.SetReply(func(r claudepooltest.Request) claudepooltest.Reply {
				if r.Kind != claudepooltest.KindChat {
					return claudepooltest.Echo(r)
				}
				return claudepooltest.Reply{Fail: tt.fail, ErrorMessage: msg}
			})
			for _, stream := range []bool{false, true} {
				resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, stream, nil, "error question"))
				require.Equal(t, tt.status, resp.StatusCode, "%v stream %v", tt.fail, stream)
				e := apiErrorBody(t, resp.Body)
				require.Equal(t, tt.kind, e.Error.Type)
				require.Equal(t, msg, e.Error.Message)
				require.Equal(t, resp.Header.Get("Request-Id"), e.RequestID, "the server's request id")
			}
		}
		require.Contains(t, ts.logs.String(), "api_request_id=req_mock", "the API's request id is in the log")
	})

	t.Run("forward key", func(t *testing.T) {
		api.SetReply(claudepooltest.Echo)
		for _, tt := range []struct{ header, value, key, text string }{
			{"X-Api-Key", "sk-tenant-a", "sk-tenant-a", "tenant a"},
			{"Authorization", "Bearer sk-tenant-b", "sk-tenant-b", "tenant b"},
		} {
			resp := fwd.postToWith(t, "/v1/messages", messagesBody(t, false, nil, tt.text), tt.header, tt.value)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			var m message
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
			require.Equal(t, claudepooltest.EchoPrefix+tt.text, m.Content[0].Text)
			reqs := chatRequestsFor(api, tt.text)
			require.NotEmpty(t, reqs)
			for _, r := range reqs {
				require.Equal(t, tt.key, r.Header.Get("X-Api-Key"), "the client's key went upstream")
				require.Empty(t, r.Header.Get("Authorization"))
			}
		}
		resp := ts.postToWith(t, "/v1/messages", messagesBody(t, false, nil, "tenant c"), "X-Api-Key", "sk-tenant-c")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		reqs := chatRequestsFor(api, "tenant c")
		require.NotEmpty(t, reqs)
		for _, r := range reqs {
			require.Equal(t, "mock-key", r.Header.Get("X-Api-Key"), "without -forward-key the client's key is ignored")
		}
		require.NotContains(t, fwd.logs.String()+ts.logs.String(), "sk-tenant", "keys stay out of the log")
	})

	t.Run("forwarded keys refused keep the server ready", func(t *testing.T) {
		api.SetReply(func(r claudepooltest.Request) claudepooltest.Reply {
			if r.Header.Get("X-Api-Key") == "sk-revoked" || strings.Contains(r.LastUserText(), "server key revoked") {
				return claudepooltest.Reply{Fail: claudepooltest.FailUnauthorized}
			}
			return claudepooltest.Echo(r)
		})
		for range authFailuresUnready {
			resp := fwd.postToWith(t, "/v1/messages", messagesBody(t, false, nil, "revoked"), "X-Api-Key", "sk-revoked")
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			e := apiErrorBody(t, resp.Body)
			require.Equal(t, "authentication_error", e.Error.Type)
		}
		// The pool does not count refusals of a chat's own key.
		require.Zero(t, pool.Stats().Health.ConsecutiveAuthFailures)
		resp, body := fwd.get(t, "/readyz")
		require.Equal(t, http.StatusOK, resp.StatusCode, "a tenant's revoked key says nothing of the server's: %s", body)
		fwd.api.bgMu.Lock()
		checked := !fwd.api.lastCheck.IsZero()
		fwd.api.bgMu.Unlock()
		require.False(t, checked, "no API check of the server's key")

		// The same refusals, were they of the server's key, make it unready.
		for range authFailuresUnready {
			resp := ts.postToWith(t, "/v1/messages", messagesBody(t, false, nil, "server key revoked"), "X-Api-Key", "ignored")
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		}
		require.GreaterOrEqual(t, pool.Stats().Health.ConsecutiveAuthFailures, int64(authFailuresUnready))
		resp, body = ts.get(t, "/readyz")
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, body)
	})
}
