package claudepool

import "encoding/json"

// What a stream takes from the pool's gateway: the API's stop reason, its
// error, its input tokens as soon as they are known, and its time to first
// byte.

// apiResult is the result of a chat the gateway saw, corrected by what
// the API answered: its stop reason, its error verbatim, and, when the
// CLI asked again on its own after the reply ended, the reply's text
// rather than the text of the gateway's empty answer to that call.
func (s *Stream) apiResult(r *Result) *Result {
	o := s.req.api.outcome()
	c := *r
	if o.stop != "" {
		c.StopReason, c.StopSequence = o.stop, o.stopSeq
	}
	if o.followUps > 0 && !c.IsError {
		c.Text = s.reply.String()
	}
	if s.req.api.req.OutputSchema != nil && !c.IsError && json.Valid([]byte(c.Text)) {
		c.JSON = json.RawMessage(c.Text)
	}
	if c.IsError && o.apiErr != nil {
		c.APIError = o.apiErr
		if o.apiErr.Status != 0 {
			c.APIErrorStatus = o.apiErr.Status
		}
		c.APIErrorType = o.apiErr.Type
		c.Text = o.apiErr.Message
	}
	return &c
}

// unseenTurns reports whether the process now holds turns the caller
// never saw: the CLI's own follow-up and the gateway's answer to it.
func (s *Stream) unseenTurns() bool {
	return s.req.api != nil && s.req.api.outcome().followUps > 0
}

// apiStarted delivers the API's input tokens as an EventMessageStart,
// right after the turn's init event (the gateway may see the reply begin
// before the stream has read the init line).
func (s *Stream) apiStarted(u Usage) {
	ev := Event{Type: EventMessageStart, Usage: &u}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.ended:
	case s.sawInit:
		s.queueLocked(ev)
	default:
		s.pendingStart = &ev
	}
}

// apiLatency adds the API's time to first byte, and the pool's overhead
// over it, to the stream's timings.
func (s *Stream) apiLatency() {
	if s.req.api == nil {
		return
	}
	o := s.req.api.outcome()
	if o.calls == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency.APIFirstByte = o.firstByte
	if s.latency.FirstText > 0 {
		s.latency.Overhead = s.latency.FirstText - o.firstByte
	}
}

// followUp reports a user line the CLI wrote on its own after the API's
// reply ended (after max_tokens or a refusal): the start of a follow-up
// call that the gateway answers, which the caller never sent and never
// sees.
func (s *Stream) followUp(ev Event) bool {
	return ev.Type == EventUser && s.req.api != nil && s.req.api.over()
}
