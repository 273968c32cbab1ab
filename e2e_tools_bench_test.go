//go:build unix

package claudepool

// BenchmarkE2ETool: a chat that calls a tool twice, on the real CLI,
// through the pool and through the official TypeScript Agent SDK.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
)

// agentSDKDir holds the pinned Agent SDK (package.json, package-lock.json)
// and the script that drives it (bench.mjs).
const agentSDKDir = "testdata/agentsdk"

// agentSDKPackage is the official TypeScript Agent SDK.
const agentSDKPackage = "@anthropic-ai/claude-agent-sdk"

// toolBenchText is the user text of every chat of BenchmarkE2ETool, before
// its marker.
const toolBenchText = "Add 2 and 3 with the tool, then add 10 to the sum with it."

// toolBenchFinal is the final text of every chat: both results quoted.
const toolBenchFinal = "The sums are 5 and 15."

// toolBenchReply plays the model of BenchmarkE2ETool: a chat request with
// no tool result in its history calls the tool "add" (as the request
// offers it: mcp__<server>__add) with 2 and 3; one with the first result
// calls it again with that result and 10; one with both answers the text
// that quotes them. Other requests are echoed.
func toolBenchReply(r claudepooltest.Request) claudepooltest.Reply {
	if r.Kind != claudepooltest.KindChat {
		return claudepooltest.Echo(r)
	}
	var name string
	for _, t := range r.Tools {
		if strings.HasPrefix(t, "mcp__") && strings.HasSuffix(t, "__add") {
			name = t
		}
	}
	if name == "" {
		return claudepooltest.Reply{Text: fmt.Sprintf("no add tool among %q", r.Tools)}
	}
	var results []string
	for _, m := range r.Messages {
		if m.Role == "user" {
			for _, res := range m.ToolResults {
				results = append(results, res.Content)
			}
		}
	}
	call := func(input string) claudepooltest.Reply {
		return claudepooltest.Reply{ToolCalls: []claudepooltest.ToolCall{{Name: name, Input: json.RawMessage(input)}}}
	}
	switch len(results) {
	case 0:
		return call(`{"a":2,"b":3}`)
	case 1:
		if _, err := strconv.ParseFloat(results[0], 64); err != nil {
			return claudepooltest.Reply{Text: "the first result is not a number: " + results[0]}
		}
		return call(`{"a":` + results[0] + `,"b":10}`)
	default:
		return claudepooltest.Reply{Text: fmt.Sprintf("The sums are %s and %s.", results[0], results[1])}
	}
}

// toolChat is one chat of BenchmarkE2ETool.
type toolChat struct {
	marker string // unique in the user text; finds the chat's API requests
	// start is when the chat began; for the agent-sdk way, on node's
	// clock converted to the wall clock (used only to split the overhead).
	start     time.Time
	finalText time.Duration // from start to the final text's first delta
	text      string        // the final text
	toolUses  int           // tool_use blocks the chat's events carried
	toolCalls int           // runs of the tool's handler
	acq       AcquireInfo   // pool ways only
}

// toolWay is one way BenchmarkE2ETool runs its chat.
type toolWay struct {
	name  string
	chats []toolChat
	run   func(ctx context.Context, marker string) (toolChat, error)
}

// BenchmarkE2ETool compares, on the real CLI against a mock API with
// benchFirstByteDelay, a chat that calls one tool twice: the mock answers
// the chat's first request with a call of the tool "add", the second
// (with the first result) with a second call, and the third (with both)
// with the final text that quotes them. Three ways, interleaved, one chat
// of each per op, each after all three have settled:
//
//   - warm: a pool of Size 1 (MaxUses 1: each chat on a fresh process,
//     started ahead), the tool a Go tool (Config.GoTools), with the
//     gateway;
//   - cold: a pool whose every chat spawns its process (MaxUses 1, Size 0);
//   - agent-sdk: the official TypeScript Agent SDK (testdata/agentsdk,
//     pinned) driving the same CLI against the same mock, with the tool
//     defined in-process (createSdkMcpServer and tool()), each chat on a
//     process pre-warmed with the SDK's startup(), in one long-lived node
//     process whose own start-up is not counted. As a chat takes the
//     pre-warmed process, startup() begins the next chat's, as the warm
//     pool's refill replaces the process a chat takes.
//
// Metrics, medians in ms: WAY-final-text-ms, from the chat's start to its
// final text, and WAY-overhead-ms, that minus the API's own time to first
// byte summed over the chat's three requests; and the overhead ratios
// warm/agent-sdk and cold/agent-sdk. When node, npm or the SDK cannot be
// had, the agent-sdk way is skipped with a message and the others run.
func BenchmarkE2ETool(b *testing.B) {
	ctx := context.Background()
	e := newE2E(b, claudepooltest.Config{FirstByteDelay: benchFirstByteDelay, Reply: toolBenchReply})
	var calls atomic.Int64
	add := Tool{
		Name:        "add",
		Description: "Adds two numbers.",
		InputSchema: json.RawMessage(`{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]}`),
		Handler: func(_ context.Context, input json.RawMessage) (string, error) {
			var in struct{ A, B float64 }
			if err := json.Unmarshal(input, &in); err != nil {
				return "", err
			}
			calls.Add(1)
			return fmt.Sprint(in.A + in.B), nil
		},
	}
	cfg := Config{Prompt: &SystemPrompt{System: benchSystem}, MaxUses: 1, PartialMessages: true, GoTools: []Tool{add}}
	cold, _ := e.pool(b, cfg)
	cfg.Size = 1
	warm, _ := e.pool(b, cfg)
	settled := []poolWant{{cold, 0}, {warm, 1}}

	poolWay := func(name string, p *Pool, wantWarm bool) *toolWay {
		a := NewAdapter(p)
		return &toolWay{name: name, run: func(ctx context.Context, marker string) (toolChat, error) {
			calls.Store(0)
			c, err := poolToolChat(ctx, a, marker)
			c.toolCalls = int(calls.Load())
			if err == nil && (c.acq.Warm != wantWarm || c.acq.Reused) {
				err = fmt.Errorf("got a process acquired as %+v", c.acq)
			}
			return c, err
		}}
	}
	ways := []*toolWay{poolWay("warm", warm, true), poolWay("cold", cold, false)}
	sdk, skip := startAgentSDK(b, e)
	if sdk != nil {
		ways = append(ways, &toolWay{name: "agent-sdk", run: sdk.chat})
	} else {
		b.Logf("agent-sdk way skipped: %s", skip)
		fmt.Fprintf(os.Stderr, "BenchmarkE2ETool: the agent-sdk way is skipped: %s\n", skip)
	}
	settleAll := func() {
		settle(b, settled)
		if sdk != nil {
			sdk.settle(b)
		}
	}

	b.ResetTimer()
	for range b.N {
		for _, w := range ways {
			b.StopTimer()
			settleAll()
			marker := fmt.Sprintf("[chat %d]", benchChatSeq.Add(1))
			b.StartTimer()
			c, err := w.run(ctx, marker)
			b.StopTimer()
			if err == nil {
				err = c.check()
			}
			if err != nil {
				b.Fatalf("%s chat %s: %v", w.name, marker, err)
			}
			w.chats = append(w.chats, c)
		}
	}
	b.StopTimer()
	if sdk != nil {
		sdk.close(b)
	}

	reqs := e.mock.ChatRequests()
	overheads := map[string]time.Duration{}
	for _, w := range ways {
		var finalText, overhead, api, toFirst, gap1, gap2, afterLast []time.Duration
		for _, c := range w.chats {
			s, err := splitToolChat(reqs, c)
			if err != nil {
				b.Fatalf("%s: %v", w.name, err)
			}
			finalText = append(finalText, c.finalText)
			overhead = append(overhead, s.overhead)
			api = append(api, s.api)
			toFirst = append(toFirst, s.toFirst)
			gap1 = append(gap1, s.gaps[0])
			gap2 = append(gap2, s.gaps[1])
			afterLast = append(afterLast, s.afterLast)
		}
		overheads[w.name] = quantile(overhead, 0.5)
		b.ReportMetric(ms(quantile(finalText, 0.5)), w.name+"-final-text-ms")
		b.ReportMetric(ms(quantile(overhead, 0.5)), w.name+"-overhead-ms")
		fmt.Fprintf(os.Stderr, "E2ETool, mock API first byte %v, %d chats, %-9s medians: final text %v, API first bytes %v, overhead %v "+
			"(to request 1 %v, first byte 1 to request 2 %v, first byte 2 to request 3 %v, first byte 3 to final text %v)\n",
			benchFirstByteDelay, len(w.chats), w.name, rnd(quantile(finalText, 0.5)), rnd(quantile(api, 0.5)), rnd(quantile(overhead, 0.5)),
			rnd(quantile(toFirst, 0.5)), rnd(quantile(gap1, 0.5)), rnd(quantile(gap2, 0.5)), rnd(quantile(afterLast, 0.5)))
	}
	if sdk != nil {
		for _, name := range []string{"warm", "cold"} {
			b.ReportMetric(float64(overheads[name])/float64(overheads["agent-sdk"]), name+"/agent-sdk")
		}
		fmt.Fprintf(os.Stderr, "E2ETool, agent-sdk %s: startup() %v at node's start, then p50 %v for each next chat's, begun with the chat\n",
			sdk.version, rnd(sdk.startup), rnd(quantile(sdk.rewarm, 0.5)))
	}
}

// check reports a chat that did not go as scripted.
func (c toolChat) check() error {
	switch {
	case c.text != toolBenchFinal:
		return fmt.Errorf("final text %q, want %q", c.text, toolBenchFinal)
	case c.toolUses != 2 || c.toolCalls != 2:
		return fmt.Errorf("%d tool_use blocks and %d runs of the tool, want 2 of each", c.toolUses, c.toolCalls)
	case c.finalText <= 0:
		return errors.New("no final text")
	}
	return nil
}

// poolToolChat runs the chat through a and reads it to the end.
func poolToolChat(ctx context.Context, a *Adapter, marker string) (toolChat, error) {
	c := toolChat{marker: marker, start: time.Now()}
	s, err := a.StreamChat(ctx, Request{Messages: []Message{{Role: RoleUser, Content: toolBenchText + " " + marker}}})
	if err != nil {
		return c, err
	}
	defer s.Close()
	for s.Next() {
		if ev := s.Event(); ev.Type == EventAssistant && ev.Message != nil {
			for _, bl := range ev.Message.Content {
				if bl.Type == "tool_use" {
					c.toolUses++
				}
			}
		}
	}
	if err := s.Err(); err != nil {
		return c, err
	}
	c.finalText, c.acq = s.Latency().FirstText, s.Acquire()
	if r := s.Result(); r != nil {
		c.text = r.Text
	}
	return c, nil
}

// toolSplit places a chat's three API requests on the chat's clock.
type toolSplit struct {
	api       time.Duration    // the API's own time to first byte, summed over the requests
	overhead  time.Duration    // the final text's time minus api
	toFirst   time.Duration    // from the chat's start to request 1
	gaps      [2]time.Duration // from the first byte of request k to request k+1: the tool's call among them
	afterLast time.Duration    // from the first byte of request 3 to the final text
}

// splitToolChat finds the chat requests that carry c's marker (and no
// other) and splits the chat's time by them. There must be three: with no
// tool result, with one and with two.
func splitToolChat(reqs []claudepooltest.Request, c toolChat) (toolSplit, error) {
	var mine [3]*claudepooltest.Request
	n := 0
	for i := range reqs {
		r := &reqs[i]
		found := chatMarker.FindAllString(string(r.Body), -1)
		if len(found) == 0 || found[0] != c.marker {
			continue
		}
		for _, f := range found {
			if f != c.marker {
				return toolSplit{}, fmt.Errorf("an API request carries the markers of chats %s and %s", c.marker, f)
			}
		}
		n++
		var results int
		for _, m := range r.Messages {
			results += len(m.ToolResults)
		}
		if results > 2 || mine[results] != nil {
			return toolSplit{}, fmt.Errorf("chat %s: more than one API request with %d tool results", c.marker, results)
		}
		if r.FirstByte.IsZero() {
			return toolSplit{}, fmt.Errorf("chat %s: an API request has no first byte", c.marker)
		}
		mine[results] = r
	}
	if n != 3 {
		return toolSplit{}, fmt.Errorf("chat %s: %d API requests, want 3", c.marker, n)
	}
	var s toolSplit
	for _, r := range mine {
		s.api += r.FirstByte.Sub(r.Time)
	}
	s.overhead = c.finalText - s.api
	s.toFirst = mine[0].Time.Sub(c.start)
	s.gaps[0] = mine[1].Time.Sub(mine[0].FirstByte)
	s.gaps[1] = mine[2].Time.Sub(mine[1].FirstByte)
	s.afterLast = c.finalText - mine[2].FirstByte.Sub(c.start)
	return s, nil
}

// agentSDK is the node process of the agent-sdk way (bench.mjs).
type agentSDK struct {
	version string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	out     *bufio.Scanner
	stderr  *lockedBuffer
	env     *e2eEnv // the CLI's home for this way: finds its processes
	startup time.Duration
	rewarm  []time.Duration
}

// sdkLine is a line bench.mjs prints.
type sdkLine struct {
	Ready       bool    `json:"ready"`
	StartupMs   float64 `json:"startupMs"`
	StartEpoch  float64 `json:"startEpochMs"`
	FinalTextMs float64 `json:"finalTextMs"`
	Text        string  `json:"text"`
	ToolUses    int     `json:"toolUses"`
	ToolCalls   int     `json:"toolCalls"`
	RewarmMs    float64 `json:"rewarmMs"`
	Error       string  `json:"error"`
}

// startAgentSDK installs the pinned SDK when it is missing (npm ci) and
// starts bench.mjs against e's mock and CLI, with its own HOME and working
// directory. It returns nil and why when node, npm or the SDK cannot be
// had; it fails b when the SDK, once installed, does not start.
func startAgentSDK(b *testing.B, e *e2eEnv) (*agentSDK, string) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, "node is not installed (install Node.js and npm, then `make bench-tools`)"
	}
	version, err := installAgentSDK()
	if err != nil {
		return nil, err.Error()
	}
	sdkEnv := &e2eEnv{cli: e.cli, home: b.TempDir()}
	cmd := exec.Command(node, "bench.mjs")
	cmd.Dir = agentSDKDir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + sdkEnv.home, "NODE_NO_WARNINGS=1",
		"CLAUDEPOOL_CLI=" + e.cli, "BENCH_CWD=" + b.TempDir(), "BENCH_SYSTEM=" + benchSystem}, e.mock.Env()...)
	// Its own process group: close can end node and the CLIs it started
	// should they outlive its stdin.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s := &agentSDK{version: version, cmd: cmd, stderr: &lockedBuffer{}, env: sdkEnv}
	cmd.Stderr = s.stderr
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	s.out = bufio.NewScanner(stdout)
	s.out.Buffer(nil, 1<<20)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.close(b) })
	l, err := s.read()
	if err != nil || !l.Ready {
		b.Fatalf("agent-sdk: bench.mjs did not start (%+v, %v); its stderr:\n%s", l, err, s.stderr.bytes())
	}
	s.startup = msDuration(l.StartupMs)
	return s, ""
}

// installAgentSDK returns the installed SDK's version, after installing
// it with npm ci when it is not the version package.json pins.
func installAgentSDK() (string, error) {
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	raw, err := os.ReadFile(filepath.Join(agentSDKDir, "package.json"))
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal(raw, &pkg); err != nil {
		return "", fmt.Errorf("%s/package.json: %w", agentSDKDir, err)
	}
	want := pkg.Dependencies[agentSDKPackage]
	installed := func() string {
		var p struct {
			Version string `json:"version"`
		}
		raw, err := os.ReadFile(filepath.Join(agentSDKDir, "node_modules", agentSDKPackage, "package.json"))
		if err != nil || json.Unmarshal(raw, &p) != nil {
			return ""
		}
		return p.Version
	}
	if got := installed(); got == want {
		return got, nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("%s %s is not installed in %s and npm is not there to install it", agentSDKPackage, want, agentSDKDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The SDK's optional dependencies are its own builds of the CLI: the
	// benchmark drives the pinned one instead.
	out, err := exec.CommandContext(ctx, npm, "ci", "--prefix", agentSDKDir, "--omit=optional", "--no-audit", "--no-fund").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("npm ci could not install %s %s into %s (offline?): %v\n%s", agentSDKPackage, want, agentSDKDir, err, lastLines(out, 10))
	}
	if got := installed(); got != want {
		return "", fmt.Errorf("npm ci installed %s %q into %s, want %s", agentSDKPackage, got, agentSDKDir, want)
	}
	return want, nil
}

// lockedBuffer is a buffer that one goroutine writes while another reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.buf.Bytes())
}

// lastLines returns the last n lines of out.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// read reads bench.mjs's next line.
func (s *agentSDK) read() (sdkLine, error) {
	var l sdkLine
	if !s.out.Scan() {
		err := s.out.Err()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return l, err
	}
	if err := json.Unmarshal(s.out.Bytes(), &l); err != nil {
		return l, fmt.Errorf("%w: %s", err, s.out.Bytes())
	}
	if l.Error != "" {
		return l, errors.New(l.Error)
	}
	return l, nil
}

// chat runs one chat in bench.mjs. It returns once the SDK has the next
// chat's process pre-warmed.
func (s *agentSDK) chat(_ context.Context, marker string) (toolChat, error) {
	c := toolChat{marker: marker}
	line, _ := json.Marshal(map[string]string{"text": toolBenchText + " " + marker})
	if _, err := s.stdin.Write(append(line, '\n')); err != nil {
		return c, err
	}
	l, err := s.read()
	if err != nil {
		return c, fmt.Errorf("%w; bench.mjs's stderr:\n%s", err, lastLines(s.stderr.bytes(), 20))
	}
	c.start = time.UnixMicro(int64(l.StartEpoch * 1000))
	c.finalText, c.text, c.toolUses, c.toolCalls = msDuration(l.FinalTextMs), l.Text, l.ToolUses, l.ToolCalls
	s.rewarm = append(s.rewarm, msDuration(l.RewarmMs))
	return c, nil
}

// settle waits until the CLI processes of the agent-sdk way are the one
// pre-warmed for its next chat: the last chat's has exited.
//
// The pre-warmed process starts as the chat begins, so it is the newest;
// each older one is waited for until it exits.
func (s *agentSDK) settle(b *testing.B) {
	deadline := time.Now().Add(time.Minute)
	for {
		pids := s.env.cliProcesses(b)
		if len(pids) == 1 {
			return
		}
		if len(pids) == 0 {
			b.Fatalf("agent-sdk: no CLI process pre-warmed for the next chat")
		}
		oldest := slices.MinFunc(pids, func(x, y int) int {
			ex, _ := readStat(x)
			ey, _ := readStat(y)
			return cmp.Compare(ex.start, ey.start)
		})
		if !waitExited(oldest, max(time.Until(deadline), 0)) {
			b.Fatalf("agent-sdk: %d CLI processes a minute after its chat, want 1 (pre-warmed)", len(pids))
		}
	}
}

// close ends bench.mjs: the end of its stdin, then, should it not exit
// within 30 s, a kill of its process group. Every CLI process it started
// must be gone.
func (s *agentSDK) close(b *testing.B) {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.stdin.Close()
	done := make(chan error, 1)
	go func() {
		for s.out.Scan() {
		}
		done <- s.cmd.Wait()
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
		b.Errorf("agent-sdk: bench.mjs did not exit within 30 s of the end of its stdin; killed")
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, pid := range s.env.cliProcesses(b) {
		if !waitExited(pid, max(time.Until(deadline), 0)) {
			b.Errorf("agent-sdk: CLI processes left after node exited: %v", s.env.cliProcesses(b))
			return
		}
	}
}
