package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// fakeCLI is the path of the fake claude executable, built once.
var fakeCLI string

func TestMain(m *testing.M) { fakecli.Main(m, &fakeCLI) }

// testWait bounds every wait of a test.
const testWait = 20 * time.Second

// testServer is the example's handler over a pool of fake CLIs, served by
// httptest.
type testServer struct {
	*httptest.Server
	api  *server
	pool *claudepool.Pool
	rec  string        // where the fake records each process's stdin
	done chan struct{} // receives once each request's handler has returned
	logs *syncBuffer   // the server's log
}

func newTestServer(t *testing.T, env ...string) *testServer {
	t.Helper()
	return newTestServerConfig(t, nil, env...)
}

// newTestServerConfig is newTestServer with the pool's Config changed by
// configure.
func newTestServerConfig(t *testing.T, configure func(*claudepool.Config), env ...string) *testServer {
	t.Helper()
	rec := t.TempDir()
	cfg := claudepool.Config{
		Command:         fakeCLI,
		Size:            1,
		PartialMessages: true,
		StopGrace:       200 * time.Millisecond,
		Env:             append([]string{fakecli.EnvRecordDir + "=" + rec}, env...),
		// The fake calls no API: a gateway, which runs when the
		// environment holds an API key, would see nothing.
		NoGateway: true,
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

	ts := &testServer{api: newServer(pool), pool: pool, rec: rec, done: make(chan struct{}, 256), logs: &syncBuffer{}}
	ts.api.log = slog.New(slog.NewTextHandler(ts.logs, nil))
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { ts.done <- struct{}{} }()
		ts.api.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.api.stop) // runs before the pool's Close
	t.Cleanup(ts.Close)    // runs first
	return ts
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// post sends body to POST /chat.
func (ts *testServer) post(t *testing.T, ctx context.Context, body string) *http.Response {
	t.Helper()
	return ts.postTo(t, ctx, "/chat", body)
}

// postTo sends body to POST path.
func (ts *testServer) postTo(t *testing.T, ctx context.Context, path, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	setAPIVersion(req)
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// testAPIVersion is the anthropic-version of the tests' requests.
const testAPIVersion = version20230601

// setAPIVersion gives a request to a Messages API path the
// anthropic-version header the API requires.
func setAPIVersion(req *http.Request) {
	if strings.HasPrefix(req.URL.Path, "/v1/messages") || strings.HasPrefix(req.URL.Path, "/v1/models") {
		req.Header.Set("Anthropic-Version", testAPIVersion)
	}
}

// get returns the status and body of GET path.
func (ts *testServer) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	resp, err := ts.Client().Get(ts.URL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

// waitHandler waits until a request's handler has returned.
func (ts *testServer) waitHandler(t *testing.T) {
	t.Helper()
	select {
	case <-ts.done:
	case <-time.After(testWait):
		t.Fatalf("handler still running after %v", testWait)
	}
}

// pidWith returns the PID of the fake process whose stdin contained text.
func (ts *testServer) pidWith(t *testing.T, text string) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(ts.rec, "*.jsonl"))
	require.NoError(t, err)
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), text) {
			pid, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(f), ".jsonl"))
			require.NoError(t, err)
			return pid
		}
	}
	t.Fatalf("no process received %q", text)
	return 0
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name string
	data string
}

// readEvent reads the next event from sc; ok is false at the end.
func readEvent(sc *bufio.Scanner) (ev sseEvent, ok bool) {
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.name != "" || ev.data != "" {
				return ev, true
			}
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
	return ev, false
}

func chatBody(msgs ...string) string {
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	var m []msg
	for i, c := range msgs {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		m = append(m, msg{role, c})
	}
	b, _ := json.Marshal(map[string]any{"messages": m})
	return string(b)
}

func TestChatStreamsDeltasThenResult(t *testing.T) {
	ts := newTestServer(t, fakecli.EnvChunks+"=3", fakecli.EnvReply+"=one two three")
	resp := ts.post(t, context.Background(), chatBody("hello"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))

	var deltas []string
	var events []sseEvent
	sc := bufio.NewScanner(resp.Body)
	for ev, ok := readEvent(sc); ok; ev, ok = readEvent(sc) {
		events = append(events, ev)
		if ev.name == "delta" {
			var d struct{ Text string }
			require.NoError(t, json.Unmarshal([]byte(ev.data), &d))
			deltas = append(deltas, d.Text)
		}
	}
	require.Len(t, deltas, 3)
	require.Equal(t, "one two three", strings.Join(deltas, ""))
	require.Len(t, events, 4, "3 deltas and a result, got %v", events)
	last := events[len(events)-1]
	require.Equal(t, "result", last.name)
	var res resultEvent
	require.NoError(t, json.Unmarshal([]byte(last.data), &res))
	require.Equal(t, "one two three", res.Text)
	require.False(t, res.IsError)
	require.True(t, res.Warm)
	require.Positive(t, res.Usage.OutputTokens)
	require.Contains(t, last.data, `"usage":{"input_tokens":`)
}

func TestChatMultiTurnSendsHistory(t *testing.T) {
	ts := newTestServer(t)
	resp := ts.post(t, context.Background(), chatBody("first question", "first answer", "follow-up"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(b), "event: result")
	// The fake echoes what it received: the whole conversation.
	require.Contains(t, string(b), "first answer")
	require.Contains(t, string(b), "follow-up")
}

func TestChatUpstreamErrorPassedThrough(t *testing.T) {
	ts := newTestServer(t, noRetries)
	resp := ts.post(t, context.Background(), chatBody("x "+fakecli.Marker(fakecli.ModeErrorResult)))
	// The fake answers like the CLI after the API refused the key: 401.
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var e chatError
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	require.Equal(t, fakecli.DefaultErrorText, e.Error)
	require.Equal(t, "authentication_error", e.Type)
}

func TestChatCrashSendsErrorEvent(t *testing.T) {
	ts := newTestServer(t)
	resp := ts.post(t, context.Background(), chatBody("x "+fakecli.Marker(fakecli.ModeCrash)))
	sc := bufio.NewScanner(resp.Body)
	var last sseEvent
	for ev, ok := readEvent(sc); ok; ev, ok = readEvent(sc) {
		last = ev
	}
	require.Equal(t, "error", last.name)
	require.Contains(t, last.data, `"error":"`)
}

func TestChatBadRequests(t *testing.T) {
	ts := newTestServer(t)
	ts.api.maxBody = 1 << 10
	tests := []struct {
		name, body, want string
	}{
		{"malformed JSON", `{"messages":`, "malformed request"},
		{"not an object", `[]`, "malformed request"},
		{"empty body", ``, "malformed request"},
		{"no messages", `{"messages":[]}`, "no messages"},
		{"last message not the user's", chatBody("hi", "hello"), "must be the user's"},
		{"unknown role", `{"messages":[{"role":"system","content":"x"}]}`, "role"},
		{"empty message", `{"messages":[{"role":"user","content":" "}]}`, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.post(t, context.Background(), tt.body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var e struct{ Error string }
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
			require.Contains(t, e.Error, tt.want)
		})
	}
	t.Run("body too large", func(t *testing.T) {
		resp := ts.post(t, context.Background(), chatBody(strings.Repeat("x", 2<<10)))
		require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
		var e chatError
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
		require.Contains(t, e.Error, "larger than 1024 bytes")
	})
	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires, "a bad request took a process")
}

func TestStats(t *testing.T) {
	ts := newTestServer(t)
	resp := ts.post(t, context.Background(), chatBody("hello"))
	_, err := io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)

	resp, _ = ts.get(t, "/stats")
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "/stats is on the admin listener only")
	rec := httptest.NewRecorder()
	adminHandler(ts.pool).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/stats", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	body := rec.Body.String()
	var st struct {
		WarmAcquires int64 `json:"warm_acquires"`
		ColdAcquires int64 `json:"cold_acquires"`
		Warm         struct {
			FirstText struct{ Count int64 } `json:"first_text"`
		} `json:"warm"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	require.EqualValues(t, 1, st.WarmAcquires)
	require.EqualValues(t, 0, st.ColdAcquires)
	require.EqualValues(t, 1, st.Warm.FirstText.Count)
}

func TestHealthz(t *testing.T) {
	ts := newTestServer(t)
	resp, body := ts.get(t, "/healthz")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "ok\n", body)
	ts.api.startDrain() // liveness does not change with the drain
	resp, body = ts.get(t, "/healthz")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "ok\n", body)
}

func TestReadyz(t *testing.T) {
	ts := newTestServer(t)
	resp, body := ts.get(t, "/readyz")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "ready\n", body)
	ts.api.startDrain()
	resp, body = ts.get(t, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "draining\n", body)
}

func TestMetrics(t *testing.T) {
	ts := newTestServer(t)
	resp := ts.post(t, context.Background(), chatBody("hello"))
	_, err := io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)

	resp, body := ts.get(t, "/metrics")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4"))
	for _, want := range []string{
		"# TYPE claudepool_acquires_total counter\n",
		"claudepool_acquires_total{kind=\"warm\"} 1\n",
		"claudepool_acquires_total{kind=\"cold\"} 0\n",
		"claudepool_outcomes_total{kind=\"ok\"} 1\n",
		"# TYPE claudepool_processes gauge\n",
		"claudepool_processes{state=\"busy\"} 0\n",
		"claudepool_spawn_failures_total 0\n",
		"claudepool_consecutive_auth_failures 0\n",
		"claudepool_tokens_total{type=\"output\"} ",
		"claudepool_retired_total{reason=\"spare\"} 0\n",
		"# TYPE claudepool_first_text_seconds histogram\n",
		"claudepool_first_text_seconds_bucket{kind=\"warm\",le=\"+Inf\"} 1\n",
		"claudepool_first_text_seconds_count{kind=\"warm\"} 1\n",
		"claudepool_first_text_seconds_sum{kind=\"warm\"} ",
		"claudepool_result_seconds_count{kind=\"cold\"} 0\n",
		"claudepool_spawn_to_ready_seconds_bucket{le=\"+Inf\"} ",
	} {
		require.Contains(t, body, want)
	}
	require.NotContains(t, body, "quantile")
	// Every line is a comment or a sample in the text format.
	sample := regexp.MustCompile(`^[a-z_]+(\{[a-z]+="[^"]*"(,[a-z]+="[^"]*")*\})? [0-9.e+-]+$`)
	for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		if !strings.HasPrefix(line, "# HELP ") && !strings.HasPrefix(line, "# TYPE ") {
			require.Regexp(t, sample, line)
		}
	}
}

func TestClientDisconnectReapsProcess(t *testing.T) {
	ts := newTestServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	marker := fakecli.Marker(fakecli.ModeHangMid)
	resp := ts.post(t, ctx, chatBody("x "+marker))
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// The reply is in the middle: the first delta came, the rest never will.
	ev, ok := readEvent(bufio.NewScanner(resp.Body))
	require.True(t, ok)
	require.Equal(t, "delta", ev.name)
	require.Equal(t, 1, ts.pool.Stats().Busy)
	pid := ts.pidWith(t, marker)

	cancel() // the client goes away
	ts.waitHandler(t)
	// The handler returned after Stream.Close, which reaps the process.
	require.True(t, errors.Is(syscall.Kill(pid, 0), syscall.ESRCH), "process %d still exists", pid)
	// The pool's counts are final by the time the reap is signalled.
	require.Zero(t, ts.pool.Stats().Busy)
}
