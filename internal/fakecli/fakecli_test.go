//go:build unix

package fakecli_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudepool/claudepool/internal/fakecli"
)

// claudePath is the fake CLI built by TestMain.
var claudePath string

func TestMain(m *testing.M) { fakecli.Main(m, &claudePath) }

// waitFor bounds every wait on the fake.
const waitFor = 10 * time.Second

// streamArgs are the flags the pool spawns the CLI with.
var streamArgs = []string{"-p", "--input-format", "stream-json", "--output-format", "stream-json",
	"--verbose", "--no-session-persistence", "--tools", ""}

// proc is a running fake CLI. Its stdout and stderr are plain pipes read by
// goroutines of their own, so that the process's exit can be observed even
// while a grandchild keeps them open.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string   // stdout lines; closed at EOF
	exited chan struct{} // closed once the process has been waited for
	errEOF chan struct{} // closed at stderr EOF

	mu     sync.Mutex // guards stderr
	stderr strings.Builder
}

// start runs the fake with args and KEY=VALUE env entries in a new process
// group, which the test's cleanup kills.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(claudePath, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	outR, outW, err := os.Pipe()
	require.NoError(t, err)
	errR, errW, err := os.Pipe()
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = outW, errW
	require.NoError(t, cmd.Start())
	_ = outW.Close()
	_ = errW.Close()

	p := &proc{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 64),
		exited: make(chan struct{}), errEOF: make(chan struct{})}
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		defer close(p.lines)
		defer outR.Close()
		r := bufio.NewReader(outR)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			p.lines <- strings.TrimSuffix(line, "\n")
		}
	}()
	go func() {
		defer close(p.errEOF)
		defer errR.Close()
		b := make([]byte, 4096)
		for {
			n, err := errR.Read(b)
			p.mu.Lock()
			p.stderr.Write(b[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer close(p.exited)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		for _, c := range []chan struct{}{p.exited, p.errEOF} {
			select {
			case <-c:
			case <-time.After(waitFor):
				t.Error("fake did not stop")
			}
		}
		// Drain stdout so its reader can finish.
		for {
			select {
			case _, ok := <-p.lines:
				if ok {
					continue
				}
			case <-time.After(waitFor):
				t.Error("fake stdout stayed open")
			}
			break
		}
		<-outDone
	})
	return p
}

func startStream(t *testing.T, env ...string) *proc {
	t.Helper()
	return start(t, env, streamArgs...)
}

func startPartial(t *testing.T, env ...string) *proc {
	t.Helper()
	return start(t, env, append(slices.Clone(streamArgs), "--include-partial-messages")...)
}

// send writes lines to stdin, in one write: a fake that exits on the
// first of them (and so has its stdin closed by Wait) has got them all.
func (p *proc) send(lines ...string) {
	p.t.Helper()
	_, err := io.WriteString(p.stdin, strings.Join(lines, "\n")+"\n")
	require.NoError(p.t, err)
}

func (p *proc) closeStdin() {
	p.t.Helper()
	require.NoError(p.t, p.stdin.Close())
}

// next returns the next stdout line.
func (p *proc) next() string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		require.True(p.t, ok, "stdout closed; stderr: %s", p.errText())
		return l
	case <-time.After(waitFor):
		require.FailNow(p.t, "no stdout line", "stderr: %s", p.errText())
	}
	return ""
}

// nextJSON returns the next stdout line decoded.
func (p *proc) nextJSON() map[string]any {
	p.t.Helper()
	l := p.next()
	var m map[string]any
	require.NoError(p.t, json.Unmarshal([]byte(l), &m), "line: %.200s", l)
	return m
}

// expect reads the next line and checks its type and subtype ("" for any).
func (p *proc) expect(typ, subtype string) map[string]any {
	p.t.Helper()
	m := p.nextJSON()
	require.Equal(p.t, typ, m["type"], "line: %.300v", m)
	if subtype != "" {
		require.Equal(p.t, subtype, m["subtype"], "line: %.300v", m)
	}
	return m
}

// eof waits for stdout to close with no further line.
func (p *proc) eof() {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		require.False(p.t, ok, "unexpected line: %.300s", l)
	case <-time.After(waitFor):
		require.FailNow(p.t, "stdout still open")
	}
}

// wait waits for the process to exit and returns its exit code, or -1
// with the signal that killed it.
func (p *proc) wait() (int, syscall.Signal) {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(waitFor):
		require.FailNow(p.t, "fake did not exit", "stderr: %s", p.errText())
	}
	ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return -1, ws.Signal()
	}
	return ws.ExitStatus(), 0
}

func (p *proc) exitCode() int {
	p.t.Helper()
	code, sig := p.wait()
	require.Zero(p.t, sig, "killed by signal")
	return code
}

// stderrText waits for stderr to close and returns it.
func (p *proc) stderrText() string {
	p.t.Helper()
	select {
	case <-p.errEOF:
	case <-time.After(waitFor):
		require.FailNow(p.t, "stderr still open")
	}
	return p.errText()
}

func (p *proc) errText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(sig))
}

func control(id, subtype string, extra ...string) string {
	s := fmt.Sprintf(`{"type":"control_request","request_id":%q,"request":{"subtype":%q`, id, subtype)
	for _, e := range extra {
		s += "," + e
	}
	return s + "}}"
}

func success(id, response string) string {
	return fmt.Sprintf(`{"type":"control_response","response":{"subtype":"success","request_id":%q,"response":%s}}`, id, response)
}

func user(text string) string {
	b, _ := json.Marshal(text)
	return `{"type":"user","session_id":"","message":{"role":"user","content":[{"type":"text","text":` +
		string(b) + `}]},"parent_tool_use_id":null}`
}

// notTyped is the user line of a message marked as text nobody typed at
// the CLI's prompt, as the pool sends every chat's.
func notTyped(text string) string {
	return strings.TrimSuffix(user(text), "}") + `,"text_not_typed":true}`
}

// assistantText returns the text of an assistant line.
func assistantText(t *testing.T, m map[string]any) string {
	t.Helper()
	msg := m["message"].(map[string]any)
	var b strings.Builder
	for _, c := range msg["content"].([]any) {
		b.WriteString(c.(map[string]any)["text"].(string))
	}
	return b.String()
}

func TestControlRequests(t *testing.T) {
	p := startStream(t)
	p.send(control("r1", "mcp_status"))
	require.Equal(t, success("r1", `{"mcpServers":[]}`), p.next(), "nothing may come before the first answer")
	p.send(control("r2", "get_settings"))
	require.Equal(t, success("r2", `{}`), p.next())
	p.send(control("r3", "initialize", `"systemPrompt":[""]`))
	require.Equal(t, success("r3", `{"commands":[],"models":[],"account":{}}`), p.next())
	p.send(control("r4", "set_model", `"model":"sonnet"`))
	require.Equal(t, success("r4", `{"model":"claude-sonnet-5-5"}`), p.next())
	p.send(control("r5", "set_model", `"model":"opus"`))
	require.Equal(t, success("r5", `{"model":"claude-opus-5-5"}`), p.next())
	p.send(control("r6", "set_model", `"model":"claude-haiku-9"`))
	require.Equal(t, success("r6", `{"model":"claude-haiku-9"}`), p.next())
	p.send(control("r7", "interrupt"))
	require.Equal(t, success("r7", `{}`), p.next())
	p.send(control("r8", "no_such_thing"))
	require.Equal(t, `{"type":"control_response","response":{"subtype":"error","request_id":"r8","error":"Unknown control request subtype: no_such_thing"}}`, p.next())
	p.closeStdin()
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestIdleEOF(t *testing.T) {
	p := startStream(t, fakecli.EnvExitCode+"=7")
	p.closeStdin()
	p.eof()
	require.Equal(t, 0, p.exitCode(), "EOF while idle exits 0")
	require.Empty(t, p.stderrText())
}

func TestTurn(t *testing.T) {
	p := startStream(t)
	p.send(user("hello"))
	p.closeStdin()
	init := p.expect("system", "init")
	cwd := p.cmd.Dir
	require.Equal(t, cwd, init["cwd"])
	require.Equal(t, []any{}, init["tools"])
	require.Equal(t, fakecli.DefaultModel, init["model"])
	sid := init["session_id"].(string)
	require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`, sid)

	a := p.expect("assistant", "")
	require.Equal(t, "echo: hello", assistantText(t, a))
	require.Equal(t, sid, a["session_id"])
	require.NotContains(t, a, "aborted")

	line := p.next()
	require.False(t, strings.HasPrefix(line, `{"type"`), "result must not start with type: %s", line)
	var r map[string]any
	require.NoError(t, json.Unmarshal([]byte(line), &r))
	require.Equal(t, "result", r["type"])
	require.Equal(t, false, r["is_error"])
	require.Equal(t, "success", r["subtype"])
	require.Equal(t, "echo: hello", r["result"])
	require.Equal(t, 1.0, r["num_turns"])
	require.Equal(t, "end_turn", r["stop_reason"])
	require.Equal(t, "completed", r["terminal_reason"])
	require.Equal(t, sid, r["session_id"])
	require.Contains(t, r, "duration_ms")
	require.Contains(t, r, "usage")
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestPartialMessages(t *testing.T) {
	p := startPartial(t, fakecli.EnvReply+"=Hello there, friend", fakecli.EnvChunks+"=3")
	p.send(control("m", "mcp_status"), user("ignored"))
	p.closeStdin()
	require.Equal(t, success("m", `{"mcpServers":[]}`), p.next())
	p.expect("system", "init")
	p.expect("system", "status")
	event := func(typ string) map[string]any {
		t.Helper()
		m := p.expect("stream_event", "")
		ev := m["event"].(map[string]any)
		require.Equal(t, typ, ev["type"])
		return ev
	}
	event("message_start")
	event("content_block_start")
	var deltas []string
	for range 3 {
		d := event("content_block_delta")["delta"].(map[string]any)
		require.Equal(t, "text_delta", d["type"])
		deltas = append(deltas, d["text"].(string))
	}
	require.Equal(t, "Hello there, friend", strings.Join(deltas, ""))
	event("content_block_stop")
	require.Equal(t, "end_turn", event("message_delta")["delta"].(map[string]any)["stop_reason"])
	event("message_stop")
	require.Equal(t, "Hello there, friend", assistantText(t, p.expect("assistant", "")))
	require.Equal(t, "Hello there, friend", p.expect("result", "success")["result"])
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestStringContentAndEmptyReply(t *testing.T) {
	p := startPartial(t, fakecli.EnvReply+"=")
	p.send(`{"type":"user","message":{"role":"user","content":"plain"}}`)
	p.closeStdin()
	p.expect("system", "init")
	p.expect("system", "status")
	p.expect("stream_event", "")
	p.expect("stream_event", "")
	p.expect("stream_event", "") // content_block_stop: no delta for an empty reply
	p.expect("stream_event", "")
	p.expect("stream_event", "")
	require.Equal(t, "", assistantText(t, p.expect("assistant", "")))
	require.Equal(t, "", p.expect("result", "")["result"])
	p.eof()

	q := startStream(t)
	q.send(`{"type":"user","message":{"role":"user","content":"plain"}}`)
	q.closeStdin()
	q.expect("system", "init")
	require.Equal(t, "echo: plain", assistantText(t, q.expect("assistant", "")))
}

func TestSystemPromptAndModel(t *testing.T) {
	rec := t.TempDir()
	p := startStream(t, fakecli.EnvRecordDir+"="+rec)
	lines := []string{
		control("i1", "initialize", `"systemPrompt":["You are terse."]`),
		control("i2", "initialize", `"systemPrompt":["ignored"]`),
		control("s1", "set_model", `"model":"sonnet"`),
		user("hi"),
	}
	p.send(lines...)
	p.closeStdin()
	p.next()
	p.next()
	p.next()
	init := p.expect("system", "init")
	require.Equal(t, []any{"You are terse."}, init["fake_system_prompt"], "only the first initialize counts")
	require.Equal(t, "claude-sonnet-5-5", init["model"])
	require.Equal(t, "claude-sonnet-5-5", p.expect("assistant", "")["message"].(map[string]any)["model"])
	p.expect("result", "success")
	p.eof()
	require.Equal(t, 0, p.exitCode())

	pid := p.cmd.Process.Pid
	got, err := os.ReadFile(filepath.Join(rec, fmt.Sprintf("%d.jsonl", pid)))
	require.NoError(t, err)
	require.Equal(t, strings.Join(lines, "\n")+"\n", string(got))
	args, err := os.ReadFile(filepath.Join(rec, fmt.Sprintf("%d.args", pid)))
	require.NoError(t, err)
	require.Equal(t, strings.Join(append([]string{claudePath}, streamArgs...), "\n")+"\n", string(args))
}

// The CLI initializes itself at its first user line, /clear included: an
// initialize after it changes nothing.
func TestInitializeAfterUserLineIgnored(t *testing.T) {
	p := startStream(t)
	p.send(user("/clear"))
	cr := p.expect("conversation_reset", "")
	p.afterReset(cr["session_id"].(string), true)
	p.send(control("i1", "initialize", `"systemPrompt":["too late"]`))
	p.next()
	p.send(user("hi"))
	init := p.expect("system", "init")
	require.NotContains(t, init, "fake_system_prompt")
	p.expect("assistant", "")
	p.expect("result", "success")
	p.closeStdin()
	p.eof()
}

func TestAppendSystemPrompt(t *testing.T) {
	p := startStream(t)
	p.send(control("i1", "initialize", `"appendSystemPrompt":"Also be kind."`), user("hi"))
	p.closeStdin()
	p.next()
	init := p.expect("system", "init")
	require.Equal(t, "Also be kind.", init["fake_append_system_prompt"])
	require.NotContains(t, init, "fake_system_prompt")
}

func TestMultipleTurns(t *testing.T) {
	p := startStream(t)
	p.send(user("one"), user("two"))
	p.closeStdin()
	sid := p.expect("system", "init")["session_id"]
	require.Equal(t, "echo: one", assistantText(t, p.expect("assistant", "")))
	require.Equal(t, "echo: one", p.expect("result", "")["result"])
	require.Equal(t, sid, p.expect("system", "init")["session_id"])
	require.Equal(t, "echo: two", assistantText(t, p.expect("assistant", "")))
	require.Equal(t, "echo: two", p.expect("result", "")["result"])
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestExitCodeAfterTurn(t *testing.T) {
	p := startStream(t, fakecli.EnvExitCode+"=5")
	p.send(user("x"))
	p.closeStdin()
	p.expect("system", "init")
	p.expect("assistant", "")
	p.expect("result", "")
	p.eof()
	require.Equal(t, 5, p.exitCode())
}

func TestBadInputLine(t *testing.T) {
	p := startStream(t)
	p.send("not json at all")
	p.eof()
	require.Equal(t, 1, p.exitCode())
	require.Equal(t, "Error parsing streaming input line: not json at all\n", p.stderrText())
}

func TestStartupDelay(t *testing.T) {
	const delay = 300 * time.Millisecond
	begin := time.Now()
	p := startStream(t, fakecli.EnvStartupDelay+"="+delay.String())
	p.send(control("a", "mcp_status"), control("b", "get_settings"))
	require.Equal(t, success("a", `{"mcpServers":[]}`), p.next())
	require.GreaterOrEqual(t, time.Since(begin), delay)
	require.Equal(t, success("b", `{}`), p.next(), "answers keep their order")
}

func TestTextMode(t *testing.T) {
	t.Run("no input", func(t *testing.T) {
		p := start(t, []string{fakecli.EnvTextTimeout + "=100ms"}, "-p")
		p.eof()
		require.Equal(t, 1, p.exitCode())
		stderr := p.stderrText()
		require.True(t, strings.HasPrefix(stderr, "Warning: no stdin data received in 100ms, proceeding without it."), stderr)
		require.True(t, strings.HasSuffix(stderr, "\nError: Input must be provided either through stdin or as a prompt argument when using --print\n"), stderr)
	})
	t.Run("prompt", func(t *testing.T) {
		p := start(t, nil, "-p", "--output-format", "text")
		p.send("what is up")
		p.closeStdin()
		require.Equal(t, "echo: what is up", p.next())
		p.eof()
		require.Equal(t, 0, p.exitCode())
	})
}

// TestSIGINTMidTurn follows sigint_midstream.txt: the partial reply marked
// aborted, the interrupted user line, an error_during_execution result, exit 0.
func TestSIGINTMidTurn(t *testing.T) {
	p := startPartial(t, fakecli.EnvReply+"=aaabbbccc", fakecli.EnvChunkDelay+"=1h")
	p.send(user("x"))
	p.closeStdin()
	p.expect("system", "init")
	p.expect("system", "status")
	p.expect("stream_event", "")
	p.expect("stream_event", "")
	require.Equal(t, "content_block_delta", p.expect("stream_event", "")["event"].(map[string]any)["type"])
	p.signal(syscall.SIGINT)
	a := p.expect("assistant", "")
	require.Equal(t, "aaa", assistantText(t, a))
	require.Equal(t, true, a["aborted"])
	u := p.expect("user", "")
	require.Equal(t, "[Request interrupted by user]", u["message"].(map[string]any)["content"].([]any)[0].(map[string]any)["text"])
	r := p.expect("result", "error_during_execution")
	require.Equal(t, true, r["is_error"])
	require.Equal(t, "aborted_streaming", r["terminal_reason"])
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestInterruptRequest(t *testing.T) {
	p := startPartial(t, fakecli.EnvReply+"=aaabbbccc", fakecli.EnvChunkDelay+"=1h")
	p.send(user("x"))
	for range 5 {
		p.next()
	}
	p.send(control("int", "interrupt"))
	require.Equal(t, success("int", `{}`), p.next())
	require.Equal(t, true, p.expect("assistant", "")["aborted"])
	p.expect("user", "")
	p.expect("result", "error_during_execution")
	p.send(control("m", "mcp_status"))
	require.Equal(t, success("m", `{"mcpServers":[]}`), p.next(), "the process keeps serving")
	p.closeStdin()
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestSignalsWhileIdle(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 0}, {syscall.SIGTERM, 143}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			p := startStream(t)
			p.send(control("m", "mcp_status"))
			p.next()
			p.signal(tc.sig)
			p.eof()
			require.Equal(t, tc.code, p.exitCode())
		})
	}
}

func TestSIGTERMMidTurn(t *testing.T) {
	p := startStream(t, fakecli.EnvChunkDelay+"=1h")
	p.send(user("x"))
	p.expect("system", "init")
	p.signal(syscall.SIGTERM)
	p.eof()
	require.Equal(t, 143, p.exitCode())
}

func TestIgnoreSignals(t *testing.T) {
	p := startStream(t, fakecli.EnvIgnoreSIGTERM+"=1")
	p.send(control("a", "mcp_status"))
	p.next()
	p.signal(syscall.SIGTERM)
	p.signal(syscall.SIGINT)
	p.send(control("b", "mcp_status"))
	require.Equal(t, success("b", `{"mcpServers":[]}`), p.next())
	p.signal(syscall.SIGKILL)
	p.eof()
	_, sig := p.wait()
	require.Equal(t, syscall.SIGKILL, sig)
}

func TestModeExitEarly(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		code int
	}{
		{[]string{fakecli.EnvMode + "=" + fakecli.ModeExitEarly}, 1},
		{[]string{fakecli.EnvMode + "=" + fakecli.ModeExitEarly, fakecli.EnvExitCode + "=3"}, 3},
	} {
		p := start(t, tc.env, streamArgs...)
		p.eof()
		require.Equal(t, tc.code, p.exitCode())
		require.Equal(t, "fatal: fake start-up failure\n", p.stderrText())
	}
}

func TestUnknownModeRejected(t *testing.T) {
	p := startStream(t, fakecli.EnvMode+"=no-such-mode")
	p.eof()
	require.Equal(t, 2, p.exitCode())
	require.Contains(t, p.stderrText(), "unknown mode")
}

func TestModeNoReady(t *testing.T) {
	p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeNoReady)
	p.send(control("m", "mcp_status"), user("hi"))
	p.closeStdin()
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestModeCrash(t *testing.T) {
	p := startPartial(t, fakecli.EnvMode+"="+fakecli.ModeCrash)
	p.send(user("hello"))
	p.expect("system", "init")
	p.expect("system", "status")
	p.expect("stream_event", "")
	p.expect("stream_event", "")
	require.Equal(t, "content_block_delta", p.expect("stream_event", "")["event"].(map[string]any)["type"])
	p.eof()
	require.Equal(t, 2, p.exitCode())
	require.Equal(t, "panic: fake crash\n", p.stderrText())
}

func TestModeHang(t *testing.T) {
	p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeHang)
	p.send(user("hello"), control("m", "mcp_status"))
	require.Equal(t, success("m", `{"mcpServers":[]}`), p.next(), "no turn output before the answer")
	p.closeStdin()
	require.Never(t, func() bool {
		select {
		case <-p.exited:
			return true
		default:
			return false
		}
	}, 300*time.Millisecond, 10*time.Millisecond, "hang ignores stdin EOF")
	p.signal(syscall.SIGINT)
	p.expect("user", "")
	p.expect("result", "error_during_execution")
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestModeHangMid(t *testing.T) {
	p := startPartial(t)
	p.send(user("hi " + fakecli.Marker(fakecli.ModeHangMid)))
	p.closeStdin()
	p.expect("system", "init")
	p.expect("system", "status")
	p.expect("stream_event", "")
	p.expect("stream_event", "")
	p.expect("stream_event", "")
	p.signal(syscall.SIGTERM)
	p.eof()
	require.Equal(t, 143, p.exitCode())
}

func TestModeGarbage(t *testing.T) {
	p := startStream(t)
	p.send(user(fakecli.Marker(fakecli.ModeGarbage) + " hi"))
	p.closeStdin()
	p.expect("system", "init")
	require.Equal(t, fakecli.GarbageLine, p.next())
	p.expect("assistant", "")
	p.expect("result", "success")
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestModeUnknownLines(t *testing.T) {
	p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeUnknownLines)
	p.send(user("hi"))
	p.closeStdin()
	p.expect("system", "init")
	p.expect("system", "ui_invalidate")
	p.expect("brand_new_type", "")
	p.expect("assistant", "")
	p.expect("result", "success")
	p.eof()
}

func TestModeHuge(t *testing.T) {
	const size = 10_000_000
	want := strings.Repeat("abcdefghijklmnopqrstuvwxyz", size/26+1)[:size]
	p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeHuge)
	p.send(user("hi"))
	p.closeStdin()
	p.expect("system", "init")
	// Decoding 10 MB lines is slow under the race detector: look for the
	// exact text instead.
	line := p.next()
	require.True(t, strings.HasPrefix(line, `{"type":"assistant"`), "line: %.100s", line)
	require.Contains(t, line, `"text":"`+want+`"`)
	line = p.next()
	require.Contains(t, line, `"result":"`+want+`"`)
	require.Less(t, len(line), size+2000)
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestModeErrorResult(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeErrorResult, noRetries)
		p.send(user("hi"))
		p.expect("system", "init")
		a := p.expect("assistant", "")
		require.Equal(t, fakecli.DefaultErrorText, assistantText(t, a))
		require.Equal(t, "<synthetic>", a["message"].(map[string]any)["model"])
		require.Equal(t, true, a["is_api_error_message"])
		r := p.expect("result", "success")
		require.Equal(t, true, r["is_error"])
		require.Equal(t, 401.0, r["api_error_status"])
		require.Equal(t, "authentication_error", r["api_error_type"])
		require.Equal(t, "api_error", r["terminal_reason"])
		require.Equal(t, fakecli.DefaultErrorText, r["result"])
		p.send(control("m", "mcp_status"))
		require.Equal(t, success("m", `{"mcpServers":[]}`), p.next(), "the process keeps serving until stdin EOF")
		p.closeStdin()
		p.eof()
		require.Equal(t, 1, p.exitCode())
	})
	t.Run("status 0", func(t *testing.T) {
		p := startStream(t, fakecli.EnvAPIStatus+"=0", fakecli.EnvErrorText+"=Not logged in · Please run /login", noRetries)
		p.send(user(fakecli.Marker(fakecli.ModeErrorResult)))
		p.expect("system", "init")
		p.expect("assistant", "")
		line := p.next()
		require.Contains(t, line, `"api_error_status":null`)
		require.Contains(t, line, `"result":"Not logged in · Please run /login"`)
		p.closeStdin()
		p.eof()
		require.Equal(t, 1, p.exitCode())
	})
	t.Run("exit code", func(t *testing.T) {
		p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeErrorResult, fakecli.EnvExitCode+"=4", noRetries)
		p.send(user("hi"))
		p.closeStdin()
		p.expect("system", "init")
		p.expect("assistant", "")
		require.Equal(t, true, p.expect("result", "success")["is_error"])
		p.eof()
		require.Equal(t, 4, p.exitCode())
	})
}

// noRetries turns the CLI's retries of a failed request off, for tests
// of what comes after them.
const noRetries = "CLAUDE_CODE_MAX_RETRIES=0"

// An API error is retried as by the real CLI: ten times by default with
// growing waits, CLAUDE_CODE_MAX_RETRIES times when set, never for a 400;
// an interrupt during a wait ends the turn and the process serves on.
func TestErrorResultRetries(t *testing.T) {
	retries := func(p *proc) int {
		n := 0
		for {
			m := p.nextJSON()
			switch {
			case m["subtype"] == "api_retry":
				n++
				require.Equal(t, float64(n), m["attempt"])
				require.Equal(t, 401.0, m["error_status"])
			case m["type"] == "result":
				require.Equal(t, true, m["is_error"])
				return n
			}
		}
	}
	t.Run("default", func(t *testing.T) {
		p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeErrorResult, fakecli.EnvRetryDelay+"=1ms")
		p.send(user("hi"))
		require.Equal(t, 10, retries(p))
	})
	t.Run("max retries", func(t *testing.T) {
		p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeErrorResult, fakecli.EnvRetryDelay+"=1ms", "CLAUDE_CODE_MAX_RETRIES=3")
		p.send(user("hi"))
		require.Equal(t, 3, retries(p))
	})
	t.Run("400", func(t *testing.T) {
		p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeErrorResult, fakecli.EnvAPIStatus+"=400")
		p.send(user("hi"))
		p.expect("system", "init")
		p.expect("assistant", "")
		require.Equal(t, 400.0, p.expect("result", "success")["api_error_status"])
	})
	t.Run("interrupted", func(t *testing.T) {
		p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeErrorResult, fakecli.EnvRetryDelay+"=1h")
		p.send(user("hi"))
		p.expect("system", "init")
		p.expect("system", "api_retry")
		p.send(control("i", "interrupt"))
		p.expect("control_response", "")
		p.expect("user", "")
		r := p.expect("result", "error_during_execution")
		require.Equal(t, true, r["is_error"])
		p.send(control("m", "mcp_status"))
		require.Equal(t, success("m", `{"mcpServers":[]}`), p.next(), "the process keeps serving")
	})
}

// A typed text that starts with "/" runs as a slash command; a line marked
// text_not_typed is a message, whatever its text.
func TestSlashCommands(t *testing.T) {
	config := t.TempDir()
	p := startStream(t, "CLAUDE_CONFIG_DIR="+config)
	p.send(user("  /model claude-haiku-5-5"))
	p.expect("system", "init")
	p.expect("assistant", "")
	r := p.expect("result", "success")
	require.Equal(t, 0.0, r["num_turns"], "a command is not a turn")
	require.Equal(t, "Set model to claude-haiku-5-5", r["result"])

	p.send(user("/config model=haiku"))
	p.expect("system", "init")
	p.expect("assistant", "")
	p.expect("result", "success")
	got, err := os.ReadFile(filepath.Join(config, "settings.json"))
	require.NoError(t, err)
	require.JSONEq(t, `{"model":"haiku"}`, string(got))

	p.send(user("/compact"))
	p.expect("system", "init")
	p.expect("assistant", "")
	require.Equal(t, "/compact isn't available in this environment.", p.expect("result", "success")["result"])

	for _, text := range []string{"/model opus", "/clear", " /config model=opus"} {
		p.send(notTyped(text))
		init := p.expect("system", "init")
		require.Equal(t, "claude-haiku-5-5", init["model"], "a message changes no setting")
		require.Equal(t, "echo: "+text, assistantText(t, p.expect("assistant", "")))
		require.Equal(t, 1.0, p.expect("result", "success")["num_turns"])
	}
	got, err = os.ReadFile(filepath.Join(config, "settings.json"))
	require.NoError(t, err)
	require.JSONEq(t, `{"model":"haiku"}`, string(got))
}

// set_model refuses a model the API would not confirm, and keeps its own.
func TestRejectedModel(t *testing.T) {
	p := startStream(t)
	p.send(control("m", "set_model", `"model":"claude-`+fakecli.RejectedModel+`-9"`))
	m := p.nextJSON()["response"].(map[string]any)
	require.Equal(t, "error", m["subtype"])
	require.Equal(t, "not_found", m["error_code"])
	require.Equal(t, fakecli.DefaultModel, m["model"])
	require.Equal(t, "Model 'claude-bogus-9' not found", m["error"])
	_, reply := p.turnOK("hi")
	require.Equal(t, "echo: hi", reply)
}

func TestModeRetry(t *testing.T) {
	p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeRetry, fakecli.EnvRetries+"=3")
	p.send(user("hi"))
	p.closeStdin()
	p.expect("system", "init")
	for i := 1; i <= 3; i++ {
		r := p.expect("system", "api_retry")
		require.Equal(t, float64(i), r["attempt"])
		require.Equal(t, 500.0, r["error_status"])
	}
	p.expect("assistant", "")
	p.expect("result", "success")
	p.eof()
}

func TestModeGrandchild(t *testing.T) {
	for _, mode := range []string{fakecli.ModeGrandchild, fakecli.ModeGrandchildUnasked} {
		t.Run(mode, func(t *testing.T) {
			p := startStream(t, fakecli.EnvMode+"="+mode)
			p.send(user("hi"))
			p.closeStdin()
			p.expect("system", "init")
			if mode == fakecli.ModeGrandchild {
				// The tool call, then its result.
				call := p.expect("assistant", "")
				content := call["message"].(map[string]any)["content"].([]any)
				require.Equal(t, "tool_use", content[0].(map[string]any)["type"])
				require.Equal(t, "Bash", content[0].(map[string]any)["name"])
				p.expect("user", "")
			}
			p.expect("assistant", "")
			p.expect("result", "success")
			require.Equal(t, 0, p.exitCode())
			pgid := p.cmd.Process.Pid
			require.NoError(t, syscall.Kill(-pgid, 0), "the grandchild is still running")
			require.NoError(t, syscall.Kill(-pgid, syscall.SIGKILL))
			p.eof()
		})
	}
}

func TestModeCloseStdout(t *testing.T) {
	p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeCloseStdout)
	p.send(control("m", "mcp_status"))
	p.next()
	p.send(user("hi"))
	p.closeStdin()
	p.eof()
	select {
	case <-p.exited:
		require.FailNow(t, "the fake must outlive its stdout")
	default:
	}
	p.signal(syscall.SIGTERM)
	require.Equal(t, 143, p.exitCode())
}

func TestBuildIntoFileFails(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(notDir, nil, 0o644))
	_, err := fakecli.Build(notDir)
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr)
	require.True(t, strings.HasPrefix(err.Error(), "claudepool: fakecli: go build: "), err.Error())
}

// BenchmarkStartup measures spawn until the mcp_status answer, the
// readiness probe of the pool.
func BenchmarkStartup(b *testing.B) {
	for b.Loop() {
		cmd := exec.Command(claudePath, streamArgs...)
		stdin, err := cmd.StdinPipe()
		require.NoError(b, err)
		stdout, err := cmd.StdoutPipe()
		require.NoError(b, err)
		require.NoError(b, cmd.Start())
		_, err = io.WriteString(stdin, control("m", "mcp_status")+"\n")
		require.NoError(b, err)
		line, err := bufio.NewReader(stdout).ReadString('\n')
		require.NoError(b, err)
		require.Equal(b, success("m", `{"mcpServers":[]}`)+"\n", line)
		require.NoError(b, stdin.Close())
		require.NoError(b, cmd.Wait())
	}
}

// uuidRE matches the UUIDs of session ids and line uuids.
const uuidRE = `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`

// turnOK sends a user line and reads a successful turn; it returns the
// session id and the reply.
func (p *proc) turnOK(text string) (sid, reply string) {
	p.t.Helper()
	p.send(user(text))
	sid = p.expect("system", "init")["session_id"].(string)
	reply = assistantText(p.t, p.expect("assistant", ""))
	r := p.expect("result", "success")
	require.Equal(p.t, false, r["is_error"])
	require.Equal(p.t, reply, r["result"])
	require.Equal(p.t, sid, r["session_id"])
	return sid, reply
}

// resetLines reads the lines of a normal reset from the session old,
// starting with conversation_reset, and returns the init line.
func (p *proc) resetLines(old string) map[string]any {
	p.t.Helper()
	cr := p.expect("conversation_reset", "")
	require.Regexp(p.t, uuidRE, cr["new_conversation_id"])
	require.Equal(p.t, cr["new_conversation_id"], cr["uuid"])
	require.Equal(p.t, "clear", cr["trigger"])
	require.Regexp(p.t, uuidRE, cr["user_message_uuid"])
	require.Regexp(p.t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`, cr["timestamp"])
	require.Equal(p.t, old, cr["session_id"])
	return p.afterReset(old, true)
}

// afterReset reads the lines of a reset after conversation_reset and
// returns the init line; newSession says whether the init and result must
// be in a new session.
func (p *proc) afterReset(old string, newSession bool) map[string]any {
	p.t.Helper()
	bt := p.expect("system", "background_tasks_changed")
	require.Equal(p.t, []any{}, bt["tasks"])
	require.Regexp(p.t, uuidRE, bt["uuid"])
	require.Equal(p.t, old, bt["session_id"])
	init := p.expect("system", "init")
	sid := init["session_id"].(string)
	require.Regexp(p.t, uuidRE, sid)
	if newSession {
		require.NotEqual(p.t, old, sid)
	} else {
		require.Equal(p.t, old, sid)
	}
	line := p.next()
	require.False(p.t, strings.HasPrefix(line, `{"type"`), "result must not start with type: %s", line)
	var r map[string]any
	require.NoError(p.t, json.Unmarshal([]byte(line), &r))
	require.Equal(p.t, "result", r["type"])
	require.Equal(p.t, "success", r["subtype"])
	require.Equal(p.t, false, r["is_error"])
	require.Equal(p.t, "", r["result"])
	require.Equal(p.t, 0.0, r["num_turns"])
	require.Equal(p.t, "clear", r["local_command"])
	require.Equal(p.t, sid, r["session_id"])
	require.Contains(p.t, r, "duration_ms")
	require.Contains(p.t, r, "usage")
	return init
}

func TestClear(t *testing.T) {
	p := startStream(t)
	p.send(control("i", "initialize", `"systemPrompt":["Be brief."]`), control("s", "set_model", `"model":"sonnet"`))
	p.next()
	p.next()
	old, reply := p.turnOK("one")
	require.Equal(t, "echo: one", reply)

	p.send(user("/clear"))
	init := p.resetLines(old)
	sid := init["session_id"].(string)
	require.Equal(t, "claude-sonnet-5-5", init["model"], "the model stays")
	require.Equal(t, []any{"Be brief."}, init["fake_system_prompt"], "the system prompt stays")
	require.Equal(t, []any{}, init["tools"])
	require.Equal(t, p.cmd.Dir, init["cwd"])

	p.send(user("two"))
	init = p.expect("system", "init")
	require.Equal(t, sid, init["session_id"], "the next turn runs in the new session")
	require.Equal(t, "claude-sonnet-5-5", init["model"])
	a := p.expect("assistant", "")
	require.Equal(t, "echo: two", assistantText(t, a))
	require.Equal(t, "claude-sonnet-5-5", a["message"].(map[string]any)["model"])
	require.Equal(t, sid, p.expect("result", "success")["session_id"])

	// A model set after the reset applies, and a second reset works too.
	p.send(control("s2", "set_model", `"model":"default"`))
	require.Equal(t, success("s2", `{"model":"claude-opus-5-5"}`), p.next())
	p.send(user("/clear"))
	init = p.resetLines(sid)
	require.Equal(t, fakecli.DefaultModel, init["model"])
	require.NotEqual(t, old, init["session_id"])
	_, reply = p.turnOK("three")
	require.Equal(t, "echo: three", reply)
	p.closeStdin()
	p.eof()
	require.Equal(t, 0, p.exitCode())
}

func TestClearOnly(t *testing.T) {
	p := startStream(t, fakecli.EnvExitCode+"=6")
	p.send(user("/clear"))
	cr := p.expect("conversation_reset", "")
	p.afterReset(cr["session_id"].(string), true)
	p.closeStdin()
	p.eof()
	require.Equal(t, 0, p.exitCode(), "a /clear alone is no turn")
}

func TestEchoHistory(t *testing.T) {
	t.Run("without reset", func(t *testing.T) {
		p := startStream(t, fakecli.EnvEchoHistory+"=1")
		_, reply := p.turnOK("A")
		require.Equal(t, "echo: A", reply)
		_, reply = p.turnOK("B")
		require.Equal(t, "echo: A | B", reply)
	})
	t.Run("after reset", func(t *testing.T) {
		p := startStream(t, fakecli.EnvEchoHistory+"=1")
		sid, _ := p.turnOK("A")
		p.send(user("/clear"))
		p.resetLines(sid)
		_, reply := p.turnOK("B")
		require.Equal(t, "echo: B", reply)
		_, reply = p.turnOK("C")
		require.Equal(t, "echo: B | C", reply)
	})
	t.Run("off", func(t *testing.T) {
		p := startStream(t)
		p.turnOK("A")
		_, reply := p.turnOK("B")
		require.Equal(t, "echo: B", reply)
	})
	t.Run("reply wins", func(t *testing.T) {
		p := startStream(t, fakecli.EnvEchoHistory+"=1", fakecli.EnvReply+"=fixed")
		p.turnOK("A")
		_, reply := p.turnOK("B")
		require.Equal(t, "fixed", reply)
	})
}

func TestResetModes(t *testing.T) {
	// Each mode is tested armed by a marker and set for the process.
	for _, viaEnv := range []bool{false, true} {
		name := "marker"
		if viaEnv {
			name = "env"
		}
		// begin starts a fake with the reset mode and runs turn "a"; it
		// returns the fake, its session and the text of turn "a".
		begin := func(t *testing.T, mode string) (*proc, string, string) {
			t.Helper()
			env := []string{fakecli.EnvEchoHistory + "=1"}
			text := "a"
			if viaEnv {
				env = append(env, fakecli.EnvResetMode+"="+mode)
			} else {
				text += " " + fakecli.ResetMarker(mode)
			}
			p := startStream(t, env...)
			sid, _ := p.turnOK(text)
			return p, sid, text
		}
		t.Run(name, func(t *testing.T) {
			t.Run("exit", func(t *testing.T) {
				p, _, _ := begin(t, fakecli.ResetExit)
				p.send(user("/clear"), user("b"))
				p.eof()
				require.Equal(t, 1, p.exitCode())
				require.Equal(t, "fatal: fake reset failure\n", p.stderrText())
			})
			t.Run("hang", func(t *testing.T) {
				p, _, _ := begin(t, fakecli.ResetHang)
				p.send(user("/clear"), user("b"), control("m", "mcp_status"))
				require.Equal(t, success("m", `{"mcpServers":[]}`), p.next(),
					"nothing for the /clear nor for the turn behind it")
				p.closeStdin()
				p.eof()
				require.Equal(t, 0, p.exitCode(), "stdin EOF ends a hung reset")
			})
			t.Run("no-reset", func(t *testing.T) {
				p, sid, _ := begin(t, fakecli.ResetNoReset)
				p.send(user("/clear"))
				newSID := p.afterReset(sid, true)["session_id"]
				got, reply := p.turnOK("b")
				require.Equal(t, newSID, got)
				require.Equal(t, "echo: b", reply, "the history is cleared")
			})
			t.Run("same-session", func(t *testing.T) {
				p, sid, text := begin(t, fakecli.ResetSameSession)
				p.send(user("/clear"))
				cr := p.expect("conversation_reset", "")
				require.Equal(t, sid, cr["session_id"])
				p.afterReset(sid, false)
				got, reply := p.turnOK("b")
				require.Equal(t, sid, got)
				require.Equal(t, "echo: "+text+" | b", reply, "the history stays")
			})
			t.Run("garbage", func(t *testing.T) {
				p, sid, _ := begin(t, fakecli.ResetGarbage)
				p.send(user("/clear"))
				require.Equal(t, fakecli.GarbageLine, p.next())
				newSID := p.resetLines(sid)["session_id"]
				got, reply := p.turnOK("b")
				require.Equal(t, newSID, got)
				require.Equal(t, "echo: b", reply)
			})
			t.Run("normal", func(t *testing.T) {
				p, sid, _ := begin(t, fakecli.ResetNormal)
				p.send(user("/clear"))
				p.resetLines(sid)
			})
		})
	}
}

func TestResetHangSignals(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 0}, {syscall.SIGTERM, 143}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			p := startStream(t, fakecli.EnvResetMode+"="+fakecli.ResetHang)
			p.turnOK("a")
			// The answer comes after the /clear has been taken up.
			p.send(user("/clear"), control("m", "mcp_status"))
			require.Equal(t, success("m", `{"mcpServers":[]}`), p.next())
			p.signal(tc.sig)
			p.eof()
			require.Equal(t, tc.code, p.exitCode())
		})
	}
}

func TestResetHangInterrupt(t *testing.T) {
	p := startStream(t, fakecli.EnvEchoHistory+"=1")
	sid, _ := p.turnOK("a " + fakecli.ResetMarker(fakecli.ResetHang))
	p.send(user("/clear"), control("int", "interrupt"))
	require.Equal(t, success("int", `{}`), p.next(), "the hung reset prints nothing")
	got, reply := p.turnOK("b")
	require.Equal(t, sid, got, "the conversation was not reset")
	require.Equal(t, "echo: a "+fakecli.ResetMarker(fakecli.ResetHang)+" | b", reply)
}

func TestResetMarkerArmsNextClearOnly(t *testing.T) {
	p := startStream(t)
	// The first marker in the text counts; a later marked turn replaces it.
	p.turnOK("x " + fakecli.ResetMarker(fakecli.ResetExit))
	sid, _ := p.turnOK(fakecli.ResetMarker(fakecli.ResetSameSession) + " y " + fakecli.ResetMarker(fakecli.ResetExit))
	p.send(user("/clear"))
	p.expect("conversation_reset", "")
	p.afterReset(sid, false)
	p.send(user("/clear"))
	p.resetLines(sid)
}

func TestResetModeEveryClear(t *testing.T) {
	p := startStream(t, fakecli.EnvResetMode+"="+fakecli.ResetNoReset)
	sid, _ := p.turnOK("a")
	p.send(user("/clear"))
	sid = p.afterReset(sid, true)["session_id"].(string)
	p.send(user("/clear"))
	sid = p.afterReset(sid, true)["session_id"].(string)
	// A marker overrides the process's mode for one /clear.
	p.turnOK("b " + fakecli.ResetMarker(fakecli.ResetNormal))
	p.send(user("/clear"))
	sid = p.resetLines(sid)["session_id"].(string)
	p.send(user("/clear"))
	p.afterReset(sid, true)
}

func TestUnknownResetModeRejected(t *testing.T) {
	p := startStream(t, fakecli.EnvResetMode+"=no-such-mode")
	p.eof()
	require.Equal(t, 2, p.exitCode())
	require.Contains(t, p.stderrText(), "unknown reset mode")
}

func TestErrorResultThenClear(t *testing.T) {
	t.Run("marker", func(t *testing.T) {
		p := startStream(t, noRetries)
		p.send(user("x " + fakecli.Marker(fakecli.ModeErrorResult)))
		sid := p.expect("system", "init")["session_id"].(string)
		p.expect("assistant", "")
		require.Equal(t, true, p.expect("result", "success")["is_error"])
		p.send(user("/clear"))
		newSID := p.resetLines(sid)["session_id"]
		got, reply := p.turnOK("y")
		require.Equal(t, newSID, got)
		require.Equal(t, "echo: y", reply)
		p.closeStdin()
		p.eof()
		require.Equal(t, 0, p.exitCode(), "the last result succeeded")
	})
	t.Run("env", func(t *testing.T) {
		p := startStream(t, fakecli.EnvMode+"="+fakecli.ModeErrorResult, noRetries)
		for range 2 {
			p.send(user("x"))
			sid := p.expect("system", "init")["session_id"].(string)
			p.expect("assistant", "")
			require.Equal(t, true, p.expect("result", "success")["is_error"])
			p.send(user("/clear"))
			p.resetLines(sid)
		}
		p.send(user("x"))
		p.expect("system", "init")
		p.expect("assistant", "")
		require.Equal(t, true, p.expect("result", "success")["is_error"])
		p.closeStdin()
		p.eof()
		require.Equal(t, 1, p.exitCode(), "the last result was an error")
	})
}

// vmRSS returns the resident memory of process pid in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if os.IsNotExist(err) {
		t.Skip("no /proc")
	}
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int64
			_, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb)
			require.NoError(t, err, "line: %s", l)
			return kb << 10
		}
	}
	require.FailNow(t, "no VmRSS", "status: %s", b)
	return 0
}

func TestGrowBytes(t *testing.T) {
	const grow, turns = 32 << 20, 3
	p := startStream(t, fakecli.EnvGrowBytes+"="+fmt.Sprint(grow))
	p.send(control("m", "mcp_status"))
	p.next()
	pid := p.cmd.Process.Pid
	before := vmRSS(t, pid)
	for range turns {
		p.turnOK("a")
	}
	after := vmRSS(t, pid)
	require.GreaterOrEqual(t, after-before, int64(turns*grow*9/10),
		"VmRSS %d -> %d bytes", before, after)

	// A /clear keeps the memory and allocates none.
	p.send(user("/clear"))
	p.expect("conversation_reset", "")
	p.expect("system", "background_tasks_changed")
	p.expect("system", "init")
	p.expect("result", "success")
	require.GreaterOrEqual(t, vmRSS(t, pid), int64(turns*grow*9/10))
}
