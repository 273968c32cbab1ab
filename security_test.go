package claudepool

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// procEnviron reads the environment of process pid.
func procEnviron(t *testing.T, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	require.NoError(t, err)
	env := make(map[string]string)
	for _, kv := range bytes.Split(data, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			env[k] = v
		}
	}
	return env
}

// TestSecretsStayOutOfChildren runs two chats (the first warm, the second
// warm or cold, as the refill goes), one of whose CLIs starts a grandchild, and while all of them are alive checks that
// the prompt and the system prompt appear in no process's argv anywhere
// on the machine, and that only allowlisted variables (and Config.Env)
// reach the children's environment.
func TestSecretsStayOutOfChildren(t *testing.T) {
	const (
		prompt = "claudepool-secret-prompt-5f1c"
		system = "claudepool-secret-system-9a7e"
	)
	// The backend's own environment: secrets, the markers of a parent
	// Claude Code session, and variables the CLI needs.
	for k, v := range map[string]string{
		"CLAUDEPOOL_TEST_SECRET":    "s3cret",
		"DATABASE_URL":              "postgres://user:pw@db/app",
		"CLAUDECODE":                "1",
		"CLAUDE_CODE_SESSION_ID":    "parent-session",
		"CLAUDE_CODE_CHILD_SESSION": "1",
		"CLAUDE_CODE_ENTRYPOINT":    "cli",
		"ANTHROPIC_API_KEY":         "sk-test",
		"CLAUDE_CODE_MAX_RETRIES":   "2",
		"LC_ALL":                    "C.UTF-8",
	} {
		t.Setenv(k, v)
	}
	ctx := testCtx(t)
	// Each reply stops after its first chunk for an hour, so that every
	// process is alive while the test looks.
	// With the gateway off, the API key of Config.Env reaches the CLI
	// (TestGatewayKeepsTheKey covers the default).
	fp := newFakePool(t, Config{Size: 1, PartialMessages: true, NoGateway: true, Env: []string{"EXTRA_FROM_CONFIG=yes", "ANTHROPIC_API_KEY=sk-config"}},
		fakecli.EnvChunks+"=2", fakecli.EnvChunkDelay+"=1h")
	require.NoError(t, fp.WaitReady(ctx))
	a := NewAdapter(fp.Pool)

	texts := []string{prompt + " one " + fakecli.Marker(fakecli.ModeGrandchild), prompt + " two"}
	var cliPIDs []int
	for i, text := range texts {
		s, err := a.StreamChat(ctx, Request{System: system, Messages: []Message{{Role: RoleUser, Content: text}}})
		require.NoError(t, err)
		defer s.Close()
		if i == 0 {
			require.True(t, s.Acquire().Warm)
		}
		// The first text delta: the user line was read, the grandchild
		// started.
		for s.Next() && s.Event().Text() == "" {
		}
		require.NoError(t, s.Err())
		cliPIDs = append(cliPIDs, s.Acquire().PID)
	}

	var grandchildren []int
	for _, p := range strays(t, cliPIDs) {
		if p.ppid != os.Getpid() {
			grandchildren = append(grandchildren, p.pid)
		}
	}
	require.NotEmpty(t, grandchildren, "the grandchild is not running")

	// No argv on the machine holds the prompt or the system prompt.
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	seen := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // gone, or not ours to read
		}
		seen++
		for _, secret := range []string{prompt, system} {
			require.NotContains(t, string(cmdline), secret, "process %s has the secret in its argv", e.Name())
		}
	}
	require.Greater(t, seen, len(cliPIDs))
	// The fake recorded what it read: the prompt went through stdin.
	require.Contains(t, strings.Join(fp.stdin(t, cliPIDs[1]), "\n"), prompt+" two")

	for _, pid := range append(cliPIDs, grandchildren...) {
		env := procEnviron(t, pid)
		for _, name := range []string{"CLAUDEPOOL_TEST_SECRET", "DATABASE_URL",
			"CLAUDECODE", "CLAUDE_CODE_SESSION_ID", "CLAUDE_CODE_CHILD_SESSION", "CLAUDE_CODE_ENTRYPOINT"} {
			require.NotContains(t, env, name, "process %d", pid)
		}
		require.Equal(t, os.Getenv("PATH"), env["PATH"], "process %d", pid)
		require.Equal(t, "2", env["CLAUDE_CODE_MAX_RETRIES"], "process %d", pid)
		require.Equal(t, "C.UTF-8", env["LC_ALL"], "process %d", pid)
		require.Equal(t, "yes", env["EXTRA_FROM_CONFIG"], "process %d", pid)
		require.Equal(t, "sk-config", env["ANTHROPIC_API_KEY"], "Config.Env wins, process %d", pid)
		for k := range env {
			switch {
			case k == "EXTRA_FROM_CONFIG", strings.HasPrefix(k, "FAKE_"), k == processMark:
				// From Config.Env, the fake's own, and the pool's mark of
				// the process.
			default:
				require.True(t, allowedEnv(k), "process %d has %s, which is not allowlisted", pid, k)
			}
		}
	}
}

// TestGatewayKeepsTheKey: with the gateway on (the default, with a key),
// no process has the upstream key or address in its environment, only
// the gateway's address and a token of its own.
func TestGatewayKeepsTheKey(t *testing.T) {
	t.Setenv("ANTHROPIC_API_KEY", "sk-parent")
	t.Setenv("ANTHROPIC_AUTH_TOKEN", "sk-parent-token")
	t.Setenv("CLAUDE_CODE_OAUTH_TOKEN", "sk-parent-oauth")
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 2, Env: []string{"ANTHROPIC_API_KEY=sk-config", "ANTHROPIC_BASE_URL=http://127.0.0.1:9"}})
	require.NoError(t, fp.WaitReady(ctx))
	require.NotNil(t, fp.gw)
	tokens := map[string]bool{}
	for _, pid := range fp.pids() {
		env := procEnviron(t, pid)
		for k, v := range env {
			require.NotContains(t, v, "sk-", "process %d: %s", pid, k)
			require.NotContains(t, v, "127.0.0.1:9/", "process %d: %s", pid, k)
		}
		require.NotContains(t, env, "ANTHROPIC_AUTH_TOKEN")
		require.NotContains(t, env, "CLAUDE_CODE_OAUTH_TOKEN")
		require.Equal(t, fp.gw.url, env["ANTHROPIC_BASE_URL"])
		require.True(t, strings.HasPrefix(env["ANTHROPIC_API_KEY"], "claudepool-"), env["ANTHROPIC_API_KEY"])
		tokens[env["ANTHROPIC_API_KEY"]] = true
	}
	require.Len(t, tokens, 2, "each process has a token of its own")
	require.Equal(t, "sk-config", fp.gw.key)
	require.Equal(t, "http://127.0.0.1:9", fp.gw.upstream.String())
}

func TestAllowedEnv(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"PATH", true},
		{"HOME", true},
		{"TMPDIR", true},
		{"HTTPS_PROXY", true},
		{"https_proxy", true},
		{"NODE_EXTRA_CA_CERTS", true},
		{"CLAUDE_CONFIG_DIR", true},
		{"API_TIMEOUT_MS", true},
		{"LC_ALL", true},
		{"XDG_CONFIG_HOME", true},
		{"ANTHROPIC_API_KEY", true},
		{"ANTHROPIC_BASE_URL", true},
		{"CLAUDE_CODE_MAX_RETRIES", true},
		{"AWS_REGION", true},
		{"VERTEX_REGION_CLAUDE_3_5_SONNET", true},
		// Blocked markers of a parent Claude Code session, though a
		// prefix matches some.
		{"CLAUDECODE", false},
		{"CLAUDE_CODE_SESSION_ID", false},
		{"CLAUDE_CODE_CHILD_SESSION", false},
		{"CLAUDE_CODE_ENTRYPOINT", false},
		// Anything else stays with the backend.
		{"DATABASE_URL", false},
		{"SECRET_KEY", false},
		{"GITHUB_TOKEN", false},
		{"OPENAI_API_KEY", false},
		{"LD_PRELOAD", false},
		{"NODE_OPTIONS", false},
		{"path", false},
		{"PATHX", false},
		{"LC", false},
		{"ANTHROPIC", false},
		{"CLAUDE_CODE", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, allowedEnv(tt.name))
		})
	}
}

func TestChildEnv(t *testing.T) {
	tests := []struct {
		name   string
		parent []string
		extra  []string
		want   []string
	}{
		{"empty", nil, nil, []string{}},
		{
			"allowlisted and prefixed pass, the rest is dropped",
			[]string{"PATH=/bin", "DATABASE_URL=pg://", "ANTHROPIC_API_KEY=k", "LC_ALL=C", "SECRET=x"},
			nil,
			[]string{"PATH=/bin", "ANTHROPIC_API_KEY=k", "LC_ALL=C"},
		},
		{
			"blocked markers are dropped",
			[]string{"CLAUDECODE=1", "CLAUDE_CODE_SESSION_ID=s", "CLAUDE_CODE_CHILD_SESSION=1", "CLAUDE_CODE_ENTRYPOINT=cli", "CLAUDE_CODE_MAX_RETRIES=3"},
			nil,
			[]string{"CLAUDE_CODE_MAX_RETRIES=3"},
		},
		{
			"Config.Env overrides in place",
			[]string{"PATH=/bin", "HOME=/home/a", "ANTHROPIC_API_KEY=parent"},
			[]string{"ANTHROPIC_API_KEY=config"},
			[]string{"PATH=/bin", "HOME=/home/a", "ANTHROPIC_API_KEY=config"},
		},
		{
			"Config.Env is not filtered",
			[]string{"PATH=/bin"},
			[]string{"MY_TOOL_SETTING=1", "CLAUDECODE=0"},
			[]string{"PATH=/bin", "MY_TOOL_SETTING=1", "CLAUDECODE=0"},
		},
		{
			"duplicates: the last one wins, one entry per name",
			[]string{"PATH=/a", "PATH=/b", "HOME=/h"},
			[]string{"X=1", "X=2", "HOME=/c"},
			[]string{"PATH=/b", "HOME=/c", "X=2"},
		},
		{
			"values may hold '=' and be empty",
			[]string{"ANTHROPIC_CUSTOM_HEADERS=a=b=c", "TZ="},
			[]string{"EMPTY="},
			[]string{"ANTHROPIC_CUSTOM_HEADERS=a=b=c", "TZ=", "EMPTY="},
		},
		{
			"malformed entries are skipped",
			[]string{"NOEQUALS", "=nameless", "PATH=/bin"},
			[]string{"ALSO_NO_EQUALS", "=x"},
			[]string{"PATH=/bin"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := append([]string(nil), tt.parent...)
			extra := append([]string(nil), tt.extra...)
			require.Equal(t, tt.want, childEnv(tt.parent, tt.extra))
			require.Equal(t, parent, tt.parent, "parent modified")
			require.Equal(t, extra, tt.extra, "extra modified")
		})
	}
}
