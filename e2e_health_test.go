package claudepool

import (
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// TestE2ECheckAPI: against the real CLI, a key the API refuses passes
// WaitReady but not CheckAPI, and counts as a consecutive authentication
// failure until a chat succeeds; the chats' usage and cost reach Stats and
// OnStreamEnd.
func TestE2ECheckAPI(t *testing.T) {
	e := newE2E(t, claudepooltest.Config{})
	ends := make(chan StreamEnd, 10)
	p, _ := e.pool(t, Config{Size: 1, OnStreamEnd: func(se StreamEnd) { ends <- se }})
	ctx := e2eCtx(t, 60*time.Second)
	require.NoError(t, p.WaitReady(ctx))

	e.mock.SetReply(claudepooltest.Fail(claudepooltest.FailUnauthorized))
	require.NoError(t, p.WaitReady(ctx), "a refused key passes WaitReady")
	err := p.CheckAPI(ctx)
	var re *ResultError
	require.ErrorAs(t, err, &re)
	require.Equal(t, 401, re.APIErrorStatus)
	require.EqualValues(t, 1, p.Stats().Health.ConsecutiveAuthFailures)
	se := <-ends
	require.Equal(t, OutcomeResultError, se.Outcome)

	e.mock.SetReply(claudepooltest.Echo)
	require.NoError(t, p.CheckAPI(ctx))
	st := p.Stats()
	require.Zero(t, st.Health.ConsecutiveAuthFailures)
	require.EqualValues(t, 1, st.Outcomes[OutcomeOK])
	require.EqualValues(t, 1, st.Outcomes[OutcomeResultError])
	se = <-ends
	require.Equal(t, OutcomeOK, se.Outcome)
	require.NotNil(t, se.Result)
	require.Positive(t, se.Result.Usage.OutputTokens)
	require.Positive(t, st.Tokens.Output)
}
