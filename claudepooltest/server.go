package claudepooltest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// DefaultAPITimeout is the API_TIMEOUT_MS that [Server.Env] sets when
// [Config.APITimeout] is zero: long enough for any scripted reply of a test,
// short enough that a request that is never answered fails the CLI turn
// within seconds.
const DefaultAPITimeout = 5 * time.Second

// Config configures a [Server]. The zero value echoes every request.
type Config struct {
	// Reply decides the answer to each Messages request. nil means [Echo].
	Reply ReplyFunc
	// Chunks is the number of text_delta events a streamed reply is split
	// into (and of thinking_delta events its thinking, and input_json_delta
	// events the input of each of its tool calls, is split into) when its
	// [Reply.Chunks] is 0. 0 means 1.
	Chunks int
	// ChunkDelay is the pause between chunks when a reply's
	// [Reply.ChunkDelay] is 0.
	ChunkDelay time.Duration
	// FirstByteDelay is the pause before the first byte of the response to
	// each POST /v1/messages, streamed or not, successful or an error (a
	// real API takes time to decide either), when the reply's [Reply.Delay]
	// is 0. HEAD /api/hello and count_tokens, cheap on the real API, are
	// answered at once. 0 means no pause.
	FirstByteDelay time.Duration
	// TokensPerSecond is the output pace of a streamed reply whose
	// [Reply.TokensPerSecond] is 0: its N output tokens (the estimate its
	// usage reports, 1 + characters/4, of the text after the request's
	// stops cut it, stop sequence included, plus that of [Reply.Thinking]
	// and of each of [Reply.ToolCalls]) take N/TokensPerSecond, counted
	// from the first byte to the end of the reply. The first delta goes
	// out at once; each later one (thinking, text or tool input) no
	// earlier than the share of that time that the characters before it,
	// of the thinking, the text and the tool inputs, make up, and the
	// last content_block_stop (with message_delta and message_stop right
	// after it) no earlier than all of it. A delta's [Reply.ChunkDelay]
	// pause comes first, so pacing only waits for what is left; after a
	// [Reply.Hold] the rest of the reply takes the rest of the time,
	// counted from the release. A paced reply with no chunk count from
	// Reply.Chunks or Config.Chunks is split into one delta per estimated
	// token of its text, of its thinking and of each tool input. 0 means
	// as fast as possible (no pacing); a non-streamed reply is never
	// paced.
	TokensPerSecond float64
	// MaxRetries, when positive, is the CLAUDE_CODE_MAX_RETRIES that
	// [Server.Env] sets. 0 (the default) sets none, so that the CLI (or
	// the pool that runs it, whose Config.MaxRetries sets its own) retries
	// as in production: a test does not hide the CLI's retries unless it
	// says so with NoRetries.
	MaxRetries int
	// NoRetries makes [Server.Env] set CLAUDE_CODE_MAX_RETRIES=0: the
	// CLI then gives up on the first failed request. It wins over
	// MaxRetries.
	NoRetries bool
	// APITimeout is the API_TIMEOUT_MS that [Server.Env] sets. 0 means
	// [DefaultAPITimeout].
	APITimeout time.Duration
}

// Server is a mock of the Anthropic Messages API listening on 127.0.0.1.
// Its methods are safe for concurrent use.
type Server struct {
	ts        *httptest.Server
	cfg       Config
	closing   chan struct{} // closed by Close to end open handlers
	closeOnce sync.Once

	mu       sync.Mutex // guards the fields below
	reply    ReplyFunc
	requests []Request
	changed  chan struct{} // closed and replaced whenever requests grows
	reqSeq   int           // last Request.Seq given
	msgSeq   int           // last message id number given
	toolSeq  int           // last tool_use id number given
}

// NewServer starts a server with the given configuration. It panics, as
// httptest does, when it cannot listen on 127.0.0.1. Call Close when done.
func NewServer(cfg Config) *Server {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("claudepooltest: listen on 127.0.0.1: %v", err))
	}
	s := &Server{
		cfg:     cfg,
		closing: make(chan struct{}),
		reply:   cfg.Reply,
		changed: make(chan struct{}),
	}
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.ts.Listener.Close()
	s.ts.Listener = l
	s.ts.Start()
	return s
}

// URL returns the server's base URL, e.g. "http://127.0.0.1:40123", for
// ANTHROPIC_BASE_URL.
func (s *Server) URL() string { return s.ts.URL }

// Client returns an HTTP client for the server whose idle connections are
// closed by Close.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// Env returns the KEY=VALUE environment variables that make a CLI use this
// server and keep failure paths short:
//
//   - ANTHROPIC_BASE_URL: the server's URL;
//   - ANTHROPIC_API_KEY: "mock-key" (the server accepts any key);
//   - CLAUDE_CODE_MAX_RETRIES: 0 with [Config.NoRetries], else
//     [Config.MaxRetries] when positive; absent otherwise, so that the
//     retry policy is that of production;
//   - API_TIMEOUT_MS: [Config.APITimeout], which bounds a request that is
//     never answered;
//   - DISABLE_AUTOUPDATER, DISABLE_TELEMETRY, DISABLE_ERROR_REPORTING and
//     CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC set to 1, so that the CLI
//     tries no other host.
//
// With these and NoRetries, Claude Code 2.1.330 ends a turn whose request
// fails with 401, 429, 500 or 529 within about 0.2 s (one request), with
// 400 as fast (it tries twice more itself, dropping beta features), and a
// turn whose request is never answered after APITimeout plus about 0.2 s.
// Without a retry setting, the CLI retries every status but 400 ten times
// over about three minutes. A reply that stalls
// after it has begun streaming is bounded by none of them: the CLI waits for
// its 5-minute stream idle limit (it honours CLAUDE_STREAM_IDLE_TIMEOUT_MS
// only above that), then repeats the request without streaming. Callers
// must bound such a turn themselves.
//
// The caller adds PATH and HOME.
func (s *Server) Env() []string {
	timeout := s.cfg.APITimeout
	if timeout <= 0 {
		timeout = DefaultAPITimeout
	}
	env := []string{
		"ANTHROPIC_BASE_URL=" + s.URL(),
		"ANTHROPIC_API_KEY=mock-key",
		"API_TIMEOUT_MS=" + strconv.FormatInt(timeout.Milliseconds(), 10),
		"DISABLE_AUTOUPDATER=1",
		"DISABLE_TELEMETRY=1",
		"DISABLE_ERROR_REPORTING=1",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
	}
	switch {
	case s.cfg.NoRetries:
		env = append(env, "CLAUDE_CODE_MAX_RETRIES=0")
	case s.cfg.MaxRetries > 0:
		env = append(env, "CLAUDE_CODE_MAX_RETRIES="+strconv.Itoa(s.cfg.MaxRetries))
	}
	return env
}

// Close ends requests that are still open (streaming, delayed or never
// answered), stops the server and waits for its handlers to return. It is
// safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.ts.Close()
	})
}

// SetReply replaces the [ReplyFunc] for requests that arrive from now on.
// nil means [Echo].
func (s *Server) SetReply(f ReplyFunc) {
	s.mu.Lock()
	s.reply = f
	s.mu.Unlock()
}

// Requests returns a copy of every request received so far, in order of
// arrival.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.filterLocked(nil)
}

// ChatRequests returns a copy of the requests of kind [KindChat] received so
// far: those that carry the user's conversation.
func (s *Server) ChatRequests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.filterLocked(isChat)
}

// Reset forgets the requests recorded so far.
func (s *Server) Reset() {
	s.mu.Lock()
	s.requests = nil
	s.mu.Unlock()
}

// WaitRequests waits until at least n requests have been recorded and
// returns a copy of all of them, or returns ctx's error.
func (s *Server) WaitRequests(ctx context.Context, n int) ([]Request, error) {
	return s.wait(ctx, n, nil)
}

// WaitChatRequests waits until at least n requests of kind [KindChat] have
// been recorded and returns a copy of them, or returns ctx's error.
func (s *Server) WaitChatRequests(ctx context.Context, n int) ([]Request, error) {
	return s.wait(ctx, n, isChat)
}

func isChat(r Request) bool { return r.Kind == KindChat }

func (s *Server) wait(ctx context.Context, n int, keep func(Request) bool) ([]Request, error) {
	for {
		s.mu.Lock()
		got := s.filterLocked(keep)
		changed := s.changed
		s.mu.Unlock()
		if len(got) >= n {
			return got, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("claudepooltest: waiting for %d requests, have %d: %w", n, len(got), ctx.Err())
		}
	}
}

func (s *Server) filterLocked(keep func(Request) bool) []Request {
	var out []Request
	for _, r := range s.requests {
		if keep == nil || keep(r) {
			out = append(out, r.clone())
		}
	}
	return out
}

// record stores r, numbering it, and wakes waiters. It returns the stored
// request's copy for the handler.
func (s *Server) record(r Request) Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqSeq++
	r.Seq = s.reqSeq
	s.requests = append(s.requests, r)
	close(s.changed)
	s.changed = make(chan struct{})
	return r.clone()
}

func (s *Server) replyFunc() ReplyFunc {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reply == nil {
		return Echo
	}
	return s.reply
}

func (s *Server) nextMessageID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgSeq++
	return fmt.Sprintf("msg_mock_%06d", s.msgSeq)
}

func (s *Server) nextToolUseID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.toolSeq++
	return fmt.Sprintf("toolu_mock_%06d", s.toolSeq)
}

func (s *Server) serveHTTP(w http.ResponseWriter, hr *http.Request) {
	r := Request{
		Time:   time.Now(),
		Method: hr.Method,
		Path:   hr.URL.Path,
		Query:  hr.URL.RawQuery,
		Header: hr.Header.Clone(),
	}
	r.Body, _ = io.ReadAll(hr.Body)
	fw := &firstByteWriter{ResponseWriter: w, s: s}
	switch {
	case hr.URL.Path == "/api/hello" && (hr.Method == http.MethodHead || hr.Method == http.MethodGet):
		r.Kind = KindHello
		fw.seq = s.record(r).Seq
		fw.WriteHeader(http.StatusOK)
	case hr.URL.Path == "/v1/messages/count_tokens" && hr.Method == http.MethodPost:
		r.Kind = KindCountTokens
		_, err := parseMessagesBody(&r)
		fw.seq = s.record(r).Seq
		if err != nil {
			writeError(fw, http.StatusBadRequest, "invalid_request_error", "claudepooltest: bad JSON body: "+err.Error())
			return
		}
		writeJSON(fw, http.StatusOK, map[string]int{"input_tokens": estimateTokens(r)})
	case hr.URL.Path == "/v1/messages" && hr.Method == http.MethodPost:
		hasTools, err := parseMessagesBody(&r)
		r.Kind = classify(r, hasTools)
		r = s.record(r)
		fw.seq = r.Seq
		if err != nil {
			if d := s.cfg.FirstByteDelay; d > 0 && !s.pause(hr, d) {
				abort()
			}
			writeError(fw, http.StatusBadRequest, "invalid_request_error", "claudepooltest: bad JSON body: "+err.Error())
			return
		}
		s.answer(fw, hr, r)
	default:
		r.Kind = KindOther
		fw.seq = s.record(r).Seq
		writeError(fw, http.StatusNotFound, "not_found_error", fmt.Sprintf("claudepooltest: no route for %s %s", hr.Method, hr.URL.Path))
	}
}

// answer replies to a Messages request as the ReplyFunc decides.
func (s *Server) answer(w http.ResponseWriter, hr *http.Request, r Request) {
	rep := s.replyFunc()(r)
	if rep.Delay == 0 {
		rep.Delay = s.cfg.FirstByteDelay
	}
	if rep.Delay > 0 && !s.pause(hr, rep.Delay) {
		abort()
	}
	switch rep.Fail {
	case FailNone:
	case FailHang:
		select {
		case <-hr.Context().Done():
		case <-s.closing:
		}
		abort()
	default:
		shape, ok := failures[rep.Fail]
		if !ok {
			shape = failures[FailServer]
		}
		msg := shape.message
		if rep.ErrorMessage != "" {
			msg = rep.ErrorMessage
		}
		writeError(w, shape.status, shape.errType, msg)
		return
	}
	calls, err := toolCalls(rep.ToolCalls)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "api_error", err.Error())
		return
	}
	rep.ToolCalls = calls
	e := end(rep, r)
	rep.Text = e.text
	for i := range e.calls {
		if e.calls[i].ID == "" {
			e.calls[i].ID = s.nextToolUseID()
		}
	}
	m := message{
		id:           s.nextMessageID(),
		model:        r.Model,
		inputTokens:  estimateTokens(r),
		outputTokens: e.tokens,
		stopReason:   e.reason,
		stopSequence: e.sequence,
		thinking:     rep.Thinking,
		calls:        e.calls,
	}
	if rep.Thinking != "" {
		m.outputTokens += outputTokens(rep.Thinking)
	}
	for _, c := range m.calls {
		m.outputTokens += callTokens(c)
	}
	if !r.Stream {
		writeJSON(w, http.StatusOK, m.full(rep.Text))
		return
	}
	if rep.TokensPerSecond == 0 {
		rep.TokensPerSecond = s.cfg.TokensPerSecond
	}
	if rep.Chunks == 0 {
		rep.Chunks = s.cfg.Chunks
	}
	// chunks returns the number of deltas of a block of the given text:
	// the chunk count, else when paced one per estimated token.
	chunks := func(tokens int) int {
		if rep.Chunks == 0 && rep.TokensPerSecond > 0 {
			return tokens
		}
		return rep.Chunks
	}
	inputs := make([][]string, len(m.calls))
	for i, c := range m.calls {
		inputs[i] = splitChunks(string(c.Input), chunks(outputTokens(string(c.Input))))
	}
	if rep.ChunkDelay == 0 {
		rep.ChunkDelay = s.cfg.ChunkDelay
	}
	thinking := splitChunks(rep.Thinking, chunks(outputTokens(rep.Thinking)))
	if !s.stream(w, hr, m, rep, thinking, splitChunks(rep.Text, chunks(e.tokens)), inputs) {
		abort()
	}
}

// firstByteWriter records in the server's record of request seq when the
// handler begins its response.
type firstByteWriter struct {
	http.ResponseWriter
	s       *Server
	seq     int
	started bool
}

func (w *firstByteWriter) begin() {
	if !w.started {
		w.started = true
		w.s.setFirstByte(w.seq, time.Now())
	}
}

func (w *firstByteWriter) WriteHeader(status int) {
	w.begin()
	w.ResponseWriter.WriteHeader(status)
}

func (w *firstByteWriter) Write(b []byte) (int, error) {
	w.begin()
	return w.ResponseWriter.Write(b)
}

func (w *firstByteWriter) Flush() {
	w.begin()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets [http.ResponseController] reach the underlying writer.
func (w *firstByteWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// setFirstByte sets the FirstByte of the recorded request seq, unless Reset
// has forgotten it.
func (s *Server) setFirstByte(seq int, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.requests) - 1; i >= 0; i-- {
		switch r := &s.requests[i]; {
		case r.Seq == seq:
			r.FirstByte = t
			return
		case r.Seq < seq:
			return
		}
	}
}

// pause waits for d, and reports false if the client went away or the
// server is closing first.
func (s *Server) pause(hr *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-hr.Context().Done():
		return false
	case <-s.closing:
		return false
	}
}

// abort ends the handler and drops the connection without a (complete)
// response; net/http does not log this panic.
func abort() { panic(http.ErrAbortHandler) }

// outputTokens returns the output token count the server reports for a
// reply of text, and paces it by.
func outputTokens(text string) int { return utf8.RuneCountInString(text)/4 + 1 }

// estimateTokens returns a rough token count for the text of r, the inputs
// of its tool calls and the contents of its tool results included.
func estimateTokens(r Request) int {
	n := 0
	for _, t := range r.System {
		n += len(t)
	}
	for _, m := range r.Messages {
		for _, t := range m.Texts {
			n += len(t)
		}
		for _, u := range m.ToolUses {
			n += len(u.Name) + len(u.Input)
		}
		for _, res := range m.ToolResults {
			n += len(res.Content)
		}
	}
	return n/4 + 1
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("claudepooltest: " + err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_mock")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeError answers with an Anthropic-shaped error body.
func writeError(w http.ResponseWriter, status int, errType, msg string) {
	writeJSON(w, status, map[string]any{
		"type":       "error",
		"error":      map[string]string{"type": errType, "message": msg},
		"request_id": "req_mock",
	})
}
