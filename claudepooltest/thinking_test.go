package claudepooltest

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// thinkingReply returns a ReplyFunc that answers every request with the
// given thinking and text in the given number of chunks.
func thinkingReply(thinking, text string, chunks int) ReplyFunc {
	return func(Request) Reply { return Reply{Thinking: thinking, Text: text, Chunks: chunks} }
}

// A streamed reply with Thinking begins with a thinking block at index 0,
// as the Messages API streams extended thinking, and puts its text block at
// index 1.
func TestThinkingStreamed(t *testing.T) {
	const thinking, text = "think one two", "answer here"
	s := newServer(t, Config{Reply: thinkingReply(thinking, text, 2)})
	resp := mustPost(t, s, "/v1/messages", chatBody(true, "x"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	evs := readSSE(t, resp.Body)
	require.Equal(t, []string{
		"message_start",
		"content_block_start", "ping", "content_block_delta", "content_block_delta", "content_block_delta", "content_block_stop",
		"content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
		"message_delta", "message_stop",
	}, names(evs))
	for _, ev := range evs {
		require.Equal(t, ev.name, ev.data["type"], "event name and data type agree")
	}

	require.Equal(t, map[string]any{"type": "thinking", "thinking": "", "signature": ""}, evs[1].data["content_block"])
	require.Equal(t, map[string]any{"type": "text", "text": ""}, evs[7].data["content_block"])
	for i, ev := range evs[1:7] {
		if ev.name != "ping" {
			require.EqualValues(t, 0, ev.data["index"], "event %d", i+1)
		}
	}
	for i, ev := range evs[7:11] {
		require.EqualValues(t, 1, ev.data["index"], "event %d", i+7)
	}

	require.Equal(t, []string{"think ", "one two"}, deltasOf(evs, "thinking_delta", "thinking"))
	require.Equal(t, []string{"answe", "r here"}, deltas(evs))
	sig := deltasOf(evs, "signature_delta", "signature")
	require.Len(t, sig, 1)
	require.Equal(t, "signature_delta", evs[5].data["delta"].(map[string]any)["type"], "the signature ends the thinking block")
	_, err := base64.StdEncoding.DecodeString(sig[0])
	require.NoError(t, err, "signature %q", sig[0])
	require.NotEmpty(t, sig[0])

	usage := evs[len(evs)-2].data["usage"].(map[string]any)
	require.EqualValues(t, outputTokens(thinking)+outputTokens(text), usage["output_tokens"], "thinking counts toward output_tokens")
}

// Without a chunk count the thinking goes in one delta, as the text does.
func TestThinkingOneDelta(t *testing.T) {
	s := newServer(t, Config{Reply: thinkingReply("a thought", "the answer", 0)})
	evs := readSSE(t, mustPost(t, s, "/v1/messages", chatBody(true, "x")).Body)
	require.Equal(t, []string{"a thought"}, deltasOf(evs, "thinking_delta", "thinking"))
	require.Equal(t, []string{"the answer"}, deltas(evs))
}

// A non-streamed reply with Thinking has a thinking block, with the same
// signature as the streamed one, before its text block.
func TestThinkingNotStreamed(t *testing.T) {
	const thinking, text = "think one two", "answer here"
	s := newServer(t, Config{Reply: thinkingReply(thinking, text, 2)})
	evs := readSSE(t, mustPost(t, s, "/v1/messages", chatBody(true, "x")).Body)
	sig := deltasOf(evs, "signature_delta", "signature")
	require.Len(t, sig, 1)

	resp := mustPost(t, s, "/v1/messages", chatBody(false, "x"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	m := decode(t, resp.Body)
	require.Equal(t, []any{
		map[string]any{"type": "thinking", "thinking": thinking, "signature": sig[0]},
		map[string]any{"type": "text", "text": text},
	}, m["content"])
	require.Equal(t, StopEndTurn, m["stop_reason"])
	require.EqualValues(t, outputTokens(thinking)+outputTokens(text), m["usage"].(map[string]any)["output_tokens"])
}

// The request's stops cut the text and leave the thinking whole; the usage
// counts both.
func TestThinkingStops(t *testing.T) {
	text40 := strings.Repeat("0123456789", 4) // 40 characters: 11 tokens
	tests := []struct {
		name      string
		thinking  string
		text      string
		maxTokens int
		seqs      []string
		want      ended
	}{
		{"stop sequence in both", "a END b", "x END y", 1024, []string{"END"},
			ended{"x ", StopSequence, "END", outputTokens("a END b") + outputTokens("x END")}},
		{"stop sequence in the thinking only", "a END b", "x y", 1024, []string{"END"},
			ended{"x y", StopEndTurn, nil, outputTokens("a END b") + outputTokens("x y")}},
		// The thinking alone would exceed max_tokens: the text is cut as
		// if there were none, and output_tokens exceeds the limit.
		{"max_tokens", text40, text40, 3, nil,
			ended{text40[:11], StopMaxTokens, nil, 11 + 3}},
		{"empty text", "only a thought", "", 1024, nil,
			ended{"", StopEndTurn, nil, outputTokens("only a thought") + 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			both(t, func(t *testing.T, stream bool) {
				s := newServer(t, Config{Reply: thinkingReply(tc.thinking, tc.text, 3)})
				thinking, got := askThinking(t, s, withStops(tc.maxTokens, tc.seqs), stream)
				require.Equal(t, tc.thinking, thinking, "the thinking is whole")
				require.Equal(t, tc.want, got)
			})
		})
	}
}

// A paced reply with thinking splits each block into one delta per
// estimated token and paces both blocks together.
func TestThinkingPaced(t *testing.T) {
	thinking, text := strings.Repeat("t", 40), strings.Repeat("x", 20) // 11 and 6 tokens
	const rate = 200.0
	tokens := outputTokens(thinking) + outputTokens(text)
	total := time.Duration(float64(tokens) / rate * float64(time.Second)) // 85ms
	s := newServer(t, Config{TokensPerSecond: rate, Reply: thinkingReply(thinking, text, 0)})
	resp, err := post(waitCtx(t), s, "/v1/messages", chatBody(true, "x"))
	require.NoError(t, err)
	defer resp.Body.Close()
	evs := readTimedSSE(t, resp)
	r := onlyRequest(t, s)

	var plain []sseEvent
	var firstText time.Time
	for _, ev := range evs {
		plain = append(plain, ev.sseEvent)
		if firstText.IsZero() && len(deltas([]sseEvent{ev.sseEvent})) == 1 {
			firstText = ev.at
		}
	}
	require.Len(t, deltasOf(plain, "thinking_delta", "thinking"), outputTokens(thinking))
	require.Len(t, deltas(plain), outputTokens(text))
	require.EqualValues(t, tokens, plain[len(plain)-2].data["usage"].(map[string]any)["output_tokens"])
	chars := utf8.RuneCountInString(thinking) + utf8.RuneCountInString(text)
	require.GreaterOrEqual(t, firstText.Sub(r.FirstByte), total*time.Duration(utf8.RuneCountInString(thinking))/time.Duration(chars),
		"the text begins after the thinking's share of the time")
	require.GreaterOrEqual(t, evs[len(evs)-1].at.Sub(r.FirstByte), total, "the whole reply takes tokens/rate")
}

// ChunkDelay comes before every chunk after the first, thinking and text
// alike.
func TestThinkingChunkDelay(t *testing.T) {
	const delay = 20 * time.Millisecond
	s := newServer(t, Config{Reply: thinkingReply("abcd", "efgh", 2), ChunkDelay: delay})
	start := time.Now()
	evs := readSSE(t, mustPost(t, s, "/v1/messages", chatBody(true, "x")).Body)
	require.Equal(t, []string{"ab", "cd"}, deltasOf(evs, "thinking_delta", "thinking"))
	require.Equal(t, []string{"ef", "gh"}, deltas(evs))
	require.GreaterOrEqual(t, time.Since(start), 3*delay, "three pauses between four chunks")
}

// A Hold pauses after the first text chunk, with the thinking block
// complete.
func TestThinkingHold(t *testing.T) {
	hold := make(chan struct{})
	s := newServer(t, Config{Reply: func(Request) Reply {
		return Reply{Thinking: "a thought", Text: "first second", Chunks: 2, Hold: hold}
	}})
	resp := mustPost(t, s, "/v1/messages", chatBody(true, "x"))
	sr := newSSEReader(t, resp.Body)
	var before []sseEvent
	for {
		ev, ok := sr.next()
		require.True(t, ok)
		before = append(before, ev)
		if len(deltas([]sseEvent{ev})) == 1 {
			break
		}
	}
	require.Equal(t, "a thought", strings.Join(deltasOf(before, "thinking_delta", "thinking"), ""))
	require.Len(t, deltasOf(before, "signature_delta", "signature"), 1)
	require.Equal(t, []string{"first "}, deltas(before))
	close(hold)
	var rest []sseEvent
	for ev, ok := sr.next(); ok; ev, ok = sr.next() {
		rest = append(rest, ev)
	}
	require.Equal(t, []string{"second"}, deltas(rest))
	require.Empty(t, deltasOf(rest, "thinking_delta", "thinking"))
	require.Equal(t, "message_stop", rest[len(rest)-1].name)
}
