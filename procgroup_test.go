package claudepool

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

func TestParseStat(t *testing.T) {
	// session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
	// cutime cstime priority nice num_threads itrealvalue starttime ...
	tail := " 7 0 -1 4194304 90 0 0 0 1 2 0 0 20 0 1 0 777 1000 10"
	e, ok := parseStat(42, []byte("42 (my (odd) name) S 7 40"+tail))
	require.True(t, ok)
	require.Equal(t, procEntry{pid: 42, ppid: 7, pgrp: 40, state: 'S', start: 777}, e)
	e, ok = parseStat(5, []byte("5 (z) Z 1 5"+tail))
	require.True(t, ok)
	require.True(t, e.exited())
	for _, bad := range []string{"", "42 (x", "42 (x) S 7 40 0", "42 (x) S seven 40" + tail} {
		_, ok := parseStat(42, []byte(bad))
		require.False(t, ok, bad)
	}
}

func pidsOf(es []procEntry) []int {
	var out []int
	for _, e := range es {
		out = append(out, e.pid)
	}
	return out
}

func TestFamily(t *testing.T) {
	// 100 is the CLI, leader of group 100.
	procs := []procEntry{
		{pid: 1, ppid: 0, pgrp: 1},
		{pid: 50, ppid: 1, pgrp: 50},    // the backend
		{pid: 100, ppid: 50, pgrp: 100}, // the CLI
		{pid: 101, ppid: 100, pgrp: 100},
		{pid: 102, ppid: 101, pgrp: 100},
		{pid: 103, ppid: 100, pgrp: 103}, // a child in a group of its own
		{pid: 104, ppid: 103, pgrp: 103}, // and its child
		{pid: 105, ppid: 1, pgrp: 100},   // reparented, still in the group
		{pid: 106, ppid: 105, pgrp: 106}, // its child, in another group
		{pid: 107, ppid: 1, pgrp: 107},   // escaped: another group, reparented
		{pid: 108, ppid: 50, pgrp: 50},   // the backend's other child
		{pid: 109, ppid: 101, pgrp: 100, state: 'Z'},
	}
	require.Equal(t, []int{101, 102, 103, 104, 105, 106, 109}, pidsOf(family(procs, 100)))
	require.Empty(t, family(procs, 999))

	base := baselineOf(procs, 100)
	require.Len(t, base, 8, "the family and the CLI")
	require.Empty(t, leftovers(procs, 100, base))

	// A chat starts 110 (in the group) and 111 (its child in a group of
	// its own); 101 exits and its PID goes to a new process of the chat.
	later := append(slices.Clone(procs),
		procEntry{pid: 110, ppid: 100, pgrp: 100},
		procEntry{pid: 111, ppid: 110, pgrp: 111})
	later = slices.DeleteFunc(later, func(e procEntry) bool { return e.pid == 101 })
	later = append(later, procEntry{pid: 101, ppid: 100, pgrp: 100, start: 9})
	require.Equal(t, []int{101, 110, 111}, pidsOf(leftovers(later, 100, base)))

	// What escaped both the group and the tree (setsid after a double
	// fork) still carries the CLI's mark, and so do its children; another
	// CLI's mark, or none, is not this family.
	marked := slices.Clone(procs)
	for i := range marked {
		if marked[i].pid == 100 {
			marked[i].mark = "m100"
		}
	}
	marked = append(marked,
		procEntry{pid: 120, ppid: 1, pgrp: 120, mark: "m100"},
		procEntry{pid: 121, ppid: 120, pgrp: 121},
		procEntry{pid: 122, ppid: 1, pgrp: 122, mark: "m200"},
		procEntry{pid: 123, ppid: 1, pgrp: 123})
	require.Equal(t, []int{101, 102, 103, 104, 105, 106, 109, 120, 121}, pidsOf(family(marked, 100)))

	// Once the CLI is gone, its PID names no family of its.
	reused := slices.DeleteFunc(slices.Clone(later), func(e procEntry) bool { return e.pid == 100 })
	require.Empty(t, leftovers(reused, 100, base))
	reused = append(reused, procEntry{pid: 100, ppid: 1, pgrp: 100, start: 5})
	require.Empty(t, leftovers(reused, 100, base))
}

func TestReadProcs(t *testing.T) {
	procs, ok := readProcs()
	if !ok {
		t.Skip("no /proc")
	}
	i := slices.IndexFunc(procs, func(e procEntry) bool { return e.pid == os.Getpid() })
	require.GreaterOrEqual(t, i, 0)
	require.Equal(t, os.Getppid(), procs[i].ppid)
	require.Equal(t, syscall.Getpgrp(), procs[i].pgrp)
	data, err := os.ReadFile("/proc/self/stat")
	require.NoError(t, err)
	require.Equal(t, strings.Fields(string(data))[21], strconv.FormatUint(procs[i].start, 10), "starttime, field 22")
}

// startSleeper starts the fake CLI as a sleeper in process group pgid (0:
// a group of its own).
func startSleeper(t *testing.T, pgid int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(fakeCLI)
	cmd.Env = append(os.Environ(), fakecli.EnvMode+"="+fakecli.ModeSleeper)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: pgid}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// TestKillLeftovers: of a group's members, those in the baseline stay and
// the others are killed; a killed process that its parent has not reaped
// yet counts as gone.
func TestKillLeftovers(t *testing.T) {
	if _, ok := readProcs(); !ok {
		t.Skip("no /proc")
	}
	ctx := testCtx(t)
	leader := startSleeper(t, 0)
	root := leader.Process.Pid
	kept := startSleeper(t, root)
	base := takeBaseline(root)
	require.Len(t, base, 2, "the leader and the member")
	stray := startSleeper(t, root)

	killed, err := killLeftovers(ctx, root, base, testWait)
	require.NoError(t, err)
	require.Equal(t, 1, killed)
	// The test is the stray's parent and has not waited for it. /proc may
	// show it a zombie a moment before its last thread is gone, which the
	// pidfd waits for.
	require.True(t, waitExited(stray.Process.Pid, testWait))
	err = stray.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal())
	require.False(t, waitExited(kept.Process.Pid, 0), "the baseline process was killed")
	require.False(t, waitExited(root, 0), "the leader was killed")

	// Nothing left: nothing to do.
	killed, err = killLeftovers(ctx, root, base, 0)
	require.NoError(t, err)
	require.Zero(t, killed)
}

// TestResetKillsWhatAChatStarted: a chat's CLI starts a grandchild; the
// reset after it kills the grandchild, keeps the MCP server the CLI
// started with the process, and the same process serves the next chat.
func TestResetKillsWhatAChatStarted(t *testing.T) {
	if _, ok := readProcs(); !ok {
		t.Skip("no /proc")
	}
	ctx := testCtx(t)
	server, err := json.Marshal(map[string]any{"type": "stdio", "command": fakeCLI,
		"env": map[string]string{fakecli.EnvMode: fakecli.ModeSleeper}})
	require.NoError(t, err)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 1, HoldConversations: -1,
		MCPServers: map[string]json.RawMessage{"keeper": server}})
	require.NoError(t, fp.WaitReady(ctx))
	a := NewAdapter(fp.Pool)

	// The fake recorded the CLI and the MCP server it started.
	ready := fp.pids()
	require.Len(t, ready, 2)

	text := "x " + fakecli.Marker(fakecli.ModeGrandchild)
	s, _ := chatOK(t, ctx, a, userMsg(text))
	cli := s.Acquire().PID
	require.True(t, s.Acquire().Warm)
	require.NoError(t, s.Close())
	waitQuiet(t, ctx, fp.Pool)

	require.Contains(t, ready, cli)
	keeper := ready[1-slices.Index(ready, cli)]
	after := fp.pids()
	require.Len(t, after, 3)
	grandchild := slices.DeleteFunc(after, func(pid int) bool { return slices.Contains(ready, pid) })[0]
	require.NotZero(t, keeper)
	require.NotZero(t, grandchild)
	require.True(t, waitExited(grandchild, 0), "the grandchild outlived the reset")
	require.False(t, waitExited(keeper, 0), "the MCP server did not outlive the reset")
	st := fp.Stats()
	require.Zero(t, st.Retired[RetireResetFailed])
	require.Equal(t, 1, st.Live)

	s2, _ := chatOK(t, ctx, a, userMsg("y"))
	require.Equal(t, cli, s2.Acquire().PID)
	require.True(t, s2.Acquire().Reused)
	require.NoError(t, s2.Close())
	waitQuiet(t, ctx, fp.Pool)
	require.False(t, waitExited(keeper, 0))
	require.Zero(t, fp.Stats().Retired[RetireResetFailed])
}

// TestResetColdBaseline: a cold process takes its baseline at its first
// reset, which kills nothing; its later resets kill what their chats
// started.
func TestResetColdBaseline(t *testing.T) {
	if _, ok := readProcs(); !ok {
		t.Skip("no /proc")
	}
	ctx := testCtx(t)
	fp := newFakePool(t, Config{MaxProcs: 1, HoldConversations: -1})
	a := NewAdapter(fp.Pool)
	text := "x " + fakecli.Marker(fakecli.ModeGrandchild)

	s, _ := chatOK(t, ctx, a, userMsg(text))
	cli := s.Acquire().PID
	require.False(t, s.Acquire().Warm)
	require.NoError(t, s.Close())
	waitQuiet(t, ctx, fp.Pool)
	first := slices.DeleteFunc(fp.pids(), func(pid int) bool { return pid == cli })
	require.Len(t, first, 1)
	require.False(t, waitExited(first[0], 0), "the first reset of a cold process kills nothing")

	s2, _ := chatOK(t, ctx, a, userMsg(text))
	require.Equal(t, cli, s2.Acquire().PID)
	require.NoError(t, s2.Close())
	waitQuiet(t, ctx, fp.Pool)
	second := slices.DeleteFunc(fp.pids(), func(pid int) bool { return pid == cli || pid == first[0] })
	require.Len(t, second, 1)
	require.True(t, waitExited(second[0], 0), "the second chat's grandchild outlived the reset")
	require.False(t, waitExited(first[0], 0))
	require.Zero(t, fp.Stats().Retired[RetireResetFailed])
}

func TestPendingServers(t *testing.T) {
	servers := map[string]json.RawMessage{"a": nil, "b": nil, "c": nil}
	resp := json.RawMessage(`{"mcpServers":[{"name":"claudepool","status":"pending"},
		{"name":"a","status":"connected"},{"name":"b","status":"pending"},
		{"name":"c","status":"failed","error":"x"},{"name":"d","status":"pending"}]}`)
	require.Equal(t, []string{"b"}, pendingServers(resp, servers))
	require.Empty(t, pendingServers(json.RawMessage(`{}`), servers))
	require.Empty(t, pendingServers(json.RawMessage(`garbage`), servers))
}

func TestMCPServersArgv(t *testing.T) {
	argOf := func(argv []string, flag string) (string, bool) {
		i := slices.Index(argv, flag)
		if i < 0 {
			return "", false
		}
		return argv[i+1], true
	}
	stdio := json.RawMessage(`{ "type": "stdio",
		"command": "/usr/bin/srv", "args": ["--x"] }`)
	http := json.RawMessage(`{"type":"http","url":"https://mcp.example.com/mcp"}`)

	cfg, _, err := Config{Command: fakeCLI, MCPServers: map[string]json.RawMessage{"tickets": stdio, "web-2": http}}.normalize()
	require.NoError(t, err)
	argv := cfg.argv()
	conf, ok := argOf(argv, "--mcp-config")
	require.True(t, ok)
	require.Equal(t, `{"mcpServers":{"tickets":{"type":"stdio","command":"/usr/bin/srv","args":["--x"]},`+
		`"web-2":{"type":"http","url":"https://mcp.example.com/mcp"}}}`, conf)
	require.Equal(t, 1, strings.Count(strings.Join(argv, " "), "--mcp-config"))
	prompt, ok := argOf(argv, "--permission-prompt-tool")
	require.True(t, ok, "their tools need a permission prompt")
	require.Equal(t, "stdio", prompt)
	_, ok = argOf(argv, "--allowedTools")
	require.False(t, ok)

	// With Go tools: one --mcp-config, the pool's server first.
	cfg, _, err = Config{Command: fakeCLI, AllowedTools: []string{"mcp__tickets"},
		GoTools:    []Tool{{Name: "now", Handler: func(context.Context, json.RawMessage) (string, error) { return "", nil }}},
		MCPServers: map[string]json.RawMessage{"tickets": stdio}}.normalize()
	require.NoError(t, err)
	argv = cfg.argv()
	require.Equal(t, 1, strings.Count(strings.Join(argv, " "), "--mcp-config"))
	conf, _ = argOf(argv, "--mcp-config")
	require.Equal(t, `{"mcpServers":{"claudepool":{"type":"sdk","name":"claudepool"},`+
		`"tickets":{"type":"stdio","command":"/usr/bin/srv","args":["--x"]}}}`, conf)
	var parsed map[string]map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(conf), &parsed))
	require.Len(t, parsed["mcpServers"], 2)
	allowed, _ := argOf(argv, "--allowedTools")
	require.Equal(t, "mcp__tickets,mcp__claudepool__now", allowed)

	// Neither: no --mcp-config, no permission prompt.
	cfg, _, err = Config{Command: fakeCLI}.normalize()
	require.NoError(t, err)
	argv = cfg.argv()
	require.NotContains(t, argv, "--mcp-config")
	require.NotContains(t, argv, "--permission-prompt-tool")

	// The Config's map is copied.
	servers := map[string]json.RawMessage{"tickets": stdio}
	cfg, _, err = Config{Command: fakeCLI, MCPServers: servers}.normalize()
	require.NoError(t, err)
	servers["other"] = http
	require.Len(t, cfg.MCPServers, 1)

	for name, conf := range map[string]json.RawMessage{
		"claudepool": stdio,
		"ClaudePool": stdio,
		"":           stdio,
		"a b":        stdio,
		"a.b":        stdio,
		"a/b":        stdio,
		"é":          stdio,
		"array":      json.RawMessage(`[1]`),
		"string":     json.RawMessage(`"x"`),
		"null":       json.RawMessage(`null`),
		"nil":        nil,
		"broken":     json.RawMessage(`{"type":`),
	} {
		_, _, err := Config{Command: fakeCLI, MCPServers: map[string]json.RawMessage{name: conf}}.normalize()
		require.Error(t, err, "%q: %s", name, conf)
	}
}

// BenchmarkReadProcs is the cost of one look at /proc, which a reset
// pays once when the chat left nothing.
func BenchmarkReadProcs(b *testing.B) {
	if _, ok := readProcs(); !ok {
		b.Skip("no /proc")
	}
	for b.Loop() {
		procs, _ := readProcs()
		_ = leftovers(procs, os.Getpid(), procSet{})
	}
}

// TestResetLooksAfterTools: a reset looks for what a chat started only
// when a chat since the last reset asked for a tool. A process the CLI
// started on a chat that asked for none stays; the reset after the next
// chat that calls a tool kills it with that chat's. With
// Config.UserSettings, whose hooks may start processes on any prompt,
// every reset looks.
func TestResetLooksAfterTools(t *testing.T) {
	if _, ok := readProcs(); !ok {
		t.Skip("no /proc")
	}
	for _, userSettings := range []bool{false, true} {
		t.Run(fmt.Sprintf("UserSettings=%v", userSettings), func(t *testing.T) {
			ctx := testCtx(t)
			fp := newFakePool(t, Config{Size: 1, MaxProcs: 1, HoldConversations: -1, UserSettings: userSettings})
			require.NoError(t, fp.WaitReady(ctx))
			a := NewAdapter(fp.Pool)
			ready := fp.pids()
			require.Len(t, ready, 1)

			s, _ := chatOK(t, ctx, a, userMsg("x "+fakecli.Marker(fakecli.ModeGrandchildUnasked)))
			require.NoError(t, s.Close())
			waitQuiet(t, ctx, fp.Pool)
			started := slices.DeleteFunc(fp.pids(), func(pid int) bool { return slices.Contains(ready, pid) })
			require.Len(t, started, 1)
			unasked := started[0]
			require.Equal(t, userSettings, waitExited(unasked, 0),
				"the process started without a tool call: killed at the reset only with UserSettings")

			s, _ = chatOK(t, ctx, a, userMsg("y "+fakecli.Marker(fakecli.ModeGrandchild)))
			require.NoError(t, s.Close())
			waitQuiet(t, ctx, fp.Pool)
			started = slices.DeleteFunc(fp.pids(), func(pid int) bool { return slices.Contains(ready, pid) || pid == unasked })
			require.Len(t, started, 1)
			require.True(t, waitExited(started[0], 0), "the tool's process outlived the reset")
			require.True(t, waitExited(unasked, 0), "the earlier process outlived the reset that looked")
			require.Zero(t, fp.Stats().Retired[RetireResetFailed])
		})
	}
}
