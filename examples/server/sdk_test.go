package main

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// realCLI returns the real CLI: $CLAUDEPOOL_CLI, else the copy `make cli`
// installs in the repository's .cli/. It skips the test only when
// CLAUDEPOOL_SKIP_E2E=1, and fails it when the CLI is missing.
func realCLI(t *testing.T) string {
	t.Helper()
	if os.Getenv("CLAUDEPOOL_SKIP_E2E") == "1" {
		t.Skip("CLAUDEPOOL_SKIP_E2E=1: the real-CLI tests are skipped")
	}
	path := os.Getenv("CLAUDEPOOL_CLI")
	if path == "" {
		path = filepath.Join("..", "..", ".cli", "node_modules", ".bin", "claude")
	}
	abs, err := filepath.Abs(path)
	require.NoError(t, err)
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("the real CLI is not installed at %s (run `make cli`, or set CLAUDEPOOL_SKIP_E2E=1): %v", abs, err)
	}
	return abs
}

// TestE2ESDK drives POST /v1/messages with the official TypeScript SDK
// (sdktest/sdk.test.mjs, run by node's test runner) over a pool of real
// CLI processes whose API is claudepooltest's mock. It installs the pinned
// SDK into sdktest/node_modules first (sdktest/install.sh), and fails when
// node or npm is missing.
func TestE2ESDK(t *testing.T) {
	cli := realCLI(t)
	node, err := exec.LookPath("node")
	require.NoError(t, err, "node is needed for the SDK test (set CLAUDEPOOL_SKIP_E2E=1 to skip it)")
	_, err = exec.LookPath("npm")
	require.NoError(t, err, "npm is needed to install the SDK (set CLAUDEPOOL_SKIP_E2E=1 to skip it)")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "sh", filepath.Join("sdktest", "install.sh"))
	out, err := install.CombinedOutput()
	require.NoError(t, err, "installing the SDK: %s", out)

	api := claudepooltest.NewServer(claudepooltest.Config{Chunks: 4})
	t.Cleanup(api.Close) // after the pool's Close, registered later
	home, dir := t.TempDir(), t.TempDir()
	pool, err := claudepool.NewPool(claudepool.Config{
		Command:         cli,
		Dir:             dir,
		Size:            1,
		MaxProcs:        2,
		PartialMessages: true,
		// What -max-output-tokens sets: the max_tokens of API calls whose
		// request names none; the SDK's requests name theirs.
		Env: append(api.Env(), "HOME="+home, "CLAUDE_CODE_MAX_OUTPUT_TOKENS=1234"),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		require.NoError(t, pool.Close(ctx))
	})
	require.NoError(t, pool.WaitReady(ctx))
	srv := newServer(pool)
	logs := &syncBuffer{}
	srv.log = newTextLogger(logs)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)

	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "sdk.test.mjs")
	cmd.Dir = "sdktest"
	cmd.Env = append(os.Environ(), "ANTHROPIC_BASE_URL="+ts.URL, "ANTHROPIC_API_KEY=sk-unused", "HOME="+t.TempDir(),
		"NODE_NO_WARNINGS=1")
	out, err = cmd.CombinedOutput()
	t.Logf("node --test sdk.test.mjs:\n%s", out)
	require.NoError(t, err, "the SDK test failed; the server's log:\n%s", logs.String())

	// What the SDK sent reached the API through the CLI: the model, the
	// max_tokens, and the system prompt of its one request that had one.
	reqs := api.ChatRequests()
	require.Len(t, reqs, 5, "five chats; the image request never took a process")
	var systems []string
	for _, r := range reqs {
		require.Equal(t, "claude-sonnet-4-5", r.Model)
		require.Equal(t, 256, r.MaxTokens, "the request's max_tokens, set by the pool's gateway over the CLI's 1234")
		systems = append(systems, strings.Join(r.System, "\n"))
	}
	require.True(t, slices.ContainsFunc(systems, func(s string) bool {
		return strings.Contains(s, "You are the SDK test pirate.")
	}), "system prompts sent: %q", systems)
}
