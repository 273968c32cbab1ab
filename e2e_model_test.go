package claudepool

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// isModelProbe reports whether r is the CLI's confirmation of a model: a
// POST /v1/messages with max_tokens 1 and the user text "Hi", which the
// CLI sends on set_model the first time a process meets a model ID.
func isModelProbe(r claudepooltest.Request) bool {
	return r.Method == "POST" && r.Path == "/v1/messages" && r.MaxTokens == 1 && r.LastUserText() == "Hi"
}

// describeRequests lists requests for a failure message.
func describeRequests(reqs []claudepooltest.Request) string {
	var b strings.Builder
	for _, r := range reqs {
		fmt.Fprintf(&b, "\n  #%d %s %s %s model=%q max_tokens=%d text=%q", r.Seq, r.Kind, r.Method, r.Path, r.Model, r.MaxTokens, r.LastUserText())
	}
	return b.String()
}

// waitSettled waits until p holds one idle process and nothing else: no
// spawn, chat or reset in progress.
func waitSettled(t *testing.T, ctx context.Context, p *Pool) {
	t.Helper()
	deadline, _ := ctx.Deadline()
	waitPool(t, p, deadline, func(st Stats) bool { return quietStats(st) && st.Idle == 1 })
}

// TestE2EPoolModel runs warm chats on a pool with Config.Model: one that
// names no model and one that names the pool's run on it and send the API
// nothing but their chat request (no max_tokens 1 probe); a chat for
// another model gets it. MaxProcs 1 keeps a single process, reused from
// chat to chat, so that every request the mock sees comes from the
// process that serves the chats.
//
// On CLI 2.1.330, set_model with an alias ("sonnet", "opus", "haiku")
// sends no probe at all; set_model with a model ID ("claude-sonnet-5-5",
// "claude-haiku-4-5", an unknown ID) does, once per process. So the
// model-ID case is the one where a set_model on the chat's path would
// show; there Config.Models moves the probe before readiness (with one
// for the pool's own model ID too, when the process switches back to it:
// --model at spawn does not count as confirmed), and a model outside
// Config.Models still pays it on its chat's path.
func TestE2EPoolModel(t *testing.T) {
	tests := []struct {
		name        string
		model       string   // Config.Model
		models      []string // Config.Models
		wantModel   string   // the pool model's ID in the API requests
		other       string   // a model another chat names
		wantOther   string
		readyProbes []string // the probes sent before readiness, by model
		unlisted    string   // a model ID outside Models: a probe on its chat's path
	}{
		{name: "alias", model: "sonnet", wantModel: "claude-sonnet-5-5", other: "opus", wantOther: "claude-opus-5-5"},
		{name: "model ID", model: "claude-sonnet-5-5", models: []string{"claude-haiku-4-5"}, wantModel: "claude-sonnet-5-5",
			other: "claude-haiku-4-5", wantOther: "claude-haiku-4-5", unlisted: "claude-x-9",
			// The switch back to the pool's model ID probes it too:
			// --model at spawn does not count as a confirmation.
			readyProbes: []string{"claude-haiku-4-5", "claude-sonnet-5-5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := e2eCtx(t, 2*time.Minute)
			e := newE2E(t, claudepooltest.Config{})
			// NoGateway: with the gateway, no confirmation reaches the API
			// (TestE2EGatewayAnswersModelConfirmations).
			p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1, Model: tt.model, Models: tt.models, NoGateway: true})
			require.NoError(t, p.WaitReady(ctx))

			ready := e.mock.Requests()
			var probes []string
			for _, r := range ready {
				require.True(t, isModelProbe(r), "a request before any chat that is not a model probe:%s", describeRequests(ready))
				require.False(t, r.FirstByte.IsZero(), "the probe was not answered before readiness")
				probes = append(probes, r.Model)
			}
			require.Equal(t, tt.readyProbes, probes, "probes before readiness:%s", describeRequests(ready))

			a := NewAdapter(p)
			chat := func(text, model string) {
				t.Helper()
				waitSettled(t, ctx, p)
				before := len(e.mock.Requests())
				req := userMsg(text)
				req.Model = model
				s, _ := chatOK(t, ctx, a, req)
				require.True(t, s.Acquire().Warm)
				// The chat's result came after its request: all of the
				// chat's requests are in.
				reqs := e.mock.Requests()[before:]
				require.Len(t, reqs, 1, "the chat sent more than its own request:%s", describeRequests(reqs))
				require.Equal(t, claudepooltest.KindChat, reqs[0].Kind)
				require.Equal(t, text, reqs[0].LastUserText())
			}

			chat("no model", "")
			chat("the pool's model", tt.model)
			chat("another model", tt.other)
			chat("back to the pool's model", "")

			reqs := e.mock.ChatRequests()
			require.Len(t, reqs, 4)
			require.Equal(t, tt.wantModel, reqs[0].Model)
			require.Equal(t, tt.wantModel, reqs[1].Model)
			require.Equal(t, tt.wantOther, reqs[2].Model)
			require.Equal(t, tt.wantModel, reqs[3].Model, "the reset put the pool's model back")
			// Nor did the resets between the chats probe anything.
			waitSettled(t, ctx, p)
			all := e.mock.Requests()
			require.Len(t, all, len(tt.readyProbes)+4, describeRequests(all))

			if tt.unlisted == "" {
				return
			}
			// What a model outside Models costs: the CLI's probe, on the
			// chat's path, before the chat's request.
			waitSettled(t, ctx, p)
			before := len(e.mock.Requests())
			req := userMsg("an unlisted model")
			req.Model = tt.unlisted
			chatOK(t, ctx, a, req)
			got := e.mock.Requests()[before:]
			require.Len(t, got, 2, describeRequests(got))
			require.True(t, isModelProbe(got[0]), describeRequests(got))
			require.Equal(t, tt.unlisted, got[0].Model)
			require.Equal(t, claudepooltest.KindChat, got[1].Kind)
			require.Equal(t, tt.unlisted, got[1].Model)
			waitSettled(t, ctx, p)
			got = e.mock.Requests()[before:]
			require.Len(t, got, 2, "the reset after it probed: %s", describeRequests(got))
		})
	}
}

// TestE2ESettingsIsolation gives the CLI a HOME whose
// ~/.claude/settings.json sets a model and defines command hooks that
// each touch a file. By default the pooled process reads none of it: no
// hook runs and the request does not carry the settings' model. With
// UserSettings the settings apply: the hooks run and the request carries
// the settings' model.
func TestE2ESettingsIsolation(t *testing.T) {
	const settingsModel = "claude-settings-model-7"
	hookEvents := []string{"SessionStart", "UserPromptSubmit", "Stop"}
	for _, userSettings := range []bool{false, true} {
		t.Run(fmt.Sprintf("UserSettings=%v", userSettings), func(t *testing.T) {
			ctx := e2eCtx(t, 2*time.Minute)
			e := newE2E(t, claudepooltest.Config{})
			marks := t.TempDir()
			hooks := map[string]any{}
			for _, ev := range hookEvents {
				hooks[ev] = []any{map[string]any{"hooks": []any{map[string]any{
					"type": "command", "command": "touch " + filepath.Join(marks, ev),
				}}}}
			}
			data, err := json.Marshal(map[string]any{"model": settingsModel, "hooks": hooks})
			require.NoError(t, err)
			require.NoError(t, os.MkdirAll(filepath.Join(e.home, ".claude"), 0o700))
			require.NoError(t, os.WriteFile(filepath.Join(e.home, ".claude", "settings.json"), data, 0o600))

			p, _ := e.pool(t, Config{Size: 1, UserSettings: userSettings})
			require.NoError(t, p.WaitReady(ctx))
			s, evs := chatOK(t, ctx, NewAdapter(p), userMsg("hi"))
			require.True(t, s.Acquire().Warm)
			reqs := e.mock.ChatRequests()
			require.Len(t, reqs, 1)

			if !userSettings {
				require.NotEqual(t, settingsModel, reqs[0].Model)
				require.NotEqual(t, settingsModel, evs[0].Init.Model)
				// Close reaps every process, so any hook would have run.
				require.NoError(t, p.Close(ctx))
				entries, err := os.ReadDir(marks)
				require.NoError(t, err)
				require.Empty(t, entries, "a hook from the user's settings ran")
				return
			}
			require.Equal(t, settingsModel, reqs[0].Model)
			require.Equal(t, settingsModel, evs[0].Init.Model)
			// SessionStart and UserPromptSubmit run before the turn's
			// request, Stop at its end; give a hook's shell a moment.
			for _, ev := range hookEvents {
				require.Eventually(t, func() bool {
					_, err := os.Stat(filepath.Join(marks, ev))
					return err == nil
				}, 10*time.Second, 20*time.Millisecond, "the %s hook did not run", ev)
			}
		})
	}
}
