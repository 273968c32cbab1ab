package claudepooltest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// ended is how a reply ended, as a client reads it.
type ended struct {
	text         string
	stopReason   string
	stopSequence any // a string, or nil for null
	outputTokens int
}

// ask posts body, streamed or not, and returns how its reply ended. It
// checks that both shapes say the same thing where they overlap, and that
// the reply has no thinking block.
func ask(t *testing.T, s *Server, body map[string]any, stream bool) ended {
	t.Helper()
	thinking, e := askThinking(t, s, body, stream)
	require.Empty(t, thinking, "no thinking block")
	return e
}

// askThinking is ask for a reply that may begin with a thinking block: it
// also returns the thinking, "" when there is none.
func askThinking(t *testing.T, s *Server, body map[string]any, stream bool) (thinking string, e ended) {
	t.Helper()
	body["stream"] = stream
	resp := mustPost(t, s, "/v1/messages?beta=true", body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	if !stream {
		m := decode(t, resp.Body)
		content := m["content"].([]any)
		if len(content) == 2 {
			block := content[0].(map[string]any)
			require.Equal(t, "thinking", block["type"])
			thinking = block["thinking"].(string)
			content = content[1:]
		}
		require.Len(t, content, 1)
		return thinking, ended{
			text:         content[0].(map[string]any)["text"].(string),
			stopReason:   m["stop_reason"].(string),
			stopSequence: m["stop_sequence"],
			outputTokens: int(m["usage"].(map[string]any)["output_tokens"].(float64)),
		}
	}
	evs := readSSE(t, resp.Body)
	require.Equal(t, "message_stop", evs[len(evs)-1].name)
	md := evs[len(evs)-2]
	require.Equal(t, "message_delta", md.name)
	start := evs[0].data["message"].(map[string]any)
	require.Nil(t, start["stop_reason"], "message_start has no stop_reason yet")
	require.Nil(t, start["stop_sequence"])
	delta := md.data["delta"].(map[string]any)
	return strings.Join(deltasOf(evs, "thinking_delta", "thinking"), ""), ended{
		text:         strings.Join(deltas(evs), ""),
		stopReason:   delta["stop_reason"].(string),
		stopSequence: delta["stop_sequence"],
		outputTokens: int(md.data["usage"].(map[string]any)["output_tokens"].(float64)),
	}
}

// withStops returns a chat body with the given max_tokens (absent when 0)
// and stop_sequences (absent when nil).
func withStops(maxTokens int, seqs []string) map[string]any {
	b := chatBody(true, "x")
	delete(b, "max_tokens")
	if maxTokens != 0 {
		b["max_tokens"] = maxTokens
	}
	if seqs != nil {
		b["stop_sequences"] = seqs
	}
	return b
}

// both runs f for a streamed and a non-streamed reply.
func both(t *testing.T, f func(t *testing.T, stream bool)) {
	t.Helper()
	for _, stream := range []bool{true, false} {
		name := "not streamed"
		if stream {
			name = "streamed"
		}
		t.Run(name, func(t *testing.T) { f(t, stream) })
	}
}

func TestStopMaxTokens(t *testing.T) {
	text40 := strings.Repeat("0123456789", 4) // 40 characters: 11 tokens
	tests := []struct {
		name      string
		text      string
		maxTokens int
		want      ended
	}{
		{"cut", text40, 3, ended{text40[:11], StopMaxTokens, nil, 3}},
		{"one token", "mock reply to: Hi", 1, ended{"moc", StopMaxTokens, nil, 1}},
		{"fits exactly", text40[:39], 10, ended{text40[:39], StopEndTurn, nil, 10}},
		{"one character over", text40, 10, ended{text40[:39], StopMaxTokens, nil, 10}},
		{"far below the limit", text40, 32000, ended{text40, StopEndTurn, nil, 11}},
		{"no max_tokens", text40, 0, ended{text40, StopEndTurn, nil, 11}},
		{"negative max_tokens", text40, -1, ended{text40, StopEndTurn, nil, 11}},
		{"characters, not bytes", strings.Repeat("日本語", 4), 2, ended{"日本語日本語日", StopMaxTokens, nil, 2}},
		{"empty text", "", 1, ended{"", StopEndTurn, nil, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			both(t, func(t *testing.T, stream bool) {
				s := newServer(t, Config{Reply: Text(tc.text)})
				require.Equal(t, tc.want, ask(t, s, withStops(tc.maxTokens, nil), stream))
				require.Equal(t, tc.maxTokens, s.Requests()[0].MaxTokens)
			})
		})
	}
}

// A cut reply is what is split into chunks and paced.
func TestStopMaxTokensChunks(t *testing.T) {
	s := newServer(t, Config{Reply: func(Request) Reply {
		return Reply{Text: strings.Repeat("abcd", 100), Chunks: 3, TokensPerSecond: 1e6}
	}})
	resp := mustPost(t, s, "/v1/messages", withStops(3, nil))
	evs := readSSE(t, resp.Body)
	require.Equal(t, []string{"abc", "dabc", "dabc"}, deltas(evs), "11 characters in 3 chunks")
	require.Equal(t, StopMaxTokens, evs[len(evs)-2].data["delta"].(map[string]any)["stop_reason"])
}

func TestStopSequences(t *testing.T) {
	tests := []struct {
		name string
		text string
		seqs []string
		want ended
	}{
		{"cut before it", "one two END three", []string{"END"}, ended{"one two ", StopSequence, "END", 3}},
		{"absent", "one two three", []string{"END"}, ended{"one two three", StopEndTurn, nil, 4}},
		{"first occurrence", "a.b.c", []string{"."}, ended{"a", StopSequence, ".", 1}},
		{"the first to end wins", "xx abc b", []string{"abc", "b"}, ended{"xx a", StopSequence, "b", 2}},
		{"of two that end together, the longer", "xx ab", []string{"b", "ab"}, ended{"xx ", StopSequence, "ab", 2}},
		{"at the start", "STOP here", []string{"STOP"}, ended{"", StopSequence, "STOP", 2}},
		{"empty sequences ignored", "abc", []string{"", "c"}, ended{"ab", StopSequence, "c", 1}},
		{"none", "abc", nil, ended{"abc", StopEndTurn, nil, 1}},
		{"multibyte", "日本語です。次", []string{"。"}, ended{"日本語です", StopSequence, "。", 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			both(t, func(t *testing.T, stream bool) {
				s := newServer(t, Config{Reply: Text(tc.text)})
				require.Equal(t, tc.want, ask(t, s, withStops(1024, tc.seqs), stream))
			})
		})
	}
}

// With stop_sequences and max_tokens, the stop that comes first wins.
func TestStopSequenceAndMaxTokens(t *testing.T) {
	text := strings.Repeat("a", 20) + "END" + strings.Repeat("b", 20) // the sequence ends at character 23
	tests := []struct {
		name      string
		maxTokens int
		want      ended
	}{
		// 6 tokens allow 23 characters: the sequence ends within them.
		{"sequence first", 6, ended{text[:20], StopSequence, "END", 6}},
		{"sequence well within", 100, ended{text[:20], StopSequence, "END", 6}},
		// 5 tokens allow 19 characters: the limit comes first.
		{"max_tokens first", 5, ended{text[:19], StopMaxTokens, nil, 5}},
		{"max_tokens inside the sequence", 1, ended{text[:3], StopMaxTokens, nil, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			both(t, func(t *testing.T, stream bool) {
				s := newServer(t, Config{Reply: Text(text)})
				require.Equal(t, tc.want, ask(t, s, withStops(tc.maxTokens, []string{"END"}), stream))
			})
		})
	}
}

// Reply.StopReason ends a whole reply with any stop reason, in both shapes;
// a stop from the request wins over it.
func TestStopReason(t *testing.T) {
	tests := []struct {
		name      string
		reason    string
		maxTokens int
		seqs      []string
		want      ended
	}{
		{"default", "", 1024, nil, ended{"partial answer", StopEndTurn, nil, 4}},
		{"refusal", StopRefusal, 1024, nil, ended{"partial answer", StopRefusal, nil, 4}},
		{"max_tokens under a high limit", StopMaxTokens, 32000, nil, ended{"partial answer", StopMaxTokens, nil, 4}},
		{"pause_turn", StopPauseTurn, 1024, nil, ended{"partial answer", StopPauseTurn, nil, 4}},
		{"max_tokens cuts a refusal", StopRefusal, 2, nil, ended{"partial", StopMaxTokens, nil, 2}},
		{"a stop sequence cuts a refusal", StopRefusal, 1024, []string{" "}, ended{"partial", StopSequence, " ", 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			both(t, func(t *testing.T, stream bool) {
				s := newServer(t, Config{Reply: func(Request) Reply {
					return Reply{Text: "partial answer", StopReason: tc.reason}
				}})
				require.Equal(t, tc.want, ask(t, s, withStops(tc.maxTokens, tc.seqs), stream))
			})
		})
	}
}

func TestFirstStop(t *testing.T) {
	seq, start, stop := firstStop("héllo wörld", []string{"wö", "ll"})
	require.Equal(t, "ll", seq)
	require.Equal(t, "hé", "héllo wörld"[:start])
	require.Equal(t, "héll", "héllo wörld"[:stop])
	seq, _, _ = firstStop("abc", []string{"x", ""})
	require.Empty(t, seq)
	require.Equal(t, "日本", prefix("日本語", 2))
	require.Equal(t, "", prefix("abc", 0))
	require.Equal(t, "abc", prefix("abc", 9))
}

func TestRecordingSamplingFields(t *testing.T) {
	s := newServer(t, Config{})
	body := chatBody(true, "hi")
	body["temperature"] = 0.25
	body["top_p"] = 0.9
	body["top_k"] = 40
	body["stop_sequences"] = []string{"\n\nHuman:", "END"}
	body["metadata"] = map[string]any{"user_id": `{"device_id":"abc","session_id":"s1"}`}
	body["thinking"] = map[string]any{"type": "enabled", "budget_tokens": 2048}
	b := mustJSON(t, body)
	req, err := http.NewRequest(http.MethodPost, s.URL()+"/v1/messages?beta=true", strings.NewReader(string(b)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer tok-123")
	req.Header.Set("X-Api-Key", "key-456")
	resp, err := s.Client().Do(req)
	require.NoError(t, err)
	readSSE(t, resp.Body)
	require.NoError(t, resp.Body.Close())

	got := s.Requests()
	require.Len(t, got, 1)
	r := got[0]
	require.Equal(t, "Bearer tok-123", r.Header.Get("Authorization"))
	require.Equal(t, "key-456", r.Header.Get("X-Api-Key"))
	require.NotNil(t, r.Temperature)
	require.Equal(t, 0.25, *r.Temperature)
	require.NotNil(t, r.TopP)
	require.Equal(t, 0.9, *r.TopP)
	require.NotNil(t, r.TopK)
	require.Equal(t, 40, *r.TopK)
	require.Equal(t, []string{"\n\nHuman:", "END"}, r.StopSequences)
	require.Equal(t, `{"device_id":"abc","session_id":"s1"}`, r.MetadataUserID)
	require.JSONEq(t, `{"type":"enabled","budget_tokens":2048}`, string(r.Thinking))

	// Requests returns copies: changing one leaves the record alone.
	*got[0].Temperature = 1
	*got[0].TopP = 1
	*got[0].TopK = 1
	got[0].StopSequences[0] = "changed"
	got[0].Thinking[0] = 'X'
	again := s.Requests()[0]
	require.Equal(t, 0.25, *again.Temperature)
	require.Equal(t, 0.9, *again.TopP)
	require.Equal(t, 40, *again.TopK)
	require.Equal(t, "\n\nHuman:", again.StopSequences[0])
	require.JSONEq(t, `{"type":"enabled","budget_tokens":2048}`, string(again.Thinking))
}

// Absent fields stay nil or empty, and zero values are told from absent
// ones.
func TestRecordingSamplingFieldsAbsent(t *testing.T) {
	s := newServer(t, Config{})
	readSSE(t, mustPost(t, s, "/v1/messages", chatBody(true, "plain")).Body)
	zero := chatBody(true, "zero")
	zero["temperature"] = 0
	zero["top_k"] = 0
	zero["stop_sequences"] = []string{}
	zero["metadata"] = map[string]any{}
	zero["thinking"] = nil
	readSSE(t, mustPost(t, s, "/v1/messages", zero).Body)

	got := s.Requests()
	require.Len(t, got, 2)
	plain := got[0]
	require.Nil(t, plain.Temperature)
	require.Nil(t, plain.TopP)
	require.Nil(t, plain.TopK)
	require.Nil(t, plain.StopSequences)
	require.Empty(t, plain.MetadataUserID)
	require.Nil(t, plain.Thinking)
	require.Empty(t, plain.Header.Get("Authorization"))

	z := got[1]
	require.NotNil(t, z.Temperature)
	require.Zero(t, *z.Temperature)
	require.Nil(t, z.TopP)
	require.NotNil(t, z.TopK)
	require.Zero(t, *z.TopK)
	require.NotNil(t, z.StopSequences)
	require.Empty(t, z.StopSequences)
	require.Empty(t, z.MetadataUserID)
	require.Nil(t, z.Thinking, "thinking: null counts as absent")
}

// A field of the wrong type is a bad request, as on the Messages API.
func TestRecordingSamplingFieldsBadType(t *testing.T) {
	for _, field := range []string{"temperature", "top_p", "top_k", "stop_sequences", "metadata"} {
		t.Run(field, func(t *testing.T) {
			s := newServer(t, Config{})
			body := chatBody(true, "x")
			body[field] = "not the right type"
			resp := mustPost(t, s, "/v1/messages", body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			require.Equal(t, "invalid_request_error", decode(t, resp.Body)["error"].(map[string]any)["type"])
			require.Len(t, s.Requests(), 1, "a bad request is recorded too")
		})
	}
}
