package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
)

// maxLine is the longest stdin line the fake accepts.
const maxLine = 100 << 20

// session is one stream-json process: it answers control requests at once
// and runs the turns asked for by user lines, one after another. A /clear
// line runs as a turn too: it resets the conversation in place.
type session struct {
	cfg       *config
	out       *output
	sigs      <-chan os.Signal
	sessionID string
	mcp       *mcp // the SDK MCP servers of --mcp-config

	// While the servers' initialize requests wait for their answers, the
	// lines other than control responses are held, then handled in order.
	holding  bool
	held     []string
	mcpReady bool // the handshake is over: turns may start
	toolSeq  int  // numbers tool_use ids

	// Changed by control requests; copied into each turn when it starts.
	model        string
	initialized  bool
	systemPrompt []string // from the first initialize
	appendPrompt *string  // from the first initialize

	queue []userInput // user lines waiting for the turn in flight
	// abortNext is set by an interrupt that came when the turn in flight
	// had already finished and a user line waited: the CLI read that line
	// first, so the interrupt is its turn's.
	abortNext  bool
	turns      int  // user turns started (a /clear is not one)
	lastFailed bool // the last result printed was an API error
	msgSeq     int  // numbers message ids

	stuckModel bool     // set_model changes nothing (ResetStuckModel)
	history    []string // user texts of the conversation since the last reset
	armedReset string   // reset mode armed by a ResetMarker for the next /clear
	ballast    [][]byte // kept by FAKE_GROW_BYTES
}

// userInput is the text of a user line, and whether the CLI may take it
// as typed at its prompt: a typed text that starts with "/" runs as a
// slash command, as on the real CLI (2.1.330); a line marked
// text_not_typed is always a message.
type userInput struct {
	text  string
	typed bool
}

// input is one stdin line, or the error that ended reading.
type input struct {
	text string
	err  error
}

func newSession(cfg *config, sigs <-chan os.Signal) *session {
	out := &output{f: os.Stdout}
	return &session{cfg: cfg, out: out, sigs: sigs, mcp: newMCP(out, cfg.sdkServers),
		sessionID: newUUID(), model: cfg.model}
}

// run serves stdin until the process should exit and returns the exit code.
func (s *session) run() int {
	lines := make(chan input, 1024)
	go s.read(lines)

	// Until the start-up delay has passed, lines are read (and recorded)
	// but not answered. Then the SDK MCP servers are connected, if any,
	// before anything else is answered.
	var in <-chan input
	var ready <-chan time.Time
	var initDone, mcpDone <-chan struct{}
	var resume chan struct{}
	begin := func() {
		in = lines
		if len(s.mcp.servers) == 0 || s.cfg.mode == fakecli.ModeNoReady {
			s.mcpReady = true
			return
		}
		i, d := make(chan struct{}), make(chan struct{})
		initDone, mcpDone, resume = i, d, make(chan struct{})
		s.holding = true
		go s.mcp.handshake(i, resume, d)
	}
	if s.cfg.startupDelay > 0 {
		ready = time.After(s.cfg.startupDelay)
	} else {
		begin()
	}

	var cur *turn
	var done <-chan struct{}
	eof := false
	// idleAtEOF reports whether stdin's end ends the process now.
	idleAtEOF := func() bool {
		return s.mcpReady && (cur == nil || cur.quitAtEOF)
	}
	startNext := func() {
		if cur != nil || len(s.queue) == 0 || !s.mcpReady {
			return
		}
		cur = s.newTurn(s.queue[0])
		s.queue = s.queue[1:]
		done = cur.done
		if s.abortNext {
			s.abortNext = false
			cur.abort()
		}
		go cur.run()
	}
	for {
		select {
		case <-ready:
			ready = nil
			begin()
		case <-initDone:
			// Every initialize is answered: answer what came meanwhile,
			// before the handshake goes on.
			initDone, s.holding = nil, false
			held := s.held
			s.held = nil
			for _, l := range held {
				if code, exit := s.handle(l, cur); exit {
					return code
				}
			}
			close(resume)
			startNext()
		case <-mcpDone:
			mcpDone, s.mcpReady = nil, true
			startNext()
			if eof && idleAtEOF() {
				return s.eofExit()
			}
		case l, ok := <-in:
			if !ok {
				eof, in = true, nil
				// No control response can come any more.
				s.mcp.closeAll()
				if idleAtEOF() {
					return s.eofExit()
				}
				continue
			}
			if l.err != nil {
				fmt.Fprintf(os.Stderr, "Error reading streaming input: %v\n", l.err)
				return 1
			}
			if code, exit := s.handle(l.text, cur); exit {
				return code
			}
			startNext()
		case <-done:
			if cur.ended {
				s.lastFailed = cur.failed
			}
			cur, done = nil, nil
			startNext()
			// Stdin may have ended while the turn before ran: the turn
			// started now may be one that EOF ends (a hung reset).
			if eof && idleAtEOF() {
				return s.eofExit()
			}
		case sig := <-s.sigs:
			if sig == syscall.SIGTERM {
				return 143
			}
			if cur != nil {
				cur.abort()
				<-cur.done
			}
			return 0
		}
	}
}

// eofExit is the exit code once stdin is closed and no turn is left: 0
// before any turn, else FAKE_EXIT_CODE, whose default is 1 when the last
// result was an API error and 0 otherwise.
func (s *session) eofExit() int {
	switch {
	case s.turns == 0:
		return 0
	case s.lastFailed:
		return s.cfg.exit(1)
	}
	return s.cfg.exit(0)
}

// read sends stdin lines to lines, recording each as it arrives, and closes
// lines at EOF.
func (s *session) read(lines chan<- input) {
	defer close(lines)
	var record *os.File
	if s.cfg.recordDir != "" {
		path := fmt.Sprintf("%s/%d.jsonl", s.cfg.recordDir, os.Getpid())
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			lines <- input{err: err}
			return
		}
		defer f.Close()
		record = f
	}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		text := sc.Text()
		if record != nil {
			_, _ = record.WriteString(text + "\n")
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		lines <- input{text: text}
	}
	if err := sc.Err(); err != nil {
		lines <- input{err: err}
	}
}

// message is the part of a stdin line the fake reads.
type message struct {
	Type      string `json:"type"`
	RequestID string `json:"request_id"`
	Request   struct {
		Subtype            string   `json:"subtype"`
		SystemPrompt       []string `json:"systemPrompt"`
		AppendSystemPrompt *string  `json:"appendSystemPrompt"`
		Model              string   `json:"model"`
	} `json:"request"`
	Message struct {
		Content json.RawMessage `json:"content"`
	} `json:"message"`
	TextNotTyped bool `json:"text_not_typed"`
	// Response is the body of a control_response: the answer to a
	// control request of the fake's.
	Response struct {
		Subtype   string          `json:"subtype"`
		RequestID string          `json:"request_id"`
		Response  json.RawMessage `json:"response"`
		Error     string          `json:"error"`
	} `json:"response"`
}

// handle acts on one stdin line: control requests are answered at once,
// user lines are queued. It reports whether the process must exit.
func (s *session) handle(line string, cur *turn) (code int, exit bool) {
	var m message
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		fmt.Fprintf(os.Stderr, "Error parsing streaming input line: %s\n", line)
		return 1, true
	}
	if s.cfg.mode == fakecli.ModeNoReady {
		return 0, false
	}
	if m.Type == "control_response" {
		r := m.Response
		s.mcp.deliver(r.RequestID, controlReply{ok: r.Subtype == "success", response: r.Response, err: r.Error})
		return 0, false
	}
	if s.holding {
		s.held = append(s.held, line)
		return 0, false
	}
	switch m.Type {
	case "control_request":
		s.control(m, cur)
	case "user":
		// The CLI initializes itself at its first user line, /clear
		// included, with its own prompt: an initialize after it changes
		// nothing (measured on 2.1.330).
		s.initialized = true
		s.queue = append(s.queue, userInput{userText(m.Message.Content), !m.TextNotTyped})
	}
	return 0, false
}

// control answers one control request.
func (s *session) control(m message, cur *turn) {
	var resp any
	switch m.Request.Subtype {
	case "mcp_status":
		resp = obj("mcpServers", s.mcp.status())
	case "get_settings":
		resp = obj()
	case "initialize":
		if s.cfg.mode == fakecli.ModeRejectInit {
			s.out.line(obj("type", "control_response", "response", obj(
				"subtype", "error", "request_id", m.RequestID, "error", fakecli.RejectInitError)))
			return
		}
		// Only the first initialize of a process sets the system prompt.
		if !s.initialized {
			s.initialized = true
			s.systemPrompt = m.Request.SystemPrompt
			s.appendPrompt = m.Request.AppendSystemPrompt
		}
		resp = obj("commands", []any{}, "models", []any{}, "account", obj())
	case "set_model":
		if strings.Contains(m.Request.Model, fakecli.RejectedModel) {
			// The real CLI confirms a new model with the API first; when
			// the API does not know it, it keeps its model and says so.
			s.out.line(obj("type", "control_response", "response", obj(
				"subtype", "error", "request_id", m.RequestID,
				"error", fmt.Sprintf("Model '%s' not found", m.Request.Model),
				"error_code", "not_found", "model", s.model)))
			return
		}
		if !s.stuckModel {
			s.model = resolveModel(m.Request.Model)
		}
		resp = obj("model", s.model)
	case "interrupt":
		// Answer before the aborted turn prints its last lines.
		defer func() {
			switch {
			case cur != nil && !closed(cur.done):
				cur.abort()
			case len(s.queue) > 0:
				s.abortNext = true
			}
		}()
		resp = obj()
	default:
		s.out.line(obj("type", "control_response", "response", obj(
			"subtype", "error", "request_id", m.RequestID,
			"error", "Unknown control request subtype: "+m.Request.Subtype)))
		return
	}
	s.out.line(obj("type", "control_response", "response", obj(
		"subtype", "success", "request_id", m.RequestID, "response", resp)))
}

// userText returns the text of a user message's content: a string, or a
// list of blocks whose text blocks are joined.
func userText(content json.RawMessage) string {
	var s string
	if json.Unmarshal(content, &s) == nil {
		return s
	}
	var blocks []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	_ = json.Unmarshal(content, &blocks)
	var texts []string
	for _, b := range blocks {
		if b.Type == "text" {
			texts = append(texts, b.Text)
		}
	}
	return strings.Join(texts, "\n")
}

// clearCommand is the user text that resets the conversation in place.
const clearCommand = "/clear"

// firstMarker returns the mode among set whose marker comes first in text,
// or "" when text holds none.
func firstMarker(text string, set map[string]bool, marker func(string) string) string {
	mode, first := "", len(text)
	for m := range set {
		if i := strings.Index(text, marker(m)); i >= 0 && i < first {
			mode, first = m, i
		}
	}
	return mode
}

// newTurn prepares the turn for one user line with the session's current
// settings. The session's state changes here, in the order of stdin lines,
// rather than while the turn runs.
func (s *session) newTurn(in userInput) *turn {
	text := in.text
	if cmd, ok := strings.CutPrefix(strings.TrimSpace(text), "/"); ok && in.typed {
		if cmd == strings.TrimPrefix(clearCommand, "/") {
			return s.newReset()
		}
		return s.newCommand(cmd)
	}
	s.turns++
	s.msgSeq++
	s.history = append(s.history, text)
	if m := firstMarker(text, resetModes, fakecli.ResetMarker); m != "" {
		s.armedReset = m
	}
	s.grow()
	mode := s.cfg.mode
	if m := firstMarker(text, modes, fakecli.Marker); m != "" {
		mode = m
	}
	switch mode {
	case fakecli.ModeExitEarly, fakecli.ModeNoReady, fakecli.ModeSleeper:
		mode = fakecli.ModeNormal
	}
	t := &turn{
		cfg: s.cfg, out: s.out, mode: mode, text: text, history: slices.Clone(s.history),
		model: s.model, sessionID: s.sessionID, init: s.initLine(),
		msgID: fmt.Sprintf("msg_fake_%06d", s.msgSeq), start: time.Now(),
		abortC: make(chan struct{}), done: make(chan struct{}), mcp: s.mcp,
	}
	if calls := parseToolCalls(text); len(calls) > 0 {
		for i := range calls {
			s.toolSeq++
			calls[i].id = fmt.Sprintf("toolu_fake_%d", s.toolSeq)
		}
		s.msgSeq++
		t.calls, t.finalMsgID = calls, fmt.Sprintf("msg_fake_%06d", s.msgSeq)
	}
	return t
}

// newCommand runs a slash command other than /clear as the real CLI
// does, with no API request: /model switches the model, /config writes
// the settings file of the configuration directory; any other answers
// that it is not available. Its turn prints the command's output.
func (s *session) newCommand(cmd string) *turn {
	name, args, _ := strings.Cut(cmd, " ")
	args = strings.TrimSpace(args)
	var out string
	switch name {
	case "model":
		s.model = resolveModel(args)
		out = "Set model to " + s.model
	case "config":
		key, value, _ := strings.Cut(args, "=")
		if err := writeSetting(key, value); err != nil {
			out = "Error: " + err.Error()
		} else {
			out = fmt.Sprintf("Set %s to %s", key, value)
		}
	default:
		out = fmt.Sprintf("/%s isn't available in this environment.", name)
	}
	return &turn{cfg: s.cfg, out: s.out, command: out, model: s.model,
		sessionID: s.sessionID, init: s.initLine(), start: time.Now(),
		abortC: make(chan struct{}), done: make(chan struct{})}
}

// writeSetting writes {key: value} to settings.json in $CLAUDE_CONFIG_DIR,
// else in $HOME/.claude, as /config does.
func writeSetting(key, value string) error {
	dir := os.Getenv("CLAUDE_CONFIG_DIR")
	if dir == "" {
		dir = filepath.Join(os.Getenv("HOME"), ".claude")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(map[string]string{key: value})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "settings.json"), b, 0o644)
}

// newReset prepares the turn that answers a /clear, and resets the session
// as the reset mode asks: a new session and an empty history, except under
// ResetSameSession, ResetExit and ResetHang. The system prompt and the model
// stay.
func (s *session) newReset() *turn {
	mode := s.cfg.resetMode
	if s.armedReset != "" {
		mode, s.armedReset = s.armedReset, ""
	}
	t := &turn{cfg: s.cfg, out: s.out, reset: mode, model: s.model,
		sessionID: s.sessionID, start: time.Now(), quitAtEOF: mode == fakecli.ResetHang,
		abortC: make(chan struct{}), done: make(chan struct{})}
	switch mode {
	case fakecli.ResetExit, fakecli.ResetHang:
		return t
	case fakecli.ResetSameSession:
	default:
		s.sessionID = newUUID()
		s.history = nil
	}
	switch mode {
	case fakecli.ResetOtherModel, fakecli.ResetStuckModel:
		s.model = fakecli.OtherModel
		s.stuckModel = mode == fakecli.ResetStuckModel
	}
	t.newSessionID = s.sessionID
	t.init = s.initLine()
	return t
}

// grow allocates FAKE_GROW_BYTES bytes, writes to every page so that they
// become resident, and keeps them.
func (s *session) grow() {
	n := s.cfg.growBytes
	if n <= 0 {
		return
	}
	b := make([]byte, n)
	for i := 0; i < n; i += os.Getpagesize() {
		b[i] = 1
	}
	s.ballast = append(s.ballast, b)
}

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
