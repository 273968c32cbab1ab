// Package prom exports a claudepool.Pool's statistics as Prometheus
// metrics. It is a module of its own, so that the claudepool library stays
// free of dependencies:
//
//	reg.MustRegister(prom.NewCollector(pool, nil))
//
// Every scrape takes one claudepool.Stats snapshot. Latencies are real
// Prometheus histograms (from Stats' cumulative buckets, whose bounds
// are claudepool.HistogramBounds), so they aggregate across replicas and
// yield rates, unlike the lifetime percentiles of Stats. Names follow the
// Prometheus conventions: counters end in _total, durations are in
// seconds.
package prom

import (
	"github.com/claudepool/claudepool"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector is a prometheus.Collector over a claudepool.Pool.
type Collector struct {
	pool *claudepool.Pool

	acquires, outcomes, spawnFailures, reuses, retired   *prometheus.Desc
	tokens, cost, overloaded, slotTimeouts, deadIdle     *prometheus.Desc
	deadAtClaim, promptCold, malformed                   *prometheus.Desc
	waiting, processes, live, spareTarget, held, idleRSS *prometheus.Desc
	spawnStreak, authStreak                              *prometheus.Desc
	acquireHist, spawnHist, firstEvent, firstText        *prometheus.Desc
	resultHist, resetHist                                *prometheus.Desc
}

// NewCollector returns a Collector of pool's metrics; constLabels (may be
// nil) are added to every metric, e.g. {"pool": "chat"} to tell pools
// apart.
func NewCollector(pool *claudepool.Pool, constLabels prometheus.Labels) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("claudepool_"+name, help, labels, constLabels)
	}
	return &Collector{
		pool:          pool,
		acquires:      d("acquires_total", "Processes acquired for requests, by kind: warm (ready in the pool) or cold (spawned for the request).", "kind"),
		outcomes:      d("outcomes_total", "Streams that ended, by outcome (ok, result_error, exit, line_too_long, not_ready, canceled, deadline, closed, stream_closed, other).", "kind"),
		spawnFailures: d("spawn_failures_total", "Spawns that failed to start or to become ready."),
		reuses:        d("reuses_total", "Chats served by a process that had served one before."),
		retired:       d("retired_total", "Processes the pool retired, by reason.", "reason"),
		tokens:        d("tokens_total", "Tokens in the results of all streams, by type (input, output, cache_read, cache_creation).", "type"),
		cost:          d("cost_usd_total", "Sum of the CLI's cost estimates (total_cost_usd) of all streams, in US dollars."),
		overloaded:    d("overloaded_total", "Callers turned away with ErrOverloaded (MaxWaiting, MaxWait)."),
		slotTimeouts:  d("slot_timeouts_total", "Acquires that gave up waiting for a MaxProcs slot."),
		deadIdle:      d("dead_idle_total", "Warm processes that exited while idle in the pool."),
		deadAtClaim:   d("dead_at_claim_total", "Processes found dead when a chat began with them."),
		promptCold:    d("prompt_cold_total", "Requests served cold because they brought a system prompt other than the pool's."),
		malformed:     d("malformed_lines_total", "Stdout lines of the CLI that were not JSON and were skipped."),
		waiting:       d("waiting_callers", "Callers waiting for a MaxProcs slot."),
		processes:     d("processes", "Processes by state: idle (ready), busy (serving a chat), starting (being spawned), resetting (between chats).", "state"),
		live:          d("live_processes", "Processes not yet reaped, in any state, retiring ones included."),
		spareTarget:   d("spare_target", "Idle spares the refill aims for (Size, or the recent demand with SpareDecay)."),
		held:          d("held_conversations", "Idle processes holding the conversation of their last chat."),
		idleRSS:       d("idle_rss_bytes", "Resident memory of the idle processes, as read after their last reset."),
		spawnStreak:   d("consecutive_spawn_failures", "Spawns that failed since the last successful one."),
		authStreak:    d("consecutive_auth_failures", "Results in a row refused for authentication (API status 401 or 403)."),
		acquireHist:   d("acquire_duration_seconds", "Time an acquire took, by kind (warm, cold).", "kind"),
		spawnHist:     d("spawn_to_ready_seconds", "Time a warm process took from spawn to ready."),
		firstEvent:    d("first_event_seconds", "Time from StreamChat to the first event, by kind of acquire (warm, cold).", "kind"),
		firstText:     d("first_text_seconds", "Time from StreamChat to the first text, by kind of acquire (warm, cold).", "kind"),
		resultHist:    d("result_seconds", "Time from StreamChat to the result, by kind of acquire (warm, cold).", "kind"),
		resetHist:     d("reset_duration_seconds", "Time a confirmed reset between chats took."),
	}
}

func (c *Collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{c.acquires, c.outcomes, c.spawnFailures, c.reuses, c.retired,
		c.tokens, c.cost, c.overloaded, c.slotTimeouts, c.deadIdle, c.deadAtClaim, c.promptCold,
		c.malformed, c.waiting, c.processes, c.live, c.spareTarget, c.held, c.idleRSS,
		c.spawnStreak, c.authStreak, c.acquireHist, c.spawnHist, c.firstEvent, c.firstText,
		c.resultHist, c.resetHist}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one Stats snapshot per call.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.pool.Stats()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	hist := func(d *prometheus.Desc, h claudepool.Histogram, labels ...string) {
		buckets := make(map[float64]uint64, len(h.Buckets))
		for _, b := range h.Buckets {
			buckets[b.UpperBound.Seconds()] = uint64(b.Count)
		}
		ch <- prometheus.MustNewConstHistogram(d, uint64(h.Count), h.Sum.Seconds(), buckets, labels...)
	}

	counter(c.acquires, float64(st.WarmAcquires()), "warm")
	counter(c.acquires, float64(st.ColdAcquires()), "cold")
	for _, o := range claudepool.Outcomes() {
		counter(c.outcomes, float64(st.Outcomes(o)), string(o))
	}
	counter(c.spawnFailures, float64(st.SpawnFailures()))
	counter(c.reuses, float64(st.Reuses()))
	for _, r := range claudepool.RetireReasons() {
		counter(c.retired, float64(st.Retired(r)), string(r))
	}
	t := st.Tokens()
	counter(c.tokens, float64(t.Input), "input")
	counter(c.tokens, float64(t.Output), "output")
	counter(c.tokens, float64(t.CacheRead), "cache_read")
	counter(c.tokens, float64(t.CacheCreation), "cache_creation")
	counter(c.cost, st.CostUSD())
	counter(c.overloaded, float64(st.Overloaded()))
	counter(c.slotTimeouts, float64(st.SlotTimeouts()))
	counter(c.deadIdle, float64(st.DeadIdle()))
	counter(c.deadAtClaim, float64(st.DeadAtClaim()))
	counter(c.promptCold, float64(st.PromptCold()))
	counter(c.malformed, float64(st.MalformedLines()))

	gauge(c.waiting, float64(st.Waiting()))
	gauge(c.processes, float64(st.Idle()), "idle")
	gauge(c.processes, float64(st.Busy()), "busy")
	gauge(c.processes, float64(st.Starting()), "starting")
	gauge(c.processes, float64(st.Resetting()), "resetting")
	gauge(c.live, float64(st.Live()))
	gauge(c.spareTarget, float64(st.SpareTarget()))
	gauge(c.held, float64(st.Held()))
	gauge(c.idleRSS, float64(st.IdleRSS()))
	gauge(c.spawnStreak, float64(st.ConsecutiveSpawnFailures()))
	gauge(c.authStreak, float64(st.ConsecutiveAuthFailures()))

	for _, k := range []struct {
		warm bool
		name string
	}{{true, "warm"}, {false, "cold"}} {
		hist(c.acquireHist, st.AcquireHistogram(k.warm), k.name)
		hist(c.firstEvent, st.FirstEventHistogram(k.warm), k.name)
		hist(c.firstText, st.FirstTextHistogram(k.warm), k.name)
		hist(c.resultHist, st.ResultHistogram(k.warm), k.name)
	}
	hist(c.spawnHist, st.SpawnToReadyHistogram())
	hist(c.resetHist, st.ResetHistogram())
}
