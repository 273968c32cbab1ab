package claudepool

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sse returns a named server-sent event with data.
func sse(name, data string) string { return "event: " + name + "\ndata: " + data + "\n\n" }

// textDelta returns a text delta event of block index.
func textDelta(index int, text string) string {
	return sse("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":%q}}`, index, text))
}

func TestParseDelta(t *testing.T) {
	for _, c := range []struct {
		name string
		ev   string
		want deltaEvent
		ok   bool
	}{
		{"text", textDelta(0, "Hel"), deltaEvent{0, "text_delta", "Hel"}, true},
		{"thinking", sse("content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"thinking_delta","thinking":"hm"}}`), deltaEvent{1, "thinking_delta", "hm"}, true},
		{"tool input", sse("content_block_delta", `{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}`), deltaEvent{2, "input_json_delta", `{"a":`}, true},
		{"unnamed", "data: " + `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}` + "\n\n", deltaEvent{0, "text_delta", "x"}, true},
		{"CRLF", strings.ReplaceAll(textDelta(0, "x"), "\n", "\r\n"), deltaEvent{0, "text_delta", "x"}, true},
		{"signature", sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"abc"}}`), deltaEvent{}, false},
		{"citation", sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{}}}`), deltaEvent{}, false},
		{"another member", sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"},"extra":1}`), deltaEvent{}, false},
		{"another delta member", sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x","extra":1}}`), deltaEvent{}, false},
		{"other event", sse("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"}}`), deltaEvent{}, false},
		{"named otherwise", sse("ping", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}`), deltaEvent{}, false},
		{"with an id", "id: 7\n" + textDelta(0, "x"), deltaEvent{}, false},
		{"malformed", sse("content_block_delta", `{"type":"content_block_delta",`), deltaEvent{}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := parseDelta(sseEvent(c.ev))
			require.Equal(t, c.ok, ok)
			require.Equal(t, c.want, got)
		})
	}
}

// coalesced runs copyCoalesced over a stream the test writes event by
// event, and hands the events it writes to the test.
type coalesced struct {
	in      *io.PipeWriter
	out     chan string
	watched chan string
	done    chan error
}

func startCoalesced(t *testing.T, window time.Duration) *coalesced {
	t.Helper()
	r, w := io.Pipe()
	c := &coalesced{in: w, out: make(chan string, 100), watched: make(chan string, 100), done: make(chan error, 1)}
	go func() {
		c.done <- copyCoalesced(r, window,
			func(ev []byte) { c.watched <- string(ev) },
			func(ev sseEvent) error { c.out <- string(ev); return nil })
	}()
	t.Cleanup(func() { _ = w.Close() })
	return c
}

func (c *coalesced) send(t *testing.T, events ...string) {
	t.Helper()
	for _, ev := range events {
		_, err := c.in.Write([]byte(ev))
		require.NoError(t, err)
	}
}

// next waits for the next event written, at most 10 s.
func (c *coalesced) next(t *testing.T) string {
	t.Helper()
	select {
	case ev := <-c.out:
		return ev
	case <-time.After(10 * time.Second):
		require.FailNow(t, "no event written")
		return ""
	}
}

// none checks that nothing was written so far.
func (c *coalesced) none(t *testing.T) {
	t.Helper()
	select {
	case ev := <-c.out:
		require.FailNow(t, "an event was written", "%q", ev)
	default:
	}
}

// TestCoalesceJoins: the first delta of a block passes at once; those
// that follow within the window wait and go out joined, before the next
// event of another kind; every other event passes verbatim; the watcher
// sees every event as the API sent it.
func TestCoalesceJoins(t *testing.T) {
	c := startCoalesced(t, time.Hour)
	start := sse("message_start", `{"type":"message_start","message":{"usage":{"input_tokens":3}}}`)
	blockStart := sse("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
	c.send(t, start, blockStart, textDelta(0, "Hel"))
	require.Equal(t, start, c.next(t))
	require.Equal(t, blockStart, c.next(t))
	require.Equal(t, textDelta(0, "Hel"), c.next(t), "the first delta of a block passes at once")

	c.send(t, textDelta(0, "lo, "), textDelta(0, "wor"), textDelta(0, "ld \"q\" é"))
	// The watcher has seen the three events before and these three;
	// none of these was written.
	for range 6 {
		<-c.watched
	}
	c.none(t)

	stop := sse("content_block_stop", `{"type":"content_block_stop","index":0}`)
	c.send(t, stop)
	joined := c.next(t)
	d, ok := parseDelta(sseEvent(joined))
	require.True(t, ok, "%q", joined)
	require.Equal(t, deltaEvent{0, "text_delta", "lo, world \"q\" é"}, d)
	require.Equal(t, stop, c.next(t))

	// A single waiting delta goes out verbatim; a delta of another
	// block flushes the waiting one first.
	thinking := sse("content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"thinking_delta","thinking":"a"}}`)
	c.send(t, textDelta(0, "!"), thinking)
	require.Equal(t, textDelta(0, "!"), c.next(t))
	require.Equal(t, thinking, c.next(t), "the first delta of block 1")

	// At the end of the stream what waits goes out.
	c.send(t, textDelta(0, "a"), textDelta(0, "b"))
	require.NoError(t, c.in.Close())
	d, ok = parseDelta(sseEvent(c.next(t)))
	require.True(t, ok)
	require.Equal(t, "ab", d.part)
	require.NoError(t, <-c.done)
}

// TestCoalesceWindow: a waiting delta goes out when its window ends,
// with no other event to push it.
func TestCoalesceWindow(t *testing.T) {
	c := startCoalesced(t, 20*time.Millisecond)
	c.send(t, textDelta(0, "a"))
	require.Equal(t, textDelta(0, "a"), c.next(t))
	c.send(t, textDelta(0, "b"), textDelta(0, "c"))
	d, ok := parseDelta(sseEvent(c.next(t)))
	require.True(t, ok)
	// "b" and "c" went out together, or "b" alone then "c" if the
	// window ended between them: either way, in order and whole.
	text := d.part
	if text == "b" {
		d, ok = parseDelta(sseEvent(c.next(t)))
		require.True(t, ok)
		text += d.part
	}
	require.Equal(t, "bc", text)
	require.NoError(t, c.in.Close())
	require.NoError(t, <-c.done)
}

// TestCoalesceWholeText: whatever the timing, the text that comes out is
// the text that went in, and the other events keep their order.
func TestCoalesceWholeText(t *testing.T) {
	for _, window := range []time.Duration{time.Nanosecond, time.Millisecond, time.Hour} {
		t.Run(window.String(), func(t *testing.T) {
			var want strings.Builder
			var events []string
			for i := range 300 {
				part := fmt.Sprintf("w%d ", i)
				want.WriteString(part)
				events = append(events, textDelta(0, part))
				if i%50 == 49 {
					events = append(events, sse("ping", `{"type":"ping"}`))
				}
			}
			r, w := io.Pipe()
			go func() {
				for _, ev := range events {
					_, _ = w.Write([]byte(ev))
				}
				_ = w.Close()
			}()
			var got strings.Builder
			pings := 0
			err := copyCoalesced(r, window, func([]byte) {}, func(ev sseEvent) error {
				if d, ok := parseDelta(ev); ok {
					got.WriteString(d.part)
				} else {
					require.Contains(t, string(ev), "ping")
					pings++
				}
				return nil
			})
			require.NoError(t, err)
			require.Equal(t, want.String(), got.String())
			require.Equal(t, 6, pings)
		})
	}
}

// TestCoalesceWriteFails: a write that fails ends the copy with its
// error, and the reader goroutine ends with it.
func TestCoalesceWriteFails(t *testing.T) {
	r, w := io.Pipe()
	go func() {
		for range 10 {
			if _, err := w.Write([]byte(textDelta(0, "x"))); err != nil {
				return
			}
		}
		_ = w.Close()
	}()
	err := copyCoalesced(r, time.Nanosecond, func([]byte) {}, func(sseEvent) error { return io.ErrClosedPipe })
	require.ErrorIs(t, err, io.ErrClosedPipe)
	_ = r.Close()
}
