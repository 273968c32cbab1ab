package claudepool

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// argvOf returns the argv the fake CLI process pid was started with,
// the program path first.
func argvOf(t *testing.T, fp *fakePool, pid int) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fp.rec, strconv.Itoa(pid)+".args"))
	require.NoError(t, err)
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// hasFlag reports whether argv holds flag followed by value.
func hasFlag(argv []string, flag, value string) bool {
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == flag && argv[i+1] == value {
			return true
		}
	}
	return false
}

// onlyPID returns the PID of the only process the pool has started.
func onlyPID(t *testing.T, fp *fakePool) int {
	t.Helper()
	pids := fp.pids()
	require.Len(t, pids, 1)
	return pids[0]
}

// unsetEnv removes the variables from this process's environment for the
// test, so that what a child has of them came from the pool.
func unsetEnv(t *testing.T, names ...string) {
	t.Helper()
	for _, k := range names {
		t.Setenv(k, "") // restores the old value at cleanup
		require.NoError(t, os.Unsetenv(k))
	}
}

// Config.Model is given at spawn, and a chat that names no model, or the
// pool's, sends no set_model: neither on a fresh process nor on one reset
// after an earlier chat.
func TestModelAtSpawn(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, Model: "sonnet"})
	require.NoError(t, fp.WaitReady(ctx))
	a := NewAdapter(fp.Pool)

	s1, evs1 := chatOK(t, ctx, a, userMsg("no model"))
	pid := s1.Acquire().PID
	require.True(t, s1.Acquire().Warm)
	require.Equal(t, EventInit, evs1[0].Type)
	require.Equal(t, "claude-sonnet-5-5", evs1[0].Init.Model)
	require.True(t, hasFlag(argvOf(t, fp, pid), "--model", "sonnet"), "argv: %q", argvOf(t, fp, pid))
	waitReset(t, fp, pid, 1)

	req := userMsg("the pool's model")
	req.Model = "sonnet"
	s2, evs2 := chatOK(t, ctx, a, req)
	require.Equal(t, pid, s2.Acquire().PID)
	require.Equal(t, "claude-sonnet-5-5", evs2[0].Init.Model)
	waitReset(t, fp, pid, 2)

	require.Equal(t, []string{"mcp_status", "initialize", "user:no model", "user:/clear", "user:the pool's model", "user:/clear"},
		received(t, fp, pid))
}

// A cold process gets --model too.
func TestModelAtSpawnCold(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Model: "claude-haiku-9"})
	s, evs := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("cold"))
	require.False(t, s.Acquire().Warm)
	require.Equal(t, "claude-haiku-9", evs[0].Init.Model)
	pid := s.Acquire().PID
	require.True(t, hasFlag(argvOf(t, fp, pid), "--model", "claude-haiku-9"))
	for _, line := range received(t, fp, pid) {
		require.False(t, strings.HasPrefix(line, "set_model"), "a cold chat sent %s", line)
	}
}

// A chat that names another model switches its process with set_model
// before the user line; the reset puts the pool's model back (the CLI's
// "default" when Config.Model is empty), so the next chat without a model
// runs on the pool's model and sends no set_model.
func TestModelOtherSwitchesAndPutsBack(t *testing.T) {
	tests := []struct {
		name        string
		poolModel   string
		reqModel    string
		wantChat    string // the model in the chat's init event
		wantPutBack string // set_model of the reset
		wantNext    string // the model of the next chat, which names none
	}{
		{"pool model sonnet, chat opus", "sonnet", "opus", fakecli.DefaultModel, "sonnet", "claude-sonnet-5-5"},
		{"pool model sonnet, chat full id", "sonnet", "claude-haiku-9", "claude-haiku-9", "sonnet", "claude-sonnet-5-5"},
		{"no pool model, chat sonnet", "", "sonnet", "claude-sonnet-5-5", "default", fakecli.DefaultModel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			fp := newFakePool(t, Config{Size: 1, Model: tt.poolModel})
			require.NoError(t, fp.WaitReady(ctx))
			a := NewAdapter(fp.Pool)

			req := userMsg("other")
			req.Model = tt.reqModel
			s1, evs1 := chatOK(t, ctx, a, req)
			pid := s1.Acquire().PID
			require.Equal(t, tt.wantChat, evs1[0].Init.Model)
			waitReset(t, fp, pid, 1)

			s2, evs2 := chatOK(t, ctx, a, userMsg("next"))
			require.Equal(t, pid, s2.Acquire().PID)
			require.Equal(t, tt.wantNext, evs2[0].Init.Model)
			waitReset(t, fp, pid, 2)

			require.Equal(t, []string{
				"mcp_status", "initialize", "set_model:" + tt.reqModel, "user:other",
				"user:/clear", "set_model:" + tt.wantPutBack,
				"user:next", "user:/clear",
			}, received(t, fp, pid))
		})
	}
}

// Each warm process switches to each of Config.Models (but the pool's
// own) and back before it counts as ready, and before any chat.
func TestModelsConfirmedBeforeReady(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		wantReady []string // stdin at readiness
		wantBack  string   // the model a reset puts back
	}{
		{"with a pool model", Config{Model: "sonnet", Models: []string{"opus", "sonnet", "claude-haiku-9"}},
			[]string{"mcp_status", "set_model:opus", "set_model:claude-haiku-9", "set_model:sonnet"}, "sonnet"},
		{"without one", Config{Models: []string{"sonnet"}},
			[]string{"mcp_status", "set_model:sonnet", "set_model:default"}, "default"},
		{"with a pool prompt", Config{Models: []string{"opus"}, Prompt: &SystemPrompt{System: "P"}},
			[]string{"mcp_status", "set_model:opus", "set_model:default", "initialize"}, "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			cfg := tt.cfg
			cfg.Size = 1
			fp := newFakePool(t, cfg)
			require.NoError(t, fp.WaitReady(ctx))
			pid := onlyPID(t, fp)
			require.Equal(t, tt.wantReady, received(t, fp, pid), "before any chat")
			require.EqualValues(t, 1, fp.Stats().SpawnToReady.Count)

			// A chat for a listed model still switches (the CLI has
			// confirmed it already, so that costs a local round trip).
			req := userMsg("listed")
			req.Model = cfg.Models[0]
			s, _ := chatOK(t, ctx, NewAdapter(fp.Pool), req)
			require.Equal(t, pid, s.Acquire().PID)
			waitReset(t, fp, pid, 1)
			var want []string
			want = append(want, tt.wantReady...)
			if cfg.Prompt == nil {
				want = append(want, "initialize")
			}
			want = append(want, "set_model:"+cfg.Models[0], "user:listed", "user:/clear", "set_model:"+tt.wantBack)
			require.Equal(t, want, received(t, fp, pid))
		})
	}
}

// By default a process runs lean and hermetic: --bare, no settings
// sources, strict MCP config, the CLI's non-essential traffic off;
// UserSettings drops all of that; Config.Env wins over a lean entry.
func TestLeanSpawn(t *testing.T) {
	leanFlags := [][2]string{{"--setting-sources", ""}}
	leanNames := []string{"DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"}
	tests := []struct {
		name    string
		cfg     Config
		lean    bool
		wantEnv map[string]string // "" means absent
	}{
		{"default", Config{}, true,
			map[string]string{"DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}},
		{"user settings", Config{UserSettings: true}, false,
			map[string]string{"DISABLE_TELEMETRY": "", "DISABLE_ERROR_REPORTING": "", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": ""}},
		{"Config.Env wins", Config{Env: []string{"DISABLE_TELEMETRY=0"}}, true,
			map[string]string{"DISABLE_TELEMETRY": "0", "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}},
		{"user settings with Config.Env", Config{UserSettings: true, Env: []string{"DISABLE_TELEMETRY=1"}}, false,
			map[string]string{"DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unsetEnv(t, leanNames...)
			ctx := testCtx(t)
			cfg := tt.cfg
			cfg.Size = 1
			fp := newFakePool(t, cfg)
			require.NoError(t, fp.WaitReady(ctx))
			pid := onlyPID(t, fp)

			argv := argvOf(t, fp, pid)
			for _, f := range []string{"--bare", "--strict-mcp-config"} {
				require.Equal(t, tt.lean, slices.Contains(argv, f), "%s in argv %q", f, argv)
			}
			for _, f := range leanFlags {
				require.Equal(t, tt.lean, hasFlag(argv, f[0], f[1]), "%s %q in argv %q", f[0], f[1], argv)
			}
			if !tt.lean {
				require.NotContains(t, argv, "--setting-sources")
			}

			env := procEnviron(t, pid) // the idle process is alive
			for k, want := range tt.wantEnv {
				v, ok := env[k]
				if want == "" {
					require.False(t, ok, "%s=%s in the child's environment", k, v)
				} else {
					require.True(t, ok, "%s missing from the child's environment", k)
					require.Equal(t, want, v, k)
				}
			}
		})
	}
}

// NewPool rejects a model name with white space, in Model or Models.
func TestNewPoolRejectsBadModel(t *testing.T) {
	for _, cfg := range []Config{
		{Model: "claude sonnet"},
		{Model: "sonnet\n"},
		{Model: "\tsonnet"},
		{Models: []string{"opus", "claude haiku"}},
		{Models: []string{"a\rb"}},
	} {
		cfg.Command = fakeCLI
		p, err := NewPool(cfg)
		require.Error(t, err, "model %q, models %q", cfg.Model, cfg.Models)
		require.Nil(t, p)
		require.ErrorContains(t, err, "is not a model name")
	}
}
