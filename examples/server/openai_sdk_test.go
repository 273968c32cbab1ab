package main

import (
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

// TestE2EOpenAISDK drives POST /v1/chat/completions with the official
// OpenAI TypeScript SDK (openaisdk/openai.test.mjs, run by node's test
// runner) over a pool of real CLI processes whose API is claudepooltest's
// mock. It installs the pinned SDK into openaisdk/node_modules first
// (openaisdk/install.sh), and fails when node or npm is missing.
func TestE2EOpenAISDK(t *testing.T) {
	cli := realCLI(t)
	node, err := exec.LookPath("node")
	require.NoError(t, err, "node is needed for the SDK test (set CLAUDEPOOL_SKIP_E2E=1 to skip it)")
	_, err = exec.LookPath("npm")
	require.NoError(t, err, "npm is needed to install the SDK (set CLAUDEPOOL_SKIP_E2E=1 to skip it)")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "sh", filepath.Join("openaisdk", "install.sh"))
	out, err := install.CombinedOutput()
	require.NoError(t, err, "installing the SDK: %s", out)

	api := claudepooltest.NewServer(claudepooltest.Config{Chunks: 4, Reply: openaiMockReply})
	t.Cleanup(api.Close) // after the pool's Close, registered later
	tools := testTools(t)
	pool, err := claudepool.NewPool(claudepool.Config{
		Command:         cli,
		Dir:             t.TempDir(),
		Size:            1,
		MaxProcs:        2,
		PartialMessages: true,
		GoTools:         tools.goTools(), // what -tools sets
		// What -max-output-tokens sets: the max_tokens of API calls whose
		// request names none.
		Env: append(api.Env(), "HOME="+t.TempDir(), "CLAUDE_CODE_MAX_OUTPUT_TOKENS=1234"),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		require.NoError(t, pool.Close(ctx))
	})
	require.NoError(t, pool.WaitReady(ctx))
	srv := newServer(pool)
	srv.tools = tools
	mountOpenAI(srv)
	logs := &syncBuffer{}
	srv.log = newTextLogger(logs)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)

	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "openai.test.mjs")
	cmd.Dir = "openaisdk"
	cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+ts.URL+"/v1", "OPENAI_API_KEY=sk-unused", "HOME="+t.TempDir(),
		"NODE_NO_WARNINGS=1", "OPENAI_TEST_TOOLS="+testToolsJSON)
	out, err = cmd.CombinedOutput()
	t.Logf("node --test openai.test.mjs:\n%s", out)
	require.NoError(t, err, "the SDK test failed; the server's log:\n%s", logs.String())

	// What the SDK sent reached the API through the CLI: the model, the
	// max_tokens, the system prompt, the image, the output format, and
	// the server's tool to the requests that offered it alone.
	reqs := api.ChatRequests()
	require.Len(t, reqs, 9, "six chats and two tool loops of two API calls each; the 400s took no process")
	require.EqualValues(t, 2, pool.Stats().Conversations.Continued, "each loop's second request resumed its paused turn")
	seen := map[string]bool{}
	for _, r := range reqs {
		require.Equal(t, "claude-sonnet-4-5", r.Model)
		text := r.LastUserText()
		switch text {
		case "Hello from the OpenAI SDK":
			require.Equal(t, 256, r.MaxTokens, "max_completion_tokens, set by the pool's gateway over the CLI's 1234")
			require.Contains(t, strings.Join(r.System, "\n"), "You are the OpenAI SDK test pirate.")
		case "Stream this reply please":
			require.Equal(t, 256, r.MaxTokens, "max_tokens")
		case "What is in this OpenAI picture?":
			require.Contains(t, lastUser(t, r).Types, "image")
			require.Contains(t, string(r.Body), `"media_type":"image/png"`)
		case "Who wrote the first program, said the OpenAI SDK?":
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
		if text != "Hello from the OpenAI SDK" && text != "Stream this reply please" {
			require.Equal(t, 1234, r.MaxTokens, "the CLI's, as the request named none: %q", text)
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
				require.Contains(t, []string{"sunny, 21C", "cloudy, 12C"}, res[0].Content)
				text += " (results)"
			}
		} else {
			require.Empty(t, offered, "a request without tools offers none: %q", text)
		}
		seen[text] = true
	}
	for _, text := range []string{"Hello from the OpenAI SDK", "Stream this reply please", "Assemble this reply please", "What is in this OpenAI picture?",
		"Who wrote the first program, said the OpenAI SDK?",
		"Look up the weather, said the OpenAI SDK", "Look up the weather, said the OpenAI SDK (results)",
		"Look up the weather, said the OpenAI runner", "Look up the weather, said the OpenAI runner (results)"} {
		require.True(t, seen[text], "no chat request for %q", text)
	}
	require.False(t, slices.ContainsFunc(reqs, func(r claudepooltest.Request) bool {
		return strings.Contains(r.LastUserText(), "Too hot") || strings.Contains(r.LastUserText(), "Twice")
	}), "the refused requests reached the API")
}
