package claudepool

import (
	"math"
	"sync/atomic"
)

// counters are the pool's event counts, updated with atomics outside the
// pool's lock.
type counters struct {
	warm          atomic.Int64
	cold          atomic.Int64
	spawnFailures atomic.Int64
	deadIdle      atomic.Int64
	slotTimeouts  atomic.Int64
	promptCold    atomic.Int64
	reuses        atomic.Int64
	deadAtClaim   atomic.Int64
	retired       [len(retireReasonsArray)]atomic.Int64
	outcomes      [len(outcomesArray)]atomic.Int64
	overloaded    atomic.Int64 // callers shed with ErrOverloaded
}

// retireReasonsArray fixes the number of retire reasons at compile time.
var retireReasonsArray = [...]RetireReason{RetireMaxUses, RetireMemory, RetireResetFailed,
	RetireUnclean, RetireIdle, RetireEvicted, RetireSurplus, RetireSpare, RetireClosed}

// RetireReasons lists every RetireReason, in a fixed order.
func RetireReasons() []RetireReason { return append([]RetireReason(nil), retireReasonsArray[:]...) }

// latencies are the pool's histograms.
type latencies struct {
	warmAcquire    histogram
	coldAcquire    histogram
	spawnToReady   histogram
	warmFirstEvent histogram
	coldFirstEvent histogram
	warmFirstText  histogram
	coldFirstText  histogram
	warmResult     histogram
	coldResult     histogram
	// The API's time to first byte and the overhead, with the gateway.
	warmAPIFirstByte histogram
	coldAPIFirstByte histogram
	warmOverhead     histogram
	coldOverhead     histogram
	reset            histogram // how long confirmed resets took
	uses             histogram // chats served by each retired process, as a count in ns units
}

// recordStream adds the timings of a stream that has ended to the
// histograms of its kind of acquire. A timing whose moment never came (0)
// is left out: a stream without text has no FirstText, one without the
// gateway no APIFirstByte and no Overhead.
func (l *latencies) recordStream(warm bool, sl StreamLatency) {
	first, text, result := &l.coldFirstEvent, &l.coldFirstText, &l.coldResult
	apiFirstByte, overhead := &l.coldAPIFirstByte, &l.coldOverhead
	if warm {
		first, text, result = &l.warmFirstEvent, &l.warmFirstText, &l.warmResult
		apiFirstByte, overhead = &l.warmAPIFirstByte, &l.warmOverhead
	}
	if sl.FirstEvent > 0 {
		first.record(sl.FirstEvent)
	}
	if sl.FirstText > 0 {
		text.record(sl.FirstText)
	}
	if sl.Result > 0 {
		result.record(sl.Result)
	}
	if sl.APIFirstByte > 0 {
		apiFirstByte.record(sl.APIFirstByte)
	}
	// Overhead subtracts the gateway's measure from the pool's, each taken
	// from its own start. It should never be negative; if odd clocks ever
	// made it so, it would say nothing about the chat, and record would
	// count it as 0, a chat without overhead: only a positive overhead is
	// recorded (0 means no gateway or no text).
	if sl.Overhead > 0 {
		overhead.record(sl.Overhead)
	}
}

// Stats is a snapshot of a pool: its processes now, and counters and
// latencies since NewPool. It is plain data: compare its fields, log it,
// encode it as JSON. The process counts are taken together under the
// pool's lock, so they add up. The zero value reports an empty pool.
type Stats struct {
	// Processes now.
	//
	// Idle is the number of warm processes ready to be acquired.
	Idle int `json:"idle"`
	// Busy is the number of processes serving a caller.
	Busy int `json:"busy"`
	// Starting is the number of warm processes being spawned or probed.
	Starting int `json:"starting"`
	// Resetting is the number of processes whose conversation is being
	// cleared for the next chat.
	Resetting int `json:"resetting"`
	// Held is the number of idle processes that hold the conversation of
	// their last chat.
	Held int `json:"held"`
	// Live is the number of processes not yet reaped: idle, busy,
	// starting, resetting and retiring.
	Live int `json:"live"`
	// IdleRSS is the resident memory of the idle processes in bytes, as
	// read when they became ready and after each reset; processes not read
	// (cold ones before their first reset, or on systems without /proc)
	// count 0.
	IdleRSS int64 `json:"idle_rss_bytes"`
	// IdlePrivate is the private memory of the idle processes in bytes
	// (Private_Dirty of /proc/PID/smaps_rollup: the pages each wrote,
	// which no other process shares), read when IdleRSS is: what they cost
	// the machine. RSS also counts the CLI executable's pages, which every
	// process shares (75-85 MiB of the real CLI's 160 or more).
	IdlePrivate int64 `json:"idle_private_bytes"`
	// IdlePss is their proportional set size: private memory plus each
	// one's share of the shared pages. The sum over every process of the
	// machine is its memory in use.
	IdlePss int64 `json:"idle_pss_bytes"`
	// SpareTarget is the number of idle spares the refill aims for: Size,
	// or with Config.SpareDecay the recent peak of busy processes when it
	// is higher, within MaxProcs.
	SpareTarget int `json:"spare_target"`
	// Waiting is the number of callers waiting for a MaxProcs slot now.
	Waiting int64 `json:"waiting"`

	// Acquires, since NewPool.
	//
	// WarmAcquires counts acquires served by a ready process.
	WarmAcquires int64 `json:"warm_acquires"`
	// ColdAcquires counts acquires that spawned a process.
	ColdAcquires int64 `json:"cold_acquires"`
	// PromptCold counts requests served by a cold process because they
	// brought a system prompt other than the pool's Config.Prompt.
	PromptCold int64 `json:"prompt_cold"`
	// SlotTimeouts counts acquires that gave up waiting for a MaxProcs
	// slot.
	SlotTimeouts int64 `json:"slot_timeouts"`
	// Overloaded counts callers turned away with ErrOverloaded
	// (Config.MaxWaiting, Config.MaxWait).
	Overloaded int64 `json:"overloaded"`
	// DeadAtClaim counts processes found dead when a chat began with
	// them, before its request reached them; the chat took another.
	DeadAtClaim int64 `json:"dead_at_claim"`

	// Processes' lives, since NewPool.
	//
	// SpawnFailures counts spawns that failed to start or to become
	// ready.
	SpawnFailures int64 `json:"spawn_failures"`
	// DeadIdle counts warm processes that exited while waiting in the
	// pool.
	DeadIdle int64 `json:"dead_idle"`
	// Reuses counts chats served by a process that had served one before.
	Reuses int64 `json:"reuses"`
	// Retired counts the processes the pool retired, by reason; every
	// reason of RetireReasons is present, 0 included. Processes that
	// exited on their own are counted by DeadIdle or not at all.
	Retired map[RetireReason]int64 `json:"retired"`
	// UsesPerProcess summarizes how many chats each retired process
	// served.
	UsesPerProcess CountSummary `json:"uses_per_process"`
	// MalformedLines counts stdout lines that were not JSON and were
	// skipped.
	MalformedLines int64 `json:"malformed_lines"`

	// Held conversations, since NewPool.
	//
	// Conversations counts what became of held conversations.
	Conversations ConversationStats `json:"conversations"`

	// Streams, since NewPool.
	//
	// Outcomes counts the streams that ended with each outcome (see
	// OutcomeOf); every outcome of Outcomes is present, 0 included.
	Outcomes map[Outcome]int64 `json:"outcomes"`
	// Tokens sums the usage of every stream's result, failed ones
	// included.
	Tokens TokenCounts `json:"tokens"`
	// CostUSD sums the CLI's cost estimate (total_cost_usd) of every
	// stream's result, failed ones included.
	CostUSD float64 `json:"cost_usd"`

	// Latencies: lifetime percentiles and cumulative histograms.
	//
	// SpawnToReady is how long a warm process took from spawn to
	// answering its readiness probe: the start-up cost the pool hides.
	SpawnToReady Latency `json:"spawn_to_ready"`
	// Resets is how long confirmed resets between chats took.
	Resets Latency `json:"resets"`
	// Warm holds the latencies of chats on warm acquires.
	Warm PhaseLatencies `json:"warm"`
	// Cold holds the latencies of chats on cold acquires; Cold.Acquire
	// includes the spawn and any wait for a MaxProcs slot.
	Cold PhaseLatencies `json:"cold"`

	// Health holds the figures a readiness probe watches.
	Health Health `json:"health"`
}

// ConversationStats counts what became of held conversations. A request
// could continue one when its last messages are an assistant reply and a
// user message: it continued one (Continued) or missed (MissNotHeld,
// MissSettings). A held conversation ends when the pool resets it
// (Expired, GaveWay).
type ConversationStats struct {
	// Continued counts requests that continued a held conversation.
	Continued int64 `json:"continued"`
	// MissNotHeld counts requests that could have continued a
	// conversation but found no process holding those messages: a new or
	// edited history, a conversation reset or held by another replica.
	MissNotHeld int64 `json:"miss_not_held"`
	// MissSettings counts requests that could have continued a
	// conversation held by a process with another system prompt or model.
	MissSettings int64 `json:"miss_settings"`
	// Expired counts held conversations reset after
	// Config.HoldConversations.
	Expired int64 `json:"expired"`
	// GaveWay counts held conversations reset to serve another chat or to
	// make a spare.
	GaveWay int64 `json:"gave_way"`
}

// PhaseLatencies are the latencies of the chats on warm or on cold
// processes. Acquire is measured from Acquire's start, FirstEvent,
// FirstText and Result from StreamChat; APIFirstByte and Overhead split a
// chat's first text between the API and the rest (see StreamLatency).
type PhaseLatencies struct {
	// Acquire is how long acquires took.
	Acquire Latency `json:"acquire"`
	// FirstEvent is the time from StreamChat to the first event.
	FirstEvent Latency `json:"first_event"`
	// FirstText is the time from StreamChat to the first event with text.
	FirstText Latency `json:"first_text"`
	// Result is the time from StreamChat to the result line.
	Result Latency `json:"result"`
	// APIFirstByte is the API's own time to first byte for each chat's
	// first API call, as the pool's gateway measured it
	// (StreamLatency.APIFirstByte). Only chats through the gateway count:
	// it is empty when the pool runs without one.
	APIFirstByte Latency `json:"api_first_byte"`
	// Overhead is each chat's FirstText minus its APIFirstByte: the time
	// to first text spent outside the API, in the acquire, the CLI and the
	// pool (StreamLatency.Overhead). Only chats through the gateway that
	// produced text count, and only a positive overhead.
	Overhead Latency `json:"overhead"`
}

// Latency is a lifetime summary of durations and their cumulative
// histogram. It encodes as its summary alone (LatencySummary's
// MarshalJSON is promoted): the histogram is for metrics exporters.
type Latency struct {
	LatencySummary
	// Histogram counts the same durations in the buckets of
	// HistogramBounds.
	Histogram Histogram `json:"-"`
}

// Health holds the figures a readiness probe watches.
type Health struct {
	// LastSpawnError is the text of the error of the last spawn that
	// failed, warm or cold; "" when no spawn failed since the last
	// successful one. A spawn fails when the executable cannot be
	// started, or, for a warm process, when it does not become ready.
	LastSpawnError string `json:"last_spawn_error,omitempty"`
	// ConsecutiveSpawnFailures counts the spawns that failed since the
	// last successful one.
	ConsecutiveSpawnFailures int64 `json:"consecutive_spawn_failures"`
	// ConsecutiveAuthFailures counts the results in a row whose API call
	// was refused for authentication (api_error_status 401 or 403): a bad
	// or revoked key, which WaitReady cannot see. Any successful result
	// resets it; other failures leave it as it is. Chats with a key of
	// their own (Request.APIKey) count neither way.
	ConsecutiveAuthFailures int64 `json:"consecutive_auth_failures"`
}

// Stats returns a snapshot of the pool's state, counters and latencies.
// The process counts are taken together, under the pool's lock, so they
// add up; counters and latencies are read right after.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	st := Stats{
		Idle:        p.idle.len(),
		Busy:        p.count[stateLeased],
		Starting:    p.spawning,
		Resetting:   p.count[stateResetting],
		Live:        len(p.live),
		SpareTarget: p.spareTargetLocked(),
	}
	for _, proc := range p.idle.procs {
		st.IdleRSS += proc.life.mem.rss
		st.IdlePrivate += proc.life.mem.private
		st.IdlePss += proc.life.mem.pss
		if proc.life.held != nil {
			st.Held++
		}
	}
	if p.lastSpawnErr != nil {
		st.Health.LastSpawnError = p.lastSpawnErr.Error()
	}
	st.Health.ConsecutiveSpawnFailures = int64(p.failedSpawns)
	p.mu.Unlock()

	c, l, u := &p.counters, &p.lat, &p.usage
	st.Waiting = p.waiting.Load()

	st.WarmAcquires = c.warm.Load()
	st.ColdAcquires = c.cold.Load()
	st.PromptCold = c.promptCold.Load()
	st.SlotTimeouts = c.slotTimeouts.Load()
	st.Overloaded = c.overloaded.Load()
	st.DeadAtClaim = c.deadAtClaim.Load()

	st.SpawnFailures = c.spawnFailures.Load()
	st.DeadIdle = c.deadIdle.Load()
	st.Reuses = c.reuses.Load()
	st.Retired = make(map[RetireReason]int64, len(retireReasonsArray))
	for i, r := range retireReasonsArray {
		st.Retired[r] = c.retired[i].Load()
	}
	st.UsesPerProcess = l.uses.counts()
	st.MalformedLines = p.set.malformed.Load()

	st.Conversations = ConversationStats{
		Continued:    p.conversations.continued.Load(),
		MissNotHeld:  p.conversations.missNotHeld.Load(),
		MissSettings: p.conversations.missSettings.Load(),
		Expired:      p.conversations.expired.Load(),
		GaveWay:      p.conversations.gaveWay.Load(),
	}

	st.Outcomes = make(map[Outcome]int64, len(outcomesArray))
	for i, o := range outcomesArray {
		st.Outcomes[o] = c.outcomes[i].Load()
	}
	st.Tokens = TokenCounts{Input: u.input.Load(), Output: u.output.Load(),
		CacheRead: u.cacheRead.Load(), CacheCreation: u.cacheCreation.Load()}
	st.CostUSD = math.Float64frombits(u.costBits.Load())

	lat := func(h *histogram) Latency { return Latency{LatencySummary: h.summary(), Histogram: h.snapshot()} }
	st.SpawnToReady = lat(&l.spawnToReady)
	st.Resets = lat(&l.reset)
	st.Warm = PhaseLatencies{Acquire: lat(&l.warmAcquire), FirstEvent: lat(&l.warmFirstEvent),
		FirstText: lat(&l.warmFirstText), Result: lat(&l.warmResult),
		APIFirstByte: lat(&l.warmAPIFirstByte), Overhead: lat(&l.warmOverhead)}
	st.Cold = PhaseLatencies{Acquire: lat(&l.coldAcquire), FirstEvent: lat(&l.coldFirstEvent),
		FirstText: lat(&l.coldFirstText), Result: lat(&l.coldResult),
		APIFirstByte: lat(&l.coldAPIFirstByte), Overhead: lat(&l.coldOverhead)}

	st.Health.ConsecutiveAuthFailures = u.authFailures.Load()
	return st
}
