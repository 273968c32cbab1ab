package claudepool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"sync"
	"time"
)

// errStreamClosed is the abort reason when the caller closes a Stream
// before its end.
var errStreamClosed = errors.New("claudepool: stream closed")

// Stream delivers the events of one chat turn. Use it like bufio.Scanner:
//
//	for s.Next() {
//		fmt.Print(s.Event().Text())
//	}
//	if err := s.Err(); err != nil { ... }
//
// or range over Events. Close it when done, also after an error: Close
// interrupts a turn still running and returns once its process has been
// reaped. Next, Event, Err and Close are meant for one goroutine; Result,
// Acquire and Latency may be called from any.
type Stream struct {
	pool   *Pool
	proc   *Process
	ctx    context.Context
	enc    *encodedRequest
	prompt SystemPrompt // applied unless the process already has it
	start  time.Time

	events  chan Event
	runDone chan struct{}

	abortOnce sync.Once
	abortCh   chan struct{} // closed when the stream is aborted
	abortErr  error         // why; set before abortCh is closed
	stopCtx   func() bool   // unregisters the ctx watcher
	refill    *time.Timer   // releases the pool's refill hold at the latest

	// Set by the run goroutine before it closes events.
	finalErr error

	mu      sync.Mutex // guards result and latency
	result  *Result
	latency StreamLatency

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
}

// startStream hands proc to a new Stream and starts its reader.
func (p *Pool) startStream(ctx context.Context, proc *Process, enc *encodedRequest, prompt SystemPrompt, start time.Time) (*Stream, error) {
	s := &Stream{
		pool:    p,
		proc:    proc,
		ctx:     ctx,
		enc:     enc,
		prompt:  prompt,
		start:   start,
		events:  make(chan Event, 16),
		runDone: make(chan struct{}),
		abortCh: make(chan struct{}),
	}
	s.latency.Acquire = proc.acquire.Wait
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.releaseRefill(proc)
		_ = proc.Stop(context.Background())
		proc.abandonOutput()
		return nil, ErrClosed
	}
	p.wg.Add(2)
	p.mu.Unlock()
	if proc.refillHeld.Load() {
		s.refill = time.AfterFunc(maxRefillDelay, func() { p.releaseRefill(proc) })
	}
	s.stopCtx = context.AfterFunc(ctx, func() { s.abort(ctx.Err()) })
	go func() {
		defer p.wg.Done()
		s.run()
	}()
	go func() {
		defer p.wg.Done()
		s.watch()
	}()
	return s, nil
}

// Next waits for the next event and reports whether there is one. It
// returns false at the end of the stream, on an error, and when the
// stream's context ends; Err then says which.
func (s *Stream) Next() bool {
	if s.done {
		return false
	}
	// Events already read are delivered before a context that ended.
	select {
	case ev, ok := <-s.events:
		return s.deliver(ev, ok)
	default:
	}
	select {
	case ev, ok := <-s.events:
		return s.deliver(ev, ok)
	case <-s.ctx.Done():
		s.abort(s.ctx.Err())
		if s.Result() == nil {
			s.done, s.err = true, s.ctx.Err()
			return false
		}
		// The result arrived before the context ended: the process is
		// exiting on its own, and the result decides the outcome.
		for range s.events {
		}
		s.finish()
	}
	return false
}

// deliver moves to ev, or records the outcome when the reader has ended
// (ok false).
func (s *Stream) deliver(ev Event, ok bool) bool {
	if !ok {
		s.finish()
		return false
	}
	s.cur = ev
	return true
}

// finish records the outcome once the reader has ended.
func (s *Stream) finish() {
	s.done = true
	s.err = s.finalErr
}

// Event returns the event Next moved to.
func (s *Stream) Event() Event { return s.cur }

// Err returns the error that ended the stream, nil after a successful
// result. Before Next has returned false it returns nil. Errors:
// *ResultError when the result has is_error set; *ExitError when the CLI
// exited without a result; an error wrapping ErrLineTooLong or
// ErrNotReady; ctx.Err() when the context ended first.
func (s *Stream) Err() error { return s.err }

// Result returns the result line's content, or nil until it has arrived.
func (s *Stream) Result() *Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.result
}

// Acquire reports how the stream's process was obtained.
func (s *Stream) Acquire() AcquireInfo { return s.proc.acquire }

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
// Config.StopGrace each); Close returns once the process was reaped and
// the stream's goroutine has ended. Closing twice is not an error.
func (s *Stream) Close() error {
	s.abort(errStreamClosed)
	<-s.runDone
	if !s.done {
		// Drain what the reader buffered so that the outcome is final.
		for range s.events {
		}
		s.finish()
	}
	return nil
}

// abort marks the stream as aborted; the stream's watcher then stops the
// process.
func (s *Stream) abort(reason error) {
	s.abortOnce.Do(func() {
		s.abortErr = reason
		close(s.abortCh)
	})
}

// watch interrupts the turn when the stream is aborted before its reader
// ended: SIGINT to the CLI (it ends the turn with an aborted result and
// exits), then SIGTERM and SIGKILL to its process group.
func (s *Stream) watch() {
	select {
	case <-s.abortCh:
		_ = s.proc.stop(context.Background(), func() { _ = s.proc.Interrupt() })
		// A stray process may still hold stdout: the reader must not wait
		// for it.
		s.proc.abandonOutput()
	case <-s.runDone:
	}
}

func (s *Stream) aborted() bool {
	select {
	case <-s.abortCh:
		return true
	default:
		return false
	}
}

// run is the stream's reader. It owns the process's stdin and stdout.
func (s *Stream) run() {
	defer close(s.runDone)
	defer close(s.events)
	defer s.stopCtx()
	defer s.releaseRefill()
	s.finalErr = s.serve()
	// The output is no longer read; release the pipe.
	s.proc.abandonOutput()
	s.record()
}

// serve sends the request and forwards events until the output ends. It
// returns the stream's error.
func (s *Stream) serve() error {
	p := s.proc
	if err := s.handshake(); err != nil {
		s.stopProcess()
		return err
	}
	var result *Result
	// resultFirst is true when the result line arrived before any abort:
	// then the result decides the outcome, even if the context ended
	// while the process was exiting.
	resultFirst := false
	for {
		line, err := p.ReadLine()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.stopProcess()
			if s.aborted() || errors.Is(err, os.ErrClosed) {
				break // the output was abandoned; the outcome is decided below
			}
			if errors.Is(err, ErrLineTooLong) {
				return err
			}
			return fmt.Errorf("claudepool: read output of process %d: %w", p.pid, err)
		}
		ev, ctrl, perr := parseLine(line)
		if perr != nil {
			s.pool.counters.malformedLines.Add(1)
			s.pool.log.Debug("claudepool: skipped a malformed output line", "pid", p.pid, "err", perr, "bytes", len(line))
			continue
		}
		if ctrl != nil {
			continue
		}
		s.observe(ev)
		s.releaseRefill()
		switch {
		case ev.Type == EventResult && result == nil:
			result = ev.Result
			resultFirst = !s.aborted()
		case ev.Type == EventUnknown && ev.Subtype == "result" && result == nil:
			// A result line whose fields could not be decoded: never
			// mistake it for a success.
			result = &Result{IsError: true, Subtype: "malformed", Text: "claudepool: the result line could not be decoded"}
		}
		if s.aborted() {
			continue // keep draining so the CLI can finish and exit
		}
		select {
		case s.events <- ev:
		case <-s.abortCh:
		case <-s.pool.abandon:
			s.abort(fmt.Errorf("%w: the stream was not read before Close's ctx ended", ErrClosed))
		}
	}
	// The output ended: the process is exiting. Give it StopGrace to do so.
	s.waitExit()
	switch {
	case result != nil && resultFirst:
		if result.IsError {
			return newResultError(result)
		}
		return nil
	case s.aborted():
		return s.abortErr
	case result == nil:
		return p.exitWithoutResult()
	case result.IsError:
		return newResultError(result)
	default:
		return nil
	}
}

// handshake applies the request's settings and sends the user line. A
// warm process of a pool with Config.Prompt has its prompt already.
func (s *Stream) handshake() error {
	p := s.proc
	deadline := time.Now().Add(s.pool.cfg.ReadyTimeout)
	if !p.initialized {
		if _, err := p.control(deadline, s.prompt.initialize()); err != nil {
			return s.handshakeErr(err)
		}
	}
	if s.enc.setModel != nil {
		if _, err := p.control(deadline, s.enc.setModel); err != nil {
			return s.handshakeErr(err)
		}
	}
	if err := p.WriteLine(s.enc.user); err != nil {
		return s.handshakeErr(p.exitedBefore("the user message", err))
	}
	return s.handshakeErr(p.CloseStdin())
}

func (s *Stream) handshakeErr(err error) error {
	if err != nil && s.aborted() {
		return s.abortErr
	}
	return err
}

// waitExit waits up to StopGrace for the process to exit after its output
// ended, then stops it.
func (s *Stream) waitExit() {
	t := time.NewTimer(s.pool.cfg.StopGrace)
	defer t.Stop()
	select {
	case <-s.proc.done:
	case <-t.C:
		s.stopProcess()
	}
}

// stopProcess ends the process (if it still runs) and waits for the reap.
func (s *Stream) stopProcess() {
	_ = s.proc.stop(context.Background(), func() { _ = s.proc.Interrupt() })
}

// releaseRefill lets the pool replace the stream's process, if its
// acquire held the refill back: the chat has started or ended.
func (s *Stream) releaseRefill() {
	if s.proc.refillHeld.Load() {
		s.refill.Stop()
		s.pool.releaseRefill(s.proc)
	}
}

// observe records the stream's timings for an event.
func (s *Stream) observe(ev Event) {
	since := time.Since(s.start)
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

// record adds the stream's timings to the pool's histograms.
func (s *Stream) record() {
	s.mu.Lock()
	l := s.latency
	s.mu.Unlock()
	h := &s.pool.lat
	first, text, result := &h.coldFirstEvent, &h.coldFirstText, &h.coldResult
	if s.proc.warm {
		first, text, result = &h.warmFirstEvent, &h.warmFirstText, &h.warmResult
	}
	if l.FirstEvent > 0 {
		first.record(l.FirstEvent)
	}
	if l.FirstText > 0 {
		text.record(l.FirstText)
	}
	if l.Result > 0 {
		result.record(l.Result)
	}
}
