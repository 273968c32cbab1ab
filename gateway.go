package claudepool

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// gateway is the pool's loopback HTTP server between its processes and the
// Messages API. Every process is started with the gateway as its
// ANTHROPIC_BASE_URL and a token of its own as its API key; the gateway
// knows from the token which process, and so which chat, a call belongs
// to, and forwards it upstream with the real credentials. On the way it
// applies the chat's API parameters, removes the CLI's note of the pool's
// /clear, answers the calls that need no API (model confirmations, a fresh
// process's priming, the CLI's own follow-ups after a reply ended) and
// reads the reply's stop reason, usage and timing for the chat.
type gateway struct {
	url      string        // http://127.0.0.1:PORT, the processes' base URL
	upstream *url.URL      // the API's base URL
	key      string        // the pool's upstream credential
	bearer   bool          // key goes as Authorization: Bearer, not X-Api-Key
	window   time.Duration // joins a streamed reply's deltas (coalesce.go); 0 off
	client   *http.Client
	proxy    *httputil.ReverseProxy
	srv      *http.Server
	log      *slog.Logger
	served   chan struct{} // closed when Serve has returned

	mu    sync.Mutex
	procs map[string]*gwProc // by token
	ids   int                // synthetic message ids given
}

// gwProc is the gateway's view of one process.
type gwProc struct {
	// cleared is set once the pool has reset the process: from then on
	// each of its conversations opens with the CLI's note of /clear.
	cleared bool
	turn    *apiTurn // the chat the process serves; nil between chats
}

// newGateway starts a gateway on 127.0.0.1 that forwards to upstream.
func newGateway(up *upstreamAPI, log *slog.Logger) (*gateway, error) {
	u, err := url.Parse(up.url)
	if err != nil {
		return nil, fmt.Errorf("claudepool: API URL %q: %w", up.url, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("claudepool: gateway: %w", err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64
	g := &gateway{
		url:      "http://" + ln.Addr().String(),
		upstream: u,
		key:      up.key,
		bearer:   up.bearer,
		window:   up.window,
		client:   &http.Client{Transport: transport},
		log:      log,
		served:   make(chan struct{}),
		procs:    make(map[string]*gwProc),
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(g.upstream)
			pr.Out.Host = g.upstream.Host
			g.authorize(pr.Out.Header, g.turnOf(pr.In))
		},
		Transport:     transport,
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: func(_ http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() == nil {
				log.Debug("claudepool: gateway: upstream request failed", "path", r.URL.Path, "err", err)
			}
			// As for a Messages call: a connection that fails, not a 502.
			panic(http.ErrAbortHandler)
		},
	}
	g.srv = &http.Server{
		Handler:           g,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(g.served)
		_ = g.srv.Serve(ln)
	}()
	return g, nil
}

// close stops the gateway. The pool calls it once its processes are gone.
func (g *gateway) close() {
	_ = g.srv.Close()
	<-g.served
	g.client.CloseIdleConnections()
}

// register makes a token for a process about to start.
func (g *gateway) register() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := "claudepool-" + hex.EncodeToString(b[:])
	g.mu.Lock()
	g.procs[token] = &gwProc{}
	g.mu.Unlock()
	return token
}

// forget drops a process that exited, or never started.
func (g *gateway) forget(token string) {
	g.mu.Lock()
	delete(g.procs, token)
	g.mu.Unlock()
}

// bind makes t the chat of the process with token.
func (g *gateway) bind(token string, t *apiTurn) {
	g.mu.Lock()
	if gp := g.procs[token]; gp != nil {
		gp.turn = t
	}
	g.mu.Unlock()
}

// unbind ends the process's chat t, if it is still bound.
func (g *gateway) unbind(token string, t *apiTurn) {
	g.mu.Lock()
	if gp := g.procs[token]; gp != nil && gp.turn == t {
		gp.turn = nil
	}
	g.mu.Unlock()
}

// cleared records that the pool reset the process's conversation.
func (g *gateway) cleared(token string) {
	g.mu.Lock()
	if gp := g.procs[token]; gp != nil {
		gp.cleared = true
	}
	g.mu.Unlock()
}

// lookup returns the process of a request's token, and its chat.
func (g *gateway) lookup(r *http.Request) (gp *gwProc, t *apiTurn, cleared bool) {
	token := r.Header.Get("X-Api-Key")
	if token == "" {
		token, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	gp = g.procs[token]
	if gp == nil {
		return nil, nil, false
	}
	return gp, gp.turn, gp.cleared
}

func (g *gateway) turnOf(r *http.Request) *apiTurn {
	_, t, _ := g.lookup(r)
	return t
}

// authorize puts the upstream credential of chat t (nil: the pool's) in h
// in place of the process's token.
func (g *gateway) authorize(h http.Header, t *apiTurn) {
	h.Del("X-Api-Key")
	h.Del("Authorization")
	key, bearer := g.key, g.bearer
	if t != nil && t.key != "" {
		key, bearer = t.key, false
	}
	switch {
	case key == "":
	case bearer:
		h.Set("Authorization", "Bearer "+key)
	default:
		h.Set("X-Api-Key", key)
	}
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	gp, t, cleared := g.lookup(r)
	if gp == nil {
		// Only the pool's processes hold tokens.
		writeAPIError(w, http.StatusUnauthorized, "authentication_error", "claudepool gateway: the request carries no token of this pool's processes")
		return
	}
	if r.Method == http.MethodPost && r.URL.Path == "/v1/messages" {
		g.messages(w, r, t, cleared)
		return
	}
	g.proxy.ServeHTTP(w, r)
}

// messages serves a POST /v1/messages.
func (g *gateway) messages(w http.ResponseWriter, r *http.Request, t *apiTurn, cleared bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // the process went away
	}
	obj, err := parseObject(body)
	if err != nil {
		// Not a body the gateway understands: the API judges it.
		g.forward(w, r, body, t)
		return
	}
	switch {
	case isModelConfirmation(obj):
		// The CLI confirms a model it switches to with a one-token call;
		// a model the API does not know fails the chat's own call
		// instead, with the API's error.
		g.answer(w, obj, "Hi")
	case t == nil:
		// A call outside any chat (none is expected): the pool's.
		g.forward(w, r, body, nil)
	case t.prime:
		g.answer(w, obj, primeReply)
	case t.over():
		// The reply ended, yet the CLI asks again on its own (after
		// max_tokens or a refusal, with a user message of its own): the
		// turn ends with the API's reply.
		t.answeredFollowUp()
		g.answer(w, obj, "")
	default:
		if cleared {
			stripClearNote(obj)
		}
		t.apply(&obj)
		g.forward(w, r, obj.bytes(), t)
	}
}

// primeReply is the gateway's answer to a priming chat.
const primeReply = "ok"

// forward sends a Messages call upstream and streams the answer back to
// the process, reading the chat's usage, stop reason and errors from it.
func (g *gateway) forward(w http.ResponseWriter, r *http.Request, body []byte, t *apiTurn) {
	target := *g.upstream
	target.Path = strings.TrimSuffix(target.Path, "/") + r.URL.Path
	target.RawQuery = r.URL.RawQuery
	out, err := http.NewRequestWithContext(r.Context(), r.Method, target.String(), bytes.NewReader(body))
	if err != nil {
		writeAPIError(w, http.StatusInternalServerError, "api_error", "claudepool gateway: "+err.Error())
		return
	}
	copyHeader(out.Header, r.Header)
	out.Header.Del("Accept-Encoding") // the transport asks for gzip and decodes it
	g.authorize(out.Header, t)
	sent := time.Now()
	resp, err := g.client.Do(out)
	if err != nil {
		if r.Context().Err() == nil {
			g.log.Debug("claudepool: gateway: upstream request failed", "err", err)
		}
		// The process sees what it would have seen without the gateway:
		// a connection that fails.
		panic(http.ErrAbortHandler)
	}
	defer resp.Body.Close()
	if t != nil {
		t.sent(time.Since(sent))
	}
	copyHeader(w.Header(), resp.Header)
	w.Header().Del("Content-Length")
	w.WriteHeader(resp.StatusCode)
	if resp.StatusCode >= 400 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if t != nil {
			t.failed(parseAPIError(resp, data))
		}
		_, _ = w.Write(data)
		_, _ = io.Copy(w, resp.Body) // what the record leaves out
		return
	}
	var watch replyWatcher
	watch.turn = t
	watch.sse = strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	flusher, _ := w.(http.Flusher)
	if watch.sse && g.window > 0 {
		feed := func(ev []byte) {
			if t != nil {
				watch.feed(ev)
			}
		}
		_ = copyCoalesced(resp.Body, g.window, feed, func(ev sseEvent) error {
			if _, err := w.Write(ev); err != nil {
				return err
			}
			if flusher != nil {
				flusher.Flush()
			}
			return nil
		})
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if t != nil {
				watch.feed(buf[:n])
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil {
			break
		}
	}
	if t != nil {
		watch.end()
	}
}

// answer replies to a call as the API would, with text (none when "")
// and stop reason end_turn, in the form the call asked for.
func (g *gateway) answer(w http.ResponseWriter, obj jsonObject, text string) {
	g.mu.Lock()
	g.ids++
	id := fmt.Sprintf("msg_claudepool_%06d", g.ids)
	g.mu.Unlock()
	model := obj.get("model")
	if model == nil {
		model = json.RawMessage(`""`)
	}
	content := "[]"
	if text != "" {
		content = `[{"type":"text","text":` + string(mustMarshal(text)) + `}]`
	}
	var stream bool
	_ = json.Unmarshal(obj.get("stream"), &stream)
	if !stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%q,"type":"message","role":"assistant","model":%s,"content":%s,"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}`, id, model, content)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	var b bytes.Buffer
	event := func(name, data string) { fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", name, data) }
	event("message_start", fmt.Sprintf(`{"type":"message_start","message":{"id":%q,"type":"message","role":"assistant","model":%s,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}`, id, model))
	if text != "" {
		event("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
		event("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":`+string(mustMarshal(text))+`}}`)
		event("content_block_stop", `{"type":"content_block_stop","index":0}`)
	}
	event("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":0}}`)
	event("message_stop", `{"type":"message_stop"}`)
	_, _ = w.Write(b.Bytes())
}

// isModelConfirmation reports the CLI's confirmation of a model: max_tokens 1
// and the single user message "Hi". A chat never looks like it: the CLI
// asks its own max_tokens (32000 or more) for every chat.
func isModelConfirmation(obj jsonObject) bool {
	if string(obj.get("max_tokens")) != "1" {
		return false
	}
	var msgs []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(obj.get("messages"), &msgs) != nil || len(msgs) != 1 || msgs[0].Role != "user" {
		return false
	}
	var s string
	if json.Unmarshal(msgs[0].Content, &s) == nil {
		return s == "Hi"
	}
	var blocks []struct{ Type, Text string }
	return json.Unmarshal(msgs[0].Content, &blocks) == nil && len(blocks) == 1 && blocks[0].Type == "text" && blocks[0].Text == "Hi"
}

// The CLI's note of a /clear, which opens the first user message of each
// conversation after one: three text blocks.
var clearNote = [...]string{"<local-command-caveat>", "<command-name>/clear</command-name>", "<local-command-stdout></local-command-stdout>"}

// stripClearNote removes the CLI's note of the pool's /clear from the
// first user message of a conversation on a process the pool reset. Only
// those three leading blocks go, and only when all three are there: the
// caller's own text comes after them, in blocks of its own.
func stripClearNote(obj jsonObject) {
	var msgs []json.RawMessage
	if json.Unmarshal(obj.get("messages"), &msgs) != nil || len(msgs) == 0 {
		return
	}
	first, err := parseObject(msgs[0])
	if err != nil || string(first.get("role")) != `"user"` {
		return
	}
	var blocks []json.RawMessage
	if json.Unmarshal(first.get("content"), &blocks) != nil || len(blocks) <= len(clearNote) {
		return
	}
	for i, prefix := range clearNote {
		var b struct{ Type, Text string }
		bo, err := parseObject(blocks[i])
		if err != nil || len(bo) != 2 || json.Unmarshal(blocks[i], &b) != nil || b.Type != "text" || !strings.HasPrefix(b.Text, prefix) {
			return
		}
	}
	first.set("content", joinRaw(blocks[len(clearNote):]))
	msgs[0] = first.bytes()
	for i, m := range obj {
		if m.key == "messages" {
			obj[i].value = joinRaw(msgs)
		}
	}
}

// joinRaw writes a JSON array of raw values.
func joinRaw(items []json.RawMessage) json.RawMessage {
	b := []byte{'['}
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, it...)
	}
	return append(b, ']')
}

// copyHeader copies the end-to-end headers of src into dst.
func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		switch k {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length":
			continue
		}
		dst[k] = append([]string(nil), vs...)
	}
}

// writeAPIError answers an error in the Messages API's shape.
func writeAPIError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(mustMarshal(map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": msg}}))
}

// parseAPIError reads an error response of the API.
func parseAPIError(resp *http.Response, body []byte) *APIError {
	e := &APIError{Status: resp.StatusCode, RequestID: resp.Header.Get("Request-Id"), Body: body}
	var env struct {
		Error struct{ Type, Message string } `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && env.Error.Type != "" {
		e.Type, e.Message = env.Error.Type, env.Error.Message
	} else {
		e.Type, e.Message = "api_error", strings.TrimSpace(string(body))
	}
	return e
}

// replyWatcher reads a reply as it passes through the gateway: the
// message_start event (input tokens) and message_delta (stop reason) of a
// stream, or the whole body of a reply that is not streamed.
type replyWatcher struct {
	turn *apiTurn
	sse  bool
	line []byte // an SSE line not yet complete; the whole body otherwise
}

func (rw *replyWatcher) feed(p []byte) {
	if !rw.sse {
		if len(rw.line) < 4<<20 {
			rw.line = append(rw.line, p...)
		}
		return
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			rw.line = append(rw.line, p...)
			return
		}
		line := p[:i]
		if len(rw.line) > 0 {
			line = append(rw.line, line...)
			rw.line = rw.line[:0]
		}
		rw.sseLine(line)
		p = p[i+1:]
	}
}

// sseLine reads one data line of the stream; only the events that carry
// usage or the stop are decoded.
func (rw *replyWatcher) sseLine(line []byte) {
	data, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r"), []byte("data:"))
	if !ok {
		return
	}
	data = bytes.TrimSpace(data)
	switch {
	case bytes.Contains(data, []byte(`"message_start"`)):
		var ev struct {
			Type    string `json:"type"`
			Message struct {
				Usage apiUsage `json:"usage"`
			} `json:"message"`
		}
		if json.Unmarshal(data, &ev) == nil && ev.Type == "message_start" {
			rw.turn.started(ev.Message.Usage.usage())
		}
	case bytes.Contains(data, []byte(`"message_delta"`)):
		var ev struct {
			Type  string `json:"type"`
			Delta struct {
				StopReason   *string `json:"stop_reason"`
				StopSequence *string `json:"stop_sequence"`
			} `json:"delta"`
		}
		if json.Unmarshal(data, &ev) == nil && ev.Type == "message_delta" && ev.Delta.StopReason != nil {
			rw.turn.stopped(*ev.Delta.StopReason, deref(ev.Delta.StopSequence))
		}
	case bytes.Contains(data, []byte(`"error"`)):
		var ev struct {
			Type  string `json:"type"`
			Error struct{ Type, Message string }
		}
		if json.Unmarshal(data, &ev) == nil && ev.Type == "error" {
			rw.turn.failed(&APIError{Type: ev.Error.Type, Message: ev.Error.Message, Body: append([]byte(nil), data...)})
		}
	}
}

// end reads a reply that was not streamed, once whole.
func (rw *replyWatcher) end() {
	if rw.sse {
		return
	}
	var m struct {
		StopReason   *string  `json:"stop_reason"`
		StopSequence *string  `json:"stop_sequence"`
		Usage        apiUsage `json:"usage"`
	}
	if json.Unmarshal(rw.line, &m) == nil {
		rw.turn.started(m.Usage.usage())
		if m.StopReason != nil {
			rw.turn.stopped(*m.StopReason, deref(m.StopSequence))
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// apiUsage is the usage object of the Messages API.
type apiUsage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
}

func (u apiUsage) usage() Usage {
	return Usage(u)
}

// upstreamAPI is where the gateway forwards, with which credential.
type upstreamAPI struct {
	url    string
	key    string
	bearer bool
	// window joins a streamed reply's deltas (coalesce.go); 0 passes
	// them as they come.
	window time.Duration
}

// apiTurn is one chat as the gateway sees it: what to set on its API
// calls, and what the API answered.
type apiTurn struct {
	prime bool   // a fresh process's priming: the gateway answers
	key   string // the chat's own upstream key; "" for the pool's
	req   *Request
	// onStart is called with the input tokens when the API begins the
	// chat's first reply.
	onStart func(Usage)

	mu        sync.Mutex
	calls     int           // calls forwarded upstream
	firstByte time.Duration // the API's time to first byte of the first call
	begun     bool          // onStart was called
	stop      string        // the stop reason of the last reply; "" until one ended
	stopSeq   string
	followUps int       // calls the gateway answered after the reply ended
	apiErr    *APIError // the last error the API answered
}

// newAPITurn is the gateway's record of the chat r, with its own copy of
// r's API parameters.
func newAPITurn(r *Request) *apiTurn {
	c := &Request{MaxTokens: r.MaxTokens, Temperature: clonePtr(r.Temperature), TopP: clonePtr(r.TopP),
		TopK: clonePtr(r.TopK), StopSequences: slices.Clone(r.StopSequences), UserID: r.UserID,
		APIFields: maps.Clone(r.APIFields), Thinking: clonePtr(r.Thinking), OutputSchema: slices.Clone(r.OutputSchema),
		GoTools: slices.Clone(r.GoTools), ToolChoice: r.ToolChoice}
	return &apiTurn{key: r.APIKey, req: c}
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// apply sets the chat's API parameters on a call's body.
func (t *apiTurn) apply(obj *jsonObject) {
	r := t.req
	if r == nil {
		return
	}
	if r.MaxTokens > 0 {
		obj.set("max_tokens", json.RawMessage(strconv.Itoa(r.MaxTokens)))
		var th struct {
			Type         string `json:"type"`
			BudgetTokens int    `json:"budget_tokens"`
		}
		if json.Unmarshal(obj.get("thinking"), &th) == nil && th.BudgetTokens >= r.MaxTokens {
			dropThinking(obj)
		}
	}
	if r.Temperature != nil || r.TopP != nil || r.TopK != nil {
		dropThinking(obj)
	}
	applyTools(obj, r)
	if th := r.Thinking; th != nil {
		setThinking(obj, th)
	}
	if r.OutputSchema != nil {
		setOutputConfig(obj, "format", json.RawMessage(`{"type":"json_schema","schema":`+string(r.OutputSchema)+`}`))
	}
	if r.Temperature != nil {
		obj.set("temperature", mustMarshal(*r.Temperature))
	}
	if r.TopP != nil {
		obj.set("top_p", mustMarshal(*r.TopP))
	}
	if r.TopK != nil {
		obj.set("top_k", mustMarshal(*r.TopK))
	}
	if len(r.StopSequences) > 0 {
		obj.set("stop_sequences", mustMarshal(r.StopSequences))
	}
	if r.UserID != "" {
		obj.set("metadata", mustMarshal(map[string]string{"user_id": r.UserID}))
	}
	for _, k := range slices.Sorted(maps.Keys(r.APIFields)) {
		obj.set(k, r.APIFields[k])
	}
}

// setThinking sets a chat's extended thinking on a call, keeping what
// else the CLI's thinking object says (its display setting).
func setThinking(obj *jsonObject, th *Thinking) {
	if th.Type == ThinkingDisabled {
		dropThinking(obj)
	} else {
		cur, err := parseObject(obj.get("thinking"))
		if err != nil {
			cur = nil
		}
		cur.del("budget_tokens")
		cur.set("type", mustMarshal(th.Type))
		if th.Type == ThinkingEnabled {
			cur.set("budget_tokens", mustMarshal(th.BudgetTokens))
		}
		obj.set("thinking", cur.bytes())
	}
	if th.Effort != "" {
		setOutputConfig(obj, "effort", mustMarshal(th.Effort))
	}
}

// setOutputConfig sets one member of the call's output_config, keeping
// the others (the CLI sends its effort there).
func setOutputConfig(obj *jsonObject, key string, value json.RawMessage) {
	oc, err := parseObject(obj.get("output_config"))
	if err != nil {
		oc = nil
	}
	oc.set(key, value)
	obj.set("output_config", oc.bytes())
}

// dropThinking removes the CLI's extended thinking from a call, and the
// context edits that only apply to it.
func dropThinking(obj *jsonObject) {
	obj.del("thinking")
	cm, err := parseObject(obj.get("context_management"))
	if err != nil {
		return
	}
	var edits []json.RawMessage
	if json.Unmarshal(cm.get("edits"), &edits) != nil {
		return
	}
	kept := edits[:0]
	for _, e := range edits {
		var ed struct{ Type string }
		if json.Unmarshal(e, &ed) == nil && strings.HasPrefix(ed.Type, "clear_thinking") {
			continue
		}
		kept = append(kept, e)
	}
	if len(kept) == 0 {
		obj.del("context_management")
		return
	}
	cm.set("edits", joinRaw(kept))
	obj.set("context_management", cm.bytes())
}

// over reports whether the chat's reply has ended: a call after that is
// the CLI's own follow-up. A reply that ends in tool_use (or pause_turn)
// goes on.
func (t *apiTurn) over() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stop != "" && t.stop != "tool_use" && t.stop != "pause_turn"
}

func (t *apiTurn) answeredFollowUp() {
	t.mu.Lock()
	t.followUps++
	t.mu.Unlock()
}

// sent records a call's answer headers after d.
func (t *apiTurn) sent(d time.Duration) {
	t.mu.Lock()
	t.calls++
	if t.calls == 1 {
		t.firstByte = d
	}
	t.mu.Unlock()
}

func (t *apiTurn) started(u Usage) {
	t.mu.Lock()
	first := !t.begun
	t.begun = true
	t.mu.Unlock()
	if first && t.onStart != nil {
		t.onStart(u)
	}
}

func (t *apiTurn) stopped(reason, seq string) {
	t.mu.Lock()
	t.stop, t.stopSeq = reason, seq
	t.mu.Unlock()
}

func (t *apiTurn) failed(e *APIError) {
	t.mu.Lock()
	t.apiErr = e
	t.mu.Unlock()
}

// outcome is what the gateway saw of the chat.
type turnOutcome struct {
	calls     int
	firstByte time.Duration
	stop      string
	stopSeq   string
	followUps int
	apiErr    *APIError
}

func (t *apiTurn) outcome() turnOutcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	return turnOutcome{calls: t.calls, firstByte: t.firstByte, stop: t.stop, stopSeq: t.stopSeq, followUps: t.followUps, apiErr: t.apiErr}
}
