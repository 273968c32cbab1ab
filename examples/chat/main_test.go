package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// fakeCLI is the path of the fake claude executable, built once.
var fakeCLI string

func TestMain(m *testing.M) { fakecli.Main(m, &fakeCLI) }

func fakeAdapter(t *testing.T, size int) *claudepool.Adapter {
	t.Helper()
	pool, err := claudepool.NewPool(claudepool.Config{
		Command:         fakeCLI,
		Size:            size,
		PartialMessages: true,
		StopGrace:       200 * time.Millisecond,
		// The fake's echo holds every user text of its conversation.
		Env: []string{fakecli.EnvChunks + "=3", fakecli.EnvEchoHistory + "=1"},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, pool.Close(ctx))
	})
	return claudepool.NewAdapter(pool)
}

func TestChatOneShot(t *testing.T) {
	var out, errOut strings.Builder
	err := chat(context.Background(), fakeAdapter(t, 0), options{verbose: true}, strings.NewReader("hello\n"), &out, &errOut)
	require.NoError(t, err)
	// Deltas printed once, the whole message not again.
	require.Equal(t, "echo: hello\n", out.String())
	require.Regexp(t, `^\[cold acquire in \S+ \(pid \d+\), first text after \S+, result after \S+\]\n$`, errOut.String())
}

func TestChatInteractiveKeepsHistory(t *testing.T) {
	var out, errOut strings.Builder
	in := strings.NewReader("first question\n\nfollow-up\n")
	err := chat(context.Background(), fakeAdapter(t, 1), options{interactive: true}, in, &out, &errOut)
	require.NoError(t, err)
	// The second turn went, alone, to the process that holds the first:
	// the fake's echo shows both.
	require.Equal(t, "echo: first question\necho: first question | follow-up\n", out.String())
	require.Equal(t, "> > > > \n", errOut.String())
}

func TestChatErrorResult(t *testing.T) {
	var out, errOut strings.Builder
	in := strings.NewReader("x " + fakecli.Marker(fakecli.ModeErrorResult))
	err := chat(context.Background(), fakeAdapter(t, 0), options{}, in, &out, &errOut)
	var re *claudepool.ResultError
	require.ErrorAs(t, err, &re)
	// The fake retries the 401 as the real CLI would; the pool ends the
	// chat at the first retry notice.
	require.Equal(t, 401, re.APIErrorStatus)
	require.Contains(t, re.Message, "API error 401")
}
