package claudepool

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"time"
)

// The gateway joins the deltas of a streamed reply before the CLI reads
// them (Config.CoalesceDeltas). The API sends a reply's text as many
// small content_block_delta events, often one a token, and the CLI spends
// a wake-up, a parse and, with partial messages, an output line on each:
// measured on 2.1.330, most of its CPU while a reply streams. Joined, the
// CLI gets at most one delta per content block per window: the first
// delta of a block passes at once, so that the first text is not
// delayed; those that follow within the window wait, and go out as one
// event when it ends, or before any other event. The text, the thinking
// and a tool's input arrive whole and in order; only the boundaries
// between deltas move. Every other event passes as the API sent it.

// sseEvent is one event of a server-sent event stream: its lines, the
// blank line that ends it included.
type sseEvent []byte

// readSSE reads the events of r and sends each to out, then closes out
// and sends the read's error (nil at EOF) to errc. A last event without
// its blank line is sent as it is. It stops early when done is closed.
func readSSE(r io.Reader, out chan<- sseEvent, errc chan<- error, done <-chan struct{}) {
	defer close(out)
	br := bufio.NewReaderSize(r, 32<<10)
	var ev []byte
	send := func() bool {
		select {
		case out <- sseEvent(ev):
			ev = nil
			return true
		case <-done:
			return false
		}
	}
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: keep reading it.
			ev = append(ev, line...)
			continue
		}
		ev = append(ev, line...)
		if err != nil {
			if len(ev) > 0 && !send() {
				return
			}
			if err == io.EOF {
				err = nil
			}
			errc <- err
			return
		}
		if blank := bytes.TrimRight(line, "\r\n"); len(blank) == 0 && !send() {
			return
		}
	}
}

// deltaEvent is a content_block_delta event that can be joined: a text,
// thinking or tool-input delta with no other member.
type deltaEvent struct {
	index int
	kind  string // text_delta, thinking_delta or input_json_delta
	part  string // its text, thinking or partial_json
}

// deltaFields names the member of each kind of delta that carries its
// part.
var deltaFields = map[string]string{
	"text_delta":       "text",
	"thinking_delta":   "thinking",
	"input_json_delta": "partial_json",
}

// parseDelta returns the delta ev carries, when it is one that can be
// joined: an event named content_block_delta (or unnamed) whose data is
// {"type":"content_block_delta","index":N,"delta":{"type":K,F:"..."}}
// with nothing else.
func parseDelta(ev sseEvent) (deltaEvent, bool) {
	var data []byte
	for line := range bytes.Lines(ev) {
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
		case bytes.HasPrefix(line, []byte("event:")):
			if string(bytes.TrimSpace(line[len("event:"):])) != "content_block_delta" {
				return deltaEvent{}, false
			}
		case bytes.HasPrefix(line, []byte("data:")):
			if data != nil {
				return deltaEvent{}, false // data over several lines
			}
			data = bytes.TrimSpace(line[len("data:"):])
		default:
			return deltaEvent{}, false // an id, a retry, a comment
		}
	}
	if !bytes.Contains(data, []byte(`"content_block_delta"`)) {
		return deltaEvent{}, false
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil || len(top) != 3 {
		return deltaEvent{}, false
	}
	var typ string
	var d deltaEvent
	var delta map[string]json.RawMessage
	if json.Unmarshal(top["type"], &typ) != nil || typ != "content_block_delta" ||
		json.Unmarshal(top["index"], &d.index) != nil || json.Unmarshal(top["delta"], &delta) != nil || len(delta) != 2 {
		return deltaEvent{}, false
	}
	field, ok := "", false
	if json.Unmarshal(delta["type"], &d.kind) == nil {
		field, ok = deltaFields[d.kind]
	}
	if !ok || json.Unmarshal(delta[field], &d.part) != nil {
		return deltaEvent{}, false
	}
	return d, true
}

// encode returns the event of the joined delta d.
func (d deltaEvent) encode() sseEvent {
	data, _ := json.Marshal(map[string]any{
		"type":  "content_block_delta",
		"index": d.index,
		"delta": map[string]any{"type": d.kind, deltaFields[d.kind]: d.part},
	})
	out := make([]byte, 0, len(data)+48)
	out = append(out, "event: content_block_delta\ndata: "...)
	out = append(out, data...)
	return append(out, "\n\n"...)
}

// coalescer joins the deltas of one stream.
type coalescer struct {
	window time.Duration
	write  func(sseEvent) error
	// pending is the joined delta that waits, and held how many events
	// it joins (its first one, verbatim, when only one).
	pending deltaEvent
	first   sseEvent
	held    int
	// sent is when a delta of a block last went out, by block index.
	sent map[int]time.Time
}

// add takes the next event at now. It returns when the pending delta is
// due, zero when none waits.
func (c *coalescer) add(ev sseEvent, now time.Time) (due time.Time, err error) {
	d, ok := parseDelta(ev)
	if !ok {
		if err := c.flush(now); err != nil {
			return time.Time{}, err
		}
		return time.Time{}, c.write(ev)
	}
	if c.held > 0 && (d.index != c.pending.index || d.kind != c.pending.kind) {
		if err := c.flush(now); err != nil {
			return time.Time{}, err
		}
	}
	last, seen := c.sent[d.index]
	if c.held == 0 && (!seen || now.Sub(last) >= c.window) {
		c.sent[d.index] = now
		return time.Time{}, c.write(ev)
	}
	if c.held == 0 {
		c.pending, c.first = d, ev
	} else {
		c.pending.part += d.part
	}
	c.held++
	return c.sent[d.index].Add(c.window), nil
}

// flush writes the pending delta, if any.
func (c *coalescer) flush(now time.Time) error {
	if c.held == 0 {
		return nil
	}
	ev := c.first
	if c.held > 1 {
		ev = c.pending.encode()
	}
	c.held, c.first = 0, nil
	c.sent[c.pending.index] = now
	return c.write(ev)
}

// copyCoalesced copies the stream body to write, joining its deltas
// within window, and gives each event as the API sent it to watch first.
// It returns when the body ends or a write fails.
func copyCoalesced(body io.Reader, window time.Duration, watch func([]byte), write func(sseEvent) error) error {
	events := make(chan sseEvent, 16)
	errc := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go readSSE(body, events, errc, done)
	c := &coalescer{window: window, write: write, sent: make(map[int]time.Time)}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				if err := c.flush(time.Now()); err != nil {
					return err
				}
				return <-errc
			}
			watch(ev)
			due, err := c.add(ev, time.Now())
			if err != nil {
				return err
			}
			if !due.IsZero() && c.held == 1 {
				timer.Reset(time.Until(due))
			}
		case <-timer.C:
			if err := c.flush(time.Now()); err != nil {
				return err
			}
		}
	}
}
