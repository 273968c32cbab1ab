package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// TestReadyzAuthFailing: every chat is refused with 401, as with a revoked
// key. The server stays ready until authFailuresUnready refusals in a row,
// then /readyz answers 503 and starts an API check in the background,
// which fails too.
func TestReadyzAuthFailing(t *testing.T) {
	ts := newTestServer(t, fakecli.EnvMode+"="+fakecli.ModeErrorResult, fakecli.EnvAPIStatus+"=401")
	checked := make(chan error, 1)
	ts.api.onRecheck = func(err error) { checked <- err }
	for i := range authFailuresUnready {
		resp, body := ts.get(t, "/readyz")
		require.Equal(t, http.StatusOK, resp.StatusCode, "after %d refusals: %s", i, body)
		resp = ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, nil, "hello "+strconv.Itoa(i)))
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		e := apiErrorBody(t, resp.Body)
		require.Equal(t, "authentication_error", e.Error.Type)
	}
	require.EqualValues(t, authFailuresUnready, ts.pool.Stats().Health.ConsecutiveAuthFailures)
	resp, body := ts.get(t, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "API authentication failing\n", body)

	select {
	case err := <-checked:
		var re *claudepool.ResultError
		require.ErrorAs(t, err, &re)
		require.Equal(t, 401, re.APIErrorStatus)
	case <-time.After(testWait):
		t.Fatal("no API check after /readyz found authentication failing")
	}
	resp, body = ts.get(t, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, body)
	// A check ran less than recheckEvery ago: the probe starts none.
	ts.api.bgMu.Lock()
	checking := ts.api.checking
	ts.api.bgMu.Unlock()
	require.False(t, checking)
}

// TestOverloadedShedsLoad: with the only process busy and a wait bound of
// a millisecond, a second chat is shed: a 529 overloaded_error on
// /v1/messages, a 503 with Retry-After on /chat.
func TestOverloadedShedsLoad(t *testing.T) {
	ts := newTestServerConfig(t, func(c *claudepool.Config) {
		c.MaxProcs = 1
		c.MaxWait = time.Millisecond
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	busy := ts.post(t, ctx, chatBody("x "+fakecli.Marker(fakecli.ModeHangMid)))
	require.Equal(t, http.StatusOK, busy.StatusCode)
	ev, ok := readEvent(bufio.NewScanner(busy.Body))
	require.True(t, ok)
	require.Equal(t, "delta", ev.name)

	resp := ts.postTo(t, context.Background(), "/v1/messages", messagesBody(t, false, nil, "hello"))
	require.Equal(t, 529, resp.StatusCode)
	e := apiErrorBody(t, resp.Body)
	require.Equal(t, "overloaded_error", e.Error.Type)

	resp = ts.post(t, context.Background(), chatBody("hello"))
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(b), `"type":"overloaded_error"`, "%s", b)
	require.EqualValues(t, 2, ts.pool.Stats().Overloaded)

	cancel()
}
