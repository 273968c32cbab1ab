package claudepool

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

func TestNewPoolValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative size", Config{Command: fakeCLI, Size: -1}, "must not be negative"},
		{"max procs below size", Config{Command: fakeCLI, Size: 3, MaxProcs: 2}, "MaxProcs (2) is less than Size (3)"},
		{"negative duration", Config{Command: fakeCLI, MaxIdle: -time.Second}, "must not be negative"},
		{"bad env entry", Config{Command: fakeCLI, Env: []string{"NOEQUALS"}}, `"NOEQUALS" is not KEY=VALUE`},
		{"invalid UTF-8 prompt", Config{Command: fakeCLI, Prompt: &SystemPrompt{AppendSystem: "\xff"}}, "Prompt is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPool(tt.cfg)
			require.Nil(t, p)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestNewPoolCLINotFound(t *testing.T) {
	p, err := NewPool(Config{Command: "claudepool-no-such-cli"})
	require.Nil(t, p)
	requireErrorIs(t, err, ErrCLINotFound)
	require.ErrorContains(t, err, "npm install")
}

func TestNewPoolDoesNotKeepConfig(t *testing.T) {
	cfg := Config{Command: fakeCLI, Args: []string{"--a"}, Env: []string{"A=1"}, Prompt: &SystemPrompt{System: "s"}}
	fp := newFakePool(t, cfg)
	cfg.Args[0], cfg.Env[0], cfg.Prompt.System = "--changed", "A=2", "changed"
	require.Equal(t, "--a", fp.cfg.Args[0])
	require.NotEqual(t, "A=2", fp.cfg.Env[0])
	require.Equal(t, "s", fp.cfg.Prompt.System)
}

func TestWarmAcquire(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 2})
	require.NoError(t, fp.WaitReady(ctx))
	require.Equal(t, 2, fp.Stats().Idle)

	proc, err := fp.Acquire(ctx)
	require.NoError(t, err)
	info := proc.AcquireInfo()
	require.True(t, info.Warm)
	require.Equal(t, proc.PID(), info.PID)
	require.Positive(t, info.Wait)
	require.Positive(t, info.IdleAge)

	// The probe was mcp_status, never initialize: the first initialize
	// belongs to the request.
	lines := fp.stdin(t, proc.PID())
	require.Len(t, lines, 1)
	require.Contains(t, lines[0], `"subtype":"mcp_status"`)

	// The process was spawned in the pooled mode, with tools off, lean
	// and away from the user's settings.
	args, err := os.ReadFile(filepath.Join(fp.rec, strconv.Itoa(proc.PID())+".args"))
	require.NoError(t, err)
	require.Equal(t, []string{fakeCLI, "-p", "--input-format", "stream-json", "--output-format", "stream-json",
		"--verbose", "--no-session-persistence", "--tools", "", "--bare", "--setting-sources", "", "--strict-mcp-config"},
		strings.Split(strings.TrimSuffix(string(args), "\n"), "\n"))

	st := fp.Stats()
	require.EqualValues(t, 1, st.WarmAcquires)
	require.EqualValues(t, 0, st.ColdAcquires)
	require.EqualValues(t, 1, st.Warm.Acquire.Count)
	require.EqualValues(t, 2, st.SpawnToReady.Count)
	require.Equal(t, 1, st.Busy)
	require.NoError(t, proc.Stop(ctx))
}

func TestColdFallback(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))

	warm, err := fp.Acquire(ctx)
	require.NoError(t, err)
	cold, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, warm.AcquireInfo().Warm)
	require.False(t, cold.AcquireInfo().Warm)
	require.Zero(t, cold.AcquireInfo().IdleAge)
	require.NotEqual(t, warm.PID(), cold.PID())

	st := fp.Stats()
	require.EqualValues(t, 1, st.WarmAcquires)
	require.EqualValues(t, 1, st.ColdAcquires)
	require.EqualValues(t, 1, st.Cold.Acquire.Count)
	require.NoError(t, warm.Stop(ctx))
	require.NoError(t, cold.Stop(ctx))
}

func TestSizeZeroIsAlwaysCold(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{})
	require.NoError(t, fp.WaitReady(ctx))
	_, err := fp.TryAcquire()
	requireErrorIs(t, err, ErrNotAvailable)
	proc, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.False(t, proc.AcquireInfo().Warm)
	require.NoError(t, proc.Stop(ctx))
	require.Zero(t, fp.Stats().Idle)
}

func TestTryAcquire(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	proc, err := fp.TryAcquire()
	require.NoError(t, err)
	require.True(t, proc.AcquireInfo().Warm)
	require.NoError(t, proc.Stop(ctx))
}

func TestRefillAfterAcquire(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 2})
	require.NoError(t, fp.WaitReady(ctx))
	a, err := fp.Acquire(ctx)
	require.NoError(t, err)
	b, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, a.AcquireInfo().Warm && b.AcquireInfo().Warm)

	require.NoError(t, fp.WaitReady(ctx))
	require.Equal(t, 2, fp.Stats().Idle)
	c, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, c.AcquireInfo().Warm)
	require.NotContains(t, []int{a.PID(), b.PID()}, c.PID())
	require.EqualValues(t, 4, fp.Stats().SpawnToReady.Count)
	for _, p := range []*Process{a, b, c} {
		require.NoError(t, p.Stop(ctx))
	}
}

func TestDeadIdleProcessSkipped(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	victim := fp.pids()[0]
	require.NoError(t, syscall.Kill(victim, syscall.SIGKILL))
	fp.logs.waitFor(t, "claudepool: idle process exited", 1)

	proc, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.NotEqual(t, victim, proc.PID())
	require.EqualValues(t, 1, fp.Stats().DeadIdle)
	require.NoError(t, proc.Stop(ctx))
}

func TestMaxIdleRecycles(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxIdle: 50 * time.Millisecond})
	require.NoError(t, fp.WaitReady(ctx))
	first := fp.pids()[0]

	// Expiry is the behaviour under test: wait for it through the log.
	recs := fp.logs.waitFor(t, "claudepool: retiring process", 1)
	require.Equal(t, string(RetireIdle), attr(recs[0], "reason").String())
	require.EqualValues(t, first, attr(recs[0], "pid").Int64())
	require.True(t, waitExited(first, testWait))

	fp.logs.waitFor(t, "claudepool: process ready", 2)
	require.NoError(t, fp.WaitReady(ctx))
	require.GreaterOrEqual(t, fp.Stats().Retired[RetireIdle], int64(1))
	proc, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.NotEqual(t, first, proc.PID())
	require.NoError(t, proc.Stop(ctx))
}

func TestMaxProcsWaitsForSlot(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{MaxProcs: 1})
	first, err := fp.Acquire(ctx)
	require.NoError(t, err)

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = fp.Acquire(short)
	requireErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "MaxProcs 1")
	require.EqualValues(t, 1, fp.Stats().SlotTimeouts)

	got := make(chan *Process)
	errc := make(chan error, 1)
	go func() {
		p, err := fp.Acquire(ctx)
		errc <- err
		got <- p
	}()
	fp.logs.waitFor(t, "claudepool: MaxProcs reached, waiting for a slot", 2)
	require.NoError(t, first.Stop(ctx))
	require.NoError(t, <-errc)
	second := <-got
	require.NotEqual(t, first.PID(), second.PID())
	require.NoError(t, second.Stop(ctx))
}

func TestMaxProcsCapsWarmAndBusy(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 2, MaxProcs: 2})
	require.NoError(t, fp.WaitReady(ctx))
	a, err := fp.Acquire(ctx)
	require.NoError(t, err)
	b, err := fp.Acquire(ctx)
	require.NoError(t, err)
	// Both slots are busy: the refill cannot start a third process.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = fp.Acquire(short)
	requireErrorIs(t, err, context.DeadlineExceeded)
	require.LessOrEqual(t, fp.Stats().Live, 2)
	require.NoError(t, a.Stop(ctx))
	require.NoError(t, b.Stop(ctx))
	require.NoError(t, fp.WaitReady(ctx))
}

func TestSpawnFailureBacksOff(t *testing.T) {
	ctx := testCtx(t)
	const base = 20 * time.Millisecond
	fp := newFakePool(t, Config{Size: 1, SpawnBackoff: base}, fakecli.EnvMode+"="+fakecli.ModeExitEarly)

	recs := fp.logs.waitFor(t, "claudepool: spawn failed", 4)
	for i, r := range recs[:4] {
		require.EqualValues(t, i+1, attr(r, "consecutive_failures").Int64())
		require.Equal(t, base<<i, attr(r, "retry_in").Duration())
		require.Contains(t, attr(r, "err").String(), "fatal: fake start-up failure")
		if i > 0 {
			// One spawn at a time while failing, each no earlier than the
			// previous backoff allows.
			gap := r.Time.Sub(recs[i-1].Time)
			require.GreaterOrEqual(t, gap, base<<(i-1), "failure %d came %v after the previous one", i+1, gap)
		}
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := fp.WaitReady(short)
	requireErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "fatal: fake start-up failure")
	require.GreaterOrEqual(t, fp.Stats().SpawnFailures, int64(4))
}

func TestSpawnRecoversWhenCLIComesBack(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	cli := filepath.Join(dir, "claude")
	// A CLI that is broken at first: it exits at once.
	require.NoError(t, os.WriteFile(cli, []byte("#!/bin/sh\nexit 3\n"), 0o755))
	fp := newFakePool(t, Config{Command: cli, Size: 1})
	fp.logs.waitFor(t, "claudepool: spawn failed", 1)

	// The CLI comes back.
	data, err := os.ReadFile(fakeCLI)
	require.NoError(t, err)
	tmp := cli + ".new"
	require.NoError(t, os.WriteFile(tmp, data, 0o755))
	require.NoError(t, os.Rename(tmp, cli))
	require.NoError(t, fp.WaitReady(ctx))
}

func TestExecutableDisappears(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	cli := filepath.Join(dir, "claude")
	data, err := os.ReadFile(fakeCLI)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cli, data, 0o755))
	fp := newFakePool(t, Config{Command: cli})
	require.NoError(t, os.Remove(cli))
	_, err = fp.Acquire(ctx)
	requireErrorIs(t, err, ErrCLINotFound)

	require.NoError(t, os.WriteFile(cli, []byte("not a program"), 0o644))
	_, err = fp.Acquire(ctx)
	requireErrorIs(t, err, ErrCLINotFound)
	require.EqualValues(t, 2, fp.Stats().SpawnFailures)
}

func TestReadyTimeout(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, ReadyTimeout: 50 * time.Millisecond}, fakecli.EnvMode+"="+fakecli.ModeNoReady)
	recs := fp.logs.waitFor(t, "claudepool: spawn failed", 1)
	require.Contains(t, attr(recs[0], "err").String(), "did not answer mcp_status")
	require.NoError(t, fp.Close(ctx))
}

func TestCloseRetiresIdleAndKillsBusy(t *testing.T) {
	ctx := testCtx(t)
	fds := openFDs(t)
	fp := newFakePool(t, Config{Size: 2})
	require.NoError(t, fp.WaitReady(ctx))
	busy, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.NoError(t, fp.WaitReady(ctx))
	pids := fp.pids()
	require.Len(t, pids, 3)
	for _, pid := range pids {
		require.True(t, alive(pid))
	}

	// The busy process never finishes: Close waits until its ctx ends,
	// then kills it.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err = fp.Close(short)
	requireErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "killed 1 busy processes")
	requireGone(t, pids)
	select {
	case <-busy.Done():
	default:
		t.Fatal("busy process not reaped by Close")
	}
	require.Zero(t, fp.Stats().Live)
	require.Equal(t, fds, openFDs(t), "file descriptors left open")
	_, err = os.Stat(fp.dir)
	require.True(t, os.IsNotExist(err), "private working directory not removed")
}

func TestCloseWaitsForBusy(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{})
	busy, err := fp.Acquire(ctx)
	require.NoError(t, err)
	closed := make(chan error, 1)
	go func() { closed <- fp.Close(ctx) }()
	fp.logs.waitFor(t, "claudepool: waiting for busy processes", 1)
	select {
	case err := <-closed:
		t.Fatalf("Close returned %v while a process was busy", err)
	default:
	}
	require.NoError(t, busy.CloseStdin()) // the CLI finishes and exits
	require.NoError(t, <-closed)
	require.NoError(t, busy.Wait(ctx))
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{StopGrace: 20 * time.Millisecond},
		fakecli.EnvIgnoreSIGTERM+"=1", fakecli.EnvMode+"="+fakecli.ModeHang)
	proc, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.NoError(t, proc.WriteLine([]byte(`{"type":"user","session_id":"","message":{"role":"user","content":"hi"},"parent_tool_use_id":null}`)))
	// Stop closes stdin (ignored in a hung turn), sends SIGTERM (ignored),
	// then SIGKILL.
	require.NoError(t, proc.Stop(ctx))
	fp.logs.waitFor(t, "claudepool: process did not exit, sending SIGTERM", 1)
	fp.logs.waitFor(t, "claudepool: process did not stop, sending SIGKILL", 1)
	requireGone(t, fp.pids())
	var ee *ExitError
	require.ErrorAs(t, proc.Wait(ctx), &ee)
	require.Equal(t, "killed", ee.Signal)
}

func TestCloseKillsBusyProcessIgnoringSIGTERM(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{}, fakecli.EnvIgnoreSIGTERM+"=1", fakecli.EnvMode+"="+fakecli.ModeHang)
	proc, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.NoError(t, proc.WriteLine([]byte(`{"type":"user","session_id":"","message":{"role":"user","content":"hi"},"parent_tool_use_id":null}`)))
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	requireErrorIs(t, fp.Close(short), context.DeadlineExceeded)
	requireGone(t, fp.pids())
}

func TestCloseIdempotentAndFinal(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	require.NoError(t, fp.Close(ctx))
	require.NoError(t, fp.Close(ctx))

	_, err := fp.Acquire(ctx)
	requireErrorIs(t, err, ErrClosed)
	_, err = fp.TryAcquire()
	requireErrorIs(t, err, ErrClosed)
	requireErrorIs(t, fp.WaitReady(ctx), ErrClosed)
	_, err = NewAdapter(fp.Pool).StreamChat(ctx, Request{Messages: []Message{{Role: RoleUser, Content: "hi"}}})
	requireErrorIs(t, err, ErrClosed)
}

func TestCloseDuringStartup(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 2}, fakecli.EnvStartupDelay+"=1h")
	fp.logs.waitFor(t, "claudepool: process started", 2)
	// Both spawns are waiting for their probe answer; Close aborts them.
	require.NoError(t, fp.Close(ctx))
	requireGone(t, fp.pids())
	require.Zero(t, fp.Stats().SpawnFailures, "a spawn aborted by Close is not a failure")
}

func TestCallerCancelDoesNotKillPoolSpawn(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, err := fp.Acquire(canceled)
	requireErrorIs(t, err, context.Canceled)
	// The warm spawn the pool started is unaffected.
	require.NoError(t, fp.WaitReady(ctx))
	proc, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, proc.AcquireInfo().Warm)
	require.NoError(t, proc.Stop(ctx))
}

func TestReadLineLimit(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{MaxLineBytes: 1000}, fakecli.EnvMode+"="+fakecli.ModeHuge, fakecli.EnvHugeBytes+"=5000")
	proc, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.NoError(t, proc.WriteLine([]byte(`{"type":"user","session_id":"","message":{"role":"user","content":"hi"},"parent_tool_use_id":null}`)))
	require.NoError(t, proc.CloseStdin())
	var err2 error
	for err2 == nil {
		_, err2 = proc.ReadLine()
	}
	requireErrorIs(t, err2, ErrLineTooLong)
	require.NoError(t, proc.Stop(ctx))
}

func TestStopReportsExit(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{}, fakecli.EnvMode+"="+fakecli.ModeExitEarly, fakecli.EnvExitCode+"=7")
	proc, err := fp.Acquire(ctx)
	require.NoError(t, err)
	err = proc.Wait(ctx)
	var ee *ExitError
	require.True(t, errors.As(err, &ee), "got %v", err)
	require.Equal(t, 7, ee.Code)
	require.Contains(t, ee.Stderr, "fatal: fake start-up failure")
	require.Contains(t, ee.Error(), "(exit code 7): fatal: fake start-up failure")
	var xe *exec.ExitError
	require.True(t, errors.As(err, &xe))
}

func TestStatsJSON(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	proc, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.NoError(t, proc.Stop(ctx))
	data, err := json.Marshal(fp.Stats())
	require.NoError(t, err)
	for _, key := range []string{`"warm_acquires":1`, `"cold_acquires":0`, `"spawn_to_ready":{"count":`, `"warm":{"acquire":{"count":1`} {
		require.Contains(t, string(data), key)
	}
}
