package claudepool

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// addTool is a Go tool that adds two numbers and records its calls.
type addTool struct {
	mu    sync.Mutex
	calls []string
}

func (a *addTool) tool(name string) Tool {
	return Tool{
		Name:        name,
		Description: "Adds two numbers.",
		InputSchema: json.RawMessage(`{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]}`),
		Handler: func(_ context.Context, input json.RawMessage) (string, error) {
			var in struct{ A, B float64 }
			if err := json.Unmarshal(input, &in); err != nil {
				return "", err
			}
			a.mu.Lock()
			a.calls = append(a.calls, name+string(input))
			a.mu.Unlock()
			return fmt.Sprint(in.A + in.B), nil
		},
	}
}

func (a *addTool) called() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

// On the real CLI: a tool written in Go is offered to the model, called
// with the model's input, and its result reaches the API, which answers
// with it; the stream reports the call by the tool's own name.
func TestE2EGoTool(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{Reply: claudepooltest.CallTool(toolPrefix+"add", map[string]int{"a": 2, "b": 3})})
	var add addTool
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1, GoTools: []Tool{add.tool("add")}})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	s, evs := chatOK(t, ctx, a, userMsg("what is 2 + 3?"))
	require.Equal(t, []string{`add{"a":2,"b":3}`}, add.called())
	require.Equal(t, claudepooltest.ToolSaidPrefix+"5", s.Result().Text)
	var uses []ToolCall
	var results []ToolResult
	for _, ev := range evs {
		require.NotEqual(t, EventUnknown, ev.Type, "no control request reaches the caller: %s", ev.Raw)
		uses = append(uses, ev.ToolCalls()...)
		results = append(results, ev.ToolResults()...)
	}
	require.Len(t, uses, 1)
	require.Equal(t, "add", uses[0].Name, "the caller's name, not the CLI's")
	require.JSONEq(t, `{"a":2,"b":3}`, string(uses[0].Input))
	require.Equal(t, []ToolResult{{ToolUseID: uses[0].ID, Content: "5"}}, results)

	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 2)
	require.Contains(t, reqs[0].Tools, toolPrefix+"add")
	require.Equal(t, []claudepooltest.ToolResult{{ToolUseID: "toolu_mock_000001", Content: "5"}}, reqs[1].LastToolResults())

	// The next chat on the process offers the tool again.
	s2, _ := chatOK(t, ctx, a, userMsg("and again?"))
	require.Equal(t, s.Acquire().PID, s2.Acquire().PID)
	require.Len(t, add.called(), 2)
}

// On the real CLI: two tools called in one assistant message both run,
// and both results reach the API in one request.
func TestE2EGoToolsInOneMessage(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{Reply: func(r claudepooltest.Request) claudepooltest.Reply {
		if res := r.LastToolResults(); len(res) > 0 {
			var parts []string
			for _, x := range res {
				parts = append(parts, x.Content)
			}
			return claudepooltest.Reply{Text: "results: " + strings.Join(parts, ", ")}
		}
		return claudepooltest.Reply{ToolCalls: []claudepooltest.ToolCall{
			{Name: toolPrefix + "add", Input: json.RawMessage(`{"a":1,"b":2}`)},
			{Name: toolPrefix + "plus", Input: json.RawMessage(`{"a":10,"b":20}`)},
		}}
	}})
	var add addTool
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1, GoTools: []Tool{add.tool("add"), add.tool("plus")}})
	require.NoError(t, p.WaitReady(ctx))
	s, _ := chatOK(t, ctx, NewAdapter(p), userMsg("two sums"))
	require.ElementsMatch(t, []string{`add{"a":1,"b":2}`, `plus{"a":10,"b":20}`}, add.called())
	require.Equal(t, "results: 3, 30", s.Result().Text)
}

// procCwd is the working directory of process pid.
func procCwd(t *testing.T, pid int) string {
	t.Helper()
	cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "cwd"))
	require.NoError(t, err)
	return cwd
}

// On the real CLI: files a chat's built-in tool writes stay within that
// chat: the reset empties the process's working directory before the next
// chat on the same process. (CLI 2.1.330 offers no Write tool under
// --tools; Bash writes the file.)
func TestE2EToolFileGoneAfterReset(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{Reply: func(r claudepooltest.Request) claudepooltest.Reply {
		if res := r.LastToolResults(); len(res) > 0 {
			return claudepooltest.Reply{Text: "done: " + res[0].Content}
		}
		if strings.Contains(r.LastUserText(), "write") {
			return claudepooltest.Reply{ToolCalls: []claudepooltest.ToolCall{{Name: "Bash",
				Input: json.RawMessage(`{"command":"mkdir -p sub && echo tenant-A > notes.txt && cat notes.txt","description":"write notes"}`)}}}
		}
		return claudepooltest.Echo(r)
	}})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1, Tools: []string{"Bash"}, AllowedTools: []string{"Bash"}})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	// The tool wrote the file and read it back in the process's directory.
	s, _ := chatOK(t, ctx, a, userMsg("write my notes"))
	wrote := filepath.Join(procCwd(t, s.Acquire().PID), "notes.txt")
	require.Equal(t, "done: tenant-A", s.Result().Text)

	// The next chat runs on the same process (MaxProcs 1): the held
	// conversation gave way, and the reset emptied the directory.
	s2, _ := chatOK(t, ctx, a, userMsg("hello"))
	require.Equal(t, s.Acquire().PID, s2.Acquire().PID)
	waitQuiet(t, ctx, p)
	_, err := os.Stat(wrote)
	require.ErrorIs(t, err, os.ErrNotExist, "the reset removed what the chat wrote")
	entries, err := os.ReadDir(filepath.Dir(wrote))
	require.NoError(t, err)
	require.Empty(t, entries)
}

// On the real CLI: a permission callback that denies a built-in tool's
// call keeps it from running, and the model receives the denial.
func TestE2EPermissionCallbackDenies(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{Reply: func(r claudepooltest.Request) claudepooltest.Reply {
		if res := r.LastToolResults(); len(res) > 0 {
			return claudepooltest.Reply{Text: fmt.Sprintf("error=%v: %s", res[0].IsError, res[0].Content)}
		}
		return claudepooltest.Reply{ToolCalls: []claudepooltest.ToolCall{{Name: "Bash",
			Input: json.RawMessage(`{"command":"echo x > x.txt","description":"write x"}`)}}}
	}})
	var mu sync.Mutex
	var asked []PermissionRequest
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1, Tools: []string{"Bash"},
		CanUseTool: func(_ context.Context, r PermissionRequest) Permission {
			mu.Lock()
			asked = append(asked, r)
			mu.Unlock()
			return Permission{Deny: true, Message: "writes are not allowed here"}
		}})
	require.NoError(t, p.WaitReady(ctx))
	s, _ := chatOK(t, ctx, NewAdapter(p), userMsg("write x"))
	t.Logf("result: %q", s.Result().Text)
	mu.Lock()
	require.Len(t, asked, 1)
	require.Equal(t, "Bash", asked[0].Tool)
	require.Contains(t, string(asked[0].Input), "x.txt")
	mu.Unlock()
	require.Equal(t, "error=true: writes are not allowed here", s.Result().Text)
	_, err := os.Stat(filepath.Join(procCwd(t, s.Acquire().PID), "x.txt"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// On the real CLI: Interrupt ends a turn in the middle of its reply, and
// the same process serves the next chat.
func TestE2EInterruptThenReuse(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	hold := make(chan struct{})
	defer close(hold)
	e := newE2E(t, claudepooltest.Config{Reply: func(r claudepooltest.Request) claudepooltest.Reply {
		rep := claudepooltest.Echo(r)
		if r.LastUserText() == "long" {
			rep.Text, rep.Chunks, rep.Hold = "a long answer that never ends", 3, hold
		}
		return rep
	}})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1, PartialMessages: true})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	s, err := a.StreamChat(ctx, userMsg("long"))
	require.NoError(t, err)
	defer s.Close()
	for s.Next() && s.Event().Text() == "" {
	}
	require.NoError(t, s.Err())
	require.NoError(t, s.Interrupt())
	for s.Next() {
	}
	require.ErrorIs(t, s.Err(), ErrInterrupted)

	s2, _ := chatOK(t, ctx, a, userMsg("next"))
	require.Equal(t, s.Acquire().PID, s2.Acquire().PID)
	require.True(t, s2.Acquire().Reused)
	require.Equal(t, claudepooltest.EchoPrefix+"next", s2.Result().Text)
	require.Zero(t, retiredTotal(p.Stats()))
}

// On the real CLI: a tool the caller answers ends the first chat with the
// call; the second chat brings the result and resumes the same API turn
// on the same process: the API's second request carries the result, and
// the reply quotes it.
func TestE2ECallerAnsweredTool(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{Reply: claudepooltest.CallTool(toolPrefix+"lookup", map[string]string{"q": "weather"})})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 2, GoTools: []Tool{{Name: "lookup", Description: "Looks things up; the caller answers."}}})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	first := userMsg("what is the weather?")
	s1, _ := chatOK(t, ctx, a, first)
	r1 := s1.Result()
	require.Equal(t, "tool_use", r1.StopReason)
	require.Len(t, r1.ToolCalls, 1)
	require.Equal(t, "lookup", r1.ToolCalls[0].Name)
	require.JSONEq(t, `{"q":"weather"}`, string(r1.ToolCalls[0].Input))
	require.Len(t, e.mock.ChatRequests(), 1)

	next := first
	next.Messages = append(append([]Message(nil), first.Messages...), r1.AssistantMessage(),
		Message{Role: RoleUser, Blocks: []Block{ToolResultBlock(r1.ToolCalls[0].ID, "sunny, 21C", false)}})
	s2, _ := chatOK(t, ctx, a, next)
	require.True(t, s2.Acquire().Continued)
	require.Equal(t, s1.Acquire().PID, s2.Acquire().PID)
	require.Equal(t, claudepooltest.ToolSaidPrefix+"sunny, 21C", s2.Result().Text)
	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 2, "one API turn, two calls")
	require.Equal(t, []claudepooltest.ToolResult{{ToolUseID: r1.ToolCalls[0].ID, Content: "sunny, 21C"}}, reqs[1].LastToolResults())
}

// processesWith lists the processes whose command line holds marker.
func processesWith(t *testing.T, marker string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if cmd := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")); err == nil && strings.Contains(cmd, marker) {
			out = append(out, e.Name()+": "+cmd)
		}
	}
	return out
}

// On the real CLI: background shells a chat's Bash tool starts, even
// detached from the CLI's process group, do not outlive the chat: none is
// left once the process is reset, and the process serves the next chat.
func TestE2EBackgroundShellEnded(t *testing.T) {
	const marker = "31337.5"
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{Reply: func(r claudepooltest.Request) claudepooltest.Reply {
		if res := r.LastToolResults(); len(res) > 0 {
			return claudepooltest.Reply{Text: "done: " + res[0].Content}
		}
		if strings.Contains(r.LastUserText(), "background") {
			return claudepooltest.Reply{ToolCalls: []claudepooltest.ToolCall{{Name: "Bash", Input: json.RawMessage(
				`{"command":"(sleep ` + marker + ` &) ; nohup sleep ` + marker + ` >/dev/null 2>&1 </dev/null & setsid sleep ` + marker + ` >/dev/null 2>&1 </dev/null & echo started","description":"start background shells"}`)}}}
		}
		return claudepooltest.Echo(r)
	}})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1, Tools: []string{"Bash"}, AllowedTools: []string{"Bash"}, HoldConversations: -1})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))
	t.Cleanup(func() {
		for _, line := range processesWith(t, marker) {
			pid, _ := strconv.Atoi(strings.SplitN(line, ":", 2)[0])
			_ = syscallKill(pid)
		}
	})

	s, _ := chatOK(t, ctx, a, userMsg("start something in the background"))
	require.Equal(t, "done: started", s.Result().Text)
	waitQuiet(t, ctx, p)
	require.Empty(t, processesWith(t, "sleep "+marker), "a background shell outlived the chat's reset")
	s2, _ := chatOK(t, ctx, a, userMsg("hello"))
	require.Equal(t, s.Acquire().PID, s2.Acquire().PID)
}

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
