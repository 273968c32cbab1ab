package claudepooltest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// These tests bound times from below only: a busy machine makes everything
// later, never earlier.

// timedEvent is an SSE event and when the client read it.
type timedEvent struct {
	sseEvent
	at time.Time
}

func readTimedSSE(t *testing.T, resp *http.Response) []timedEvent {
	t.Helper()
	sr := newSSEReader(t, resp.Body)
	var evs []timedEvent
	for {
		ev, ok := sr.next()
		if !ok {
			return evs
		}
		evs = append(evs, timedEvent{ev, time.Now()})
	}
}

// onlyRequest returns the server's single recorded request.
func onlyRequest(t *testing.T, s *Server) Request {
	t.Helper()
	got := s.Requests()
	require.Len(t, got, 1)
	return got[0]
}

// requireOrdered checks sent <= Time <= FirstByte <= answered, and that the
// server's own time to first byte is at least minTTFB.
func requireOrdered(t *testing.T, r Request, sent, answered time.Time, minTTFB time.Duration) {
	t.Helper()
	require.False(t, r.Time.Before(sent), "arrived %v before it was sent", sent.Sub(r.Time))
	require.False(t, r.FirstByte.IsZero(), "no first byte recorded")
	require.GreaterOrEqual(t, r.FirstByte.Sub(r.Time), minTTFB, "time to first byte")
	require.False(t, r.FirstByte.After(answered), "first byte recorded %v after the client had it", r.FirstByte.Sub(answered))
}

func TestFirstByteDelay(t *testing.T) {
	const delay = 50 * time.Millisecond
	tests := []struct {
		name   string
		cfg    Config
		path   string
		body   any
		status int
		min    time.Duration
	}{
		{"streamed", Config{FirstByteDelay: delay}, "/v1/messages", chatBody(true, "x"), http.StatusOK, delay},
		{"not streamed", Config{FirstByteDelay: delay}, "/v1/messages", chatBody(false, "x"), http.StatusOK, delay},
		{"error", Config{FirstByteDelay: delay, Reply: Fail(FailRateLimit)}, "/v1/messages", chatBody(true, "x"), http.StatusTooManyRequests, delay},
		{"bad body", Config{FirstByteDelay: delay}, "/v1/messages", "not an object", http.StatusBadRequest, delay},
		{"reply delay wins", Config{FirstByteDelay: delay, Reply: func(Request) Reply { return Reply{Text: "x", Delay: 2 * delay} }},
			"/v1/messages", chatBody(true, "x"), http.StatusOK, 2 * delay},
		{"no delay", Config{}, "/v1/messages", chatBody(true, "x"), http.StatusOK, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.cfg)
			sent := time.Now()
			resp, err := post(waitCtx(t), s, tc.path, tc.body)
			require.NoError(t, err)
			defer resp.Body.Close()
			answered := time.Now()
			require.Equal(t, tc.status, resp.StatusCode)
			require.GreaterOrEqual(t, answered.Sub(sent), tc.min, "the client's time to first byte")
			requireOrdered(t, onlyRequest(t, s), sent, answered, tc.min)
		})
	}
}

// A reply can opt out of the server's delay, and the cheap endpoints never
// wait for it: with an hour's delay these would hang.
func TestFirstByteDelayExemptions(t *testing.T) {
	s := newServer(t, Config{FirstByteDelay: time.Hour, Reply: func(Request) Reply { return Reply{Text: "now", Delay: -1} }})
	ctx := waitCtx(t)

	resp, err := post(ctx, s, "/v1/messages", chatBody(true, "x"))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, []string{"now"}, deltas(readSSE(t, resp.Body)))

	resp, err = post(ctx, s, "/v1/messages/count_tokens", chatBody(false, "x"))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	req, err := http.NewRequestWithContext(ctx, http.MethodHead, s.URL()+"/api/hello", nil)
	require.NoError(t, err)
	resp, err = s.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	got := s.Requests()
	require.Len(t, got, 3)
	for _, r := range got {
		require.False(t, r.FirstByte.Before(r.Time), "%s: first byte before arrival", r.Kind)
	}
}

func TestTokensPerSecond(t *testing.T) {
	text := strings.Repeat("0123456789", 4) // 40 characters: 11 tokens
	chars := utf8.RuneCountInString(text)
	const rate = 200.0
	total := time.Duration(float64(outputTokens(text)) / rate * float64(time.Second)) // 55ms
	tests := []struct {
		name   string
		cfg    Config
		chunks int // text_delta events expected
	}{
		{"one delta per token", Config{Reply: Text(text), TokensPerSecond: rate}, outputTokens(text)},
		{"config chunks", Config{Reply: Text(text), TokensPerSecond: rate, Chunks: 3}, 3},
		{"reply rate wins", Config{TokensPerSecond: 1e-9, Reply: func(Request) Reply {
			return Reply{Text: text, TokensPerSecond: rate, Chunks: 4}
		}}, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.cfg)
			sent := time.Now()
			resp, err := post(waitCtx(t), s, "/v1/messages", chatBody(true, "x"))
			require.NoError(t, err)
			defer resp.Body.Close()
			answered := time.Now()
			evs := readTimedSSE(t, resp)
			r := onlyRequest(t, s)
			requireOrdered(t, r, sent, answered, 0)

			var got strings.Builder
			n := 0
			for _, ev := range evs {
				if ev.name != "content_block_delta" {
					continue
				}
				// Each delta comes no earlier than the share of the total
				// time that the characters before it make up.
				due := time.Duration(float64(total) * float64(utf8.RuneCountInString(got.String())) / float64(chars))
				require.GreaterOrEqual(t, ev.at.Sub(r.FirstByte), due, "delta %d", n)
				got.WriteString(deltas([]sseEvent{ev.sseEvent})[0])
				n++
			}
			require.Equal(t, text, got.String())
			require.Equal(t, tc.chunks, n)
			last := evs[len(evs)-1]
			require.Equal(t, "message_stop", last.name)
			require.GreaterOrEqual(t, last.at.Sub(r.FirstByte), total, "the whole reply takes tokens/rate")
			usage := evs[len(evs)-2].data["usage"].(map[string]any)
			require.EqualValues(t, outputTokens(text), usage["output_tokens"], "the pace follows the reported usage")
		})
	}
}

// A reply that opts out of the pace, and a reply that is not streamed, are
// sent at once: at the server's rate these would take years.
func TestTokensPerSecondExemptions(t *testing.T) {
	s := newServer(t, Config{TokensPerSecond: 1e-9, Reply: func(r Request) Reply {
		if r.LastUserText() == "unpaced" {
			return Reply{Text: "abcdefgh", TokensPerSecond: -1}
		}
		return Reply{Text: "abcdefgh"}
	}})
	ctx := waitCtx(t)
	resp, err := post(ctx, s, "/v1/messages", chatBody(true, "unpaced"))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, []string{"abcdefgh"}, deltas(readSSE(t, resp.Body)), "an unpaced reply keeps one chunk")

	resp, err = post(ctx, s, "/v1/messages", chatBody(false, "x"))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "abcdefgh", decode(t, resp.Body)["content"].([]any)[0].(map[string]any)["text"])
}

// After a Hold, the rest of a paced reply takes the rest of the time,
// counted from the release.
func TestTokensPerSecondAfterHold(t *testing.T) {
	text := strings.Repeat("x", 40) // 11 tokens
	const rate = 200.0
	total := time.Duration(float64(outputTokens(text)) / rate * float64(time.Second))
	hold := make(chan struct{})
	s := newServer(t, Config{TokensPerSecond: rate, Reply: func(Request) Reply {
		return Reply{Text: text, Chunks: 4, Hold: hold}
	}})
	resp, err := post(waitCtx(t), s, "/v1/messages", chatBody(true, "x"))
	require.NoError(t, err)
	defer resp.Body.Close()
	sr := newSSEReader(t, resp.Body)
	for ev, ok := sr.next(); ev.name != "content_block_delta"; ev, ok = sr.next() {
		require.True(t, ok)
	}
	released := time.Now()
	close(hold)
	for {
		ev, ok := sr.next()
		require.True(t, ok)
		if ev.name == "message_stop" {
			break
		}
	}
	require.GreaterOrEqual(t, time.Since(released), total*3/4, "three of four chunks' time after the release")
}

// Pauses end when the client leaves.
func TestPausesEndWhenClientLeaves(t *testing.T) {
	t.Run("first byte delay", func(t *testing.T) {
		s := newServer(t, Config{FirstByteDelay: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			resp, err := post(ctx, s, "/v1/messages", chatBody(true, "x"))
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		_, err := s.WaitChatRequests(waitCtx(t), 1)
		require.NoError(t, err)
		cancel()
		require.ErrorIs(t, <-errc, context.Canceled)
		require.True(t, onlyRequest(t, s).FirstByte.IsZero(), "never answered")
	})
	t.Run("pace", func(t *testing.T) {
		s := newServer(t, Config{TokensPerSecond: 1e-9, Reply: Text("ab")})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		resp, err := post(ctx, s, "/v1/messages", chatBody(true, "x"))
		require.NoError(t, err)
		defer resp.Body.Close()
		sr := newSSEReader(t, resp.Body)
		for ev, ok := sr.next(); ev.name != "content_block_delta"; ev, ok = sr.next() {
			require.True(t, ok)
		}
		cancel()
		_, err = io.ReadAll(resp.Body)
		require.ErrorIs(t, err, context.Canceled)
	})
}
