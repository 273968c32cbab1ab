//go:build linux

package claudepool

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
)

// BenchmarkE2EMemorySettings: what the CLI's runtime settings do to a
// process's memory, and what they cost a chat.
//
// The CLI 2.1.330 is a Bun 1.4 executable. Its runtime reads settings from
// the environment: BUN_OPTIONS (Bun's own flags: --smol, a smaller heap
// collected more often), BUN_GARBAGE_COLLECTOR_LEVEL (2 collects most
// often), mimalloc's MIMALLOC_PURGE_DELAY (0 gives freed memory back to
// the system at once), and JavaScriptCore's options as BUN_JSC_<option>
// (forceRAMSize, the memory its collector plans for; useJIT=0, the
// interpreter alone). Each setting gets a pool of its own (Size 2,
// MaxProcs 2, loadConfig's prompt, model and partial messages, through
// Config.Env), all against one mock
// whose first byte comes after benchFirstByteDelay and whose reply is 300
// tokens, one text delta each, sent at once: the CLI's work on a reply's
// stream shows in its CPU and its last text.
//
// One op is one chat on each pool in turn, each after its pool has settled
// (its reset done). Metrics, per setting S:
//
//   - S-idle-private-MiB and S-idle-pss-MiB: the mean private memory
//     (Private_Dirty) and Pss of the pool's processes once
//     ready (primed and reset), before any chat, from smaps_rollup;
//   - S-private-MiB and S-pss-MiB: the same after the chats, each
//     process reset;
//   - S-overhead-ms: first text minus the API's first byte, p50;
//   - S-stream-ms: last event minus first text, p50 (the 300 deltas);
//   - S-cpu-ms/chat: the processes' CPU (/proc/PID/stat, reaped children
//     included) over the chats and their resets, per chat;
//   - S-private-vs-default: S's private memory after the chats over the
//     default's.
func BenchmarkE2EMemorySettings(b *testing.B) {
	settings := []struct {
		name string
		env  []string
	}{
		{"default", nil},
		{"smol", []string{"BUN_OPTIONS=--smol"}},
		{"purge0", []string{"MIMALLOC_PURGE_DELAY=0"}},
		{"gc2", []string{"BUN_GARBAGE_COLLECTOR_LEVEL=2"}},
		{"ram128", []string{"BUN_JSC_forceRAMSize=134217728"}},
		{"nojit", []string{"BUN_JSC_useJIT=0"}},
	}
	const replyTokens = 300
	e := newE2E(b, claudepooltest.Config{
		FirstByteDelay: benchFirstByteDelay,
		Reply: func(claudepooltest.Request) claudepooltest.Reply {
			return claudepooltest.Reply{Text: streamReplyText(replyTokens, 1), Chunks: replyTokens}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	type run struct {
		pool        *Pool
		adapter     *Adapter
		idle, after []memUsage
		cpuBefore   time.Duration
		chats       []benchChat
		stream      []time.Duration
	}
	runs := make([]*run, len(settings))
	for i, s := range settings {
		cfg := loadConfig()
		cfg.MaxProcs = cfg.Size
		cfg.Env = s.env
		p, _ := e.pool(b, cfg)
		runs[i] = &run{pool: p, adapter: NewAdapter(p)}
	}
	for _, r := range runs {
		if err := r.pool.WaitReady(ctx); err != nil {
			b.Fatal(err)
		}
		quiet(b, r.pool)
	}
	for _, r := range runs {
		r.idle = poolMemory(r.pool)
		r.cpuBefore = poolProcsCPU(r.pool)
	}
	pids := func(r *run) string { return fmt.Sprint(slices.Sorted(slices.Values(poolPIDs(r.pool)))) }
	startPIDs := make([]string, len(runs))
	for i, r := range runs {
		startPIDs[i] = pids(r)
	}

	b.ResetTimer()
	for range b.N {
		for _, r := range runs {
			c := runBenchChat(ctx, r.adapter, "hello", "")
			if c.err != nil {
				b.Fatal(c.err)
			}
			r.chats = append(r.chats, c)
			r.stream = append(r.stream, c.lat.Result-c.lat.FirstText)
			quiet(b, r.pool)
		}
	}
	b.StopTimer()

	var def float64
	for i, r := range runs {
		if pids(r) != startPIDs[i] {
			b.Fatalf("%s: the pool replaced processes during the run (%s, then %s): the CPU count would miss them",
				settings[i].name, startPIDs[i], pids(r))
		}
		cpu := (poolProcsCPU(r.pool) - r.cpuBefore) / time.Duration(len(r.chats))
		r.after = poolMemory(r.pool)
		api, err := matchChats(e.mock.ChatRequests(), r.chats)
		if err != nil {
			b.Fatal(err)
		}
		var over []time.Duration
		for _, a := range api {
			over = append(over, a.overhead)
		}
		name := settings[i].name
		idlePriv, idlePss := meanMemory(r.idle)
		priv, pss := meanMemory(r.after)
		if i == 0 {
			def = priv
		}
		b.ReportMetric(idlePriv, name+"-idle-private-MiB")
		b.ReportMetric(idlePss, name+"-idle-pss-MiB")
		b.ReportMetric(priv, name+"-private-MiB")
		b.ReportMetric(pss, name+"-pss-MiB")
		b.ReportMetric(ms(quantile(over, 0.50)), name+"-overhead-ms")
		b.ReportMetric(ms(quantile(r.stream, 0.50)), name+"-stream-ms")
		b.ReportMetric(ms(cpu), name+"-cpu-ms/chat")
		if i > 0 {
			b.ReportMetric(priv/def, name+"-private-vs-default")
		}
		fmt.Fprintf(os.Stderr, "E2EMemorySettings %-12s %-40s idle private %.1f MiB, Pss %.1f MiB; after %d chats private %.1f MiB, Pss %.1f MiB; overhead p50 %v, stream p50 %v, CPU %v a chat\n",
			name, strings.Join(settings[i].env, " "), idlePriv, idlePss, len(r.chats), priv, pss,
			rnd(quantile(over, 0.50)), rnd(quantile(r.stream, 0.50)), rnd(cpu))
	}
}

// poolMemory reads the memory of each of p's live processes.
func poolMemory(p *Pool) []memUsage { return procsMemory(poolPIDs(p)) }

// procsMemory reads the memory of processes pids (processMemory), leaving
// out those it cannot read.
func procsMemory(pids []int) []memUsage {
	var out []memUsage
	for _, pid := range pids {
		if m := processMemory(pid); m.pss > 0 {
			out = append(out, m)
		}
	}
	return out
}

// meanMemory returns the mean private memory and Pss of ms, in MiB.
func meanMemory(ms []memUsage) (private, pss float64) {
	if len(ms) == 0 {
		return 0, 0
	}
	for _, m := range ms {
		private += mib(m.private)
		pss += mib(m.pss)
	}
	return private / float64(len(ms)), pss / float64(len(ms))
}

// BenchmarkE2EProcessGrowth: what one process of the raw CLI holds, and
// what a chat costs it, as it serves chats one after another (startRaw's
// flags and prompt, /clear after each chat, a mock answering at once).
// One op is one chat; use -benchtime 600x. It reports, for the chats in
// each stretch of 100 (the first 10 on their own), the CLI's CPU a chat,
// and at the end of each stretch the process's private memory and RSS
// (smaps_rollup), on stderr; the metrics are the private memory after the
// first chat and after the last, and the CPU a chat over all of them.
func BenchmarkE2EProcessGrowth(b *testing.B) {
	e := newE2E(b, claudepooltest.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	procs, stop := startRaw(b, ctx, e, 1, loadConfig())
	defer stop()
	p := procs[0]
	pids := []int{p.pid}
	start := procsCPU(pids)
	last, lastAt := start, 0
	var first memUsage
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		c, session, _ := rawChat(ctx, p, "hello", time.Now())
		if c.err != nil {
			b.Fatal(c.err)
		}
		if _, _, err := p.clearConversation(ctx, session); err != nil {
			b.Fatal(err)
		}
		if i == 1 {
			first = processMemory(p.pid)
		}
		if i == 10 || i%100 == 0 || i == b.N {
			m := processMemory(p.pid)
			now := procsCPU(pids)
			fmt.Fprintf(os.Stderr, "E2EProcessGrowth after chat %d: private %.0f MiB, RSS %.0f MiB; CLI CPU %v a chat over chats %d-%d\n",
				i, mib(m.private), mib(m.rss), rnd((now-last)/time.Duration(i-lastAt)), lastAt+1, i)
			last, lastAt = now, i
		}
	}
	b.StopTimer()
	end := processMemory(p.pid)
	b.ReportMetric(mib(first.private), "private-after-first-MiB")
	b.ReportMetric(mib(end.private), "private-after-last-MiB")
	b.ReportMetric(ms((procsCPU(pids)-start)/time.Duration(b.N)), "cli-cpu-ms/chat")
}
