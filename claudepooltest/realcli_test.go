package claudepooltest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// cliEnvVar names the variable that points the real-CLI tests at a claude
// executable (the Makefile sets it to the one scripts/install-cli.sh
// installs); skipE2EVar, set to any value, skips them.
const (
	cliEnvVar  = "CLAUDEPOOL_CLI"
	skipE2EVar = "CLAUDEPOOL_SKIP_E2E"
)

// realCLI returns the executable named by CLAUDEPOOL_CLI. It skips the test
// when that is unset or CLAUDEPOOL_SKIP_E2E is set, and fails it when the
// executable is missing, so that a broken install is not mistaken for an
// opt-out.
func realCLI(t *testing.T) string {
	t.Helper()
	if os.Getenv(skipE2EVar) != "" {
		t.Skip(skipE2EVar + " is set")
	}
	path := os.Getenv(cliEnvVar)
	if path == "" {
		t.Skip("set " + cliEnvVar + " to a claude executable (scripts/install-cli.sh prints one) to run against the real CLI")
	}
	_, err := exec.LookPath(path)
	require.NoError(t, err, "%s=%s", cliEnvVar, path)
	return path
}

// cliProc is one real CLI process in stream-json mode.
type cliProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan map[string]any
	raw     chan string
	wg      sync.WaitGroup
	stderr  strings.Builder
	started time.Time
}

// startCLI starts a CLI with no tools, a HOME and a working directory of
// its own, and extraArgs after the common arguments.
func startCLI(t *testing.T, path string, env []string, extraArgs ...string) *cliProc {
	t.Helper()
	return spawnCLI(t, path, env, t.TempDir(), t.TempDir(), append([]string{"--tools", ""}, extraArgs...)...)
}

// spawnCLI starts a CLI in stream-json mode with the given HOME and working
// directory, and extraArgs after the common arguments.
func spawnCLI(t *testing.T, path string, env []string, home, dir string, extraArgs ...string) *cliProc {
	t.Helper()
	args := []string{"-p", "--input-format", "stream-json", "--output-format", "stream-json",
		"--verbose", "--no-session-persistence"}
	cmd := exec.Command(path, append(args, extraArgs...)...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}, env...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	p := &cliProc{t: t, cmd: cmd, stdin: stdin, lines: make(chan map[string]any, 100), raw: make(chan string, 100)}
	cmd.Stderr = &p.stderr
	p.started = time.Now()
	require.NoError(t, cmd.Start())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"type": "non-json", "line": sc.Text()}
			}
			p.lines <- m
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		drained := time.Now()
		done := make(chan struct{})
		go func() {
			for range p.lines {
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		p.wg.Wait()
		err := cmd.Wait()
		t.Logf("stdout closed %v after the test's last read; exit: %v", time.Since(drained).Round(time.Millisecond), err)
		if t.Failed() {
			t.Logf("stderr: %s", p.stderr.String())
		}
	})
	return p
}

func (p *cliProc) send(v any) {
	p.t.Helper()
	b, err := json.Marshal(v)
	require.NoError(p.t, err)
	_, err = p.stdin.Write(append(b, '\n'))
	require.NoError(p.t, err)
}

// next returns the next stdout line of the given type, skipping others.
func (p *cliProc) next(typ string, timeout time.Duration) map[string]any {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-p.lines:
			require.True(p.t, ok, "stdout closed before a %q line; stderr: %s", typ, p.stderr.String())
			if m["type"] == typ {
				return m
			}
			p.t.Logf("line: %.300v", m)
		case <-deadline:
			require.FailNow(p.t, "timed out", "no %q line within %v", typ, timeout)
		}
	}
}

// untilResult reads stdout up to the next result line and returns it with
// the text of each assistant line before it, logging their stop_reason.
func (p *cliProc) untilResult(timeout time.Duration) (assistants []string, result map[string]any) {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-p.lines:
			require.True(p.t, ok, "stdout closed before a result line; stderr: %s", p.stderr.String())
			switch m["type"] {
			case "result":
				return assistants, m
			case "assistant":
				msg, _ := m["message"].(map[string]any)
				var texts []string
				blocks, _ := msg["content"].([]any)
				for _, b := range blocks {
					if b, ok := b.(map[string]any); ok && b["type"] == "text" {
						texts = append(texts, fmt.Sprint(b["text"]))
					}
				}
				p.t.Logf("assistant line: stop_reason=%v text=%q", msg["stop_reason"], strings.Join(texts, ""))
				assistants = append(assistants, strings.Join(texts, ""))
			}
		case <-deadline:
			require.FailNow(p.t, "timed out", "no result line within %v", timeout)
		}
	}
}

// textDeltas returns the text deltas of the streamed reply, up to its
// message_stop.
func (p *cliProc) textDeltas() []string {
	var got []string
	for {
		m := p.next("stream_event", 30*time.Second)
		ev := m["event"].(map[string]any)
		if d, _ := ev["delta"].(map[string]any); ev["type"] == "content_block_delta" && d["type"] == "text_delta" {
			got = append(got, d["text"].(string))
		}
		if ev["type"] == "message_stop" {
			return got
		}
	}
}

func (p *cliProc) control(id string, req map[string]any) map[string]any {
	p.t.Helper()
	p.send(map[string]any{"type": "control_request", "request_id": id, "request": req})
	m := p.next("control_response", 30*time.Second)
	resp := m["response"].(map[string]any)
	require.Equal(p.t, "success", resp["subtype"], "control response: %v", m)
	require.Equal(p.t, id, resp["request_id"])
	return resp
}

func userLine(text string) map[string]any {
	return map[string]any{
		"type":       "user",
		"session_id": "",
		"message": map[string]any{
			"role":    "user",
			"content": []any{map[string]any{"type": "text", "text": text}},
		},
		"parent_tool_use_id": nil,
	}
}

// turn readies a CLI, then sends the claim-time sequence and returns the
// result line and the time from claim to result.
func turn(t *testing.T, path string, srv *Server, text string) (map[string]any, time.Duration) {
	t.Helper()
	p := startCLI(t, path, srv.Env())
	p.control("r1", map[string]any{"subtype": "mcp_status"})
	t.Logf("spawn -> mcp_status answer: %v", time.Since(p.started).Round(time.Millisecond))
	claim := time.Now()
	p.control("r2", map[string]any{"subtype": "initialize", "systemPrompt": []string{"You are terse."}})
	p.control("r3", map[string]any{"subtype": "set_model", "model": "sonnet"})
	p.send(userLine(text))
	require.NoError(t, p.stdin.Close())
	res := p.next("result", 60*time.Second)
	took := time.Since(claim)
	t.Logf("claim -> result: %v", took.Round(time.Millisecond))
	return res, took
}

func logRequests(t *testing.T, srv *Server) {
	t.Helper()
	for _, r := range srv.Requests() {
		var msgs []string
		for _, m := range r.Messages {
			msgs = append(msgs, m.Role+":"+strings.Join(m.Texts, " | "))
		}
		var sys []int
		for _, s := range r.System {
			sys = append(sys, len(s))
		}
		t.Logf("request %d %s %s %s?%s model=%q stream=%v max_tokens=%d tools=%v system_lens=%v messages=%q",
			r.Seq, r.Kind, r.Method, r.Path, r.Query, r.Model, r.Stream, r.MaxTokens, r.Tools, sys, msgs)
	}
}

// lastMessage returns the last message of r's body as raw JSON.
func lastMessage(t *testing.T, r Request) string {
	t.Helper()
	var b struct {
		Messages []json.RawMessage `json:"messages"`
	}
	require.NoError(t, json.Unmarshal(r.Body, &b))
	if len(b.Messages) == 0 {
		return ""
	}
	return string(b.Messages[len(b.Messages)-1])
}

func TestRealCLI(t *testing.T) {
	path := realCLI(t)

	t.Run("chat", func(t *testing.T) {
		srv := NewServer(Config{})
		defer srv.Close()
		res, _ := turn(t, path, srv, "hello")
		logRequests(t, srv)
		t.Logf("result: %v", res)
		require.Equal(t, false, res["is_error"])
		require.Equal(t, EchoPrefix+"hello", res["result"])

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		chats, err := srv.WaitChatRequests(ctx, 1)
		require.NoError(t, err)
		require.Len(t, chats, 1)
		require.Equal(t, "claude-sonnet-5-5", chats[0].Model)
		require.Contains(t, chats[0].System, "You are terse.")
		require.Equal(t, "hello", chats[0].LastUserText())
	})

	// Each failure with the CLI's retries off (NoRetries): the shape of
	// its result, not the CLI's retry policy, is under test here.
	failures := []struct {
		fail     Failure
		status   any // api_error_status of the result line
		errType  any // api_error_type of the result line
		requests int // chat requests the CLI makes before giving up
	}{
		// On a 400 the CLI tries again twice, each time dropping a beta
		// feature it suspects the API rejects; it does not count these as
		// retries.
		{FailBadRequest, 400.0, "invalid_request_error", 3},
		{FailUnauthorized, 401.0, "authentication_error", 1},
		{FailRateLimit, 429.0, "rate_limit_error", 1},
		{FailServer, 500.0, "api_error", 1},
		{FailOverloaded, 529.0, "overloaded_error", 1},
		{FailHang, nil, nil, 1},
	}
	for _, tc := range failures {
		t.Run(tc.fail.String(), func(t *testing.T) {
			srv := NewServer(Config{Reply: Fail(tc.fail), APITimeout: 2 * time.Second, NoRetries: true})
			defer srv.Close()
			res, took := turn(t, path, srv, "hello")
			logRequests(t, srv)
			t.Logf("result: is_error=%v subtype=%v api_error_status=%v api_error_type=%v terminal_reason=%v result=%q duration_ms=%v",
				res["is_error"], res["subtype"], res["api_error_status"], res["api_error_type"], res["terminal_reason"], res["result"], res["duration_ms"])
			require.Equal(t, true, res["is_error"])
			require.Equal(t, "api_error", res["terminal_reason"])
			require.Equal(t, tc.status, res["api_error_status"])
			require.Equal(t, tc.errType, res["api_error_type"])
			require.Len(t, srv.ChatRequests(), tc.requests)
			require.Less(t, took, 10*time.Second)
		})
	}

	// A reply that stops with max_tokens or refusal does not end the CLI's
	// turn (2.1.330): the CLI asks the API again, with the stopped reply in
	// the history and a user message of its own after it, prints each reply
	// as an assistant line (stop_reason null) and gives the last reply
	// alone as the result text. When the replies keep stopping, it makes 3
	// such calls for max_tokens, 1 for refusal, then prints an assistant
	// line of its own with the error text and ends the turn with
	// is_error true, terminal_reason "api_error", and exits 1 once its
	// stdin is closed. A gateway that must answer one user line with one
	// API reply has to stop this.
	stops := []struct {
		name     string
		reason   string
		always   bool   // every chat reply stops, not only the first
		followUp string // how the CLI's own user message begins
		chats    int    // chat requests for the one user line
		result   string // how the result text begins
		isError  bool
	}{
		{"max_tokens once", StopMaxTokens, false, "Output token limit hit. Resume directly", 2, "part 2", false},
		{"max_tokens always", StopMaxTokens, true, "Output token limit hit. Resume directly", 4,
			"API Error: Claude's response exceeded the 128000 output token maximum.", true},
		{"refusal once", StopRefusal, false, "Your response above was stopped by a safety classifier", 2, "part 2", false},
		{"refusal always", StopRefusal, true, "Your response above was stopped by a safety classifier", 2,
			"API Error: Sonnet 5.5's safeguards flagged this message", true},
	}
	for _, tc := range stops {
		t.Run("stop "+tc.name, func(t *testing.T) {
			var chats atomic.Int32
			srv := NewServer(Config{Reply: func(r Request) Reply {
				if r.Kind != KindChat {
					return Echo(r)
				}
				n := chats.Add(1)
				rep := Reply{Text: fmt.Sprintf("part %d", n)}
				if n == 1 || tc.always {
					rep.StopReason = tc.reason
				}
				return rep
			}})
			defer srv.Close()
			p := startCLI(t, path, srv.Env())
			p.control("r1", map[string]any{"subtype": "mcp_status"})
			p.control("r2", map[string]any{"subtype": "initialize", "systemPrompt": []string{"You are terse."}})
			p.control("r3", map[string]any{"subtype": "set_model", "model": "sonnet"})
			p.send(userLine("hello"))
			require.NoError(t, p.stdin.Close())
			assistants, res := p.untilResult(60 * time.Second)
			logRequests(t, srv)
			got := srv.ChatRequests()
			for _, r := range got {
				t.Logf("chat request %d: last message %s", r.Seq, lastMessage(t, r))
			}
			t.Logf("result: is_error=%v subtype=%v stop_reason=%v terminal_reason=%v result=%q",
				res["is_error"], res["subtype"], res["stop_reason"], res["terminal_reason"], res["result"])

			require.Len(t, got, tc.chats, "chat requests for one user line")
			for i, r := range got {
				if i == 0 {
					require.Equal(t, "hello", r.LastUserText())
					continue
				}
				require.True(t, strings.HasPrefix(r.LastUserText(), tc.followUp), "request %d's last user text: %q", i+1, r.LastUserText())
				// The stopped reply stays in the history, just before
				// the CLI's own user message.
				n := len(r.Messages)
				require.Equal(t, "assistant", r.Messages[n-2].Role)
				require.Equal(t, []string{fmt.Sprintf("part %d", i)}, r.Messages[n-2].Texts)
			}
			require.Equal(t, tc.isError, res["is_error"])
			require.True(t, strings.HasPrefix(res["result"].(string), tc.result), "result %q", res["result"])
			var parts []string
			for i := range tc.chats {
				parts = append(parts, fmt.Sprintf("part %d", i+1))
			}
			if tc.isError {
				parts = append(parts, res["result"].(string))
			}
			require.Equal(t, parts, assistants, "every reply, then the error, as assistant lines")
		})
	}

	// A reply that begins with a thinking block, as with extended
	// thinking: the CLI (2.1.330) passes the block's events through,
	// prints the block in an assistant line of its own (the text block
	// gets another, with the same message id), and sends it back,
	// signature and all, in the history of the next turn. It asks for
	// adaptive thinking and sends output_config {"effort":"medium"}.
	t.Run("thinking", func(t *testing.T) {
		const thinking = "The user says hello; a greeting back will do."
		srv := NewServer(Config{Reply: func(r Request) Reply {
			if r.Kind != KindChat {
				return Echo(r)
			}
			return Reply{Thinking: thinking, Text: EchoPrefix + r.LastUserText(), Chunks: 2}
		}})
		defer srv.Close()
		p := startCLI(t, path, srv.Env(), "--include-partial-messages")
		p.control("r1", map[string]any{"subtype": "mcp_status"})
		p.send(userLine("hello"))

		var thinkingDeltas []string
		var thinkingBlocks []map[string]any
		for res := map[string]any(nil); res == nil; {
			select {
			case m, ok := <-p.lines:
				require.True(t, ok, "stdout closed before a result line; stderr: %s", p.stderr.String())
				switch m["type"] {
				case "result":
					res = m
					t.Logf("result: is_error=%v result=%q", m["is_error"], m["result"])
					require.Equal(t, false, m["is_error"])
					require.Equal(t, EchoPrefix+"hello", m["result"])
				case "stream_event":
					ev := m["event"].(map[string]any)
					if d, _ := ev["delta"].(map[string]any); d["type"] == "thinking_delta" {
						thinkingDeltas = append(thinkingDeltas, d["thinking"].(string))
					}
				case "assistant":
					t.Logf("assistant line: %.500v", m["message"])
					msg, _ := m["message"].(map[string]any)
					blocks, _ := msg["content"].([]any)
					for _, b := range blocks {
						if b, ok := b.(map[string]any); ok && b["type"] == "thinking" {
							thinkingBlocks = append(thinkingBlocks, b)
						}
					}
				}
			case <-time.After(60 * time.Second):
				require.FailNow(t, "timed out", "no result line")
			}
		}
		require.Equal(t, thinking, strings.Join(thinkingDeltas, ""), "the thinking_deltas, passed through")
		require.Len(t, thinkingBlocks, 1, "an assistant line carries the thinking block")
		require.Equal(t, thinking, thinkingBlocks[0]["thinking"])
		require.Equal(t, signature(thinking), thinkingBlocks[0]["signature"])

		p.send(userLine("again"))
		require.NoError(t, p.stdin.Close())
		res := p.next("result", 60*time.Second)
		require.Equal(t, false, res["is_error"])
		logRequests(t, srv)
		chats := srv.ChatRequests()
		require.Len(t, chats, 2)
		for _, r := range chats {
			t.Logf("chat request %d: thinking=%s output_config=%s", r.Seq, r.Thinking, r.OutputConfig)
			require.NotNil(t, r.Thinking)
			require.JSONEq(t, `{"effort":"medium"}`, string(r.OutputConfig))
		}
		var replies []Message
		for _, m := range chats[1].Messages {
			if m.Role == "assistant" {
				replies = append(replies, m)
			}
		}
		require.Equal(t, []Message{{
			Role:  "assistant",
			Texts: []string{EchoPrefix + "hello"},
			Types: []string{"thinking", "text"},
		}}, replies, "the first reply, thinking block included, in the second request's history")
		require.Contains(t, string(chats[1].Body), signature(thinking))
	})

	t.Run("partial messages", func(t *testing.T) {
		srv := NewServer(Config{Reply: Text("one two three"), Chunks: 3, ChunkDelay: 20 * time.Millisecond})
		defer srv.Close()
		p := startCLI(t, path, srv.Env(), "--include-partial-messages")
		p.control("r1", map[string]any{"subtype": "mcp_status"})
		p.send(userLine("hello"))
		require.NoError(t, p.stdin.Close())
		got := p.textDeltas()
		require.Equal(t, []string{"one ", "two ", "three"}, got)
		res := p.next("result", 30*time.Second)
		require.Equal(t, false, res["is_error"])
		require.Equal(t, "one two three", res["result"])
	})

	t.Run("paced", func(t *testing.T) {
		const delay, rate = 200 * time.Millisecond, 100.0
		text := "a reply paced like a real API, one token at a time"
		srv := NewServer(Config{Reply: Text(text), FirstByteDelay: delay, TokensPerSecond: rate})
		defer srv.Close()
		p := startCLI(t, path, srv.Env(), "--include-partial-messages")
		p.control("r1", map[string]any{"subtype": "mcp_status"})
		p.send(userLine("hello"))
		require.NoError(t, p.stdin.Close())
		got := p.textDeltas()
		ended := time.Now()
		require.Len(t, got, outputTokens(text), "one delta per token")
		require.Equal(t, text, strings.Join(got, ""))
		res := p.next("result", 30*time.Second)
		require.Equal(t, false, res["is_error"])
		chats := srv.ChatRequests()
		require.Len(t, chats, 1)
		r := chats[0]
		require.GreaterOrEqual(t, r.FirstByte.Sub(r.Time), delay)
		pace := time.Duration(float64(outputTokens(text)) / rate * float64(time.Second))
		require.GreaterOrEqual(t, ended.Sub(r.FirstByte), pace)
		t.Logf("arrival -> first byte %v; first byte -> message_stop seen %v (pace %v)",
			r.FirstByte.Sub(r.Time).Round(time.Millisecond), ended.Sub(r.FirstByte).Round(time.Millisecond), pace)
	})

	t.Run("interrupt mid-stream", func(t *testing.T) {
		hold := make(chan struct{})
		defer close(hold)
		srv := NewServer(Config{Reply: func(Request) Reply { return Reply{Text: "first second", Chunks: 2, Hold: hold} }})
		defer srv.Close()
		p := startCLI(t, path, srv.Env(), "--include-partial-messages")
		p.control("r1", map[string]any{"subtype": "mcp_status"})
		p.send(userLine("hello"))
		require.NoError(t, p.stdin.Close())
		for {
			m := p.next("stream_event", 30*time.Second)
			if m["event"].(map[string]any)["type"] == "content_block_delta" {
				break
			}
		}
		sent := time.Now()
		require.NoError(t, p.cmd.Process.Signal(os.Interrupt))
		res := p.next("result", 30*time.Second)
		t.Logf("SIGINT -> result: %v; subtype=%v is_error=%v terminal_reason=%v result=%q",
			time.Since(sent).Round(time.Millisecond), res["subtype"], res["is_error"], res["terminal_reason"], res["result"])
		require.Equal(t, "error_during_execution", res["subtype"])
		require.Equal(t, "aborted_streaming", res["terminal_reason"])
	})
}
