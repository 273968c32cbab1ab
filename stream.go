package claudepool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Stream delivers the events of one chat turn. Use it like bufio.Scanner:
//
//	for s.Next() {
//		fmt.Print(s.Event().Text())
//	}
//	if err := s.Err(); err != nil { ... }
//
// or range over Events. Close it when done, also after an error: Close
// interrupts a turn still running. Next, Event, Err and Close are meant
// for one goroutine; Result, Acquire and Latency may be called from any.
type Stream struct {
	pool *Pool
	ctx  context.Context
	req  *chatRequest
	// pause holds back the replacement of the stream's warm process
	// until about when the CLI has sent its API request; nil when there
	// is none.
	pause *refillPause
	// failFast is the retry notice of an API status that cannot succeed
	// on retry, after which the stream interrupted the turn; nil until
	// then. Only the reader uses it.
	failFast *Retry
	// reply and thinking are the text and the thinking of the turn's
	// assistant messages. Only the reader uses them.
	reply, thinking strings.Builder
	// callerUses are the turn's calls of the caller's tools that the CLI
	// has not asked for yet, pending those it asked for and the pool
	// could not answer; pauseNow is set by the first such call. Only the
	// reader uses them.
	callerUses []ToolCall
	pending    []pendingCall
	pauseNow   bool

	leaseMu sync.Mutex // guards proc, acquire, leased and interrupted
	proc    *pooled
	// acquire is how proc was obtained, copied at the lease: the pool may
	// lease proc to another chat once this one is done with it.
	acquire AcquireInfo
	// leased is true while the stream holds its process; the first of
	// endLease and an abort decides what becomes of it.
	leased      bool
	interrupted bool
	// stopped is set by Interrupt: the CLI was asked to end the turn, and
	// its process stays in the pool.
	stopped bool

	runDone   chan struct{}
	abortOnce sync.Once
	abortCh   chan struct{} // closed when the stream is aborted
	abortErr  error         // why; set before abortCh is closed
	// toolCtx is the context of the turn's tool calls: it ends with the
	// stream's context, when the stream is aborted, and when it ends.
	toolCtx    context.Context
	toolCancel context.CancelFunc
	stopCtx    func() bool // unregisters the ctx watcher

	mu       sync.Mutex // guards the fields below
	queue    []Event    // read from the CLI, not yet delivered
	ended    bool       // the reader is done: queue is final
	notify   chan struct{}
	finalErr error
	result   *Result
	latency  StreamLatency
	// sawInit is set once the turn's init event is queued; pendingStart
	// is an EventMessageStart that came before it.
	sawInit      bool
	pendingStart *Event

	// Consumer state.
	cur  Event
	err  error
	done bool
}

// StreamLatency holds the timings of one stream, each measured from the
// start of StreamChat. A zero duration means the moment has not come (yet).
type StreamLatency struct {
	// Acquire is how long taking the process took.
	Acquire time.Duration
	// FirstEvent is when the first event arrived.
	FirstEvent time.Duration
	// FirstText is when the first event with text arrived.
	FirstText time.Duration
	// Result is when the result line arrived.
	Result time.Duration
	// APIFirstByte is the API's own time to first byte for the chat's
	// first API call, as the pool's gateway measured it: from sending the
	// call upstream to the answer's headers. 0 without the gateway.
	APIFirstByte time.Duration
	// Overhead is FirstText minus APIFirstByte: what the chat spent
	// outside the API before its first text (the acquire, the CLI's work,
	// the pool's). 0 without the gateway or without text.
	Overhead time.Duration
}

// newStream hands proc to a new Stream for the request c and starts its
// reader and watcher, as goroutines of the pool, which Close joins.
func newStream(ctx context.Context, p *Pool, c *chatRequest, proc *pooled, pause *refillPause) (*Stream, error) {
	s := &Stream{
		pool:    p,
		proc:    proc,
		acquire: proc.life.acquire,
		leased:  true,
		ctx:     ctx,
		req:     c,
		pause:   pause,
		runDone: make(chan struct{}),
		abortCh: make(chan struct{}),
		notify:  make(chan struct{}),
	}
	s.toolCtx, s.toolCancel = context.WithCancel(ctx)
	s.latency.Acquire = proc.life.acquire.Wait
	if c.api != nil {
		c.api.onStart = s.apiStarted
	}
	s.stopCtx = context.AfterFunc(ctx, func() { s.abort(ctx.Err()) })
	if err := p.goChat(s.run, s.watch); err != nil {
		s.stopCtx()
		pause.end()
		_ = proc.Stop(context.Background())
		p.giveBack(proc, false, nil)
		return nil, err
	}
	return s, nil
}

// Next waits for the next event and reports whether there is one. It
// returns false at the end of the stream, on an error, and when the
// stream's context ends; Err then says which.
func (s *Stream) Next() bool {
	if s.done {
		return false
	}
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			s.cur = s.queue[0]
			s.queue[0] = Event{}
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return true
		}
		ended, notify := s.ended, s.notify
		s.mu.Unlock()
		if ended {
			s.finish()
			return false
		}
		select {
		case <-notify:
		case <-s.ctx.Done():
			s.abort(s.ctx.Err())
			if s.Result() == nil {
				s.done, s.err = true, s.ctx.Err()
				return false
			}
			// The result arrived before the context ended, and decides
			// the outcome.
			<-s.runDone
			s.finish()
			return false
		}
	}
}

// finish records the outcome once the reader has ended.
func (s *Stream) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	s.err = s.finalErr
	s.queue = nil
}

// Event returns the event Next moved to.
func (s *Stream) Event() Event { return s.cur }

// Err returns the error that ended the stream, nil after a successful
// result. Before Next has returned false it returns nil. Errors:
// *ResultError when the result has is_error set; *ExitError when the CLI
// exited without a result; an error wrapping ErrLineTooLong or
// ErrNotReady; ctx.Err() when the context ended first; ErrStreamClosed
// when Close ended the stream before its result; an error wrapping
// ErrClosed when the pool's Close ended it.
func (s *Stream) Err() error { return s.err }

// Result returns the result line's content, or nil until it has arrived.
func (s *Stream) Result() *Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.result
}

// Acquire reports how the stream's process was obtained.
func (s *Stream) Acquire() AcquireInfo {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	return s.acquire
}

// Latency returns the stream's timings so far.
func (s *Stream) Latency() StreamLatency {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latency
}

// Events returns an iterator over the stream's events for a range loop.
// After the last event it yields the stream's error, if any, with a zero
// Event. Breaking out of the loop leaves the stream open: Close it.
func (s *Stream) Events() iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		for s.Next() {
			if !yield(s.cur, nil) {
				return
			}
		}
		if s.err != nil {
			yield(Event{}, s.err)
		}
	}
}

// Close ends the stream. A turn still running is interrupted and its
// process stopped (SIGINT, then SIGTERM and SIGKILL after
// Config.StopGrace each); Close returns once that process was reaped and
// the stream's goroutines have ended. After the result, Close returns at
// once. Closing twice is not an error.
func (s *Stream) Close() error {
	s.abort(ErrStreamClosed)
	<-s.runDone
	if !s.done {
		s.finish()
	}
	return nil
}

// Interrupt asks the CLI to end the turn in flight, as the SDKs'
// interrupt does: the stream goes on to the turn's result, which the CLI
// sends at once, and then Err wraps ErrInterrupted. Unlike a context that
// ends, or Close, it stops no process: the process is reset and serves
// the next chat. It returns without waiting for the result; after the
// result, or when the stream no longer holds its process, it does
// nothing. Close still ends a turn that the CLI does not end.
func (s *Stream) Interrupt() error {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if !s.leased || s.stopped {
		return nil
	}
	s.stopped = true
	if err := s.proc.interrupt(); err != nil {
		return fmt.Errorf("claudepool: interrupt: %w", err)
	}
	return nil
}

// interruptedByCaller reports whether Interrupt asked the CLI to stop.
func (s *Stream) interruptedByCaller() bool {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	return s.stopped
}

// abort marks the stream as aborted; the stream's watcher then stops the
// process.
func (s *Stream) abort(reason error) {
	s.abortOnce.Do(func() {
		s.abortErr = reason
		close(s.abortCh)
		s.toolCancel()
	})
}

func (s *Stream) aborted() bool { return isClosed(s.abortCh) }

// current returns the stream's process.
func (s *Stream) current() *pooled {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	return s.proc
}

// endLease gives the process back to the pool, once: to be reset for the
// next chat if the turn ended cleanly and no abort interrupted it, to be
// retired otherwise.
func (s *Stream) endLease(clean bool) {
	s.endLeaseHolding(clean, nil)
}

// endLeaseHolding is endLease for a turn that ended cleanly with a
// conversation its process may hold (h).
func (s *Stream) endLeaseHolding(clean bool, h *held) {
	s.leaseMu.Lock()
	if !s.leased {
		s.leaseMu.Unlock()
		return
	}
	s.leased = false
	clean = clean && !s.interrupted
	proc := s.proc
	s.leaseMu.Unlock()
	if t := s.req.api; t != nil {
		s.pool.gw.unbind(proc.token, t)
	}
	s.pool.giveBack(proc, clean, h)
}

// watch interrupts the turn when the stream is aborted while it holds its
// process: SIGINT to the CLI (it ends the turn with an aborted result and
// exits), then SIGTERM and SIGKILL to its process group. It also bounds
// the wait for the output of a process that has exited: an escaped
// descendant may hold the pipe open for as long as it likes.
func (s *Stream) watch() {
	var exited <-chan struct{}
	for {
		proc := s.current()
		if exited == nil {
			exited = proc.done
		}
		select {
		case <-s.abortCh:
			s.leaseMu.Lock()
			interrupt := s.leased && s.proc == proc
			s.interrupted = s.interrupted || interrupt
			s.leaseMu.Unlock()
			if interrupt {
				_ = proc.stop(context.Background(), func() { _ = proc.Interrupt() })
				// A stray process may still hold stdout: the reader must
				// not wait for it.
				proc.abandonOutput()
			}
			return
		case <-s.runDone:
			return
		case <-exited:
			if s.current() != proc {
				exited = nil // a dead process was replaced; watch the new one
				continue
			}
			t := time.NewTimer(s.pool.cfg.StopGrace)
			select {
			case <-s.runDone:
			case <-t.C:
				proc.abandonOutput()
			}
			t.Stop()
			exited = make(chan struct{}) // never again for this process
		}
	}
}

// run is the stream's reader.
func (s *Stream) run() {
	defer close(s.runDone)
	defer s.stopCtx()
	defer s.toolCancel()
	defer s.pause.end()
	err := s.serve()
	s.apiLatency()
	s.record()
	s.mu.Lock()
	s.finalErr = err
	s.ended = true
	close(s.notify)
	s.mu.Unlock()
	s.reportEnd(err)
}

// push queues an event for the caller.
func (s *Stream) push(ev Event) {
	s.mu.Lock()
	s.queueLocked(ev)
	if ev.Type == EventInit && !s.sawInit {
		s.sawInit = true
		if s.pendingStart != nil {
			s.queueLocked(*s.pendingStart)
			s.pendingStart = nil
		}
	}
	s.mu.Unlock()
}

func (s *Stream) queueLocked(ev Event) {
	s.queue = append(s.queue, ev)
	close(s.notify)
	s.notify = make(chan struct{})
}

// serve sends the request and forwards events until the turn's result,
// or until the output ends. It returns the stream's error. Every path
// ends the lease.
func (s *Stream) serve() error {
	if err := s.handshake(); err != nil {
		if ce, ok := modelRefusal(err); ok {
			// The CLI kept its model and stays usable: the chat fails
			// as for any API error, and the process stays in the pool.
			return s.refused(ce)
		}
		s.retire()
		return err
	}
	p := s.current()
	end, err := s.read(p)
	if err != nil {
		return err
	}
	return s.outcome(p, end)
}

// turnEnd is how the reading of a turn ended.
type turnEnd struct {
	result *Result // nil when the output ended without one
	// first is true when the result line arrived before any abort: then
	// the result decides the outcome, even if the context ended right
	// after.
	first bool
}

// read forwards the turn's events to the caller until its result line,
// or until the output ends; by then the lease has ended. It returns an
// error only for a failed read that decides the outcome by itself.
func (s *Stream) read(p *pooled) (turnEnd, error) {
	var end turnEnd
	for end.result == nil {
		line, err := p.ReadLine()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.retire()
			if s.aborted() || errors.Is(err, os.ErrClosed) {
				break // the output was abandoned; the outcome decides
			}
			if errors.Is(err, ErrLineTooLong) {
				return end, err
			}
			return end, fmt.Errorf("claudepool: read output of process %d: %w", p.pid, err)
		}
		ev, ok := s.decode(p, line)
		if s.pauseNow {
			// The turn waits for the caller's tool results: the chat
			// ends here, and its process holds the turn.
			ev, ok = s.pauseTurn(p), true
		}
		if !ok {
			continue
		}
		s.observe(ev)
		s.pause.settle()
		s.act(p, ev, &end)
		if (!s.aborted() || end.first) && !s.followUp(ev) {
			s.push(ev)
		}
	}
	if end.result == nil {
		// The output ended without a result: the process is exiting.
		s.waitExit(p)
		s.endLease(false)
	}
	return end, nil
}

// decode parses an output line into the event the caller gets. Malformed
// lines are counted and skipped, and so are control responses (to the
// stream's own interrupt).
func (s *Stream) decode(p *pooled, line []byte) (Event, bool) {
	ev, ctrl, err := parseLine(line)
	switch {
	case err != nil:
		s.pool.set.malformed.Add(1)
		s.pool.log.Debug("claudepool: skipped a malformed output line", "pid", p.pid, "err", err, "bytes", len(line))
		return ev, false
	case ctrl != nil:
		return ev, false
	}
	if r, ok := cliRequestOf(ev); ok {
		p.life.toolsAsked = true
		if name, rpcID, input, caller := p.set.tools.callerTool(r); caller {
			s.callerCall(p, r.RequestID, rpcID, name, input)
			return ev, false
		}
		// The CLI asks the pool (a tool call): the turn waits for the
		// answer, which the caller does not see.
		if _, err := p.answerCLI(s.toolCtx, r, s.req.canUseTool); err != nil {
			s.pool.log.Debug("claudepool: answer a control request of the CLI", "pid", p.pid, "err", err)
		}
		return ev, false
	}
	callerNames(&ev)
	if ev.Type == EventResult && ev.Result != nil && s.failFast != nil {
		ev.Result = failedFast(ev.Result, s.failFast)
	}
	if ev.Type == EventResult && ev.Result != nil && s.req.api != nil {
		ev.Result = s.apiResult(ev.Result)
	}
	if ev.Type == EventResult && ev.Result != nil && s.thinking.Len() > 0 {
		c := *ev.Result
		c.Thinking = s.thinking.String()
		ev.Result = &c
	}
	return ev, true
}

// act does what an event asks of the stream: it interrupts a turn whose
// API request failed for good, records what the process reports, and at
// the result gives the process back (see settleLease).
func (s *Stream) act(p *pooled, ev Event, end *turnEnd) {
	switch {
	case ev.Type == EventRetry && ev.Retry != nil && s.failFast == nil && !Retryable(ev.Retry.ErrorStatus):
		// The CLI retries statuses that can never succeed (a 401 ten
		// times over about three minutes): end the turn now. The process
		// stays usable; its result reports the status.
		s.failFast = ev.Retry
		if err := p.interrupt(); err != nil {
			s.pool.log.Debug("claudepool: interrupt a turn retrying a final API status", "pid", p.pid, "err", err)
		}
	case ev.Type == EventInit:
		p.life.session = ev.SessionID
		if p.life.model == "" && p.life.baseModel == "" && ev.Init != nil {
			p.life.baseModel = ev.Init.Model
		}
	case ev.Type == EventAssistant:
		s.reply.WriteString(ev.Text())
		s.noteCallerUses(p, ev)
		if ev.Message != nil {
			for _, b := range ev.Message.Content {
				switch {
				case b.Type == "thinking":
					s.thinking.WriteString(b.Thinking)
				case strings.HasSuffix(b.Type, "tool_use"):
					// tool_use, server_tool_use, mcp_tool_use.
					p.life.toolsAsked = true
				}
			}
		}
	case ev.Type == EventResult:
		end.result, end.first = ev.Result, !s.aborted()
		s.settleLease(end)
	case ev.Type == EventUnknown && ev.Subtype == "result":
		// A result line whose fields could not be decoded: never mistake
		// it for a success, and never trust the process again.
		end.result = &Result{IsError: true, Subtype: "malformed", Text: "claudepool: the result line could not be decoded"}
		end.first = !s.aborted()
		s.retire()
	}
}

// settleLease ends the lease at the turn's result. A turn that ended
// before any abort gives its process back before the caller sees the
// result, so that its reset overlaps with whatever the caller does next;
// it may hold the conversation for its continuation, unless the turn
// failed. A turn an abort reached first retires its process.
func (s *Stream) settleLease(end *turnEnd) {
	if !end.first {
		s.retire()
		return
	}
	var h *held
	if r := end.result; r != nil && !r.IsError && !s.unseenTurns() {
		h = heldAfter(s.req.prompt, s.req.model, s.req.msgs, r)
	}
	s.endLeaseHolding(true, h)
}

// outcome is the stream's error once the turn's reading has ended.
func (s *Stream) outcome(p *pooled, end turnEnd) error {
	r := end.result
	switch {
	case r != nil && end.first:
		if r.IsError && s.interruptedByCaller() {
			return fmt.Errorf("%w: %w", ErrInterrupted, newResultError(r))
		}
		if r.IsError {
			return newResultError(r)
		}
		return nil
	case s.aborted():
		return s.abortErr
	case s.pool.killedByClose():
		return fmt.Errorf("%w: Close ended the chat: %w", ErrClosed, p.exitWithoutResult())
	case r == nil:
		return p.exitWithoutResult()
	case r.IsError:
		return newResultError(r)
	default:
		return nil
	}
}

// handshake applies what the process lacks of the request's settings and
// sends the user line. A process that turns out to be dead before the
// user line was written is replaced: the request has not reached it.
func (s *Stream) handshake() error {
	for attempt := 1; ; attempt++ {
		p := s.current()
		sent, err := s.send(p)
		if err == nil {
			return nil
		}
		if s.aborted() {
			return s.abortErr
		}
		// Exited, not reaped: a descendant holding stderr may delay the
		// reap past the StopGrace that send waited for it.
		if sent || attempt == maxHandshakeAttempts || !p.hasExited() {
			return err
		}
		s.pool.counters.deadAtClaim.Add(1)
		s.pool.log.Warn("claudepool: process was dead at claim; taking another", "pid", p.pid, "err", err)
		p.abandonOutput() // nobody reads it any more
		s.endLease(false)
		next, _, aerr := s.pool.acquire(s.ctx, s.req.start, &s.req.prompt, false)
		if aerr != nil {
			return aerr
		}
		s.leaseMu.Lock()
		s.proc, s.acquire, s.leased = next, next.life.acquire, true
		s.leaseMu.Unlock()
		s.mu.Lock()
		s.latency.Acquire = next.life.acquire.Wait
		s.mu.Unlock()
	}
}

// refused ends a chat whose model the CLI refused: the turn never
// started, the process keeps its model and goes back to the pool, and the
// chat's error is a *ResultError with the API's status behind the
// refusal, as for an API error in a turn.
func (s *Stream) refused(ce *controlError) error {
	r := &Result{IsError: true, Subtype: SubtypeModelRejected, Text: ce.msg,
		APIErrorStatus: refusalStatus(ce.code), TerminalReason: SubtypeModelRejected}
	s.mu.Lock()
	s.result = r
	s.mu.Unlock()
	s.endLease(true)
	return newResultError(r)
}

// SubtypeModelRejected is the Result.Subtype, and TerminalReason, of a chat
// whose Request.Model the CLI refused to switch to (a model the API does
// not know or does not offer to the account): Result.APIErrorStatus holds
// the API's status (404 for an unknown model), Result.Text the CLI's
// message. The process was not harmed and stays in the pool.
const SubtypeModelRejected = "model_rejected"

// Retryable reports whether an API request that failed with HTTP status
// may succeed when retried: 408, 409, 429 and the 5xx statuses (529
// overloaded included), and 0, a failure without a status (a connection
// error). A 400, 401, 403, 404 or 413, and any other 4xx, never succeeds
// on retry: a chat whose request fails with one ends at once with a
// *ResultError carrying that status, although the CLI itself retries
// some of them (401, for minutes).
func Retryable(status int) bool {
	switch {
	case status == 0, status == 408, status == 409, status == 429:
		return true
	case status >= 500:
		return true
	}
	return false
}

// failedFast is the result of a turn the stream interrupted after the API
// answered status, which no retry can change: an error with that status.
func failedFast(r *Result, retry *Retry) *Result {
	c := *r
	c.IsError = true
	c.APIErrorStatus = retry.ErrorStatus
	c.TerminalReason = "api_error"
	c.Text = fmt.Sprintf("API error %d %s (%s), which no retry can change", retry.ErrorStatus, http.StatusText(retry.ErrorStatus), retry.Error)
	return &c
}

// maxHandshakeAttempts bounds the processes one chat tries.
const maxHandshakeAttempts = 3

// send sets up p for the request and writes the user line; sent reports
// whether the line was written.
func (s *Stream) send(p *pooled) (sent bool, err error) {
	if p.life.prompt == nil {
		if err := p.initialize(s.ctx, s.req.prompt); err != nil {
			return false, err
		}
		sp := s.req.prompt
		p.life.prompt = &sp
	}
	// A cold process lists the pool's tools before its first turn.
	if err := p.awaitTools(s.ctx); err != nil {
		return false, err
	}
	if m := s.req.model; m != p.life.model {
		if _, err := p.setModel(s.ctx, m); err != nil {
			return false, err
		}
		p.life.model = m
	}
	line := s.req.user
	if s.Acquire().Continued {
		line = s.req.last
	}
	if t := s.req.api; t != nil {
		s.pool.gw.bind(p.token, t)
	}
	if s.Acquire().Continued && p.paused != nil {
		return true, s.resume(p)
	}
	if err := p.WriteLine(line); err != nil {
		return false, p.exitedBefore("the user message", err)
	}
	return true, nil
}

// waitExit waits up to StopGrace for the process to exit after its output
// ended, then stops it.
func (s *Stream) waitExit(p *pooled) {
	t := time.NewTimer(s.pool.cfg.StopGrace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		s.stopProcess()
	}
}

// retire stops the stream's process and gives it back to the pool as
// unusable.
func (s *Stream) retire() {
	s.stopProcess()
	s.endLease(false)
}

// stopProcess ends the process (if it still runs) and waits for the reap.
func (s *Stream) stopProcess() {
	p := s.current()
	_ = p.stop(context.Background(), func() { _ = p.Interrupt() })
	p.abandonOutput()
}

// observe records the stream's timings for an event.
func (s *Stream) observe(ev Event) {
	since := time.Since(s.req.start)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latency.FirstEvent == 0 {
		s.latency.FirstEvent = since
	}
	if s.latency.FirstText == 0 && ev.Text() != "" {
		s.latency.FirstText = since
	}
	if ev.Type == EventResult && ev.Result != nil && s.result == nil {
		s.latency.Result = since
		s.result = ev.Result
	}
}

// record adds the stream's timings to the pool's histograms, the API's
// time to first byte and the overhead included (apiLatency sets them
// before).
func (s *Stream) record() {
	s.mu.Lock()
	l := s.latency
	s.mu.Unlock()
	s.pool.lat.recordStream(s.Acquire().Warm, l)
}
