package claudepool

import (
	"encoding/json"
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
	// Held conversations: continued; missed because no process holds the
	// history, or because one does with another prompt or model; reset
	// after HoldConversations; reset for another chat.
	stickyHits         atomic.Int64
	stickyMissNone     atomic.Int64
	stickyMissSettings atomic.Int64
	holdsExpired       atomic.Int64
	holdsTaken         atomic.Int64
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
	reset          histogram // how long confirmed resets took
	uses           histogram // chats served by each retired process, as a count in ns units
}

// Stats is a snapshot of a pool's state and counters. Counters are
// cumulative since NewPool. The zero value reports an empty pool.
type Stats struct {
	idle, busy, starting, resetting, live int
	idleRSS                               int64

	warmAcquires, coldAcquires, spawnFailures int64
	deadIdle, slotTimeouts                    int64
	promptCold, malformedLines                int64
	reuses, deadAtClaim                       int64
	held                                      int
	stickyHits, stickyMissNone                int64
	stickyMissSettings, holdsExpired          int64
	holdsTaken                                int64
	retired                                   map[RetireReason]int64
	resets                                    LatencySummary
	uses                                      CountSummary

	warmAcquireWait, coldAcquireWait, spawnToReady LatencySummary
	warmFirstEvent, coldFirstEvent                 LatencySummary
	warmFirstText, coldFirstText                   LatencySummary
	warmResult, coldResult                         LatencySummary

	outcomes                  map[Outcome]int64
	tokens                    TokenCounts
	costUSD                   float64
	waiting, overloaded       int64
	lastSpawnErr              error
	spawnStreak, authFailures int64
	spareTarget               int

	hists [numHists]Histogram
}

// The histograms Stats exports, in latencies' order.
const (
	histWarmAcquire = iota
	histColdAcquire
	histSpawnToReady
	histWarmFirstEvent
	histColdFirstEvent
	histWarmFirstText
	histColdFirstText
	histWarmResult
	histColdResult
	histReset
	numHists
)

// all returns the latency histograms in the order of the hist* constants.
func (l *latencies) all() [numHists]*histogram {
	return [numHists]*histogram{&l.warmAcquire, &l.coldAcquire, &l.spawnToReady,
		&l.warmFirstEvent, &l.coldFirstEvent, &l.warmFirstText, &l.coldFirstText,
		&l.warmResult, &l.coldResult, &l.reset}
}

// Stats returns a snapshot of the pool's state, counters and latencies.
// The process counts are taken together, under the pool's lock, so they
// add up; counters and latencies are read right after.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	st := Stats{
		idle:      p.idle.len(),
		busy:      p.count[stateLeased],
		starting:  p.spawning,
		resetting: p.count[stateResetting],
		live:      len(p.live),
	}
	for _, proc := range p.idle.procs {
		st.idleRSS += proc.life.rss
		if proc.life.held != nil {
			st.held++
		}
	}
	st.lastSpawnErr = p.lastSpawnErr
	st.spawnStreak = int64(p.spawnStreak)
	st.spareTarget = p.spareTargetLocked()
	p.mu.Unlock()
	c, l := &p.counters, &p.lat
	st.outcomes = make(map[Outcome]int64, len(outcomesArray))
	for i, o := range outcomesArray {
		st.outcomes[o] = c.outcomes[i].Load()
	}
	u := &p.usage
	st.tokens = TokenCounts{Input: u.input.Load(), Output: u.output.Load(),
		CacheRead: u.cacheRead.Load(), CacheCreation: u.cacheCreation.Load()}
	st.costUSD = math.Float64frombits(u.costBits.Load())
	st.authFailures = u.authFailures.Load()
	st.waiting = p.waiting.Load()
	st.overloaded = c.overloaded.Load()
	for i, h := range l.all() {
		st.hists[i] = h.snapshot()
	}
	st.warmAcquires = c.warm.Load()
	st.coldAcquires = c.cold.Load()
	st.spawnFailures = c.spawnFailures.Load()
	st.deadIdle = c.deadIdle.Load()
	st.slotTimeouts = c.slotTimeouts.Load()
	st.promptCold = c.promptCold.Load()
	st.malformedLines = p.set.malformed.Load()
	st.reuses = c.reuses.Load()
	st.deadAtClaim = c.deadAtClaim.Load()
	st.stickyHits = c.stickyHits.Load()
	st.stickyMissNone = c.stickyMissNone.Load()
	st.stickyMissSettings = c.stickyMissSettings.Load()
	st.holdsExpired = c.holdsExpired.Load()
	st.holdsTaken = c.holdsTaken.Load()
	st.retired = make(map[RetireReason]int64, len(retireReasonsArray))
	for i, r := range retireReasonsArray {
		st.retired[r] = c.retired[i].Load()
	}
	st.warmAcquireWait = l.warmAcquire.summary()
	st.coldAcquireWait = l.coldAcquire.summary()
	st.spawnToReady = l.spawnToReady.summary()
	st.warmFirstEvent = l.warmFirstEvent.summary()
	st.coldFirstEvent = l.coldFirstEvent.summary()
	st.warmFirstText = l.warmFirstText.summary()
	st.coldFirstText = l.coldFirstText.summary()
	st.warmResult = l.warmResult.summary()
	st.coldResult = l.coldResult.summary()
	st.resets = l.reset.summary()
	st.uses = l.uses.counts()
	return st
}

// Idle is the number of warm processes ready to be acquired.
func (s Stats) Idle() int { return s.idle }

// Busy is the number of processes serving a caller.
func (s Stats) Busy() int { return s.busy }

// Resetting is the number of processes whose conversation is being
// cleared for the next chat.
func (s Stats) Resetting() int { return s.resetting }

// IdleRSS is the resident memory of the idle processes in bytes, as read
// after their last reset; processes not read yet (fresh ones, or on
// systems without /proc) count 0.
func (s Stats) IdleRSS() int64 { return s.idleRSS }

// Reuses counts chats served by a process that had served one before.
func (s Stats) Reuses() int64 { return s.reuses }

// Resets summarizes how long confirmed resets between chats took.
func (s Stats) Resets() LatencySummary { return s.resets }

// Retired counts the processes the pool retired for reason. Processes
// that exited on their own are counted by DeadIdle or not at all.
func (s Stats) Retired(reason RetireReason) int64 { return s.retired[reason] }

// UsesPerProcess summarizes how many chats each retired process served.
func (s Stats) UsesPerProcess() CountSummary { return s.uses }

// Held is the number of idle processes that hold the conversation of
// their last chat.
func (s Stats) Held() int { return s.held }

// StickyHits counts requests that continued a held conversation.
func (s Stats) StickyHits() int64 { return s.stickyHits }

// StickyMisses counts requests that could have continued a conversation
// (their last messages are an assistant reply and a user message) but
// found none held for them, by reason: MissNotHeld when no process holds
// those messages (a new or edited history, a conversation reset or held
// by another replica), MissSettings when one does, with another system
// prompt or model.
func (s Stats) StickyMisses(reason MissReason) int64 {
	if reason == MissSettings {
		return s.stickyMissSettings
	}
	return s.stickyMissNone
}

// HoldsEnded counts held conversations the pool reset: after
// Config.HoldConversations (expired true), or to serve another chat.
func (s Stats) HoldsEnded(expired bool) int64 {
	if expired {
		return s.holdsExpired
	}
	return s.holdsTaken
}

// MissReason says why a request found no held conversation to continue.
type MissReason string

// The reasons a continuation misses.
const (
	MissNotHeld  MissReason = "not_held"
	MissSettings MissReason = "settings"
)

// DeadAtClaim counts processes found dead when a chat began with them,
// before its request reached them; the chat took another.
func (s Stats) DeadAtClaim() int64 { return s.deadAtClaim }

// Starting is the number of warm processes being spawned or probed.
func (s Stats) Starting() int { return s.starting }

// Live is the number of processes not yet reaped: idle, busy, starting,
// resetting and retiring.
func (s Stats) Live() int { return s.live }

// WarmAcquires counts acquires served by a ready process.
func (s Stats) WarmAcquires() int64 { return s.warmAcquires }

// ColdAcquires counts acquires that spawned a process.
func (s Stats) ColdAcquires() int64 { return s.coldAcquires }

// SpawnFailures counts spawns that failed to start or to become ready.
func (s Stats) SpawnFailures() int64 { return s.spawnFailures }

// DeadIdle counts warm processes that exited while waiting in the pool.
func (s Stats) DeadIdle() int64 { return s.deadIdle }

// SlotTimeouts counts acquires that gave up waiting for a MaxProcs slot.
func (s Stats) SlotTimeouts() int64 { return s.slotTimeouts }

// PromptCold counts requests served by a cold process because they
// brought a system prompt other than the pool's Config.Prompt.
func (s Stats) PromptCold() int64 { return s.promptCold }

// MalformedLines counts stdout lines that were not JSON and were skipped.
func (s Stats) MalformedLines() int64 { return s.malformedLines }

// WarmAcquireWait summarizes how long warm acquires took.
func (s Stats) WarmAcquireWait() LatencySummary { return s.warmAcquireWait }

// ColdAcquireWait summarizes how long cold acquires took (spawn, plus any
// wait for a MaxProcs slot).
func (s Stats) ColdAcquireWait() LatencySummary { return s.coldAcquireWait }

// SpawnToReady summarizes how long a warm process took from spawn to
// answering its readiness probe: the start-up cost the pool hides.
func (s Stats) SpawnToReady() LatencySummary { return s.spawnToReady }

// FirstEvent summarizes the time from StreamChat to the first event, for
// warm (true) or cold (false) acquires.
func (s Stats) FirstEvent(warm bool) LatencySummary {
	if warm {
		return s.warmFirstEvent
	}
	return s.coldFirstEvent
}

// FirstText summarizes the time from StreamChat to the first event with
// text, for warm (true) or cold (false) acquires.
func (s Stats) FirstText(warm bool) LatencySummary {
	if warm {
		return s.warmFirstText
	}
	return s.coldFirstText
}

// ResultTime summarizes the time from StreamChat to the result line, for
// warm (true) or cold (false) acquires.
func (s Stats) ResultTime(warm bool) LatencySummary {
	if warm {
		return s.warmResult
	}
	return s.coldResult
}

// Outcomes counts the streams that ended with outcome o (see OutcomeOf).
func (s Stats) Outcomes(o Outcome) int64 { return s.outcomes[o] }

// Tokens sums the usage of every stream's result, failed ones included.
func (s Stats) Tokens() TokenCounts { return s.tokens }

// CostUSD sums the CLI's cost estimate (total_cost_usd) of every stream's
// result, failed ones included.
func (s Stats) CostUSD() float64 { return s.costUSD }

// Waiting is the number of callers waiting for a MaxProcs slot now.
func (s Stats) Waiting() int64 { return s.waiting }

// Overloaded counts callers turned away with ErrOverloaded
// (Config.MaxWaiting, Config.MaxWait).
func (s Stats) Overloaded() int64 { return s.overloaded }

// LastSpawnError is the error of the last spawn that failed, warm or
// cold; nil when no spawn failed since the last successful one. A spawn
// fails when the executable cannot be started, or, for a warm process,
// when it does not become ready.
func (s Stats) LastSpawnError() error { return s.lastSpawnErr }

// ConsecutiveSpawnFailures counts the spawns that failed since the last
// successful one.
func (s Stats) ConsecutiveSpawnFailures() int64 { return s.spawnStreak }

// ConsecutiveAuthFailures counts the results in a row whose API call was
// refused for authentication (api_error_status 401 or 403): a bad or
// revoked key, which WaitReady cannot see. Any successful result resets
// it; other failures leave it as it is.
func (s Stats) ConsecutiveAuthFailures() int64 { return s.authFailures }

// SpareTarget is the number of idle spares the refill aims for: Size, or
// with Config.SpareDecay the recent peak of busy processes when it is
// higher, within MaxProcs.
func (s Stats) SpareTarget() int { return s.spareTarget }

// AcquireHistogram is the histogram of warm (true) or cold (false)
// acquire waits (see WarmAcquireWait, ColdAcquireWait).
func (s Stats) AcquireHistogram(warm bool) Histogram {
	return s.pick(warm, histWarmAcquire, histColdAcquire)
}

// SpawnToReadyHistogram is the histogram of SpawnToReady.
func (s Stats) SpawnToReadyHistogram() Histogram { return s.hists[histSpawnToReady] }

// FirstEventHistogram is the histogram of FirstEvent(warm).
func (s Stats) FirstEventHistogram(warm bool) Histogram {
	return s.pick(warm, histWarmFirstEvent, histColdFirstEvent)
}

// FirstTextHistogram is the histogram of FirstText(warm).
func (s Stats) FirstTextHistogram(warm bool) Histogram {
	return s.pick(warm, histWarmFirstText, histColdFirstText)
}

// ResultHistogram is the histogram of ResultTime(warm).
func (s Stats) ResultHistogram(warm bool) Histogram {
	return s.pick(warm, histWarmResult, histColdResult)
}

// ResetHistogram is the histogram of Resets.
func (s Stats) ResetHistogram() Histogram { return s.hists[histReset] }

func (s Stats) pick(warm bool, w, c int) Histogram {
	if warm {
		return s.hists[w]
	}
	return s.hists[c]
}

// MarshalJSON encodes the snapshot for a metrics or status endpoint.
func (s Stats) MarshalJSON() ([]byte, error) {
	type phase struct {
		Acquire    LatencySummary `json:"acquire"`
		FirstEvent LatencySummary `json:"first_event"`
		FirstText  LatencySummary `json:"first_text"`
		Result     LatencySummary `json:"result"`
	}
	type sticky struct {
		Hits         int64 `json:"hits"`
		MissNotHeld  int64 `json:"miss_not_held"`
		MissSettings int64 `json:"miss_settings"`
		HoldsExpired int64 `json:"holds_expired"`
		HoldsTaken   int64 `json:"holds_taken"`
	}
	type health struct {
		LastSpawnError           string `json:"last_spawn_error,omitempty"`
		ConsecutiveSpawnFailures int64  `json:"consecutive_spawn_failures"`
		ConsecutiveAuthFailures  int64  `json:"consecutive_auth_failures"`
	}
	type stats struct {
		Idle           int                    `json:"idle"`
		Busy           int                    `json:"busy"`
		Starting       int                    `json:"starting"`
		Resetting      int                    `json:"resetting"`
		Held           int                    `json:"held"`
		Live           int                    `json:"live"`
		IdleRSS        int64                  `json:"idle_rss_bytes"`
		WarmAcquires   int64                  `json:"warm_acquires"`
		ColdAcquires   int64                  `json:"cold_acquires"`
		SpawnFailures  int64                  `json:"spawn_failures"`
		Reuses         int64                  `json:"reuses"`
		Retired        map[RetireReason]int64 `json:"retired"`
		Resets         LatencySummary         `json:"resets"`
		UsesPerProcess CountSummary           `json:"uses_per_process"`
		DeadAtClaim    int64                  `json:"dead_at_claim"`
		Sticky         sticky                 `json:"sticky"`
		DeadIdle       int64                  `json:"dead_idle"`
		SlotTimeouts   int64                  `json:"slot_timeouts"`
		PromptCold     int64                  `json:"prompt_cold"`
		MalformedLines int64                  `json:"malformed_lines"`
		SpawnToReady   LatencySummary         `json:"spawn_to_ready"`
		Warm           phase                  `json:"warm"`
		Cold           phase                  `json:"cold"`
		Outcomes       map[Outcome]int64      `json:"outcomes"`
		Tokens         TokenCounts            `json:"tokens"`
		CostUSD        float64                `json:"cost_usd"`
		Waiting        int64                  `json:"waiting"`
		Overloaded     int64                  `json:"overloaded"`
		SpareTarget    int                    `json:"spare_target"`
		Health         health                 `json:"health"`
	}
	lastErr := ""
	if s.lastSpawnErr != nil {
		lastErr = s.lastSpawnErr.Error()
	}
	return json.Marshal(stats{
		Idle: s.idle, Busy: s.busy, Starting: s.starting, Resetting: s.resetting, Held: s.held,
		Live: s.live, IdleRSS: s.idleRSS,
		WarmAcquires: s.warmAcquires, ColdAcquires: s.coldAcquires, SpawnFailures: s.spawnFailures,
		Reuses: s.reuses, Retired: s.retired, Resets: s.resets, UsesPerProcess: s.uses,
		DeadAtClaim: s.deadAtClaim,
		Sticky:      sticky{s.stickyHits, s.stickyMissNone, s.stickyMissSettings, s.holdsExpired, s.holdsTaken},
		DeadIdle:    s.deadIdle, SlotTimeouts: s.slotTimeouts, PromptCold: s.promptCold,
		MalformedLines: s.malformedLines, SpawnToReady: s.spawnToReady,
		Warm:     phase{s.warmAcquireWait, s.warmFirstEvent, s.warmFirstText, s.warmResult},
		Cold:     phase{s.coldAcquireWait, s.coldFirstEvent, s.coldFirstText, s.coldResult},
		Outcomes: s.outcomes, Tokens: s.tokens, CostUSD: s.costUSD, Waiting: s.waiting,
		Overloaded: s.overloaded, SpareTarget: s.spareTarget,
		Health: health{lastErr, s.spawnStreak, s.authFailures},
	})
}
