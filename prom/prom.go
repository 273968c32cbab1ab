// Package prom exports a claudepool.Pool's statistics as Prometheus
// metrics. It is a module of its own, so that the claudepool library stays
// free of dependencies:
//
//	reg.MustRegister(prom.NewCollector(pool, nil))
//
// Every scrape takes one claudepool.Stats snapshot and exports every one
// of its fields: a table in this package names the metric of each, and
// its tests fail when a field of Stats has none. Names follow the
// Prometheus conventions: counters end in _total, durations are in
// seconds.
//
// Latencies are real Prometheus histograms, from the cumulative buckets of
// each claudepool.Latency (whose bounds are claudepool.HistogramBounds):
// they aggregate across replicas and yield rates and quantiles over any
// window (histogram_quantile), which the lifetime percentiles of a
// Latency's LatencySummary cannot, so these get no metric of their own.
// The histogram's _count is the summary's Count; its exact Max is not
// exported (the highest non-empty bucket bounds it). With the pool's
// gateway, claudepool_api_first_byte_seconds and
// claudepool_first_text_overhead_seconds split the time to first text
// (claudepool_first_text_seconds) between the API and the rest; without
// it they stay empty.
//
// UsesPerProcess has no histogram in Stats: it is exported as gauges of
// its lifetime percentiles, maximum and count
// (claudepool_uses_per_process{stat="p50"}, ...). Health.LastSpawnError,
// a text, is exported as claudepool_spawn_failing: 1 while it is set, 0
// otherwise; the text itself is in the Stats JSON.
package prom

import (
	"github.com/claudepool/claudepool"
	"github.com/prometheus/client_golang/prometheus"
)

// statsMetrics maps every field of claudepool.Stats, by its path (a field
// of a nested struct is Parent.Field), to the metric family that exports
// it. A map or a Latency is one field; a Latency's embedded
// LatencySummary is covered by its histogram. The tests walk Stats and
// fail when a field is missing here, or when the metric named does not
// change with the field.
var statsMetrics = map[string]string{
	"Idle":        "claudepool_processes",
	"Busy":        "claudepool_processes",
	"Starting":    "claudepool_processes",
	"Resetting":   "claudepool_processes",
	"Held":        "claudepool_held_conversations",
	"Live":        "claudepool_live_processes",
	"IdleRSS":     "claudepool_idle_rss_bytes",
	"IdlePrivate": "claudepool_idle_private_bytes",
	"IdlePss":     "claudepool_idle_pss_bytes",
	"SpareTarget": "claudepool_spare_target",
	"Waiting":     "claudepool_waiting_callers",

	"WarmAcquires": "claudepool_acquires_total",
	"ColdAcquires": "claudepool_acquires_total",
	"PromptCold":   "claudepool_prompt_cold_total",
	"SlotTimeouts": "claudepool_slot_timeouts_total",
	"Overloaded":   "claudepool_overloaded_total",
	"DeadAtClaim":  "claudepool_dead_at_claim_total",

	"SpawnFailures":        "claudepool_spawn_failures_total",
	"DeadIdle":             "claudepool_dead_idle_total",
	"Reuses":               "claudepool_reuses_total",
	"Retired":              "claudepool_retired_total",
	"UsesPerProcess.Count": "claudepool_uses_per_process",
	"UsesPerProcess.P50":   "claudepool_uses_per_process",
	"UsesPerProcess.P90":   "claudepool_uses_per_process",
	"UsesPerProcess.P99":   "claudepool_uses_per_process",
	"UsesPerProcess.Max":   "claudepool_uses_per_process",
	"MalformedLines":       "claudepool_malformed_lines_total",

	"Conversations.Continued":    "claudepool_conversations_total",
	"Conversations.MissNotHeld":  "claudepool_conversations_total",
	"Conversations.MissSettings": "claudepool_conversations_total",
	"Conversations.Expired":      "claudepool_holds_ended_total",
	"Conversations.GaveWay":      "claudepool_holds_ended_total",

	"Outcomes":             "claudepool_outcomes_total",
	"Tokens.Input":         "claudepool_tokens_total",
	"Tokens.Output":        "claudepool_tokens_total",
	"Tokens.CacheRead":     "claudepool_tokens_total",
	"Tokens.CacheCreation": "claudepool_tokens_total",
	"CostUSD":              "claudepool_cost_usd_total",

	"SpawnToReady":      "claudepool_spawn_to_ready_seconds",
	"Resets":            "claudepool_reset_duration_seconds",
	"Warm.Acquire":      "claudepool_acquire_duration_seconds",
	"Warm.FirstEvent":   "claudepool_first_event_seconds",
	"Warm.FirstText":    "claudepool_first_text_seconds",
	"Warm.Result":       "claudepool_result_seconds",
	"Warm.APIFirstByte": "claudepool_api_first_byte_seconds",
	"Warm.Overhead":     "claudepool_first_text_overhead_seconds",
	"Cold.Acquire":      "claudepool_acquire_duration_seconds",
	"Cold.FirstEvent":   "claudepool_first_event_seconds",
	"Cold.FirstText":    "claudepool_first_text_seconds",
	"Cold.Result":       "claudepool_result_seconds",
	"Cold.APIFirstByte": "claudepool_api_first_byte_seconds",
	"Cold.Overhead":     "claudepool_first_text_overhead_seconds",

	"Health.LastSpawnError":           "claudepool_spawn_failing",
	"Health.ConsecutiveSpawnFailures": "claudepool_consecutive_spawn_failures",
	"Health.ConsecutiveAuthFailures":  "claudepool_consecutive_auth_failures",
}

// Collector is a prometheus.Collector over a claudepool.Pool.
type Collector struct {
	stats func() claudepool.Stats

	acquires, outcomes, spawnFailures, reuses, retired   *prometheus.Desc
	tokens, cost, overloaded, slotTimeouts, deadIdle     *prometheus.Desc
	deadAtClaim, promptCold, malformed                   *prometheus.Desc
	conversations, holdsEnded, usesPerProcess            *prometheus.Desc
	waiting, processes, live, spareTarget, held, idleRSS *prometheus.Desc
	idlePrivate, idlePss                                 *prometheus.Desc
	spawnFailing, spawnStreak, authStreak                *prometheus.Desc
	acquireHist, spawnHist, firstEvent, firstText        *prometheus.Desc
	resultHist, resetHist, apiFirstByte, overhead        *prometheus.Desc
}

// NewCollector returns a Collector of pool's metrics; constLabels (may be
// nil) are added to every metric, e.g. {"pool": "chat"} to tell pools
// apart.
func NewCollector(pool *claudepool.Pool, constLabels prometheus.Labels) *Collector {
	return newCollector(pool.Stats, constLabels)
}

// newCollector returns a Collector of the snapshots stats returns.
func newCollector(stats func() claudepool.Stats, constLabels prometheus.Labels) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("claudepool_"+name, help, labels, constLabels)
	}
	return &Collector{
		stats:          stats,
		acquires:       d("acquires_total", "Processes acquired for requests, by kind: warm (ready in the pool) or cold (spawned for the request).", "kind"),
		outcomes:       d("outcomes_total", "Streams that ended, by outcome (ok, result_error, exit, line_too_long, not_ready, canceled, deadline, closed, stream_closed, other).", "kind"),
		spawnFailures:  d("spawn_failures_total", "Spawns that failed to start or to become ready."),
		reuses:         d("reuses_total", "Chats served by a process that had served one before."),
		retired:        d("retired_total", "Processes the pool retired, by reason.", "reason"),
		tokens:         d("tokens_total", "Tokens in the results of all streams, by type (input, output, cache_read, cache_creation).", "type"),
		cost:           d("cost_usd_total", "Sum of the CLI's cost estimates (total_cost_usd) of all streams, in US dollars."),
		overloaded:     d("overloaded_total", "Callers turned away with ErrOverloaded (MaxWaiting, MaxWait)."),
		slotTimeouts:   d("slot_timeouts_total", "Acquires that gave up waiting for a MaxProcs slot."),
		deadIdle:       d("dead_idle_total", "Warm processes that exited while idle in the pool."),
		deadAtClaim:    d("dead_at_claim_total", "Processes found dead when a chat began with them."),
		promptCold:     d("prompt_cold_total", "Requests served cold because they brought a system prompt other than the pool's."),
		malformed:      d("malformed_lines_total", "Stdout lines of the CLI that were not JSON and were skipped."),
		conversations:  d("conversations_total", "Requests that could continue a held conversation, by result: continued, or missed because no process held it (miss_not_held) or one held it with another prompt or model (miss_settings).", "result"),
		holdsEnded:     d("holds_ended_total", "Held conversations the pool reset, by reason: expired (HoldConversations) or gave_way (for another chat or a spare).", "reason"),
		usesPerProcess: d("uses_per_process", "Chats served by each retired process, over the pool's life, by stat: count (processes), p50, p90, p99 (within 12.5%) and max.", "stat"),
		waiting:        d("waiting_callers", "Callers waiting for a MaxProcs slot."),
		processes:      d("processes", "Processes by state: idle (ready), busy (serving a chat), starting (being spawned), resetting (between chats).", "state"),
		live:           d("live_processes", "Processes not yet reaped, in any state, retiring ones included."),
		spareTarget:    d("spare_target", "Idle spares the refill aims for (Size, or the recent demand with SpareDecay)."),
		held:           d("held_conversations", "Idle processes holding the conversation of their last chat."),
		idleRSS:        d("idle_rss_bytes", "Resident memory of the idle processes, as read after their last reset."),
		idlePrivate:    d("idle_private_bytes", "Private memory (Private_Dirty) of the idle processes, as read after their last reset: what they cost the machine."),
		idlePss:        d("idle_pss_bytes", "Proportional set size of the idle processes, as read after their last reset."),
		spawnFailing:   d("spawn_failing", "1 when the last spawn failed (its error is in the Stats JSON), 0 when it succeeded."),
		spawnStreak:    d("consecutive_spawn_failures", "Spawns that failed since the last successful one."),
		authStreak:     d("consecutive_auth_failures", "Results in a row refused for authentication (API status 401 or 403)."),
		acquireHist:    d("acquire_duration_seconds", "Time an acquire took, by kind (warm, cold).", "kind"),
		spawnHist:      d("spawn_to_ready_seconds", "Time a warm process took from spawn to ready."),
		firstEvent:     d("first_event_seconds", "Time from StreamChat to the first event, by kind of acquire (warm, cold).", "kind"),
		firstText:      d("first_text_seconds", "Time from StreamChat to the first text, by kind of acquire (warm, cold).", "kind"),
		resultHist:     d("result_seconds", "Time from StreamChat to the result, by kind of acquire (warm, cold).", "kind"),
		resetHist:      d("reset_duration_seconds", "Time a confirmed reset between chats took."),
		apiFirstByte:   d("api_first_byte_seconds", "The API's own time to first byte for a chat's first API call, measured at the pool's gateway (chats through the gateway only), by kind of acquire (warm, cold).", "kind"),
		overhead:       d("first_text_overhead_seconds", "Time to the first text minus the API's time to first byte: what a chat spent outside the API (chats through the gateway only), by kind of acquire (warm, cold).", "kind"),
	}
}

func (c *Collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{c.acquires, c.outcomes, c.spawnFailures, c.reuses, c.retired,
		c.tokens, c.cost, c.overloaded, c.slotTimeouts, c.deadIdle, c.deadAtClaim, c.promptCold,
		c.malformed, c.conversations, c.holdsEnded, c.usesPerProcess,
		c.waiting, c.processes, c.live, c.spareTarget, c.held, c.idleRSS, c.idlePrivate, c.idlePss,
		c.spawnFailing, c.spawnStreak, c.authStreak, c.acquireHist, c.spawnHist, c.firstEvent, c.firstText,
		c.resultHist, c.resetHist, c.apiFirstByte, c.overhead}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one Stats snapshot per call.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
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

	// Processes now.
	gauge(c.processes, float64(st.Idle), "idle")
	gauge(c.processes, float64(st.Busy), "busy")
	gauge(c.processes, float64(st.Starting), "starting")
	gauge(c.processes, float64(st.Resetting), "resetting")
	gauge(c.held, float64(st.Held))
	gauge(c.live, float64(st.Live))
	gauge(c.idleRSS, float64(st.IdleRSS))
	gauge(c.idlePrivate, float64(st.IdlePrivate))
	gauge(c.idlePss, float64(st.IdlePss))
	gauge(c.spareTarget, float64(st.SpareTarget))
	gauge(c.waiting, float64(st.Waiting))

	// Acquires.
	counter(c.acquires, float64(st.WarmAcquires), "warm")
	counter(c.acquires, float64(st.ColdAcquires), "cold")
	counter(c.promptCold, float64(st.PromptCold))
	counter(c.slotTimeouts, float64(st.SlotTimeouts))
	counter(c.overloaded, float64(st.Overloaded))
	counter(c.deadAtClaim, float64(st.DeadAtClaim))

	// Processes' lives.
	counter(c.spawnFailures, float64(st.SpawnFailures))
	counter(c.deadIdle, float64(st.DeadIdle))
	counter(c.reuses, float64(st.Reuses))
	for _, r := range claudepool.RetireReasons() {
		counter(c.retired, float64(st.Retired[r]), string(r))
	}
	u := st.UsesPerProcess
	gauge(c.usesPerProcess, float64(u.Count), "count")
	gauge(c.usesPerProcess, float64(u.P50), "p50")
	gauge(c.usesPerProcess, float64(u.P90), "p90")
	gauge(c.usesPerProcess, float64(u.P99), "p99")
	gauge(c.usesPerProcess, float64(u.Max), "max")
	counter(c.malformed, float64(st.MalformedLines))

	// Held conversations.
	conv := st.Conversations
	counter(c.conversations, float64(conv.Continued), "continued")
	counter(c.conversations, float64(conv.MissNotHeld), "miss_not_held")
	counter(c.conversations, float64(conv.MissSettings), "miss_settings")
	counter(c.holdsEnded, float64(conv.Expired), "expired")
	counter(c.holdsEnded, float64(conv.GaveWay), "gave_way")

	// Streams.
	for _, o := range claudepool.Outcomes() {
		counter(c.outcomes, float64(st.Outcomes[o]), string(o))
	}
	t := st.Tokens
	counter(c.tokens, float64(t.Input), "input")
	counter(c.tokens, float64(t.Output), "output")
	counter(c.tokens, float64(t.CacheRead), "cache_read")
	counter(c.tokens, float64(t.CacheCreation), "cache_creation")
	counter(c.cost, st.CostUSD)

	// Latencies.
	hist(c.spawnHist, st.SpawnToReady.Histogram)
	hist(c.resetHist, st.Resets.Histogram)
	for _, k := range []struct {
		phase claudepool.PhaseLatencies
		name  string
	}{{st.Warm, "warm"}, {st.Cold, "cold"}} {
		hist(c.acquireHist, k.phase.Acquire.Histogram, k.name)
		hist(c.firstEvent, k.phase.FirstEvent.Histogram, k.name)
		hist(c.firstText, k.phase.FirstText.Histogram, k.name)
		hist(c.resultHist, k.phase.Result.Histogram, k.name)
		hist(c.apiFirstByte, k.phase.APIFirstByte.Histogram, k.name)
		hist(c.overhead, k.phase.Overhead.Histogram, k.name)
	}

	// Health.
	failing := 0.0
	if st.Health.LastSpawnError != "" {
		failing = 1
	}
	gauge(c.spawnFailing, failing)
	gauge(c.spawnStreak, float64(st.Health.ConsecutiveSpawnFailures))
	gauge(c.authStreak, float64(st.Health.ConsecutiveAuthFailures))
}
