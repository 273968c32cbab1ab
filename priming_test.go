package claudepool

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// gatewayEnv gives a fake pool an API key, which turns the gateway on; the
// fake CLI makes no API call, so the upstream is never reached.
var gatewayEnv = []string{"ANTHROPIC_API_KEY=sk-pool", "ANTHROPIC_BASE_URL=http://127.0.0.1:9"}

// With the gateway, a warm process runs one priming chat, marked as data,
// and a reset before it counts as ready; its first real chat is neither
// a reused process's nor held back by it. NoPriming skips it.
func TestPrimingBeforeReady(t *testing.T) {
	for _, noPriming := range []bool{false, true} {
		t.Run(map[bool]string{false: "priming", true: "NoPriming"}[noPriming], func(t *testing.T) {
			ctx := testCtx(t)
			fp := newFakePool(t, Config{Size: 1, MaxProcs: 1, NoPriming: noPriming, Env: gatewayEnv})
			require.NotNil(t, fp.gw)
			require.NoError(t, fp.WaitReady(ctx))
			pids := fp.pids()
			require.Len(t, pids, 1)
			lines := fp.stdin(t, pids[0])
			var kinds []string
			for _, l := range lines {
				switch {
				case strings.Contains(l, `"subtype":"initialize"`):
					kinds = append(kinds, "initialize")
				case strings.Contains(l, `"text":"/clear"`):
					kinds = append(kinds, "clear")
				case strings.Contains(l, `"type":"user"`):
					require.Contains(t, l, `"text_not_typed":true`)
					require.Contains(t, l, `"text":"`+primeText+`"`)
					kinds = append(kinds, "user")
				}
			}
			if noPriming {
				require.Empty(t, kinds, "stdin: %q", lines)
			} else {
				require.Equal(t, []string{"initialize", "user", "clear"}, kinds, "stdin: %q", lines)
			}

			s, _ := chatOK(t, ctx, NewAdapter(fp.Pool), userMsg("first"))
			acq := s.Acquire()
			require.True(t, acq.Warm)
			require.False(t, acq.Reused, "priming is not a use")
			require.Equal(t, pids[0], acq.PID)
			st := fp.Stats()
			require.EqualValues(t, 1, st.Outcomes[OutcomeOK], "priming is not a chat")
		})
	}
}

// A request that sets an API parameter on a pool without the gateway
// fails before it takes a process.
func TestAPIParametersNeedTheGateway(t *testing.T) {
	fp := newFakePool(t, Config{Size: 0, NoGateway: true, Env: gatewayEnv})
	require.Nil(t, fp.gw)
	a := NewAdapter(fp.Pool)
	five := 5
	for name, req := range map[string]Request{
		"MaxTokens": {MaxTokens: 5},
		"TopK":      {TopK: &five},
		"APIKey":    {APIKey: "sk-tenant"},
		"UserID":    {UserID: "u"},
	} {
		req.Messages = []Message{{Role: RoleUser, Content: "hi"}}
		_, err := a.StreamChat(testCtx(t), req)
		require.ErrorIs(t, err, ErrNoGateway, name)
	}
	require.Zero(t, fp.Stats().Live, "no process was taken")
}
