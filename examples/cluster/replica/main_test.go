package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// fakeCLI is the fake claude, built once; fakecli.Main also checks for
// leaked goroutines (goleak) after the tests.
var fakeCLI string

func TestMain(m *testing.M) { fakecli.Main(m, &fakeCLI) }

const testWait = 30 * time.Second

func newTestReplica(t *testing.T) (*httptest.Server, *claudepool.Pool) {
	t.Helper()
	pool, err := claudepool.NewPool(claudepool.Config{Command: fakeCLI, Size: 1, MaxProcs: 2,
		StopGrace: 200 * time.Millisecond, HoldConversations: time.Minute,
		Env: []string{fakecli.EnvReply + "=a reply"}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	require.NoError(t, pool.WaitReady(ctx))
	s := &server{name: "r9", pool: pool, chat: claudepool.NewAdapter(pool), timeout: testWait,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ts := httptest.NewServer(s.routes())
	t.Cleanup(func() {
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		require.NoError(t, pool.Close(ctx))
	})
	return ts, pool
}

func post(t *testing.T, ts *httptest.Server, key string, body any) (*http.Response, ChatReply) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, ts.URL+"/chat", bytes.NewReader(b))
	require.NoError(t, err)
	if key != "" {
		req.Header.Set(KeyHeader, key)
	}
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var rep ChatReply
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&rep))
	}
	return resp, rep
}

type msg struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type body struct {
	System   string `json:"system"`
	Messages []msg  `json:"messages"`
}

// A first turn without the header gets the key ConversationKey computes,
// in the response header and body; the second turn, sent with the history
// and the key, continues on the process that holds the first, and /stats
// counts it.
func TestReplicaKeyAndContinuedTurn(t *testing.T) {
	ts, _ := newTestReplica(t)
	b := body{System: "S", Messages: []msg{{"user", "hello"}}}
	want := claudepool.ConversationKey(claudepool.Request{System: "S",
		Messages: []claudepool.Message{{Role: claudepool.RoleUser, Content: "hello"}}})

	resp, rep := post(t, ts, "", b)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, want, resp.Header.Get(KeyHeader))
	require.Equal(t, "r9", resp.Header.Get("X-Replica"))
	require.Equal(t, want, rep.Key)
	require.Equal(t, "a reply", rep.Reply)
	require.False(t, rep.Continued)

	b.Messages = append(b.Messages, msg{"assistant", rep.Reply}, msg{"user", "and then?"})
	resp, rep2 := post(t, ts, want, b)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, want, resp.Header.Get(KeyHeader))
	require.True(t, rep2.Continued, "the second turn continues on its process")
	require.Equal(t, rep.PID, rep2.PID)

	r, err := ts.Client().Get(ts.URL + "/stats")
	require.NoError(t, err)
	defer r.Body.Close()
	var st struct {
		Conversations struct {
			Continued int64 `json:"continued"`
		} `json:"conversations"`
	}
	require.NoError(t, json.NewDecoder(r.Body).Decode(&st))
	require.EqualValues(t, 1, st.Conversations.Continued)
}

// A key the client sends is returned as sent, whatever the messages: the
// balancer routed on it.
func TestReplicaKeepsClientKey(t *testing.T) {
	ts, _ := newTestReplica(t)
	resp, rep := post(t, ts, "conversation-42", body{Messages: []msg{{"user", "hi"}}})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "conversation-42", resp.Header.Get(KeyHeader))
	require.Equal(t, "conversation-42", rep.Key)
}

// Malformed requests are the client's fault (4xx: the balancer does not
// retry them); /healthz answers while the replica serves.
func TestReplicaBadRequestsAndHealth(t *testing.T) {
	ts, _ := newTestReplica(t)
	resp, _ := post(t, ts, "", body{Messages: []msg{{"assistant", "no user message"}}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	r, err := ts.Client().Post(ts.URL+"/chat", "application/json", bytes.NewReader([]byte("{")))
	require.NoError(t, err)
	r.Body.Close()
	require.Equal(t, http.StatusBadRequest, r.StatusCode)
	r, err = ts.Client().Get(ts.URL + "/healthz")
	require.NoError(t, err)
	r.Body.Close()
	require.Equal(t, http.StatusOK, r.StatusCode)
}
