package claudepool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// On the real CLI: every command the CLI lists, sent as a chat's text,
// reaches the API as that text, and a /model message changes nothing for
// the next user of the process.
func TestE2ESlashCommandsAreData(t *testing.T) {
	ctx := e2eCtx(t, 5*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1, HoldConversations: -1})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	s, evs := chatOK(t, ctx, a, userMsg("/model claude-haiku-5-5"))
	pid := s.Acquire().PID
	require.Equal(t, EventInit, evs[0].Type)
	model := evs[0].Init.Model
	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 1, describeRequests(e.mock.Requests()))
	require.Equal(t, "/model claude-haiku-5-5", reqs[0].LastUserText())
	require.Equal(t, claudepooltest.EchoPrefix+"/model claude-haiku-5-5", s.Result().Text)

	// The CLI lists its commands in system/init; each one, as a message,
	// is text for the model.
	var commands []string
	for _, line := range strings.Split(string(evs[0].Raw), `"slash_commands":[`)[1:] {
		list, _, _ := strings.Cut(line, "]")
		for _, c := range strings.Split(list, ",") {
			commands = append(commands, strings.Trim(c, `"`))
		}
	}
	require.Greater(t, len(commands), 10, "system/init lists the CLI's commands: %s", evs[0].Raw)
	commands = append(commands, "config model=haiku", "model opus")
	for _, c := range commands {
		text := "/" + c
		e.mock.Reset()
		s, evs := chatOK(t, ctx, a, userMsg(text))
		require.Equal(t, pid, s.Acquire().PID, "MaxProcs 1: one process serves every user")
		require.Equal(t, model, evs[0].Init.Model, "%s: the process runs the pool's model", text)
		reqs := e.mock.ChatRequests()
		require.Len(t, reqs, 1, "%s reached the API once: %s", text, describeRequests(e.mock.Requests()))
		require.Equal(t, text, reqs[0].LastUserText())
		require.Equal(t, model, reqs[0].Model)
		require.Equal(t, claudepooltest.EchoPrefix+text, s.Result().Text)
	}
	for _, dir := range []string{filepath.Join(e.home, ".claude"), p.configDir} {
		_, err := os.Stat(filepath.Join(dir, "settings.json"))
		require.ErrorIs(t, err, os.ErrNotExist, "no chat wrote %s", dir)
	}
	require.Zero(t, retiredTotal(p.Stats()))
}

// On the real CLI: a model the API rejects (404) fails the chat with the
// API's status, and the process serves the next chat. Without the gateway
// the CLI's model confirmation fails first (model_rejected); with it, the
// confirmation is answered at the gateway and the chat's own call gets
// the API's error, verbatim.
func TestE2ERejectedModel(t *testing.T) {
	for _, gateway := range []bool{false, true} {
		t.Run(map[bool]string{false: "no gateway", true: "gateway"}[gateway], func(t *testing.T) {
			ctx := e2eCtx(t, 2*time.Minute)
			e := newE2E(t, claudepooltest.Config{Reply: func(r claudepooltest.Request) claudepooltest.Reply {
				if strings.Contains(r.Model, "bogus") {
					return claudepooltest.Reply{Fail: claudepooltest.FailNotFound, ErrorMessage: "model: " + r.Model}
				}
				return claudepooltest.Echo(r)
			}})
			p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1, NoGateway: !gateway})
			a := NewAdapter(p)
			require.NoError(t, p.WaitReady(ctx))

			req := userMsg("hi")
			req.Model = "claude-bogus-9"
			s, err := a.StreamChat(ctx, req)
			require.NoError(t, err)
			defer s.Close()
			drain(t, s)
			var re *ResultError
			require.ErrorAs(t, s.Err(), &re)
			t.Logf("rejected: %v", re)
			require.Equal(t, 404, re.APIErrorStatus)
			require.Contains(t, re.Message, "claude-bogus-9")
			if gateway {
				require.Equal(t, "model: claude-bogus-9", re.Message)
				require.NotNil(t, re.API)
				require.Equal(t, "not_found_error", re.API.Type)
			} else {
				require.Equal(t, SubtypeModelRejected, re.Subtype)
			}

			s2, _ := chatOK(t, ctx, a, userMsg("next"))
			require.Equal(t, s.Acquire().PID, s2.Acquire().PID, "the process stayed in the pool")
			require.Equal(t, claudepooltest.EchoPrefix+"next", s2.Result().Text)
			require.Zero(t, retiredTotal(p.Stats()))
		})
	}
}

// On the real CLI with its own retry count (10, which takes about three
// minutes on a 401): a 401 ends the chat at its first failure, within the
// test's bound, and the process serves the next chat.
func TestE2EUnauthorizedFailsFast(t *testing.T) {
	ctx := e2eCtx(t, 60*time.Second)
	e := newE2E(t, claudepooltest.Config{})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1, MaxRetries: 10})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	e.mock.SetReply(claudepooltest.Fail(claudepooltest.FailUnauthorized))
	start := time.Now()
	s, err := a.StreamChat(ctx, userMsg("hi"))
	require.NoError(t, err)
	defer s.Close()
	evs := drain(t, s)
	var re *ResultError
	require.ErrorAs(t, s.Err(), &re)
	t.Logf("%v after %v", re, time.Since(start).Round(time.Millisecond))
	require.Equal(t, 401, re.APIErrorStatus)
	require.Equal(t, 1, count(types(evs), EventRetry), "the CLI's first retry notice")
	require.Len(t, e.mock.ChatRequests(), 1, "no request was retried")

	e.mock.SetReply(claudepooltest.Echo)
	s2, _ := chatOK(t, ctx, a, userMsg("next"))
	require.Equal(t, s.Acquire().PID, s2.Acquire().PID)
	require.Zero(t, retiredTotal(p.Stats()))
}
