package main

import (
	"bytes"
	"context"
	"encoding/json"
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
// CLI processes whose API is claudepooltest's mock, and count_tokens,
// the Models API, an unknown path and the client keys (-client-keys)
// with it too. It installs the pinned SDK into sdktest/node_modules first
// (sdktest/install.sh), and fails when node or npm is missing.
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

	// The mock answers with a thinking block first when the user text
	// begins "Think first", with a fixed JSON for structured output, and
	// as toolsReply does to a request that offers the lookup tool and
	// asks to "Look up" something, or brings tool results.
	api := claudepooltest.NewServer(claudepooltest.Config{Chunks: 4, Reply: func(r claudepooltest.Request) claudepooltest.Reply {
		reply := claudepooltest.Echo(r)
		if r.Kind != claudepooltest.KindChat {
			return reply
		}
		if strings.HasPrefix(r.LastUserText(), "Look up") {
			return toolsReply(r)
		}
		if strings.HasPrefix(r.LastUserText(), "Think first") {
			reply.Thinking = "The SDK asks; think first."
		}
		if bytes.Contains(r.OutputConfig, []byte(`"json_schema"`)) {
			reply.Text = `{"name":"Ada Lovelace","year":1843}`
		}
		return reply
	}})
	t.Cleanup(api.Close) // after the pool's Close, registered later
	home, dir := t.TempDir(), t.TempDir()
	tools := testTools(t)
	cfg := claudepool.Config{
		Command:         cli,
		Dir:             dir,
		Size:            1,
		MaxProcs:        2,
		PartialMessages: true,
		GoTools:         tools.goTools(), // what -tools sets
		// What -models sets: GET /v1/models lists them, and each warm
		// process confirms each once, through the gateway.
		Models: []string{"claude-sonnet-4-5", "claude-haiku-4-5"},
		// What -max-output-tokens sets: the max_tokens of API calls whose
		// request names none; the SDK's requests name theirs.
		Env: append(api.Env(), "HOME="+home, "CLAUDE_CODE_MAX_OUTPUT_TOKENS=1234"),
	}
	pool, err := claudepool.NewPool(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		require.NoError(t, pool.Close(ctx))
	})
	require.NoError(t, pool.WaitReady(ctx))
	srv := newServer(pool)
	srv.tools = tools
	// What main sets: the models, where count_tokens goes, and the keys
	// of -client-keys.
	srv.models = newModelCatalog(cfg.Model, cfg.Models)
	srv.upstream = resolveUpstream(cfg, os.Environ())
	require.NotNil(t, srv.upstream)
	keyFile := filepath.Join(t.TempDir(), "client-keys")
	require.NoError(t, os.WriteFile(keyFile, []byte("# the SDK test's client\nsk-sdk-client\n"), 0o600))
	srv.clientKeys, err = loadClientKeys(keyFile)
	require.NoError(t, err)
	logs := &syncBuffer{}
	srv.log = newTextLogger(logs)
	ts := httptest.NewServer(srv)
	t.Cleanup(srv.stop) // after the listener's Close, before the pool's
	t.Cleanup(ts.Close)

	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "sdk.test.mjs")
	cmd.Dir = "sdktest"
	cmd.Env = append(os.Environ(), "ANTHROPIC_BASE_URL="+ts.URL, "ANTHROPIC_API_KEY=sk-sdk-client", "HOME="+t.TempDir(),
		"NODE_NO_WARNINGS=1", "SDK_TEST_TOOLS="+testToolsJSON)
	out, err = cmd.CombinedOutput()
	t.Logf("node --test sdk.test.mjs:\n%s", out)
	require.NoError(t, err, "the SDK test failed; the server's log:\n%s", logs.String())

	// What the SDK sent reached the API through the CLI: the model, the
	// max_tokens, the system prompt of its one request that had one, the
	// image and documents, the thinking settings, the output format, and
	// the server's tools to the requests that offered them alone.
	reqs := api.ChatRequests()
	require.Len(t, reqs, 14, "ten chats and two tool-use loops of two API calls each; the malformed image never took a process")
	require.EqualValues(t, 2, pool.Stats().Conversations.Continued, "each loop's second request resumed its paused turn")
	var systems []string
	seen := map[string]bool{}
	for _, r := range reqs {
		require.Equal(t, "claude-sonnet-4-5", r.Model)
		text := r.LastUserText()
		wantMax := 256
		if text == "Think first, then answer" {
			wantMax = 2048
		}
		require.Equal(t, wantMax, r.MaxTokens, "the request's max_tokens, set by the pool's gateway over the CLI's 1234")
		systems = append(systems, strings.Join(r.System, "\n"))
		var thinking struct {
			Type         string `json:"type"`
			BudgetTokens int    `json:"budget_tokens"`
		}
		if r.Thinking != nil {
			require.NoError(t, json.Unmarshal(r.Thinking, &thinking))
		}
		switch text {
		case "What is in these attachments?":
			var media []string
			for _, typ := range lastUser(t, r).Types {
				if typ != "text" {
					media = append(media, typ)
				}
			}
			require.Equal(t, []string{"image", "document", "document"}, media)
			for _, want := range []string{`"media_type":"image/png"`, `"media_type":"application/pdf"`, "SDK report", "SDK plain notes", "SDK notes"} {
				require.Contains(t, string(r.Body), want)
			}
		case "Think first, then answer":
			require.Equal(t, "enabled", thinking.Type)
			require.Equal(t, 1024, thinking.BudgetTokens)
		case "Think first, streamed":
			require.Equal(t, "adaptive", thinking.Type)
		case "Who wrote the first program?":
			var oc struct {
				Format struct {
					Type   string         `json:"type"`
					Schema map[string]any `json:"schema"`
				} `json:"format"`
			}
			require.NoError(t, json.Unmarshal(r.OutputConfig, &oc))
			require.Equal(t, "json_schema", oc.Format.Type)
			require.Equal(t, []any{"name", "year"}, oc.Format.Schema["required"])
		}
		var offered []string
		for _, name := range r.Tools {
			if strings.HasPrefix(name, cliToolPrefix) {
				offered = append(offered, name)
			}
		}
		if strings.HasPrefix(text, "Look up") {
			require.Equal(t, []string{cliToolPrefix + "lookup"}, offered, "the request's tool alone")
			if res := r.LastToolResults(); len(res) > 0 {
				require.Equal(t, "sunny, 21C", res[0].Content)
				text += " (results)"
			}
		} else {
			require.Empty(t, offered, "a request without tools offers none: %q", text)
		}
		seen[text] = true
	}
	for _, text := range []string{"What is in these attachments?", "Think first, then answer", "Think first, streamed", "Who wrote the first program?",
		"Look up the weather, not streamed", "Look up the weather, not streamed (results)", "Look up the weather, streamed", "Look up the weather, streamed (results)"} {
		require.True(t, seen[text], "no chat request for %q", text)
	}
	require.True(t, slices.ContainsFunc(systems, func(s string) bool {
		return strings.Contains(s, "You are the SDK test pirate.")
	}), "system prompts sent: %q", systems)

	// countTokens reached the API as the SDK sent it, with the server's
	// key, the SDK's version and its beta header; the invalid one did
	// not.
	var counts []claudepooltest.Request
	for _, r := range api.Requests() {
		if r.Kind == claudepooltest.KindCountTokens {
			counts = append(counts, r)
		}
	}
	require.Len(t, counts, 1)
	c := counts[0]
	require.Equal(t, "claude-sonnet-4-5", c.Model)
	require.Equal(t, []string{"Count this too."}, c.System)
	require.Equal(t, "How many tokens is this?", c.LastUserText())
	require.Equal(t, srv.upstream.key, c.Header.Get("X-Api-Key"), "the server's key, not the client's")
	require.Empty(t, c.Header.Get("Authorization"))
	require.Equal(t, version20261021, c.Header.Get("Anthropic-Version"))
	require.Equal(t, "sdk-test-beta", c.Header.Get("Anthropic-Beta"))
	require.NotContains(t, logs.String(), "sk-sdk-client")
	require.NotContains(t, logs.String(), "sk-sdk-wrong")
}
