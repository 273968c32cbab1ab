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
// work with either: counters, gauges, and latencies as real histograms
// (cumulative buckets, _sum and _count) that can be aggregated across
// replicas.
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
	labelled := func(name, typ, help, label string, values []string, v func(string) float64) {
		head(name, typ, help)
		for _, l := range values {
			sample(name, label+"="+strconv.Quote(l), v(l))
		}
	}
	warmCold := []string{"warm", "cold"}
	isWarm := func(k string) bool { return k == "warm" }

	labelled("acquires_total", "counter", "Processes acquired for requests, by kind: warm (ready in the pool) or cold (spawned for the request).",
		"kind", warmCold, func(k string) float64 {
			if isWarm(k) {
				return float64(st.WarmAcquires())
			}
			return float64(st.ColdAcquires())
		})
	var outcomes []string
	for _, o := range claudepool.Outcomes() {
		outcomes = append(outcomes, string(o))
	}
	labelled("outcomes_total", "counter", "Streams that ended, by outcome.", "kind", outcomes,
		func(o string) float64 { return float64(st.Outcomes(claudepool.Outcome(o))) })
	one("spawn_failures_total", "counter", "Spawns that failed to start or to become ready.", float64(st.SpawnFailures()))
	one("reuses_total", "counter", "Chats served by a process that had served one before.", float64(st.Reuses()))
	var reasons []string
	for _, r := range claudepool.RetireReasons() {
		reasons = append(reasons, string(r))
	}
	labelled("retired_total", "counter", "Processes the pool retired, by reason.", "reason", reasons,
		func(r string) float64 { return float64(st.Retired(claudepool.RetireReason(r))) })
	t := st.Tokens()
	tokens := map[string]int64{"input": t.Input, "output": t.Output, "cache_read": t.CacheRead, "cache_creation": t.CacheCreation}
	labelled("tokens_total", "counter", "Tokens in the results of all streams, by type.", "type",
		[]string{"input", "output", "cache_read", "cache_creation"}, func(k string) float64 { return float64(tokens[k]) })
	one("cost_usd_total", "counter", "Sum of the CLI's cost estimates (total_cost_usd) of all streams, in US dollars.", st.CostUSD())
	one("overloaded_total", "counter", "Callers turned away with ErrOverloaded (MaxWaiting, MaxWait).", float64(st.Overloaded()))
	one("slot_timeouts_total", "counter", "Acquires that gave up waiting for a MaxProcs slot.", float64(st.SlotTimeouts()))
	one("dead_idle_total", "counter", "Warm processes that exited while idle in the pool.", float64(st.DeadIdle()))
	one("dead_at_claim_total", "counter", "Processes found dead when a chat began with them.", float64(st.DeadAtClaim()))
	one("prompt_cold_total", "counter", "Requests served cold because they brought a system prompt other than the pool's.", float64(st.PromptCold()))
	one("malformed_lines_total", "counter", "Stdout lines of the CLI that were not JSON and were skipped.", float64(st.MalformedLines()))

	one("waiting_callers", "gauge", "Callers waiting for a MaxProcs slot.", float64(st.Waiting()))
	states := map[string]int{"idle": st.Idle(), "busy": st.Busy(), "starting": st.Starting(), "resetting": st.Resetting()}
	labelled("processes", "gauge", "Processes by state: idle (ready), busy (serving a chat), starting (being spawned), resetting (between chats).",
		"state", []string{"idle", "busy", "starting", "resetting"}, func(k string) float64 { return float64(states[k]) })
	one("live_processes", "gauge", "Processes not yet reaped, in any state, retiring ones included.", float64(st.Live()))
	one("spare_target", "gauge", "Idle spares the refill aims for (Size, or the recent demand with SpareDecay).", float64(st.SpareTarget()))
	one("held_conversations", "gauge", "Idle processes holding the conversation of their last chat.", float64(st.Held()))
	one("idle_rss_bytes", "gauge", "Resident memory of the idle processes, as read after their last reset.", float64(st.IdleRSS()))
	one("consecutive_spawn_failures", "gauge", "Spawns that failed since the last successful one.", float64(st.ConsecutiveSpawnFailures()))
	one("consecutive_auth_failures", "gauge", "Results in a row refused for authentication (API status 401 or 403).", float64(st.ConsecutiveAuthFailures()))

	// hist writes one histogram family, one series per label value.
	hist := func(name, help string, kinds []string, h func(string) claudepool.Histogram) {
		head(name, "histogram", help)
		for _, k := range kinds {
			label := ""
			if k != "" {
				label = `kind="` + k + `",`
			}
			v := h(k)
			for _, b := range v.Buckets {
				sample(name+"_bucket", label+`le="`+strconv.FormatFloat(b.UpperBound.Seconds(), 'g', -1, 64)+`"`, float64(b.Count))
			}
			sample(name+"_bucket", label+`le="+Inf"`, float64(v.Count))
			label = trimComma(label)
			sample(name+"_sum", label, v.Sum.Seconds())
			sample(name+"_count", label, float64(v.Count))
		}
	}
	hist("acquire_duration_seconds", "Time an acquire took, by kind (warm, cold).", warmCold,
		func(k string) claudepool.Histogram { return st.AcquireHistogram(isWarm(k)) })
	hist("spawn_to_ready_seconds", "Time a warm process took from spawn to ready.", []string{""},
		func(string) claudepool.Histogram { return st.SpawnToReadyHistogram() })
	hist("first_event_seconds", "Time from StreamChat to the first event, by kind of acquire (warm, cold).", warmCold,
		func(k string) claudepool.Histogram { return st.FirstEventHistogram(isWarm(k)) })
	hist("first_text_seconds", "Time from StreamChat to the first text, by kind of acquire (warm, cold).", warmCold,
		func(k string) claudepool.Histogram { return st.FirstTextHistogram(isWarm(k)) })
	hist("result_seconds", "Time from StreamChat to the result, by kind of acquire (warm, cold).", warmCold,
		func(k string) claudepool.Histogram { return st.ResultHistogram(isWarm(k)) })
	hist("reset_duration_seconds", "Time a confirmed reset between chats took.", []string{""},
		func(string) claudepool.Histogram { return st.ResetHistogram() })
}

func trimComma(s string) string {
	if n := len(s); n > 0 && s[n-1] == ',' {
		return s[:n-1]
	}
	return s
}
