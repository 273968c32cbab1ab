package claudepool

import (
	"encoding/json"
	"sync/atomic"
)

// counters are the pool's event counts, updated with atomics outside the
// pool's lock.
type counters struct {
	warm           atomic.Int64
	cold           atomic.Int64
	spawnFailures  atomic.Int64
	recycled       atomic.Int64
	deadIdle       atomic.Int64
	slotTimeouts   atomic.Int64
	promptCold     atomic.Int64
	malformedLines atomic.Int64
}

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
}

// Stats is a snapshot of a pool's state and counters. Counters are
// cumulative since NewPool. The zero value reports an empty pool.
type Stats struct {
	idle, busy, starting, live int

	warmAcquires, coldAcquires, spawnFailures int64
	recycled, deadIdle, slotTimeouts          int64
	promptCold, malformedLines                int64

	warmAcquireWait, coldAcquireWait, spawnToReady LatencySummary
	warmFirstEvent, coldFirstEvent                 LatencySummary
	warmFirstText, coldFirstText                   LatencySummary
	warmResult, coldResult                         LatencySummary
}

// Stats returns a snapshot of the pool's state, counters and latencies.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	starting, live := p.starting, len(p.live)
	p.mu.Unlock()
	c, l := &p.counters, &p.lat
	return Stats{
		idle:            int(p.idle.Load()),
		busy:            int(p.busy.Load()),
		starting:        starting,
		live:            live,
		warmAcquires:    c.warm.Load(),
		coldAcquires:    c.cold.Load(),
		spawnFailures:   c.spawnFailures.Load(),
		recycled:        c.recycled.Load(),
		deadIdle:        c.deadIdle.Load(),
		slotTimeouts:    c.slotTimeouts.Load(),
		promptCold:      c.promptCold.Load(),
		malformedLines:  c.malformedLines.Load(),
		warmAcquireWait: l.warmAcquire.summary(),
		coldAcquireWait: l.coldAcquire.summary(),
		spawnToReady:    l.spawnToReady.summary(),
		warmFirstEvent:  l.warmFirstEvent.summary(),
		coldFirstEvent:  l.coldFirstEvent.summary(),
		warmFirstText:   l.warmFirstText.summary(),
		coldFirstText:   l.coldFirstText.summary(),
		warmResult:      l.warmResult.summary(),
		coldResult:      l.coldResult.summary(),
	}
}

// Idle is the number of warm processes ready to be acquired.
func (s Stats) Idle() int { return s.idle }

// Busy is the number of acquired processes that have not exited yet.
func (s Stats) Busy() int { return s.busy }

// Starting is the number of warm processes being spawned or probed.
func (s Stats) Starting() int { return s.starting }

// Live is the number of processes not yet reaped: idle, busy, starting
// and retiring.
func (s Stats) Live() int { return s.live }

// WarmAcquires counts acquires served by a ready process.
func (s Stats) WarmAcquires() int64 { return s.warmAcquires }

// ColdAcquires counts acquires that spawned a process.
func (s Stats) ColdAcquires() int64 { return s.coldAcquires }

// SpawnFailures counts spawns that failed to start or to become ready.
func (s Stats) SpawnFailures() int64 { return s.spawnFailures }

// Recycled counts warm processes retired after MaxIdle.
func (s Stats) Recycled() int64 { return s.recycled }

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

// MarshalJSON encodes the snapshot for a metrics or status endpoint.
func (s Stats) MarshalJSON() ([]byte, error) {
	type phase struct {
		Acquire    LatencySummary `json:"acquire"`
		FirstEvent LatencySummary `json:"first_event"`
		FirstText  LatencySummary `json:"first_text"`
		Result     LatencySummary `json:"result"`
	}
	return json.Marshal(struct {
		Idle           int            `json:"idle"`
		Busy           int            `json:"busy"`
		Starting       int            `json:"starting"`
		Live           int            `json:"live"`
		WarmAcquires   int64          `json:"warm_acquires"`
		ColdAcquires   int64          `json:"cold_acquires"`
		SpawnFailures  int64          `json:"spawn_failures"`
		Recycled       int64          `json:"recycled"`
		DeadIdle       int64          `json:"dead_idle"`
		SlotTimeouts   int64          `json:"slot_timeouts"`
		PromptCold     int64          `json:"prompt_cold"`
		MalformedLines int64          `json:"malformed_lines"`
		SpawnToReady   LatencySummary `json:"spawn_to_ready"`
		Warm           phase          `json:"warm"`
		Cold           phase          `json:"cold"`
	}{
		s.idle, s.busy, s.starting, s.live,
		s.warmAcquires, s.coldAcquires, s.spawnFailures,
		s.recycled, s.deadIdle, s.slotTimeouts, s.promptCold, s.malformedLines,
		s.spawnToReady,
		phase{s.warmAcquireWait, s.warmFirstEvent, s.warmFirstText, s.warmResult},
		phase{s.coldAcquireWait, s.coldFirstEvent, s.coldFirstText, s.coldResult},
	})
}
