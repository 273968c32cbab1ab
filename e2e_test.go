package claudepool

// The e2e suite drives the real Claude Code CLI through Pool and Adapter
// against claudepooltest, a local mock of the Messages API. It finds the
// CLI through CLAUDEPOOL_CLI or in .cli/ (installed by `make cli`), and
// fails when it is missing: set CLAUDEPOOL_SKIP_E2E=1 to opt out.

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// realCLI returns the path of the real CLI, or fails the test.
func realCLI(tb testing.TB) string {
	tb.Helper()
	if os.Getenv("CLAUDEPOOL_SKIP_E2E") == "1" {
		tb.Skip("CLAUDEPOOL_SKIP_E2E=1: the real-CLI suite is skipped")
	}
	path := os.Getenv("CLAUDEPOOL_CLI")
	if path == "" {
		path = filepath.Join(".cli", "node_modules", ".bin", "claude")
	}
	abs, err := filepath.Abs(path)
	require.NoError(tb, err)
	if _, err := os.Stat(abs); err != nil {
		tb.Fatalf("the real CLI is not installed at %s (run `make cli`, or set CLAUDEPOOL_SKIP_E2E=1 to skip the e2e suite): %v", abs, err)
	}
	return abs
}

// e2eEnv is the real CLI's environment for a mock: its own HOME and
// working directory per test.
type e2eEnv struct {
	cli  string
	mock *claudepooltest.Server
	home string
	dir  string
}

func newE2E(tb testing.TB, cfg claudepooltest.Config) *e2eEnv {
	tb.Helper()
	e := &e2eEnv{cli: realCLI(tb), mock: claudepooltest.NewServer(cfg)}
	e.home, e.dir = tb.TempDir(), tb.TempDir()
	// Runs after the cleanups of the pools, which are registered later.
	tb.Cleanup(func() {
		e.mock.Close()
		if left := e.cliProcesses(tb); len(left) > 0 {
			tb.Errorf("CLI processes left after Close: %v", left)
		}
	})
	return e
}

// pool starts a pool of real CLIs, closed at cleanup. Once the pools of
// e are closed, no CLI process of e may be left.
func (e *e2eEnv) pool(tb testing.TB, cfg Config) (*Pool, *logRecorder) {
	tb.Helper()
	return e.poolCommand(tb, cfg, e.cli)
}

// poolCommand is pool with command, such as a wrapper around e.cli, in
// place of e.cli.
func (e *e2eEnv) poolCommand(tb testing.TB, cfg Config, command string) (*Pool, *logRecorder) {
	tb.Helper()
	logs := newLogRecorder()
	cfg.Command = command
	cfg.Dir = e.dir
	cfg.Env = append(append(e.mock.Env(), "HOME="+e.home), cfg.Env...)
	cfg.Logger = slog.New(logs)
	p, err := NewPool(cfg)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p, logs
}

// cliProcesses lists running CLI processes (argv[0] is the CLI's path)
// that belong to this test environment: their HOME is e.home. Other
// packages' tests may run the same CLI at the same time.
func (e *e2eEnv) cliProcesses(tb testing.TB) []int {
	var pids []int
	for _, p := range procTable(tb) {
		if p.exited() {
			continue // exited, waiting to be reaped
		}
		dir := filepath.Join("/proc", strconv.Itoa(p.pid))
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil {
			continue
		}
		if argv0, _, _ := bytes.Cut(cmdline, []byte{0}); string(argv0) != e.cli {
			continue
		}
		environ, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(environ), "\x00"), "HOME="+e.home) {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

func e2eCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestE2EStreamedReply streams a reply of three text deltas through the
// real CLI: with every delta passed as the API sent it, and with the
// gateway joining them (a window of a minute, so that the join does not
// depend on the machine's speed): the first delta passes at once, the
// other two reach the CLI as one, and the CLI streams them as it got them.
func TestE2EStreamedReply(t *testing.T) {
	for _, c := range []struct {
		name   string
		window time.Duration
		deltas int
	}{
		{"every delta", -1, 3},
		{"joined", time.Minute, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := e2eCtx(t, 2*time.Minute)
			e := newE2E(t, claudepooltest.Config{Chunks: 3})
			p, _ := e.pool(t, Config{Size: 1, PartialMessages: true, CoalesceDeltas: c.window})
			require.NoError(t, p.WaitReady(ctx))

			s, err := NewAdapter(p).StreamChat(ctx, userMsg("hello"))
			require.NoError(t, err)
			defer s.Close()
			var deltas []string
			var sawInit, sawAssistant bool
			for s.Next() {
				ev := s.Event()
				switch ev.Type {
				case EventInit:
					sawInit = true
				case EventAssistant:
					sawAssistant = true
					require.Equal(t, claudepooltest.EchoPrefix+"hello", ev.Text())
				case EventPartial:
					if t := ev.Text(); t != "" {
						deltas = append(deltas, t)
					}
				}
			}
			require.NoError(t, s.Err())
			require.True(t, sawInit && sawAssistant)
			require.Len(t, deltas, c.deltas, "the mock streamed 3 chunks: %q", deltas)
			require.Equal(t, claudepooltest.EchoPrefix+"hello", strings.Join(deltas, ""))
			res := s.Result()
			require.NotNil(t, res)
			require.False(t, res.IsError)
			require.Equal(t, claudepooltest.EchoPrefix+"hello", res.Text)
			require.Equal(t, 1, res.NumTurns)
			require.True(t, s.Acquire().Warm)
			lat := s.Latency()
			require.Positive(t, lat.FirstEvent)
			require.Positive(t, lat.Result)
			t.Logf("warm: first event %v, first text %v, result %v", lat.FirstEvent, lat.FirstText, lat.Result)
		})
	}
}

func TestE2ESystemPromptAndModelOnWarmProcess(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	// NoPriming: a primed process has its prompt already, and the CLI
	// takes a prompt only once.
	p, _ := e.pool(t, Config{Size: 1, NoPriming: true})
	require.NoError(t, p.WaitReady(ctx))

	s, _ := chatOK(t, ctx, NewAdapter(p), Request{
		System:   "You are a pirate. Answer in pirate speak.",
		Model:    "sonnet",
		Messages: []Message{{Role: RoleUser, Content: "Ahoy?"}},
	})
	require.True(t, s.Acquire().Warm, "the settings were applied to a process started before the request")

	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 1)
	require.Equal(t, "claude-sonnet-5-5", reqs[0].Model)
	require.Contains(t, reqs[0].System, "You are a pirate. Answer in pirate speak.")
	require.Equal(t, "Ahoy?", reqs[0].LastUserText())
	require.Empty(t, reqs[0].Tools, "pooled processes run with no tools by default")
}

// A pool with Config.Prompt hands its prompt to each warm process before
// the claim; the CLI uses it for a request that brings none, and a request
// with another prompt gets that one on a cold process.
func TestE2EPoolPrompt(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	p, _ := e.pool(t, Config{Size: 1, Prompt: &SystemPrompt{System: "You are the pool's assistant."}})
	require.NoError(t, p.WaitReady(ctx))
	a := NewAdapter(p)

	hi := []Message{{Role: RoleUser, Content: "hi"}}
	s, _ := chatOK(t, ctx, a, Request{Model: "sonnet", Messages: hi})
	require.True(t, s.Acquire().Warm)
	s, _ = chatOK(t, ctx, a, Request{System: "You are a request's own assistant.", Messages: hi})
	require.False(t, s.Acquire().Warm)
	require.EqualValues(t, 1, p.Stats().PromptCold)

	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 2)
	require.Equal(t, "claude-sonnet-5-5", reqs[0].Model, "set_model still applies on a specialized process")
	require.Contains(t, reqs[0].System, "You are the pool's assistant.")
	require.Contains(t, reqs[1].System, "You are a request's own assistant.")
	require.NotContains(t, reqs[1].System, "You are the pool's assistant.")
}

func TestE2EEmptySystemPromptByDefault(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	p, _ := e.pool(t, Config{})
	s, _ := chatOK(t, ctx, NewAdapter(p), userMsg("hi"))
	require.False(t, s.Acquire().Warm)
	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 1)
	total := 0
	for _, block := range reqs[0].System {
		total += len(block)
	}
	// The CLI's own agent prompt is several thousand characters.
	require.Less(t, total, 1000, "system blocks: %q", reqs[0].System)
}

func TestE2EMultiTurn(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	p, _ := e.pool(t, Config{Size: 1})
	require.NoError(t, p.WaitReady(ctx))
	msgs := []Message{
		{Role: RoleUser, Content: "My name is Ada."},
		{Role: RoleAssistant, Content: "Hello Ada."},
		{Role: RoleUser, Content: "What is my name?"},
	}
	s, _ := chatOK(t, ctx, NewAdapter(p), Request{Messages: msgs})
	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 1)
	require.Equal(t, RenderTranscript(msgs), reqs[0].LastUserText())
	require.Equal(t, claudepooltest.EchoPrefix+RenderTranscript(msgs), s.Result().Text)
}

func TestE2EAPIFailures(t *testing.T) {
	tests := []struct {
		fail       claudepooltest.Failure
		wantStatus int
	}{
		{claudepooltest.FailBadRequest, 400},
		{claudepooltest.FailUnauthorized, 401},
		{claudepooltest.FailRateLimit, 429},
		{claudepooltest.FailServer, 500},
		{claudepooltest.FailHang, 0},
	}
	e := newE2E(t, claudepooltest.Config{APITimeout: 2 * time.Second})
	p, _ := e.pool(t, Config{Size: 1})
	a := NewAdapter(p)
	for _, tt := range tests {
		t.Run(tt.fail.String(), func(t *testing.T) {
			// Within this bound, or the test fails: no failure may take
			// the CLI's default minutes of retries.
			ctx := e2eCtx(t, 45*time.Second)
			require.NoError(t, p.WaitReady(ctx))
			e.mock.SetReply(claudepooltest.Fail(tt.fail))
			start := time.Now()
			s, err := a.StreamChat(ctx, userMsg("hi"))
			require.NoError(t, err)
			defer s.Close()
			drain(t, s)
			var re *ResultError
			require.ErrorAs(t, s.Err(), &re)
			require.Equal(t, tt.wantStatus, re.APIErrorStatus)
			require.True(t, re.Result.IsError)
			require.NotEmpty(t, re.Message)
			t.Logf("%v: %v after %v", tt.fail, re, time.Since(start).Round(time.Millisecond))
		})
	}
}

func TestE2ECancelMidStream(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	hold := make(chan struct{})
	defer close(hold)
	e := newE2E(t, claudepooltest.Config{
		Reply: func(claudepooltest.Request) claudepooltest.Reply {
			return claudepooltest.Reply{Text: "first part, second part", Chunks: 2, Hold: hold}
		},
	})
	p, _ := e.pool(t, Config{Size: 1, PartialMessages: true})
	require.NoError(t, p.WaitReady(ctx))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := NewAdapter(p).StreamChat(cctx, userMsg("hi"))
	require.NoError(t, err)
	defer s.Close()
	pid := s.Acquire().PID
	for s.Next() {
		if s.Event().Text() != "" {
			break // the first delta: the reply is in flight, held by the mock
		}
	}
	cancel()
	for s.Next() {
	}
	requireErrorIs(t, s.Err(), context.Canceled)
	require.NoError(t, s.Close())
	require.True(t, waitExited(pid, 0), "CLI %d not reaped after Close", pid)
}

func TestE2ECloseWithBusyProcesses(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	hold := make(chan struct{})
	defer close(hold)
	e := newE2E(t, claudepooltest.Config{
		Reply: func(claudepooltest.Request) claudepooltest.Reply {
			return claudepooltest.Reply{Text: "never finished", Chunks: 2, Hold: hold}
		},
	})
	p, _ := e.pool(t, Config{Size: 1, PartialMessages: true})
	require.NoError(t, p.WaitReady(ctx))
	s, err := NewAdapter(p).StreamChat(ctx, userMsg("hi"))
	require.NoError(t, err)
	defer s.Close()
	for s.Next() {
		if s.Event().Text() != "" {
			break
		}
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	err = p.Close(short)
	requireErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "killed 1 busy processes")
	for s.Next() {
	}
	require.Error(t, s.Err())
	require.Empty(t, e.cliProcesses(t))
}
