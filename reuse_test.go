package claudepool

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// The tests of process reuse: a process that served a chat cleanly is
// reset with /clear and serves the next chat with the same system prompt,
// until MaxUses, MaxRSS or a chat that did not end cleanly retires it.

// Log messages the reuse tests wait on.
const (
	logReset    = "claudepool: process reset"
	logRetiring = "claudepool: retiring process"
	logResetErr = "claudepool: reset failed"
)

// waitLog waits until a record with message msg satisfies match, and
// returns it.
func waitLog(t *testing.T, fp *fakePool, msg string, match func(slog.Record) bool) slog.Record {
	t.Helper()
	for n := 1; ; {
		recs := fp.logs.waitFor(t, msg, n)
		for _, r := range recs {
			if match(r) {
				return r
			}
		}
		n = len(recs) + 1
	}
}

func recordOf(pid int) func(slog.Record) bool {
	return func(r slog.Record) bool { return attr(r, "pid").Int64() == int64(pid) }
}

// waitReset waits until process pid has been reset after serving uses
// chats, and is idle again.
func waitReset(t *testing.T, fp *fakePool, pid, uses int) {
	t.Helper()
	waitLog(t, fp, logReset, func(r slog.Record) bool {
		return recordOf(pid)(r) && attr(r, "uses").Int64() == int64(uses)
	})
}

// waitRetired waits until the pool retires process pid and returns why.
func waitRetired(t *testing.T, fp *fakePool, pid int) RetireReason {
	t.Helper()
	return RetireReason(attr(waitLog(t, fp, logRetiring, recordOf(pid)), "reason").String())
}

// received lists what process pid received on stdin, one entry a line:
// a control request's subtype ("set_model:<model>" for set_model), or
// "user:<text>" for a user line.
func received(t *testing.T, fp *fakePool, pid int) []string {
	t.Helper()
	var out []string
	for _, m := range sentLines(t, fp, pid) {
		switch m["type"] {
		case "user":
			out = append(out, "user:"+userText(t, m))
		case "control_request":
			r := request(m)
			if r["subtype"] == "set_model" {
				out = append(out, fmt.Sprintf("set_model:%v", r["model"]))
			} else {
				out = append(out, fmt.Sprint(r["subtype"]))
			}
		default:
			t.Fatalf("process %d received an unexpected line: %v", pid, m)
		}
	}
	return out
}

// retiredTotal sums Stats.Retired over every reason.
func retiredTotal(st Stats) int64 {
	var n int64
	for _, r := range retireReasonsArray {
		n += st.Retired[r]
	}
	return n
}

// Two chats back to back with the same prompt run on the same process; the
// pool clears the conversation between them, and the second chat sees
// nothing of the first.
func TestReuseSamePrompt(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1}, fakecli.EnvEchoHistory+"=1")
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(ctx))

	s1, _ := chatOK(t, ctx, a, userMsg("first secret"))
	info1 := s1.Acquire()
	require.True(t, info1.Warm)
	require.False(t, info1.Reused)
	require.Equal(t, 1, info1.Uses)
	require.Equal(t, "echo: first secret", s1.Result().Text)
	waitReset(t, fp, info1.PID, 1)

	s2, evs := chatOK(t, ctx, a, userMsg("second"))
	info2 := s2.Acquire()
	require.Equal(t, info1.PID, info2.PID, "the second chat runs on the first chat's process")
	require.True(t, info2.Warm)
	require.True(t, info2.Reused)
	require.Equal(t, 2, info2.Uses)
	// The fake echoes every user text of its conversation: the reset
	// left nothing of the first chat.
	require.Equal(t, "echo: second", s2.Result().Text)
	for _, ev := range evs {
		require.NotContains(t, string(ev.Raw), "first secret")
	}
	require.NotEqual(t, s1.Result().SessionID, s2.Result().SessionID, "a new session after the reset")
	require.EqualValues(t, 1, fp.Stats().Reuses)

	waitReset(t, fp, info1.PID, 2)
	require.Equal(t, []string{"mcp_status", "initialize", "user:first secret", "user:/clear", "user:second", "user:/clear"},
		received(t, fp, info1.PID), "one initialize for life, a /clear after each chat")
	st := fp.Stats()
	require.EqualValues(t, 2, st.Resets.Count)
	require.Zero(t, retiredTotal(st))
}

// A chat that does not end cleanly retires its process: it is never reset
// nor handed out again.
func TestNoReuseAfterUncleanEnd(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(*Config)
		env  []string // of the chat's process only
		run  func(t *testing.T, a *Adapter) outcome
		want func(t *testing.T, o outcome)
	}{
		{
			name: "cancel mid-stream",
			run: func(t *testing.T, a *Adapter) outcome {
				ctx, cancel := context.WithCancel(testCtx(t))
				defer cancel()
				s, err := a.StreamChat(ctx, userMsg("x "+fakecli.Marker(fakecli.ModeHangMid)))
				require.NoError(t, err)
				o := outcome{warm: s.Acquire().Warm, pid: s.Acquire().PID}
				require.True(t, s.Next(), "first event: %v", s.Err())
				cancel()
				for s.Next() {
				}
				o.err = s.Err()
				require.NoError(t, s.Close())
				return o
			},
			want: func(t *testing.T, o outcome) { requireErrorIs(t, o.err, context.Canceled) },
		},
		{
			name: "crash",
			run: func(t *testing.T, a *Adapter) outcome {
				return chat(t, a, "x "+fakecli.Marker(fakecli.ModeCrash), faultBound)
			},
			want: wantExit(2, "panic: fake crash"),
		},
		{
			name: "line over MaxLineBytes",
			cfg: func(c *Config) {
				c.MaxLineBytes = 1 << 20
				c.Env = append(c.Env, fakecli.EnvHugeBytes+"=2000000")
			},
			run: func(t *testing.T, a *Adapter) outcome {
				return chat(t, a, "x "+fakecli.Marker(fakecli.ModeHuge), faultBound)
			},
			want: func(t *testing.T, o outcome) { requireErrorIs(t, o.err, ErrLineTooLong) },
		},
		{
			// Without Config.Prompt the warm process passed its probe; the
			// chat's initialize is rejected.
			name: "control error",
			env:  []string{fakecli.EnvMode + "=" + fakecli.ModeRejectInit},
			run: func(t *testing.T, a *Adapter) outcome {
				return chat(t, a, "x", faultBound)
			},
			want: func(t *testing.T, o outcome) {
				require.NoError(t, o.startErr)
				require.ErrorContains(t, o.err, "initialize request failed: "+fakecli.RejectInitError)
			},
		},
		{
			name: "deadline",
			run: func(t *testing.T, a *Adapter) outcome {
				return chat(t, a, "x "+fakecli.Marker(fakecli.ModeHang), hangDeadline)
			},
			want: func(t *testing.T, o outcome) { requireErrorIs(t, o.err, context.DeadlineExceeded) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newSwapCLI(t)
			c.set(t, tt.env)
			cfg := Config{Command: c.path, Size: 1}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			fp := newFakePool(t, cfg)
			a := NewAdapter(fp.Pool)
			require.NoError(t, fp.WaitReady(testCtx(t)))
			c.set(t, nil) // the processes spawned from now on are healthy

			o := tt.run(t, a)
			require.True(t, o.warm)
			tt.want(t, o)
			require.True(t, waitExited(o.pid, testWait), "process %d retired", o.pid)
			st := fp.Stats()
			require.EqualValues(t, 1, st.Retired[RetireUnclean])
			require.EqualValues(t, 1, retiredTotal(st))
			require.Zero(t, st.Resets.Count)
			require.NotContains(t, received(t, fp, o.pid), "user:/clear", "an unclean process is never reset")

			require.NoError(t, fp.WaitReady(testCtx(t)))
			next := chat(t, a, "next", faultBound)
			requireOK(t, next, "next")
			require.NotEqual(t, o.pid, next.pid, "the retired process is never handed out again")
			require.Zero(t, fp.Stats().Reuses)
		})
	}
}

// A result with is_error ends the chat cleanly: the real CLI (2.1.330)
// stays alive after an API error and /clear works, so the process is reset
// and serves the next chat.
func TestReuseAfterErrorResult(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1}, fakecli.EnvEchoHistory+"=1")
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(ctx))

	o1 := chat(t, a, "x "+fakecli.Marker(fakecli.ModeErrorResult), faultBound)
	var re *ResultError
	require.ErrorAs(t, o1.err, &re)
	require.Equal(t, 401, re.APIErrorStatus)
	waitReset(t, fp, o1.pid, 1)

	o2 := chat(t, a, "after the error", faultBound)
	requireOK(t, o2, "after the error")
	require.Equal(t, o1.pid, o2.pid)
	st := fp.Stats()
	require.EqualValues(t, 1, st.Reuses)
	require.Zero(t, retiredTotal(st))
}

// A chat with a model leaves it on its process; the reset puts the
// default back, so that the next chat without a model runs on the CLI's
// default and sends no set_model of its own.
func TestReuseModelPutBack(t *testing.T) {
	tests := []struct {
		name      string
		model     string // of the second chat
		wantModel string // in the second chat's init event
		wantAfter []string
	}{
		{"second chat without a model", "", fakecli.DefaultModel,
			[]string{"user:/clear", "set_model:default", "user:second", "user:/clear"}},
		{"second chat with the same model", "sonnet", "claude-sonnet-5-5",
			[]string{"user:/clear", "set_model:default", "set_model:sonnet", "user:second", "user:/clear", "set_model:default"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			fp := newFakePool(t, Config{Size: 1})
			a := NewAdapter(fp.Pool)
			require.NoError(t, fp.WaitReady(ctx))

			req := userMsg("first")
			req.Model = "sonnet"
			s1, evs1 := chatOK(t, ctx, a, req)
			require.Equal(t, "claude-sonnet-5-5", evs1[0].Init.Model)
			pid := s1.Acquire().PID
			waitReset(t, fp, pid, 1)

			req = userMsg("second")
			req.Model = tt.model
			s2, evs2 := chatOK(t, ctx, a, req)
			require.Equal(t, pid, s2.Acquire().PID)
			require.True(t, s2.Acquire().Reused)
			require.Equal(t, EventInit, evs2[0].Type)
			require.Equal(t, tt.wantModel, evs2[0].Init.Model)
			waitReset(t, fp, pid, 2)

			want := append([]string{"mcp_status", "initialize", "set_model:sonnet", "user:first"}, tt.wantAfter...)
			require.Equal(t, want, received(t, fp, pid))
		})
	}
}

// A process serves at most MaxUses chats, then is retired; MaxUses 1
// turns reuse off.
func TestReuseMaxUses(t *testing.T) {
	tests := []struct {
		name    string
		maxUses int // small enough to get no jitter: n - rand.IntN(n/10+1) = n for n < 10
		chats   int
		want    []int // the process of each chat, numbered in order of appearance
	}{
		{"three", 3, 4, []int{0, 0, 0, 1}},
		{"one means no reuse", 1, 3, []int{0, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			fp := newFakePool(t, Config{Size: 1, MaxUses: tt.maxUses}, fakecli.EnvEchoHistory+"=1")
			a := NewAdapter(fp.Pool)
			var pids []int
			number := map[int]int{}
			var got []int
			resets := 0
			for i := range tt.chats {
				require.NoError(t, fp.WaitReady(ctx))
				text := fmt.Sprintf("chat %d", i)
				o := chat(t, a, text, faultBound)
				requireOK(t, o, text)
				require.True(t, o.warm)
				if _, ok := number[o.pid]; !ok {
					number[o.pid] = len(pids)
					pids = append(pids, o.pid)
				}
				got = append(got, number[o.pid])
				uses := 0
				for _, n := range got {
					if n == number[o.pid] {
						uses++
					}
				}
				if uses < tt.maxUses {
					waitReset(t, fp, o.pid, uses)
					resets++
				} else {
					require.Equal(t, RetireMaxUses, waitRetired(t, fp, o.pid))
					require.True(t, waitExited(o.pid, testWait))
				}
			}
			require.Equal(t, tt.want, got)

			st := fp.Stats()
			retired := int64(tt.chats / tt.maxUses)
			require.Equal(t, retired, st.Retired[RetireMaxUses])
			require.Equal(t, retired, retiredTotal(st))
			require.EqualValues(t, tt.chats-len(pids), st.Reuses)
			require.EqualValues(t, resets, st.Resets.Count)
			require.EqualValues(t, retired, st.UsesPerProcess.Count)
			require.EqualValues(t, tt.maxUses, st.UsesPerProcess.Max)
			if tt.maxUses == 1 {
				for _, pid := range pids {
					require.NotContains(t, received(t, fp, pid), "user:/clear")
				}
			}
		})
	}
}

// A process whose resident memory, read after its reset, exceeds MaxRSS,
// or whose private memory exceeds MaxPrivate, is retired.
func TestReuseMaxRSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/smaps_rollup"); err != nil {
		t.Skip("no /proc/PID/smaps_rollup: MaxRSS and MaxPrivate have no effect here")
	}
	const grow = 64 << 20 // each turn of the fake keeps this much more
	growEnv := fmt.Sprintf("%s=%d", fakecli.EnvGrowBytes, grow)

	// The resident and private memory of a fake after one grown turn,
	// as the pool reads them after the reset.
	var rssOne, privateOne int64
	t.Run("idle memory after a reset", func(t *testing.T) {
		ctx := testCtx(t)
		fp := newFakePool(t, Config{}, growEnv)
		require.Zero(t, fp.Stats().IdleRSS)
		o := chat(t, NewAdapter(fp.Pool), "grow", faultBound)
		requireOK(t, o, "grow")
		waitReset(t, fp, o.pid, 1)
		st := fp.Stats()
		rssOne, privateOne = st.IdleRSS, st.IdlePrivate
		t.Logf("idle memory after one grown turn: RSS %d MiB, private %d MiB", rssOne>>20, privateOne>>20)
		require.Greater(t, rssOne, int64(grow), "the idle process's memory, grown turn included")
		require.Greater(t, privateOne, int64(grow), "the grown turn's memory is the process's own")
		require.NoError(t, fp.Close(ctx))
	})
	if rssOne == 0 || privateOne == 0 {
		t.FailNow()
	}

	for _, c := range []struct {
		name string
		cfg  Config
	}{
		// Each bound lies halfway between one grown turn and two.
		{"MaxRSS", Config{MaxRSS: rssOne + grow/2}},
		{"MaxPrivate", Config{MaxPrivate: privateOne + grow/2}},
	} {
		t.Run("retired past "+c.name, func(t *testing.T) {
			fp := newFakePool(t, c.cfg, growEnv)
			a := NewAdapter(fp.Pool)
			o1 := chat(t, a, "one", faultBound)
			requireOK(t, o1, "one")
			waitReset(t, fp, o1.pid, 1)
			require.Positive(t, fp.Stats().IdleRSS)

			o2 := chat(t, a, "two", faultBound)
			requireOK(t, o2, "two")
			require.Equal(t, o1.pid, o2.pid, "under the bound the process is reused")
			require.Equal(t, RetireMemory, waitRetired(t, fp, o1.pid))
			require.True(t, waitExited(o1.pid, testWait))
			st := fp.Stats()
			require.EqualValues(t, 1, st.Retired[RetireMemory])
			require.EqualValues(t, 1, retiredTotal(st))
			require.EqualValues(t, 2, st.UsesPerProcess.Max)
			require.Zero(t, st.IdleRSS)

			o3 := chat(t, a, "three", faultBound)
			requireOK(t, o3, "three")
			require.NotEqual(t, o1.pid, o3.pid)
		})
	}
}

// A process carries the system prompt of its first chat for life; the
// pool keeps it for later chats with that prompt.
func TestReuseAffinity(t *testing.T) {
	withSystem := func(system, text string) Request {
		r := userMsg(text)
		r.System = system
		return r
	}
	// chatOn runs a chat with system prompt system and returns its
	// process, once the process is idle again.
	chatOn := func(t *testing.T, fp *fakePool, system string) AcquireInfo {
		t.Helper()
		ctx := testCtx(t)
		require.NoError(t, fp.WaitReady(ctx))
		s, evs := chatOK(t, ctx, NewAdapter(fp.Pool), withSystem(system, "hi"))
		require.Contains(t, string(evs[0].Raw), fmt.Sprintf(`"fake_system_prompt":[%q]`, system))
		info := s.Acquire()
		waitReset(t, fp, info.PID, info.Uses)
		return info
	}

	t.Run("same prompt same process", func(t *testing.T) {
		// Size 2: without MaxProcs the pool keeps max(Size, 1) idle
		// processes of prompts other than the default, and this test
		// keeps two.
		fp := newFakePool(t, Config{Size: 2})
		a1 := chatOn(t, fp, "A")
		b1 := chatOn(t, fp, "B")
		require.NotEqual(t, a1.PID, b1.PID, "B does not take A's process")
		require.False(t, b1.Reused)
		a2 := chatOn(t, fp, "A")
		require.Equal(t, a1.PID, a2.PID)
		require.True(t, a2.Reused)
		require.Equal(t, 2, a2.Uses)
		b2 := chatOn(t, fp, "B")
		require.Equal(t, b1.PID, b2.PID)
		st := fp.Stats()
		require.EqualValues(t, 2, st.Reuses)
		require.Zero(t, retiredTotal(st))
		require.Equal(t, []string{"mcp_status", "initialize", "user:hi", "user:/clear", "user:hi", "user:/clear"},
			received(t, fp, a1.PID), "one initialize for life")
	})

	t.Run("at MaxProcs another prompt evicts", func(t *testing.T) {
		// Size 0: the refill does not evict the idle process itself to
		// make room for a spare.
		fp := newFakePool(t, Config{MaxProcs: 1})
		a := chatOn(t, fp, "A")
		require.False(t, a.Warm)
		ctx := testCtx(t)
		s, _ := chatOK(t, ctx, NewAdapter(fp.Pool), withSystem("B", "hi"))
		require.False(t, s.Acquire().Warm, "B is served cold")
		require.NotEqual(t, a.PID, s.Acquire().PID)
		require.Equal(t, RetireEvicted, waitRetired(t, fp, a.PID))
		require.True(t, waitExited(a.PID, testWait))
		require.EqualValues(t, 1, fp.Stats().Retired[RetireEvicted])
		require.EqualValues(t, 1, retiredTotal(fp.Stats()))
	})

	tests := []struct {
		name    string
		size    int
		prompts []string // chats in order
		retired string   // the prompt whose process goes, least recently used
		kept    []string
	}{
		{"one kept with Size 1", 1, []string{"A", "B"}, "A", []string{"B"}},
		{"the least recently used goes", 2, []string{"A", "B", "A", "C"}, "B", []string{"A", "C"}},
	}
	for _, tt := range tests {
		t.Run("surplus/"+tt.name, func(t *testing.T) {
			fp := newFakePool(t, Config{Size: tt.size})
			procs := map[string]int{}
			for _, p := range tt.prompts {
				info := chatOn(t, fp, p)
				if pid, ok := procs[p]; ok {
					require.Equal(t, pid, info.PID)
				}
				procs[p] = info.PID
			}
			require.Equal(t, RetireSurplus, waitRetired(t, fp, procs[tt.retired]))
			require.True(t, waitExited(procs[tt.retired], testWait))
			st := fp.Stats()
			require.EqualValues(t, 1, st.Retired[RetireSurplus])
			require.EqualValues(t, 1, retiredTotal(st))
			for _, p := range tt.kept {
				info := chatOn(t, fp, p)
				require.Equal(t, procs[p], info.PID, "prompt %s keeps its process", p)
				require.True(t, info.Reused)
			}
		})
	}
}

// With Config.Prompt, a chat without a prompt of its own reuses a process
// that carries the pool's prompt and sends it no initialize.
func TestReusePoolPrompt(t *testing.T) {
	ctx := testCtx(t)
	// MaxProcs 1: no fresh spare, which carries the pool's prompt too,
	// competes with the reused process.
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 1, Prompt: &SystemPrompt{System: "pool"}})
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(ctx))

	requests := []struct {
		text   string
		system string
	}{{"one", ""}, {"two", ""}, {"three", "pool"}}
	var pid int
	for i, r := range requests {
		req := userMsg(r.text)
		req.System = r.system
		s, evs := chatOK(t, ctx, a, req)
		require.Contains(t, string(evs[0].Raw), `"fake_system_prompt":["pool"]`)
		info := s.Acquire()
		if i == 0 {
			pid = info.PID
		}
		require.Equal(t, pid, info.PID)
		require.True(t, info.Warm)
		require.Equal(t, i+1, info.Uses)
		waitReset(t, fp, pid, i+1)
	}
	require.Equal(t, []string{"mcp_status", "initialize", "user:one", "user:/clear", "user:two", "user:/clear", "user:three", "user:/clear"},
		received(t, fp, pid), "the pool's initialize at spawn, none at claim")
	require.EqualValues(t, 2, fp.Stats().Reuses)
	require.Zero(t, fp.Stats().PromptCold)
}

// A reset that is not confirmed retires the process; the next chat runs on
// another one and sees nothing of the first. TestFaultMatrix's reset
// moment covers exit, hang and garbage; this covers every reset fault.
func TestResetFaults(t *testing.T) {
	tests := []struct {
		mode    string
		wantErr string // in the "reset failed" record
	}{
		{fakecli.ResetExit, "before answering /clear"},
		{fakecli.ResetHang, "did not answer /clear"},
		{fakecli.ResetNoReset, "without conversation_reset"},
		{fakecli.ResetSameSession, "kept its session"},
		{fakecli.ResetGarbage, "malformed line"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			fp := newFakePool(t, Config{Size: 1, ReadyTimeout: hangDeadline}, fakecli.EnvEchoHistory+"=1")
			a := NewAdapter(fp.Pool)
			require.NoError(t, fp.WaitReady(testCtx(t)))
			first := "first " + fakecli.ResetMarker(tt.mode)
			o1 := chat(t, a, first, faultBound)
			requireOK(t, o1, first)
			requireResetFailed(t, fp, o1.pid)
			rec := fp.logs.waitFor(t, logResetErr, 1)[0]
			require.Contains(t, attr(rec, "err").String(), tt.wantErr)
			require.EqualValues(t, 1, retiredTotal(fp.Stats()))
			require.Zero(t, fp.Stats().Resets.Count)

			require.NoError(t, fp.WaitReady(testCtx(t)))
			o2 := chat(t, a, "second", faultBound)
			requireOK(t, o2, "second") // the fake echoes the whole conversation
			require.NotEqual(t, o1.pid, o2.pid)
		})
	}
}

// The reuse counters add up, and the process counts are consistent in
// every snapshot while callers chat concurrently.
func TestReuseStatsUnderLoad(t *testing.T) {
	const callers, chats = 4, 8 // chats per caller; far below MaxUses
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 2}, fakecli.EnvEchoHistory+"=1")
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(ctx))

	type result struct {
		info AcquireInfo
		err  error
	}
	results := make(chan result, callers*chats)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range chats {
				text := fmt.Sprintf("caller %d chat %d", c, i)
				s, err := a.StreamChat(ctx, userMsg(text))
				if err != nil {
					results <- result{err: err}
					continue
				}
				for s.Next() {
				}
				err = s.Err()
				if r := s.Result(); err == nil && r.Text != "echo: "+text {
					// Another chat's text: the conversation was not reset.
					err = fmt.Errorf("chat %q got %q", text, r.Text)
				}
				results <- result{info: s.Acquire(), err: err}
				_ = s.Close()
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	const minSnapshots = 300
	snapshots, during := 0, 0
	for running := true; running || snapshots < minSnapshots; snapshots++ {
		select {
		case <-done:
			running = false
		default:
			during++
		}
		st := fp.Stats()
		if st.Busy+st.Idle+st.Resetting > st.Live {
			t.Fatalf("snapshot %d: busy %d + idle %d + resetting %d > live %d",
				snapshots, st.Busy, st.Idle, st.Resetting, st.Live)
		}
		runtime.Gosched()
	}
	t.Logf("%d snapshots, %d while the callers ran", snapshots, during)
	close(results)

	var reused int64
	for r := range results {
		require.NoError(t, r.err)
		if r.info.Reused {
			reused++
		}
	}
	// Every chat ended cleanly, so every process was reset after it.
	resets := fp.logs.waitFor(t, logReset, callers*chats)
	st := fp.Stats()
	require.Len(t, resets, callers*chats)
	require.EqualValues(t, len(resets), st.Resets.Count)
	require.Zero(t, st.Resetting)
	require.Zero(t, st.Busy)
	require.Positive(t, reused)
	require.Equal(t, reused, st.Reuses)
	require.Zero(t, retiredTotal(st))
	require.Zero(t, countLogs(fp, logResetErr))
}

// countLogs returns how many records with message msg the pool logged.
func countLogs(fp *fakePool, msg string) int {
	fp.logs.mu.Lock()
	defer fp.logs.mu.Unlock()
	n := 0
	for _, r := range fp.logs.records {
		if r.Message == msg {
			n++
		}
	}
	return n
}

// Close cuts short a reset in flight, even one whose CLI never answers
// and whose ReadyTimeout is far away, and leaves nothing behind.
func TestResetInFlightAtClose(t *testing.T) {
	fds := fdBaseline(t)
	fp := newFakePool(t, Config{ReadyTimeout: time.Hour})
	text := "x " + fakecli.ResetMarker(fakecli.ResetHang)
	o := chat(t, NewAdapter(fp.Pool), text, faultBound)
	requireOK(t, o, text)
	// The process went to its reset before the caller saw the result.
	require.Equal(t, 1, fp.Stats().Resetting)

	closed := make(chan error, 1)
	go func() { closed <- fp.Close(context.Background()) }()
	deadline := time.NewTimer(testWait)
	defer deadline.Stop()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-deadline.C:
		t.Fatalf("Close still waits for the hung reset after %v", testWait)
	}
	require.True(t, waitExited(o.pid, 0))
	// Close cut the reset short: the process is retired for the pool's
	// close, not for a failed reset, and no failure is logged.
	require.Equal(t, RetireClosed, waitRetired(t, fp, o.pid))
	st := fp.Stats()
	require.EqualValues(t, 1, st.Retired[RetireClosed])
	require.Zero(t, st.Retired[RetireResetFailed])
	require.Zero(t, countLogs(fp, logResetErr))
	require.Zero(t, st.Resetting)
	require.Zero(t, st.Reuses)
	requireClean(t, fp, fds)
}

// With a spare ready for the next caller, the reset of a process a chat
// released waits for the next chat's start or resetDeferral, so that its
// CPU does not delay that chat's API request. Without a spare it starts at
// once, and a caller short of a process starts a waiting one.
func TestResetDeferral(t *testing.T) {
	deferred := func(fp *fakePool) int {
		fp.mu.Lock()
		defer fp.mu.Unlock()
		return len(fp.pacing.deferred)
	}
	t.Run("waits with a spare", func(t *testing.T) {
		ctx := testCtx(t)
		fp := newFakePool(t, Config{Size: 2})
		require.NoError(t, fp.WaitReady(ctx))
		start := time.Now()
		s, _ := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("one"))
		rec := waitLog(t, fp, logReset, recordOf(s.Acquire().PID))
		require.GreaterOrEqual(t, rec.Time.Sub(start), resetDeferral,
			"no chat started: the reset waited resetDeferral")
		require.Zero(t, deferred(fp))
	})
	t.Run("at once without a spare", func(t *testing.T) {
		ctx := testCtx(t)
		fp := newFakePool(t, Config{})
		s, _ := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("one"))
		require.Zero(t, deferred(fp), "released without a spare: reset at once")
		waitReset(t, fp, s.Acquire().PID, 1)
	})
	t.Run("a shortage starts it", func(t *testing.T) {
		ctx := testCtx(t)
		// MaxProcs 2: no third process; the chat's is deferred, the
		// other one is the spare.
		fp := newFakePool(t, Config{Size: 2, MaxProcs: 2})
		require.NoError(t, fp.WaitReady(ctx))
		s, _ := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("one"))
		released := time.Now() // no earlier than the release
		spare, err := fp.TryAcquire()
		require.NoError(t, err)
		defer spare.Stop(ctx)
		_, err = fp.TryAcquire()
		require.ErrorIs(t, err, ErrNotAvailable)
		if time.Since(released) < resetDeferral {
			require.Zero(t, deferred(fp), "the short caller started the deferred reset")
		}
		waitReset(t, fp, s.Acquire().PID, 1)
	})
}
