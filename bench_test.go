package claudepool

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
)

// quantile returns the q-quantile (0..1) of samples by rank; it sorts them.
func quantile(samples []time.Duration, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	i := int(q*float64(len(samples)-1) + 0.5)
	return samples[i]
}

func mean(samples []time.Duration) time.Duration {
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	return sum / time.Duration(max(len(samples), 1))
}

func benchPool(b *testing.B, cfg Config, env ...string) *Pool {
	b.Helper()
	cfg.Command = fakeCLI
	cfg.StopGrace = 200 * time.Millisecond
	cfg.Env = append(cfg.Env, env...)
	p, err := NewPool(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			b.Error(err)
		}
	})
	return p
}

// BenchmarkAcquire measures Acquire itself, as timed by the pool with
// time.Since: ns/acquire (mean), p50-ns/acquire and p99-ns/acquire. One
// op is a whole cycle (wait until a process is ready, acquire it, stop
// it), so ns/op is dominated by the fake's start-up and is not the
// acquire cost. usable-p50-ns adds the first control request round trip:
// the time until the process can answer, which for a cold process
// includes the CLI's start-up.
func BenchmarkAcquire(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"warm", 1}, {"cold", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			p := benchPool(b, Config{Size: bc.size})
			waits := make([]time.Duration, 0, b.N)
			usable := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := p.WaitReady(ctx); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				proc, err := p.Acquire(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if proc.AcquireInfo().Warm != (bc.size > 0) {
					b.Fatalf("acquire was warm=%v", proc.AcquireInfo().Warm)
				}
				waits = append(waits, proc.AcquireInfo().Wait)
				if _, err := proc.control(ctx, map[string]any{"subtype": "mcp_status"}); err != nil {
					b.Fatal(err)
				}
				usable = append(usable, time.Since(start))
				if err := proc.Stop(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(mean(waits)), "ns/acquire")
			b.ReportMetric(float64(quantile(waits, 0.50)), "p50-ns/acquire")
			b.ReportMetric(float64(quantile(waits, 0.99)), "p99-ns/acquire")
			b.ReportMetric(float64(quantile(usable, 0.50)), "usable-p50-ns")
		})
	}
}

// compareChats runs b.N rounds of one cold and one warm chat, so that
// both medians come from the same run, and reports the median times to
// first event and to result, and their warm/cold ratios. Before each
// round it waits (off the clock) until warmPool has a ready process.
func compareChats(b *testing.B, warmPool, coldPool *Pool) (warm, cold StreamLatency) {
	ctx := context.Background()
	req := Request{Messages: []Message{{Role: RoleUser, Content: "hello"}}}
	chat := func(a *Adapter) StreamLatency {
		s, err := a.StreamChat(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		for s.Next() {
		}
		if err := s.Err(); err != nil {
			b.Fatal(err)
		}
		return s.Latency()
	}
	wa, ca := NewAdapter(warmPool), NewAdapter(coldPool)
	var wf, cf, wr, cr []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := warmPool.WaitReady(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		l := chat(ca)
		cf, cr = append(cf, l.FirstEvent), append(cr, l.Result)
		l = chat(wa)
		wf, wr = append(wf, l.FirstEvent), append(wr, l.Result)
	}
	b.StopTimer()
	warm = StreamLatency{FirstEvent: quantile(wf, 0.5), Result: quantile(wr, 0.5)}
	cold = StreamLatency{FirstEvent: quantile(cf, 0.5), Result: quantile(cr, 0.5)}
	b.ReportMetric(float64(warm.FirstEvent), "warm-first-event-ns")
	b.ReportMetric(float64(cold.FirstEvent), "cold-first-event-ns")
	b.ReportMetric(float64(warm.Result), "warm-result-ns")
	b.ReportMetric(float64(cold.Result), "cold-result-ns")
	b.ReportMetric(float64(warm.FirstEvent)/float64(cold.FirstEvent), "first-event-warm/cold")
	b.ReportMetric(float64(warm.Result)/float64(cold.Result), "result-warm/cold")
	return warm, cold
}

// BenchmarkStreamChat compares warm and cold chats against a fake CLI
// with a realistic 600 ms start-up. Each chat has a process of its own
// (MaxUses 1): a warm one started ahead of time, or a cold one spawned
// for it.
func BenchmarkStreamChat(b *testing.B) {
	const startup = fakecli.EnvStartupDelay + "=600ms"
	compareChats(b, benchPool(b, Config{Size: 1, MaxUses: 1}, startup), benchPool(b, Config{MaxUses: 1}, startup))
}
