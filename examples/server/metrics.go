package main

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"

	"github.com/claudepool/claudepool"
)

// metrics writes the pool's Stats in the Prometheus text exposition format
// (version 0.0.4), by hand, so that the example needs no dependency.
// Latencies are quantile gauges: the pool keeps histograms of its own, not
// Prometheus summaries, and quantile="1" is the exact maximum.
func (s *server) metrics(w http.ResponseWriter, _ *http.Request) {
	st := s.pool.Stats()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m := bufio.NewWriter(w)
	defer m.Flush()

	gauge := func(name, help string, v int) {
		fmt.Fprintf(m, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	gauge("claudepool_idle_processes", "Warm processes ready to be acquired.", st.Idle())
	gauge("claudepool_busy_processes", "Acquired processes that have not exited yet.", st.Busy())
	gauge("claudepool_starting_processes", "Warm processes being spawned or probed.", st.Starting())
	gauge("claudepool_resetting_processes", "Processes whose conversation is being cleared.", st.Resetting())
	gauge("claudepool_live_processes", "Processes not yet reaped.", st.Live())

	fmt.Fprintf(m, "# HELP claudepool_acquires_total Acquires, by whether a ready process served them.\n"+
		"# TYPE claudepool_acquires_total counter\n"+
		"claudepool_acquires_total{kind=\"warm\"} %d\nclaudepool_acquires_total{kind=\"cold\"} %d\n",
		st.WarmAcquires(), st.ColdAcquires())
	counter := func(name, help string, v int64) {
		fmt.Fprintf(m, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	counter("claudepool_spawn_failures_total", "Spawns that failed to start or to become ready.", st.SpawnFailures())
	counter("claudepool_reuses_total", "Chats served by a process that had served one before.", st.Reuses())
	fmt.Fprintf(m, "# HELP claudepool_retired_total Processes the pool retired, by reason.\n# TYPE claudepool_retired_total counter\n")
	for _, r := range []claudepool.RetireReason{claudepool.RetireMaxUses, claudepool.RetireMemory,
		claudepool.RetireResetFailed, claudepool.RetireUnclean, claudepool.RetireIdle,
		claudepool.RetireEvicted, claudepool.RetireSurplus, claudepool.RetireClosed} {
		fmt.Fprintf(m, "claudepool_retired_total{reason=%q} %d\n", r, st.Retired(r))
	}
	counter("claudepool_dead_idle_total", "Warm processes that exited while idle.", st.DeadIdle())
	counter("claudepool_slot_timeouts_total", "Acquires that gave up waiting for a MaxProcs slot.", st.SlotTimeouts())
	counter("claudepool_prompt_cold_total", "Requests served cold because their system prompt was not the pool's.", st.PromptCold())
	counter("claudepool_malformed_lines_total", "CLI output lines that were not JSON.", st.MalformedLines())

	// latency writes one family of quantile gauges, one series per kind.
	latency := func(name, help string, kinds []string, sums ...claudepool.LatencySummary) {
		fmt.Fprintf(m, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
		for i, l := range sums {
			label := ""
			if kinds != nil {
				label = `kind="` + kinds[i] + `",`
			}
			for _, q := range []struct {
				q string
				v float64
			}{{"0.5", l.P50.Seconds()}, {"0.9", l.P90.Seconds()}, {"0.99", l.P99.Seconds()}, {"1", l.Max.Seconds()}} {
				fmt.Fprintf(m, "%s{%squantile=%q} %s\n", name, label, q.q, strconv.FormatFloat(q.v, 'g', 9, 64))
			}
		}
	}
	warmCold := []string{"warm", "cold"}
	latency("claudepool_acquire_wait_seconds", "Time to take a process.", warmCold,
		st.WarmAcquireWait(), st.ColdAcquireWait())
	latency("claudepool_spawn_to_ready_seconds", "Start-up time of a warm process, hidden by the pool.", nil,
		st.SpawnToReady())
	latency("claudepool_first_event_seconds", "Time from StreamChat to the first event.", warmCold,
		st.FirstEvent(true), st.FirstEvent(false))
	latency("claudepool_first_text_seconds", "Time from StreamChat to the first text.", warmCold,
		st.FirstText(true), st.FirstText(false))
	latency("claudepool_result_seconds", "Time from StreamChat to the result.", warmCold,
		st.ResultTime(true), st.ResultTime(false))
}
