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
				if _, err := proc.control(time.Now().Add(time.Minute), map[string]any{"subtype": "mcp_status"}); err != nil {
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

// BenchmarkStreamChat compares warm and cold chats against a fake CLI
// with a realistic 600 ms start-up. Each op runs one cold chat and one
// warm chat, so both medians come from the same run; warm/cold is the
// ratio of the median times to first event.
func BenchmarkStreamChat(b *testing.B) {
	const startup = 600 * time.Millisecond
	ctx := context.Background()
	warmPool := benchPool(b, Config{Size: 1}, fakecli.EnvStartupDelay+"="+startup.String())
	coldPool := benchPool(b, Config{}, fakecli.EnvStartupDelay+"="+startup.String())
	warm, cold := NewAdapter(warmPool), NewAdapter(coldPool)
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
	var warmFirst, coldFirst, warmResult, coldResult []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := warmPool.WaitReady(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		l := chat(warm)
		warmFirst, warmResult = append(warmFirst, l.FirstEvent), append(warmResult, l.Result)
		l = chat(cold)
		coldFirst, coldResult = append(coldFirst, l.FirstEvent), append(coldResult, l.Result)
	}
	b.StopTimer()
	w, c := quantile(warmFirst, 0.5), quantile(coldFirst, 0.5)
	b.ReportMetric(float64(w), "warm-first-event-ns")
	b.ReportMetric(float64(c), "cold-first-event-ns")
	b.ReportMetric(float64(quantile(warmResult, 0.5)), "warm-result-ns")
	b.ReportMetric(float64(quantile(coldResult, 0.5)), "cold-result-ns")
	b.ReportMetric(float64(w)/float64(c), "warm/cold")
}
