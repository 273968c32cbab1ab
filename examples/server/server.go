package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claudepool/claudepool"
)

// Defaults of a server's limits.
const (
	// defaultMaxBody is the API's own limit on a request's size: images
	// and PDFs come base64-encoded in the body.
	defaultMaxBody     = claudepool.MaxRequestBytes
	defaultChatTimeout = 5 * time.Minute
	defaultHeartbeat   = 15 * time.Second
	defaultWriteGrace  = 5 * time.Second
)

// server answers the HTTP API with processes from one pool.
type server struct {
	pool    *claudepool.Pool
	adapter *claudepool.Adapter
	mux     *http.ServeMux
	log     *slog.Logger // one line per request, one per chat

	maxBody     int64         // largest request body accepted
	chatTimeout time.Duration // bounds one chat, stalled API streams included
	heartbeat   time.Duration // between SSE heartbeats while a reply is quiet

	// scrubber removes the upstream's addresses from the errors clients
	// see (upstreamError).
	scrubber *scrubber
	// forwardKey sends each chat's API calls with the client's own key
	// (x-api-key or Authorization: Bearer) instead of the server's.
	forwardKey bool
	// tools are the pool's GoTools, answered by the clients (-tools);
	// nil for none. A chat offers those its request lists, none by
	// default.
	tools *toolSet
	// clientKeys are the keys clients must send (-client-keys); nil
	// takes every request.
	clientKeys *keySet
	// cors lets browsers on some origins call the server
	// (-cors-origins); nil for none.
	cors *corsPolicy
	// models is what GET /v1/models lists: the pool's model and
	// Config.Models.
	models *modelCatalog
	// upstream is the API the pool's gateway forwards to, with the
	// server's key, where count_tokens goes; nil without a gateway.
	upstream     *upstreamAPI
	upstreamHTTP *http.Client
	// writeGrace is how long after a chat's timeout its reply may still
	// be written: enough for the final error event, and a client that
	// stopped reading is cut then.
	writeGrace time.Duration

	draining atomic.Bool // set when the drain starts: /readyz answers 503

	// Background API checks while authentication fails (recheckAPI).
	bgCtx     context.Context
	bgCancel  context.CancelFunc
	bg        sync.WaitGroup
	bgMu      sync.Mutex
	checking  bool        // a check runs
	lastCheck time.Time   // when the last one started
	onRecheck func(error) // tests: called when a check ended
}

// newServer returns the HTTP handler of the example. It does not own pool:
// the caller closes it after the server has stopped.
func newServer(pool *claudepool.Pool) *server {
	s := &server{
		pool:        pool,
		adapter:     claudepool.NewAdapter(pool),
		mux:         http.NewServeMux(),
		log:         slog.New(slog.DiscardHandler),
		maxBody:     defaultMaxBody,
		chatTimeout: defaultChatTimeout,
		heartbeat:   defaultHeartbeat,
		scrubber:    newScrubber(),
		writeGrace:  defaultWriteGrace,
	}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	transport := http.DefaultTransport.(*http.Transport).Clone()
	s.upstreamHTTP = &http.Client{Transport: transport}
	s.mux.HandleFunc("POST /chat", func(w http.ResponseWriter, r *http.Request) { s.serveChat(w, r, chatFormat{}) })
	s.mux.HandleFunc("POST /v1/messages", anthropic(func(w http.ResponseWriter, r *http.Request) {
		version, _ := apiVersion(r)
		s.serveChat(w, r, messagesFormat{tools: s.tools, version: version})
	}))
	s.mux.HandleFunc("POST /v1/messages/count_tokens", anthropic(s.countTokens))
	// OpenAI clients send no anthropic-version.
	s.mux.HandleFunc("POST /v1/chat/completions", s.chatCompletions)
	s.mux.HandleFunc("GET /v1/models", anthropic(s.listModels))
	s.mux.HandleFunc("GET /v1/models/{id}", anthropic(s.getModel))
	s.mux.HandleFunc("GET /metrics", s.metrics)
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("/", s.unrouted) // every other path and method: 404 or 405
	return s
}

// ServeHTTP gives each request an id and logs it once it is answered.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A chat leaves a write deadline on its connection (serveChat): the
	// next request on a keep-alive connection starts without it. Recent
	// net/http clears it after each handler too; go.mod allows older.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	withAccessLog(s.log, http.HandlerFunc(s.route)).ServeHTTP(w, r)
}

// format is the wire format of a chat endpoint: POST /chat's own, or the
// Messages API's. serveChat runs the chat; the format only parses and
// renders.
type format interface {
	// parse decodes a request body. An error is the client's: a 400.
	parse(body []byte) (call, error)
	// writeError answers with e before anything else was written.
	writeError(w http.ResponseWriter, r *http.Request, e apiError)
	// respond returns the renderer of one reply.
	respond(w http.ResponseWriter, r *http.Request, c call) reply
}

// call is a parsed chat request.
type call struct {
	req    claudepool.Request
	stream bool // reply as server-sent events
	// announce begins a streamed reply as soon as the API began its own,
	// with the input tokens it reported, rather than at the first text.
	announce bool
	// thinking says whether the reply shows the model's thinking.
	thinking thinkingView
}

// reply renders one reply. serveChat calls begin before the first piece
// of a streamed reply (or at the first heartbeat, or when the API began
// its reply if the call announces it, whichever comes first), then add
// for each piece, ping at each heartbeat after begin, and at the end
// either end, or fail if the turn failed after begin. A reply that is not
// streamed gets its pieces and end, or writeError.
type reply interface {
	// begin starts the reply. u is the input usage the API reported as it
	// began its reply, nil when not known (yet).
	begin(model string, u *claudepool.Usage)
	add(p piece)
	ping()
	end(res *claudepool.Result, model string, info claudepool.AcquireInfo, lat claudepool.StreamLatency)
	fail(e apiError)
	err() error // the first write error; serveChat then stops the chat
}

// pieceKind says what a piece of a reply is.
type pieceKind int

const (
	pieceText      pieceKind = iota // text of the answer
	pieceThinking                   // thinking, shown when the request asked for it
	pieceSignature                  // the signature that ends a thinking block
	pieceToolUse                    // a call of one of the server's tools begins: id and name
	pieceToolInput                  // a piece of the call's input, JSON text
)

// piece is a piece of a reply as it arrives: text, thinking, a thinking
// block's signature, or the start of a tool call or a piece of its input.
type piece struct {
	kind     pieceKind
	text     string
	id, name string // pieceToolUse
}

// apiError is an error as a client sees it: a status, an error type of the
// Messages API and a message that holds nothing from the CLI's stderr.
type apiError struct {
	status int
	kind   string // invalid_request_error, overloaded_error, api_error, ...
	msg    string
}

// Error types of the Messages API.
const (
	errInvalidRequest = "invalid_request_error"
	errAuthentication = "authentication_error"
	errPermission     = "permission_error"
	errNotFound       = "not_found_error"
	errTooLarge       = "request_too_large"
	errRateLimit      = "rate_limit_error"
	errAPI            = "api_error"
	errOverloaded     = "overloaded_error"
	errTimeout        = "timeout_error"
)

// statusClientClosed is logged, never sent, when the client went away.
const statusClientClosed = 499

func badRequest(msg string) apiError {
	return apiError{http.StatusBadRequest, errInvalidRequest, msg}
}

// classify maps an error of StreamChat or of a stream to what the client is
// told. Messages of the CLI's stderr, its command line and its environment
// stay in the server's log.
func (s *server) classify(ctx context.Context, err error) apiError {
	rid := requestID(ctx)
	internal := apiError{http.StatusInternalServerError, errAPI,
		"the Claude Code CLI failed to answer; the server's log has the details (request id " + rid + ")"}
	var re *claudepool.ResultError
	var ee *claudepool.ExitError
	switch {
	case errors.Is(err, claudepool.ErrInvalidRequest):
		// Validation messages quote the request, never the CLI.
		return badRequest(err.Error())
	case errors.Is(err, errNoStopSequences), errors.Is(err, errNoOutputFormat), errors.Is(err, errNoTools):
		return badRequest(err.Error())
	case errors.Is(err, errNoKeyForwarding):
		return apiError{http.StatusInternalServerError, errAPI, err.Error()}
	case isOverloaded(err):
		return apiError{529, errOverloaded, "the server is overloaded; retry later"}
	case errors.Is(err, claudepool.ErrClosed):
		return apiError{http.StatusServiceUnavailable, errOverloaded, "the server is shutting down; retry on another replica"}
	case errors.Is(err, context.DeadlineExceeded):
		return apiError{http.StatusGatewayTimeout, errTimeout, "the reply took longer than the server's limit of " + s.chatTimeout.String()}
	case errors.Is(err, context.Canceled):
		return apiError{statusClientClosed, errAPI, "request canceled"}
	case errors.As(err, &re):
		// The upstream API's error as the API sent it, when the pool's
		// gateway saw it; else as the CLI reported it, without the
		// upstream's address.
		if e, ok := verbatimError(re); ok {
			return e
		}
		if e, ok := s.upstreamError(re); ok {
			return e
		}
		return internal
	case errors.As(err, &ee):
		return internal
	}
	return internal
}

// kindOfStatus is the Messages API's error type for an HTTP status.
func kindOfStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return errInvalidRequest
	case http.StatusUnauthorized:
		return errAuthentication
	case http.StatusForbidden:
		return errPermission
	case http.StatusNotFound:
		return errNotFound
	case http.StatusRequestEntityTooLarge:
		return errTooLarge
	case http.StatusTooManyRequests:
		return errRateLimit
	case 529:
		return errOverloaded
	case http.StatusGatewayTimeout:
		return errTimeout
	}
	return errAPI
}

// serveChat is the handler of both chat endpoints: it reads and parses the
// body, starts the chat, and renders the reply in format f as it arrives.
//
// A streamed reply's status and first event are held back until its first
// text, its end or the first heartbeat (on /v1/messages, until the API
// began its reply, if that comes first), so that a chat that fails early
// (the API answered 401 or 529, the CLI crashed) gets a fitting status
// instead of a 200 and an error event.
func (s *server) serveChat(w http.ResponseWriter, r *http.Request, f format) {
	ctx := r.Context()
	body, bad := s.readBody(w, r)
	if bad != nil {
		f.writeError(w, r, *bad)
		return
	}
	// With -forward-key the client's key pays for its chat: a request
	// without one is refused, as the API refuses it.
	var key string
	if s.forwardKey {
		var e *apiError
		if key, e = clientKey(r); e != nil {
			f.writeError(w, r, *e)
			return
		}
	}
	c, err := f.parse(body)
	if err != nil {
		f.writeError(w, r, badRequest(err.Error()))
		return
	}
	c.req.APIKey = key
	if s.tools != nil && c.req.GoTools == nil {
		// The pool offers its tools to every chat that names none:
		// a request offers those it lists, as with the API.
		c.req.GoTools = []string{}
	}

	// The request's context ends when the client goes away: the stream then
	// interrupts the CLI, and Close below reaps it.
	ctx, cancel := context.WithTimeout(ctx, s.chatTimeout)
	defer cancel()
	// The server has no WriteTimeout (publicServer): this chat's timeout
	// bounds its writes instead, so that a client that stops reading
	// cannot hold the handler, and its connection, for ever.
	if d, ok := ctx.Deadline(); ok {
		_ = http.NewResponseController(w).SetWriteDeadline(d.Add(s.writeGrace))
	}
	stream, err := s.startChat(ctx, c.req)
	if err != nil {
		e := s.classify(ctx, err)
		s.log.Warn("chat not started", "request_id", requestID(ctx), "status", e.status, "err", err)
		f.writeError(w, r, e)
		return
	}
	defer stream.Close()

	// A goroutine reads the stream so that this one can send heartbeats.
	// It ends with the stream: at its end, or when ctx ends. What it sends
	// is a piece of the reply, or the start of the API's reply (start
	// set).
	type arrival struct {
		piece
		model string
		start *claudepool.Usage
	}
	arrivals := make(chan arrival)
	var model string // written by the reader, read after arrivals is closed
	go func() {
		defer close(arrivals)
		rr := replyReader{view: c.thinking, tools: s.tools}
		send := func(a arrival) {
			select {
			case arrivals <- a:
			case <-ctx.Done():
			}
		}
		for stream.Next() {
			ev := stream.Event()
			if m := eventModel(ev); m != "" && model == "" {
				model = m
			}
			if ev.Type == claudepool.EventMessageStart && ev.Usage != nil {
				u := *ev.Usage
				send(arrival{model: model, start: &u})
			}
			for _, p := range rr.pieces(ev) {
				send(arrival{piece: p, model: model})
			}
		}
	}()

	out := f.respond(w, r, c)
	begun := false
	begin := func(model string, u *claudepool.Usage) {
		if !begun {
			begun = true
			out.begin(orDefault(model, c.req.Model), u)
		}
	}
	tick := time.NewTicker(s.heartbeat)
	defer tick.Stop()
	for open := true; open; {
		select {
		case a, ok := <-arrivals:
			if !ok {
				open = false
				break
			}
			if a.start != nil {
				if c.stream && c.announce {
					begin(a.model, a.start)
				}
				break
			}
			if c.stream {
				begin(a.model, nil)
			}
			out.add(a.piece)
		case <-tick.C:
			if c.stream {
				if begun {
					out.ping()
				} else {
					begin("", nil) // the request's model: the reader's is not known here
				}
			}
		}
		if out.err() != nil {
			cancel() // the client is gone: stop the CLI
		}
	}

	res, err := stream.Result(), stream.Err()
	info, lat := stream.Acquire(), stream.Latency()
	logErr(s.log, ctx, "chat", err, "warm", info.Warm, "pid", info.PID, "acquire", info.Wait,
		"first_text", lat.FirstText, "result", lat.Result)
	if err == nil && res != nil {
		if c.stream {
			begin(model, nil)
		}
		out.end(res, orDefault(model, c.req.Model), info, lat)
		return
	}
	if err == nil {
		err = errors.New("stream ended without a result")
	}
	e := s.classify(ctx, err)
	if e.status == statusClientClosed {
		return
	}
	if begun {
		out.fail(e)
	} else {
		f.writeError(w, r, e)
	}
}

// readBody reads a request's body, at most s.maxBody bytes, or returns
// the error to answer: 413 for a larger body, 408 when the server's read
// timeout passed, else 400.
func (s *server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err == nil {
		return body, nil
	}
	e := badRequest("malformed request: " + err.Error())
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		e = apiError{http.StatusRequestEntityTooLarge, errTooLarge,
			fmt.Sprintf("malformed request: body larger than %d bytes", mbe.Limit)}
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		// The server's read timeout (-read-timeout) passed: the
		// connection is closed after this answer, which the client
		// likely never reads.
		e = apiError{http.StatusRequestTimeout, errInvalidRequest, "the request was not received within the server's read timeout"}
	}
	return nil, &e
}

// logErr logs one line about a chat, with the whole error (stderr included)
// for the operator.
func logErr(log *slog.Logger, ctx context.Context, msg string, err error, attrs ...any) {
	attrs = append([]any{"request_id", requestID(ctx)}, attrs...)
	level := slog.LevelInfo
	if err != nil && !errors.Is(err, context.Canceled) {
		level = slog.LevelWarn
		attrs = append(attrs, "err", err)
		var ee *claudepool.ExitError
		if errors.As(err, &ee) && ee.Stderr != "" {
			attrs = append(attrs, "stderr", ee.Stderr)
		}
		var ae *claudepool.APIError
		if errors.As(err, &ae) && ae.RequestID != "" {
			// The API's id of the failed call, for its support: the
			// client gets the server's request id instead.
			attrs = append(attrs, "api_request_id", ae.RequestID)
		}
	} else if err != nil {
		attrs = append(attrs, "err", err)
	}
	log.Log(ctx, level, msg, attrs...)
}

func orDefault(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// eventModel returns the model an event names, if any.
func eventModel(ev claudepool.Event) string {
	switch {
	case ev.Init != nil:
		return ev.Init.Model
	case ev.Message != nil && ev.Type == claudepool.EventAssistant:
		return ev.Message.Model
	}
	return ""
}

func (s *server) stats(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.pool.Stats())
}

// sseWriter writes server-sent events and flushes each.
type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func newSSE(w http.ResponseWriter) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w)}
}

// open sends the headers of an event stream.
func (e *sseWriter) open() {
	h := e.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: pass events on as they come
	e.w.WriteHeader(http.StatusOK)
	e.flush()
}

// event sends one event whose data is data as one line of JSON.
func (e *sseWriter) event(name string, data any) {
	if e.err != nil {
		return
	}
	b, err := marshal(data)
	if err != nil {
		e.err = err
		return
	}
	if _, e.err = fmt.Fprintf(e.w, "event: %s\ndata: %s\n\n", name, b); e.err == nil {
		e.flush()
	}
}

// comment sends an SSE comment, which clients ignore: a heartbeat.
func (e *sseWriter) comment(text string) {
	if e.err != nil {
		return
	}
	if _, e.err = fmt.Fprintf(e.w, ": %s\n\n", text); e.err == nil {
		e.flush()
	}
}

func (e *sseWriter) flush() {
	if err := e.rc.Flush(); err != nil && e.err == nil {
		e.err = err
	}
}

// marshal encodes v as one line of JSON without HTML escaping.
func marshal(v any) ([]byte, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return []byte(strings.TrimSuffix(b.String(), "\n")), nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := marshal(v)
	_, _ = w.Write(append(b, '\n'))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
