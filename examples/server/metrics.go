package main

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"

	"github.com/claudepool/claudepool"
)

// metrics writes the pool's Stats in the Prometheus text exposition format
// (version 0.0.4), by hand, so that the example needs no dependency. The
// families and their names are those of the prom module's Collector
// (github.com/claudepool/claudepool/prom), so that dashboards and alerts
// work with either: every field of Stats, as counters, gauges, and
// latencies as real histograms (cumulative buckets, _sum and _count) that
// can be aggregated across replicas. The prom module's tests check that
// this file names each of its families.
func (s *server) metrics(w http.ResponseWriter, _ *http.Request) {
	st := s.pool.Stats()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m := bufio.NewWriter(w)
	defer m.Flush()

	head := func(name, typ, help string) {
		fmt.Fprintf(m, "# HELP claudepool_%s %s\n# TYPE claudepool_%s %s\n", name, help, name, typ)
	}
	sample := func(name, labels string, v float64) {
		if labels != "" {
			labels = "{" + labels + "}"
		}
		fmt.Fprintf(m, "claudepool_%s%s %s\n", name, labels, strconv.FormatFloat(v, 'g', -1, 64))
	}
	one := func(name, typ, help string, v float64) {
		head(name, typ, help)
		sample(name, "", v)
	}
	// labelled writes one family with a series per label value.
	labelled := func(name, typ, help, label string, series ...labelValue) {
		head(name, typ, help)
		for _, x := range series {
			sample(name, label+"="+strconv.Quote(x.label), x.v)
		}
	}

	// Processes now.
	labelled("processes", "gauge", "Processes by state: idle (ready), busy (serving a chat), starting (being spawned), resetting (between chats).", "state",
		lv("idle", st.Idle), lv("busy", st.Busy), lv("starting", st.Starting), lv("resetting", st.Resetting))
	one("held_conversations", "gauge", "Idle processes holding the conversation of their last chat.", float64(st.Held))
	one("live_processes", "gauge", "Processes not yet reaped, in any state, retiring ones included.", float64(st.Live))
	one("idle_rss_bytes", "gauge", "Resident memory of the idle processes, as read after their last reset.", float64(st.IdleRSS))
	one("idle_private_bytes", "gauge", "Private memory (Private_Dirty) of the idle processes, as read after their last reset: what they cost the machine.", float64(st.IdlePrivate))
	one("idle_pss_bytes", "gauge", "Proportional set size of the idle processes, as read after their last reset.", float64(st.IdlePss))
	one("spare_target", "gauge", "Idle spares the refill aims for (Size, or the recent demand with SpareDecay).", float64(st.SpareTarget))
	one("waiting_callers", "gauge", "Callers waiting for a MaxProcs slot.", float64(st.Waiting))

	// Acquires.
	labelled("acquires_total", "counter", "Processes acquired for requests, by kind: warm (ready in the pool) or cold (spawned for the request).", "kind",
		lv("warm", st.WarmAcquires), lv("cold", st.ColdAcquires))
	one("prompt_cold_total", "counter", "Requests served cold because they brought a system prompt other than the pool's.", float64(st.PromptCold))
	one("slot_timeouts_total", "counter", "Acquires that gave up waiting for a MaxProcs slot.", float64(st.SlotTimeouts))
	one("overloaded_total", "counter", "Callers turned away with ErrOverloaded (MaxWaiting, MaxWait).", float64(st.Overloaded))
	one("dead_at_claim_total", "counter", "Processes found dead when a chat began with them.", float64(st.DeadAtClaim))

	// Processes' lives.
	one("spawn_failures_total", "counter", "Spawns that failed to start or to become ready.", float64(st.SpawnFailures))
	one("dead_idle_total", "counter", "Warm processes that exited while idle in the pool.", float64(st.DeadIdle))
	one("reuses_total", "counter", "Chats served by a process that had served one before.", float64(st.Reuses))
	var retired []labelValue
	for _, r := range claudepool.RetireReasons() {
		retired = append(retired, lv(string(r), st.Retired[r]))
	}
	labelled("retired_total", "counter", "Processes the pool retired, by reason.", "reason", retired...)
	u := st.UsesPerProcess
	labelled("uses_per_process", "gauge", "Chats served by each retired process, over the pool's life, by stat: count (processes), p50, p90, p99 (within 12.5%) and max.", "stat",
		lv("count", u.Count), lv("p50", u.P50), lv("p90", u.P90), lv("p99", u.P99), lv("max", u.Max))
	one("malformed_lines_total", "counter", "Stdout lines of the CLI that were not JSON and were skipped.", float64(st.MalformedLines))

	// Held conversations.
	c := st.Conversations
	labelled("conversations_total", "counter", "Requests that could continue a held conversation, by result: continued, or missed because no process held it (miss_not_held) or one held it with another prompt or model (miss_settings).", "result",
		lv("continued", c.Continued), lv("miss_not_held", c.MissNotHeld), lv("miss_settings", c.MissSettings))
	labelled("holds_ended_total", "counter", "Held conversations the pool reset, by reason: expired (HoldConversations) or gave_way (for another chat or a spare).", "reason",
		lv("expired", c.Expired), lv("gave_way", c.GaveWay))

	// Streams.
	var outcomes []labelValue
	for _, o := range claudepool.Outcomes() {
		outcomes = append(outcomes, lv(string(o), st.Outcomes[o]))
	}
	labelled("outcomes_total", "counter", "Streams that ended, by outcome.", "kind", outcomes...)
	t := st.Tokens
	labelled("tokens_total", "counter", "Tokens in the results of all streams, by type.", "type",
		lv("input", t.Input), lv("output", t.Output), lv("cache_read", t.CacheRead), lv("cache_creation", t.CacheCreation))
	one("cost_usd_total", "counter", "Sum of the CLI's cost estimates (total_cost_usd) of all streams, in US dollars.", st.CostUSD)

	// Latencies: one histogram family, one series per kind ("" for none).
	hist := func(name, help string, kinds []string, hs ...claudepool.Histogram) {
		head(name, "histogram", help)
		for i, k := range kinds {
			label := ""
			if k != "" {
				label = `kind="` + k + `",`
			}
			v := hs[i]
			for _, b := range v.Buckets {
				sample(name+"_bucket", label+`le="`+strconv.FormatFloat(b.UpperBound.Seconds(), 'g', -1, 64)+`"`, float64(b.Count))
			}
			sample(name+"_bucket", label+`le="+Inf"`, float64(v.Count))
			label = trimComma(label)
			sample(name+"_sum", label, v.Sum.Seconds())
			sample(name+"_count", label, float64(v.Count))
		}
	}
	none, warmCold := []string{""}, []string{"warm", "cold"}
	hist("spawn_to_ready_seconds", "Time a warm process took from spawn to ready.", none, st.SpawnToReady.Histogram)
	hist("reset_duration_seconds", "Time a confirmed reset between chats took.", none, st.Resets.Histogram)
	hist("acquire_duration_seconds", "Time an acquire took, by kind (warm, cold).", warmCold,
		st.Warm.Acquire.Histogram, st.Cold.Acquire.Histogram)
	hist("first_event_seconds", "Time from StreamChat to the first event, by kind of acquire (warm, cold).", warmCold,
		st.Warm.FirstEvent.Histogram, st.Cold.FirstEvent.Histogram)
	hist("first_text_seconds", "Time from StreamChat to the first text, by kind of acquire (warm, cold).", warmCold,
		st.Warm.FirstText.Histogram, st.Cold.FirstText.Histogram)
	hist("result_seconds", "Time from StreamChat to the result, by kind of acquire (warm, cold).", warmCold,
		st.Warm.Result.Histogram, st.Cold.Result.Histogram)
	hist("api_first_byte_seconds", "The API's own time to first byte for a chat's first API call, measured at the pool's gateway (chats through the gateway only), by kind of acquire (warm, cold).", warmCold,
		st.Warm.APIFirstByte.Histogram, st.Cold.APIFirstByte.Histogram)
	hist("first_text_overhead_seconds", "Time to the first text minus the API's time to first byte: what a chat spent outside the API (chats through the gateway only), by kind of acquire (warm, cold).", warmCold,
		st.Warm.Overhead.Histogram, st.Cold.Overhead.Histogram)

	// Health.
	failing := 0.0
	if st.Health.LastSpawnError != "" {
		failing = 1
	}
	one("spawn_failing", "gauge", "1 when the last spawn failed (its error is on /stats), 0 when it succeeded.", failing)
	one("consecutive_spawn_failures", "gauge", "Spawns that failed since the last successful one.", float64(st.Health.ConsecutiveSpawnFailures))
	one("consecutive_auth_failures", "gauge", "Results in a row refused for authentication (API status 401 or 403).", float64(st.Health.ConsecutiveAuthFailures))
}

// labelValue is one series of a labelled family.
type labelValue struct {
	label string
	v     float64
}

func lv[N int | int64](label string, v N) labelValue { return labelValue{label, float64(v)} }

func trimComma(s string) string {
	if n := len(s); n > 0 && s[n-1] == ',' {
		return s[:n-1]
	}
	return s
}
