package claudepool_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/claudepool/claudepool"
)

// OnStreamEnd receives every stream's outcome, timings and usage: the
// data of OpenTelemetry's GenAI client metrics (gen_ai.client.operation.duration,
// gen_ai.server.time_to_first_token, gen_ai.client.token.usage), without a
// dependency in the library.
func ExampleConfig_onStreamEnd() {
	ctx := context.Background()
	ends := make(chan claudepool.StreamEnd, 1)
	pool, err := claudepool.NewPool(claudepool.Config{
		Command: fakeCommand(),
		Size:    1,
		Model:   "sonnet",
		// Runs on the stream's goroutine as it ends: keep it short.
		OnStreamEnd: func(e claudepool.StreamEnd) { ends <- e },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close(ctx)

	// One API call proves the credentials; WaitReady alone would not.
	if err := pool.CheckAPI(ctx); err != nil {
		var re *claudepool.ResultError
		if errors.As(err, &re) && (re.APIErrorStatus == 401 || re.APIErrorStatus == 403) {
			fmt.Println("bad API key")
		}
		fmt.Println(err)
		return
	}
	e := <-ends
	fmt.Println("outcome:", e.Outcome, "model:", e.Model)
	fmt.Println("input tokens:", e.Result.Usage.InputTokens)
	fmt.Println("timed:", e.Latency.FirstText > 0 && e.Duration >= e.Latency.FirstText)
	st := pool.Stats()
	fmt.Println("ok outcomes:", st.Outcomes[claudepool.OutcomeOK], "auth failures:", st.Health.ConsecutiveAuthFailures)
	// Output:
	// outcome: ok model: sonnet
	// input tokens: 12001
	// timed: true
	// ok outcomes: 1 auth failures: 0
}

// MaxProcs bounds the processes, and MaxWait how long a caller queues for
// one: it then gets ErrOverloaded (an HTTP server answers 503). MaxWaiting
// bounds the callers queued at once the same way.
func ExampleConfig_maxWait() {
	ctx := context.Background()
	pool, err := claudepool.NewPool(claudepool.Config{
		Command: fakeCommand(), MaxProcs: 1, MaxWait: 10 * time.Millisecond,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close(ctx)
	busy, err := pool.Acquire(ctx) // takes the only slot
	if err != nil {
		fmt.Println(err)
		return
	}
	defer busy.Stop(ctx)
	_, err = pool.Acquire(ctx)
	fmt.Println(errors.Is(err, claudepool.ErrOverloaded), pool.Stats().Overloaded)
	// Output:
	// true 1
}
