package claudepool

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// The tests of issue 14's library side: histograms, outcome, token and
// cost counters, the OnStreamEnd hook, health, overload and spares that
// follow demand.

// waitStats waits until cond holds for the pool's Stats. It checks again
// after every log record, since the pool logs every change these tests
// wait for (a process ready, reset or retired), and after every change of
// a process's state (a reap logs nothing).
func waitStats(t *testing.T, fp *fakePool, what string, cond func(Stats) bool) Stats {
	t.Helper()
	timeout := time.NewTimer(testWait)
	defer timeout.Stop()
	for {
		fp.logs.mu.Lock()
		notify := fp.logs.notify
		fp.logs.mu.Unlock()
		fp.mu.Lock()
		changed := fp.changed
		fp.mu.Unlock()
		if st := fp.Stats(); cond(st) {
			return st
		}
		select {
		case <-notify:
		case <-changed:
		case <-timeout.C:
			st, _ := json.Marshal(fp.Stats())
			t.Fatalf("waited %v for %s; stats: %s", testWait, what, st)
		}
	}
}

func TestHistogramSnapshot(t *testing.T) {
	var h histogram
	require.Equal(t, Histogram{Buckets: h.snapshot().Buckets}, h.snapshot(), "an empty histogram counts nothing")
	for _, d := range []time.Duration{
		5 * time.Microsecond,   // ≤ 10µs
		time.Millisecond,       // exactly on a bound: ≤ 1ms
		time.Millisecond + 1,   // just above it: ≤ 2.5ms
		700 * time.Millisecond, // ≤ 1s
		10 * time.Minute,       // above every bound: +Inf only
	} {
		h.record(d)
	}
	s := h.snapshot()
	require.EqualValues(t, 5, s.Count)
	require.Equal(t, 5*time.Microsecond+2*time.Millisecond+1+700*time.Millisecond+10*time.Minute, s.Sum)
	require.Len(t, s.Buckets, len(HistogramBounds()))
	want := map[time.Duration]int64{
		10 * time.Microsecond: 1, 100 * time.Microsecond: 1, time.Millisecond: 2,
		2500 * time.Microsecond: 3, 500 * time.Millisecond: 3, time.Second: 4, 5 * time.Minute: 4,
	}
	for i, b := range s.Buckets {
		require.Equal(t, HistogramBounds()[i], b.UpperBound)
		if i > 0 {
			require.GreaterOrEqual(t, b.Count, s.Buckets[i-1].Count, "buckets are cumulative")
			require.Greater(t, b.UpperBound, s.Buckets[i-1].UpperBound)
		}
		if n, ok := want[b.UpperBound]; ok {
			require.Equal(t, n, b.Count, "bucket ≤ %v", b.UpperBound)
		}
	}
}

// TestStatsJSONKeys checks the keys Stats encodes under, and that a Latency
// encodes as its summary alone (LatencySummary's MarshalJSON, promoted
// through the embedded field), without its histogram.
func TestStatsJSONKeys(t *testing.T) {
	var h histogram
	h.record(3 * time.Millisecond)
	st := Stats{
		SpawnToReady: Latency{LatencySummary: h.summary(), Histogram: h.snapshot()},
		Health:       Health{LastSpawnError: "boom"},
	}
	require.EqualValues(t, 1, st.SpawnToReady.Histogram.Count, "the histogram is filled")
	data, err := json.Marshal(st)
	require.NoError(t, err)
	require.NotContains(t, string(data), "Histogram")
	require.NotContains(t, string(data), "Buckets")

	keys := func(raw json.RawMessage) []string {
		t.Helper()
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(raw, &m), string(raw))
		return slices.Sorted(maps.Keys(m))
	}
	var top map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(data, &top))
	require.ElementsMatch(t, []string{"idle", "busy", "starting", "resetting", "held", "live",
		"idle_rss_bytes", "idle_private_bytes", "idle_pss_bytes", "spare_target", "waiting", "warm_acquires", "cold_acquires", "prompt_cold",
		"slot_timeouts", "overloaded", "dead_at_claim", "spawn_failures", "dead_idle", "reuses",
		"retired", "uses_per_process", "malformed_lines", "conversations", "outcomes", "tokens",
		"cost_usd", "spawn_to_ready", "resets", "warm", "cold", "health"}, keys(data))
	latencyKeys := []string{"count", "max_ms", "p50_ms", "p90_ms", "p99_ms"}
	require.Equal(t, latencyKeys, keys(top["resets"]))
	require.Equal(t, []string{"acquire", "api_first_byte", "first_event", "first_text", "overhead", "result"},
		keys(top["warm"]))
	require.Equal(t, keys(top["warm"]), keys(top["cold"]))
	var warm map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(top["warm"], &warm))
	require.Equal(t, latencyKeys, keys(warm["api_first_byte"]))
	require.Equal(t, latencyKeys, keys(warm["overhead"]))
	require.Contains(t, string(top["warm"]), `"acquire":{"count":0,"p50_ms":0,`)
	require.ElementsMatch(t, []string{"continued", "miss_not_held", "miss_settings", "expired", "gave_way"},
		keys(top["conversations"]))
	require.ElementsMatch(t, []string{"count", "p50", "p90", "p99", "max"}, keys(top["uses_per_process"]))
	require.ElementsMatch(t, []string{"last_spawn_error", "consecutive_spawn_failures", "consecutive_auth_failures"},
		keys(top["health"]))

	var spawn struct {
		Count int64   `json:"count"`
		P50   float64 `json:"p50_ms"`
		Max   float64 `json:"max_ms"`
	}
	require.NoError(t, json.Unmarshal(top["spawn_to_ready"], &spawn))
	require.EqualValues(t, 1, spawn.Count)
	require.InDelta(t, 3, spawn.P50, 3*0.125)
	require.Equal(t, 3.0, spawn.Max)
	require.Contains(t, string(data), `"spawn_to_ready":{"count":1,"p50_ms":`)

	data, err = json.Marshal(Stats{})
	require.NoError(t, err)
	require.Contains(t, string(data), `"health":{"consecutive_spawn_failures":0,`, "no last_spawn_error without one")
}

// TestRecordGatewayLatencies feeds Stream.record the timings of ended
// streams and checks the histograms of the API's time to first byte and of
// the overhead in Stats, by kind of acquire: a stream without the gateway
// adds to neither, one without text to the API's alone, and an overhead
// that is not positive is left out.
func TestRecordGatewayLatencies(t *testing.T) {
	fp := newFakePool(t, Config{})
	record := func(warm bool, l StreamLatency) {
		t.Helper()
		s := &Stream{pool: fp.Pool, acquire: AcquireInfo{Warm: warm}, latency: l}
		s.record()
	}
	const ms = time.Millisecond
	// Warm chats through the gateway.
	record(true, StreamLatency{FirstEvent: 520 * ms, FirstText: 600 * ms, Result: 900 * ms,
		APIFirstByte: 500 * ms, Overhead: 100 * ms})
	record(true, StreamLatency{FirstEvent: 260 * ms, FirstText: 300 * ms, Result: 400 * ms,
		APIFirstByte: 240 * ms, Overhead: 60 * ms})
	// A warm chat without the gateway.
	record(true, StreamLatency{FirstEvent: 20 * ms, FirstText: 30 * ms, Result: 40 * ms})
	// Odd clocks: the text before the API's first byte.
	record(true, StreamLatency{FirstEvent: 10 * ms, FirstText: 10 * ms, Result: 50 * ms,
		APIFirstByte: 20 * ms, Overhead: -10 * ms})
	// A cold chat through the gateway, and one that wrote no text.
	record(false, StreamLatency{FirstEvent: 1200 * ms, FirstText: 1300 * ms, Result: 1500 * ms,
		APIFirstByte: 500 * ms, Overhead: 800 * ms})
	record(false, StreamLatency{FirstEvent: 700 * ms, Result: 800 * ms, APIFirstByte: 600 * ms})

	st := fp.Stats()
	// check checks a Latency against the values recorded into it.
	check := func(name string, got Latency, want ...time.Duration) {
		t.Helper()
		require.EqualValues(t, len(want), got.Count, name)
		require.EqualValues(t, len(want), got.Histogram.Count, name)
		var sum, maxD time.Duration
		for _, d := range want {
			sum += d
			maxD = max(maxD, d)
		}
		require.Equal(t, sum, got.Histogram.Sum, name)
		require.Equal(t, maxD, got.Max, name)
		require.Len(t, got.Histogram.Buckets, len(HistogramBounds()), name)
		for _, b := range got.Histogram.Buckets {
			var n int64
			for _, d := range want {
				if d <= b.UpperBound {
					n++
				}
			}
			require.Equal(t, n, b.Count, "%s: bucket ≤ %v", name, b.UpperBound)
		}
	}
	check("Warm.APIFirstByte", st.Warm.APIFirstByte, 500*ms, 240*ms, 20*ms)
	check("Warm.Overhead", st.Warm.Overhead, 100*ms, 60*ms)
	check("Cold.APIFirstByte", st.Cold.APIFirstByte, 500*ms, 600*ms)
	check("Cold.Overhead", st.Cold.Overhead, 800*ms)
	// The other histograms of the same streams, as before.
	check("Warm.FirstText", st.Warm.FirstText, 600*ms, 300*ms, 30*ms, 10*ms)
	check("Cold.FirstText", st.Cold.FirstText, 1300*ms)
	check("Cold.Result", st.Cold.Result, 1500*ms, 800*ms)
	require.InDelta(t, float64(240*ms), float64(st.Warm.APIFirstByte.P50), float64(240*ms)/8)
	require.InDelta(t, float64(60*ms), float64(st.Warm.Overhead.P50), float64(60*ms)/8)

	data, err := json.Marshal(st)
	require.NoError(t, err)
	var enc struct {
		Cold struct {
			APIFirstByte struct {
				Count int64   `json:"count"`
				Max   float64 `json:"max_ms"`
			} `json:"api_first_byte"`
			Overhead struct {
				Count int64   `json:"count"`
				Max   float64 `json:"max_ms"`
			} `json:"overhead"`
		} `json:"cold"`
	}
	require.NoError(t, json.Unmarshal(data, &enc))
	require.EqualValues(t, 2, enc.Cold.APIFirstByte.Count)
	require.Equal(t, 600.0, enc.Cold.APIFirstByte.Max)
	require.EqualValues(t, 1, enc.Cold.Overhead.Count)
	require.Equal(t, 800.0, enc.Cold.Overhead.Max)
}

func TestOutcomeOf(t *testing.T) {
	for err, want := range map[error]Outcome{
		nil:                                  OutcomeOK,
		&ResultError{}:                       OutcomeResultError,
		&ExitError{Code: 1}:                  OutcomeExit,
		ErrLineTooLong:                       OutcomeLineTooLong,
		ErrNotReady:                          OutcomeNotReady,
		context.Canceled:                     OutcomeCanceled,
		context.DeadlineExceeded:             OutcomeDeadline,
		ErrStreamClosed:                      OutcomeStreamClosed,
		errors.New("other"):                  OutcomeOther,
		errors.Join(ErrClosed, &ExitError{}): OutcomeClosed,
	} {
		require.Equal(t, want, OutcomeOf(err), "%v", err)
	}
	require.Len(t, Outcomes(), 10)
}

// TestStreamEndHookAndCounters runs chats with each kind of end and checks
// what OnStreamEnd received, and the outcome, token, cost and
// authentication counters of Stats.
func TestStreamEndHookAndCounters(t *testing.T) {
	var mu sync.Mutex
	var ends []StreamEnd
	fp := newFakePool(t, Config{Size: 1, Model: "sonnet", OnStreamEnd: func(e StreamEnd) {
		mu.Lock()
		defer mu.Unlock()
		ends = append(ends, e)
	}})
	a := NewAdapter(fp.Pool)
	last := func() StreamEnd {
		// Stream.Close waits for the hook: it has run by now.
		mu.Lock()
		defer mu.Unlock()
		require.NotEmpty(t, ends)
		return ends[len(ends)-1]
	}

	requireOK(t, chat(t, a, "hello", 0), "hello")
	e := last()
	require.Equal(t, OutcomeOK, e.Outcome)
	require.NoError(t, e.Err)
	require.Equal(t, "sonnet", e.Model)
	require.NotNil(t, e.Result)
	require.Equal(t, 12001, e.Result.Usage.InputTokens)
	require.Positive(t, e.Latency.FirstEvent)
	require.Positive(t, e.Latency.FirstText)
	require.GreaterOrEqual(t, e.Duration, e.Latency.Result)
	require.NotZero(t, e.Acquire.PID)

	// Two refused API calls in a row, then a success.
	for i := 1; i <= 2; i++ {
		o := chat(t, a, "bad key "+fakecli.Marker(fakecli.ModeErrorResult), 0)
		var re *ResultError
		require.ErrorAs(t, o.error(), &re)
		require.Equal(t, OutcomeResultError, last().Outcome)
		require.EqualValues(t, i, fp.Stats().Health.ConsecutiveAuthFailures)
	}
	requireOK(t, chat(t, a, "good key", 0), "good key")
	require.Zero(t, fp.Stats().Health.ConsecutiveAuthFailures)

	o := chat(t, a, "crash "+fakecli.Marker(fakecli.ModeCrash), 0)
	requireDocumented(t, o.error())
	require.Equal(t, OutcomeExit, last().Outcome)
	require.Nil(t, last().Result)

	// A stream closed before its result, and one whose context ends.
	s, err := a.StreamChat(testCtx(t), userMsg("hang "+fakecli.Marker(fakecli.ModeHang)))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.Equal(t, OutcomeStreamClosed, last().Outcome)
	requireErrorIs(t, last().Err, ErrStreamClosed)

	ctx, cancel := context.WithCancel(testCtx(t))
	s, err = a.StreamChat(ctx, userMsg("hang "+fakecli.Marker(fakecli.ModeHang)))
	require.NoError(t, err)
	cancel()
	for s.Next() {
	}
	requireErrorIs(t, s.Err(), context.Canceled)
	require.NoError(t, s.Close())
	require.Equal(t, OutcomeCanceled, last().Outcome)

	mu.Lock()
	require.Len(t, ends, 7, "one call per stream")
	var want TokenCounts
	var cost float64
	for _, e := range ends {
		if r := e.Result; r != nil {
			want.Input += int64(r.Usage.InputTokens)
			want.Output += int64(r.Usage.OutputTokens)
			cost += r.TotalCostUSD
		}
	}
	mu.Unlock()
	st := fp.Stats()
	for o, n := range map[Outcome]int64{OutcomeOK: 2, OutcomeResultError: 2, OutcomeExit: 1,
		OutcomeStreamClosed: 1, OutcomeCanceled: 1, OutcomeDeadline: 0} {
		require.Equal(t, n, st.Outcomes[o], "outcome %s", o)
	}
	// Every result counts, the two successes and the two errors at least.
	require.GreaterOrEqual(t, want.Input, int64(4*12001))
	require.Equal(t, want, st.Tokens)
	require.InDelta(t, cost, st.CostUSD, 1e-9)
	h := st.Warm.Result.Histogram
	require.Equal(t, h.Count, st.Warm.Result.Count)
	require.Positive(t, h.Sum)
	data, err := json.Marshal(st)
	require.NoError(t, err)
	for _, key := range []string{`"outcomes":{`, `"ok":2`, `"tokens":{"input":`, `"cost_usd":`,
		`"consecutive_auth_failures":0`, `"waiting":0`} {
		require.Contains(t, string(data), key)
	}
}

func TestCheckAPI(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1})
	require.NoError(t, fp.WaitReady(ctx))
	require.NoError(t, fp.CheckAPI(ctx))
	require.EqualValues(t, 1, fp.Stats().Outcomes[OutcomeOK])

	bad := newFakePool(t, Config{Size: 1}, fakecli.EnvMode+"="+fakecli.ModeErrorResult)
	require.NoError(t, bad.WaitReady(ctx), "a bad key passes WaitReady")
	err := bad.CheckAPI(ctx)
	var re *ResultError
	require.ErrorAs(t, err, &re)
	require.Equal(t, 401, re.APIErrorStatus)
	require.EqualValues(t, 1, bad.Stats().Health.ConsecutiveAuthFailures)
}

func TestSpawnHealthInStats(t *testing.T) {
	fp := newFakePool(t, Config{Size: 1}, fakecli.EnvMode+"="+fakecli.ModeExitEarly)
	fp.logs.waitFor(t, "claudepool: spawn failed", 2)
	st := fp.Stats()
	require.GreaterOrEqual(t, st.Health.ConsecutiveSpawnFailures, int64(2))
	require.Contains(t, st.Health.LastSpawnError, "fatal: fake start-up failure")
	data, err := json.Marshal(st)
	require.NoError(t, err)
	require.Contains(t, string(data), `"last_spawn_error":"`)

	ok := newFakePool(t, Config{Size: 1})
	require.NoError(t, ok.WaitReady(testCtx(t)))
	require.Zero(t, ok.Stats().Health.ConsecutiveSpawnFailures)
	require.Empty(t, ok.Stats().Health.LastSpawnError)
}

// TestOverloadedBurst sends a burst of chats beyond MaxWaiting at a pool
// whose only slot is taken: the surplus is shed at once with
// ErrOverloaded, the waiters are served once the slot frees, and nothing
// is lost or left hanging.
func TestOverloadedBurst(t *testing.T) {
	ctx := testCtx(t)
	const burst, maxWaiting = 10, 3
	fp := newFakePool(t, Config{MaxProcs: 1, MaxWaiting: maxWaiting})
	a := NewAdapter(fp.Pool)
	holder, err := a.StreamChat(ctx, userMsg("hold "+fakecli.Marker(fakecli.ModeHang)))
	require.NoError(t, err)

	results := make(chan outcome, burst)
	for i := range burst {
		go func() { results <- chat(t, a, "burst "+string(rune('a'+i)), 0) }()
	}
	var served, shed []outcome
	for len(shed) < burst-maxWaiting {
		o := <-results
		requireErrorIs(t, o.error(), ErrOverloaded)
		require.ErrorContains(t, o.error(), "MaxWaiting 3")
		shed = append(shed, o)
	}
	// The others wait; once they all do, the slot frees.
	waitStats(t, fp, "the waiters", func(st Stats) bool { return st.Waiting == maxWaiting })
	require.NoError(t, holder.Close())
	for len(served) < maxWaiting {
		o := <-results
		require.NoError(t, o.error())
		served = append(served, o)
	}
	st := fp.Stats()
	require.Zero(t, st.Waiting)
	require.EqualValues(t, burst-maxWaiting, st.Overloaded)
	require.EqualValues(t, maxWaiting, st.Outcomes[OutcomeOK])
	require.LessOrEqual(t, st.Live, 1)
}

func TestMaxWaitSheds(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{MaxProcs: 1, MaxWait: 20 * time.Millisecond})
	first, err := fp.Acquire(ctx)
	require.NoError(t, err)
	_, err = fp.Acquire(ctx)
	requireErrorIs(t, err, ErrOverloaded)
	require.ErrorContains(t, err, "MaxWait")
	require.EqualValues(t, 1, fp.Stats().Overloaded)
	require.Zero(t, fp.Stats().Waiting)
	require.NoError(t, first.Stop(ctx))
	second, err := fp.Acquire(ctx)
	require.NoError(t, err)
	require.NoError(t, second.Stop(ctx))
}

// TestSparesFollowDemand holds three chats at once on a pool of Size 1:
// the spares grow to three, then shrink back to one after the chats end
// and SpareDecay has passed.
func TestSparesFollowDemand(t *testing.T) {
	ctx := testCtx(t)
	const held = 3
	fp := newFakePool(t, Config{Size: 1, MaxProcs: 8, SpareDecay: 100 * time.Millisecond})
	require.NoError(t, fp.WaitReady(ctx))
	require.Equal(t, 1, fp.Stats().SpareTarget)
	a := NewAdapter(fp.Pool)
	var streams []*Stream
	for range held {
		s, err := a.StreamChat(ctx, userMsg("hold "+fakecli.Marker(fakecli.ModeHang)))
		require.NoError(t, err)
		streams = append(streams, s)
	}
	st := waitStats(t, fp, "spares to grow", func(st Stats) bool { return st.Idle >= held })
	require.Equal(t, held, st.SpareTarget)
	require.Equal(t, held, st.Busy)
	require.LessOrEqual(t, st.Live, 8)

	for _, s := range streams {
		require.NoError(t, s.Close())
	}
	st = waitStats(t, fp, "spares to shrink", func(st Stats) bool {
		return st.SpareTarget == 1 && st.Idle == 1 && st.Retired[RetireSpare] >= held-1
	})
	require.Zero(t, st.Busy)
	// Back to the floor: the remaining spare serves.
	requireOK(t, chat(t, a, "after", 0), "after")
}

// TestSparesSteadyLoadNoChurn: under steady load the processes that come
// back from their chats are kept, not retired and spawned again. A spare
// is retired only when a cold spawn (a chat that came while the other
// processes were being reset) left the pool above its target.
func TestSparesSteadyLoadNoChurn(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 2, MaxProcs: 6, SpareDecay: time.Minute})
	require.NoError(t, fp.WaitReady(ctx))
	a := NewAdapter(fp.Pool)
	for range 3 {
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				text := "steady " + string(rune('a'+i))
				requireOK(t, chat(t, a, text, 0), text)
			}()
		}
		wg.Wait()
	}
	st := fp.Stats()
	require.LessOrEqual(t, st.Retired[RetireSpare], st.ColdAcquires)
	require.Positive(t, st.Reuses)
}

// A chat with a key of its own that the API refuses says nothing of the
// pool's key: Health.ConsecutiveAuthFailures counts only the pool's.
func TestOwnKeyAuthFailuresNotCounted(t *testing.T) {
	ctx := testCtx(t)
	fp := newFakePool(t, Config{Size: 1, Env: []string{"ANTHROPIC_API_KEY=sk-pool", "ANTHROPIC_BASE_URL=http://127.0.0.1:9"}})
	require.NotNil(t, fp.gw)
	require.NoError(t, fp.WaitReady(ctx))
	a := NewAdapter(fp.Pool)
	refused := func(key string) {
		t.Helper()
		req := userMsg("bad key " + fakecli.Marker(fakecli.ModeErrorResult))
		req.APIKey = key
		s, err := a.StreamChat(ctx, req)
		require.NoError(t, err)
		defer s.Close()
		drain(t, s)
		var re *ResultError
		require.ErrorAs(t, s.Err(), &re)
		require.Equal(t, 401, re.APIErrorStatus)
	}
	refused("")
	require.EqualValues(t, 1, fp.Stats().Health.ConsecutiveAuthFailures)
	refused("sk-tenant")
	require.EqualValues(t, 1, fp.Stats().Health.ConsecutiveAuthFailures, "a tenant's key is not the pool's")
	s, _ := chatOK(t, ctx, a, Request{APIKey: "sk-tenant", Messages: []Message{{Role: RoleUser, Content: "fine"}}})
	require.NoError(t, s.Err())
	require.EqualValues(t, 1, fp.Stats().Health.ConsecutiveAuthFailures, "nor does a tenant's success reset it")
}
