package claudepool

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// The tests of this file: a chat's text is data, never a CLI command; the
// reset proves the process is back to the pool's settings; a rejected
// model and an API status that cannot succeed on retry fail the chat at
// once and keep the process.

// slashTexts are messages the CLI would run as commands if they were
// typed: each must reach the model as the text it is.
var slashTexts = []string{
	"/model claude-haiku-5-5",
	"  /config model=haiku",
	"/clear",
	"/compact",
	"\t/init",
}

// Every chat's text, in a first message, a held continuation and a
// rendered transcript, reaches the model as sent, and changes nothing of
// the process for the next user.
func TestSlashCommandIsData(t *testing.T) {
	ctx := testCtx(t)
	home := t.TempDir()
	// Size 0: at MaxProcs 1 a spare would take the place of the held
	// conversation.
	fp := newFakePool(t, Config{MaxProcs: 1, HoldConversations: time.Minute,
		Env: []string{"HOME=" + home}}, echoHistory)
	a := NewAdapter(fp.Pool)

	for _, text := range slashTexts {
		s, evs := chatOK(t, ctx, a, conv(text))
		require.Equal(t, "echo: "+text, s.Result().Text, "the model got the text")
		init := evs[0]
		require.Equal(t, EventInit, init.Type)
		require.Equal(t, fakecli.DefaultModel, init.Init.Model)

		// Held: the continuation's new message is sent alone.
		next := continued(conv(text), s.Result().Text, "/model opus")
		s2, _ := chatOK(t, ctx, a, next)
		require.True(t, s2.Acquire().Continued)
		require.Equal(t, "echo: "+text+" | /model opus", s2.Result().Text)

		// Another user's chat on the same process runs on the pool's
		// model.
		s3, evs3 := chatOK(t, ctx, a, conv("hello"))
		require.Equal(t, s.Acquire().PID, s3.Acquire().PID, "MaxProcs 1: the same process")
		require.Equal(t, fakecli.DefaultModel, evs3[0].Init.Model)
		require.Equal(t, "echo: hello", s3.Result().Text)
	}
	// Rendered: a conversation no process holds, starting with a command.
	req := conv(slashTexts[0], "echo: x", "/config model=opus")
	s, _ := chatOK(t, ctx, a, req)
	require.False(t, s.Acquire().Continued)
	requireRendered(t, fp, s, req)

	_, err := os.Stat(filepath.Join(home, ".claude", "settings.json"))
	require.ErrorIs(t, err, os.ErrNotExist, "no chat wrote the account's settings")
	_, err = os.Stat(filepath.Join(fp.configDir, "settings.json"))
	require.ErrorIs(t, err, os.ErrNotExist, "no chat wrote the pool's settings")
	require.Zero(t, retiredTotal(fp.Stats()))
}

// Without UserSettings, the processes get a configuration directory of
// the pool's own: what the CLI writes there (here a /config typed on a
// process taken with Acquire) stays out of the account's $HOME, and Close
// removes it. Env may name another one.
func TestConfigDirOfThePool(t *testing.T) {
	ctx := testCtx(t)
	home := t.TempDir()
	fp := newFakePool(t, Config{Env: []string{"HOME=" + home}})
	dir := fp.configDir
	require.DirExists(t, dir)
	proc, err := fp.Acquire(ctx)
	require.NoError(t, err)
	typed := []byte(`{"type":"user","session_id":"","message":{"role":"user","content":[{"type":"text","text":"/config model=haiku"}]},"parent_tool_use_id":null}`)
	require.NoError(t, proc.WriteLine(typed))
	for {
		line, err := proc.ReadLine()
		require.NoError(t, err)
		if ev, _, _ := parseLine(line); ev.Type == EventResult {
			break
		}
	}
	// It has answered, so it runs the CLI and not the fork before exec.
	require.Equal(t, dir, procEnviron(t, proc.PID())["CLAUDE_CONFIG_DIR"])
	require.FileExists(t, filepath.Join(dir, "settings.json"))
	require.NoFileExists(t, filepath.Join(home, ".claude", "settings.json"))
	require.NoError(t, proc.Stop(ctx))
	require.NoError(t, fp.Close(ctx))
	require.NoDirExists(t, dir)

	own := t.TempDir()
	fp2 := newFakePool(t, Config{Env: []string{"CLAUDE_CONFIG_DIR=" + own}})
	require.Empty(t, fp2.configDir)
	fp3 := newFakePool(t, Config{UserSettings: true})
	require.Empty(t, fp3.configDir)
}

// A reset whose new conversation runs another model than the process's
// own gets the pool's model back before the process serves again.
func TestResetPutsModelBack(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 1})
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(ctx))
	s1, evs := chatOK(t, ctx, a, userMsg("x "+fakecli.ResetMarker(fakecli.ResetOtherModel)))
	require.Equal(t, fakecli.DefaultModel, evs[0].Init.Model)
	pid := s1.Acquire().PID
	waitReset(t, fp, pid, 1)
	require.Contains(t, received(t, fp, pid), "set_model:default", "the pool put its model back")

	s2, evs2 := chatOK(t, ctx, a, userMsg("y"))
	require.Equal(t, pid, s2.Acquire().PID)
	require.Equal(t, fakecli.DefaultModel, evs2[0].Init.Model)
}

// A reset that cannot get the pool's model back retires the process.
func TestResetUnprovenModelRetires(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, Model: "sonnet"})
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(ctx))
	// The chat learns the process's model (claude-sonnet-5-5) from its
	// init; after the reset the process answers set_model with another.
	s1, _ := chatOK(t, ctx, a, userMsg("x "+fakecli.ResetMarker(fakecli.ResetStuckModel)))
	require.Equal(t, RetireResetFailed, waitRetired(t, fp, s1.Acquire().PID))
}

// A model the API rejects is an API error for that chat, with the API's
// status; the process stays in the pool and serves the next chat.
func TestRejectedModelKeepsProcess(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 1})
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(ctx))

	req := userMsg("hi")
	req.Model = "claude-" + fakecli.RejectedModel + "-9"
	s, err := a.StreamChat(ctx, req)
	require.NoError(t, err)
	defer s.Close()
	require.Empty(t, drain(t, s))
	var re *ResultError
	require.ErrorAs(t, s.Err(), &re)
	require.Equal(t, 404, re.APIErrorStatus)
	require.Equal(t, SubtypeModelRejected, re.Subtype)
	require.Equal(t, "Model 'claude-bogus-9' not found", re.Message)
	require.Same(t, s.Result(), re.Result)
	pid := s.Acquire().PID

	o := chat(t, a, "next", 0)
	requireOK(t, o, "next")
	require.Equal(t, pid, o.pid, "the process stayed in the pool")
	require.Zero(t, retiredTotal(fp.Stats()))
}

// An API status that cannot succeed on retry ends the chat at its first
// failure, although the CLI would retry it for as long as it is told to;
// the process serves the next chat. A retryable status follows
// Config.MaxRetries, and every retry is an event.
func TestFinalAPIStatusNotRetried(t *testing.T) {
	for _, status := range []int{401, 403, 404, 413} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			ctx := testCtx(t)
			// Each retry would wait an hour: only the pool's interrupt
			// ends the chat within the test's deadline.
			fp := newFakePool(t, Config{Size: 1, MaxProcs: 1, MaxRetries: 10},
				fakecli.EnvRetryDelay+"=1h", fakecli.EnvAPIStatus+"="+strconv.Itoa(status))
			a := NewAdapter(fp.Pool)
			require.NoError(t, fp.WaitReady(ctx))
			o := chat(t, a, "x "+fakecli.Marker(fakecli.ModeErrorResult), 0)
			var re *ResultError
			require.ErrorAs(t, o.err, &re)
			require.Equal(t, status, re.APIErrorStatus)
			require.Equal(t, "api_error", re.TerminalReason)
			require.Contains(t, re.Message, "API error "+strconv.Itoa(status))
			require.Equal(t, 1, count(o.types, EventRetry), "the first retry notice is seen")

			next := chat(t, a, "next", 0)
			requireOK(t, next, "next")
			require.Equal(t, o.pid, next.pid)
		})
	}
	for _, tt := range []struct {
		name    string
		retries int
		want    int
	}{{"default", 0, DefaultMaxRetries}, {"three", 3, 3}, {"none", -1, 0}} {
		t.Run("500/"+tt.name, func(t *testing.T) {
			fp := newFakePool(t, Config{MaxRetries: tt.retries},
				fakecli.EnvRetryDelay+"=1ms", fakecli.EnvAPIStatus+"=500")
			o := chat(t, NewAdapter(fp.Pool), "x "+fakecli.Marker(fakecli.ModeErrorResult), 0)
			var re *ResultError
			require.ErrorAs(t, o.err, &re)
			require.Equal(t, 500, re.APIErrorStatus)
			require.Equal(t, fakecli.DefaultErrorText, re.Message, "the CLI's own result")
			require.Equal(t, tt.want, count(o.types, EventRetry))
		})
	}
}

func TestRetryable(t *testing.T) {
	for _, s := range []int{0, 408, 409, 429, 500, 502, 503, 529} {
		require.True(t, Retryable(s), "%d", s)
	}
	for _, s := range []int{400, 401, 403, 404, 413, 422} {
		require.False(t, Retryable(s), "%d", s)
	}
}

func count(ts []EventType, want EventType) int {
	n := 0
	for _, t := range ts {
		if t == want {
			n++
		}
	}
	return n
}
