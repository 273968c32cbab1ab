//go:build linux

package claudepool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
)

// The raw CLI under BenchmarkE2EStreamLoad's load: the floor under the
// pool's figures there.
//
// runRawStreamLoad drives C processes of the same CLI, with the pool's
// flags, prompt and environment, directly (startRaw): one process a
// caller, each made ready before the clock starts, so that no caller ever
// waits for one, and no gateway. The callers are the pool's (the same
// conversations, turns, think times and replies, from the same seeds): a
// continued turn is the new user line on the process that holds the
// conversation, as the CLI holds it; after a conversation's last turn the
// caller clears it with /clear and its confirmation, on its own time. It
// is the best the CLI does with a process always ready for every user,
// which a pool of C processes a replica could also buy with C x 100 MiB.

// streamLoadRawEnv is the environment variable that turns the raw
// baseline of BenchmarkE2EStreamLoad off when set to 0.
const streamLoadRawEnv = "CLAUDEPOOL_STREAM_LOAD_RAW"

// runRawStreamLoad runs callers callers on as many processes of the raw
// CLI for d, with cfg's flags and prompt, and returns what it measured;
// the CPU and memory figures are taken as runStreamLoad takes the pool's.
func runRawStreamLoad(b *testing.B, callers int, d time.Duration, cfg Config) *streamLoadResult {
	b.StopTimer()
	e := newE2E(b, claudepooltest.Config{
		Reply:          streamReply(nil),
		FirstByteDelay: benchFirstByteDelay,
		APITimeout:     streamAPITimeout,
	})
	ctx, cancel := context.WithTimeout(context.Background(), d+15*time.Minute)
	defer cancel()
	warmStart := time.Now()
	procs, stop := startRaw(b, ctx, e, callers, cfg)
	defer stop()
	pids := make([]int, len(procs))
	for i, p := range procs {
		pids[i] = p.pid
	}
	res := &streamLoadResult{warmup: time.Since(warmStart), warmProcs: len(procs), started: int64(len(procs))}
	res.settle = settleProcs(ctx, func() []int { return pids })

	childBefore := res.run(b, ctx, callers, d, func() []int { return pids },
		func(i int) streamTurns { return rawTurns(ctx, procs[i]) })
	res.live = len(procs)
	stop()
	res.finish(b, e, childBefore)
	return res
}

// rawTurns are the turns of a caller that owns process p: each turn is a
// user line with the new message alone, and each conversation ends with a
// /clear.
func rawTurns(ctx context.Context, p *Process) streamTurns {
	var session string
	return streamTurns{
		turn: func(history []Message, text string) (c streamChat, msgs []Message, reply string) {
			msgs = append(history, Message{Role: RoleUser, Content: text})
			bc, sess, res := rawChat(ctx, p, text, time.Now())
			c.benchChat = bc
			if sess != "" {
				session = sess
			}
			if c.err == nil {
				if res == nil {
					c.err = errors.New("the raw chat ended without a result")
				} else {
					reply, c.tokens = res.Text, res.Usage.OutputTokens
				}
			}
			// The user message as the pool's caller sends it: the text
			// with the chat's marker.
			msgs[len(msgs)-1].Content = text + " " + c.marker
			return c, msgs, reply
		},
		endConversation: func() error {
			if session == "" {
				return nil
			}
			s, _, err := p.clearConversation(ctx, session)
			if err != nil {
				return fmt.Errorf("raw /clear: %w", err)
			}
			session = s
			return nil
		},
	}
}

// reportStreamRaw reports the raw baseline beside a pool run of
// BenchmarkE2EStreamLoad: the raw figures (raw-...) and the pool's over
// them (...-vs-raw).
func reportStreamRaw(b *testing.B, pool, raw *streamLoadResult, callers int, d time.Duration) {
	tokens := func(r *streamLoadResult) (n int64) {
		for _, c := range r.chats {
			if c.err == nil {
				n += int64(c.tokens)
			}
		}
		return n
	}
	rate := func(r *streamLoadResult) float64 { return float64(len(r.chats)) / r.elapsed.Seconds() }
	perToken := func(r *streamLoadResult) float64 {
		return float64(r.childCPU.Microseconds()) / float64(max(tokens(r), 1))
	}
	b.ReportMetric(rate(raw), "raw-chats/s")
	b.ReportMetric(float64(len(raw.errs)), "raw-failures")
	b.ReportMetric(ms(quantile(raw.overhead, 0.50)), "raw-overhead-p50-ms")
	b.ReportMetric(ms(quantile(raw.overhead, 0.99)), "raw-overhead-p99-ms")
	b.ReportMetric(perToken(raw), "raw-child-cpu-us/token")
	b.ReportMetric(mib(quantileBytes(raw.private, 0.50)), "raw-private-p50-MiB")
	b.ReportMetric(rate(pool)/rate(raw), "chats/s-vs-raw")
	b.ReportMetric(float64(quantile(pool.overhead, 0.50))/float64(quantile(raw.overhead, 0.50)), "overhead-p50-vs-raw")
	b.ReportMetric(float64(quantile(pool.overhead, 0.99))/float64(quantile(raw.overhead, 0.99)), "overhead-p99-vs-raw")
	b.ReportMetric(perToken(pool)/perToken(raw), "child-cpu-vs-raw")
	fmt.Fprintf(os.Stderr, "E2EStreamLoad raw CLI beside it, C=%d, %v a run, %d processes driven directly (one a caller, /clear after each conversation), start-up took %v, and %v to settle:\n"+
		"  %d turns (%.2f/s), %d failed; overhead p50 %v p99 %v (to request p50 %v p99 %v); CLI CPU %.0f µs a token; private p50 %.0f MiB; load average %v to %v\n"+
		"  test process (raw driver, mock API, callers): CPU %v, %.1f µs a token\n"+
		"  pool / raw: turns/s %.2f, overhead p50 %.2f, p99 %.2f, CLI CPU a token %.2f\n",
		callers, d, raw.warmProcs, raw.warmup.Round(time.Second), raw.settle.Round(time.Second),
		len(raw.chats), rate(raw), len(raw.errs), rnd(quantile(raw.overhead, 0.50)), rnd(quantile(raw.overhead, 0.99)),
		rnd(quantile(raw.toRequest, 0.50)), rnd(quantile(raw.toRequest, 0.99)),
		perToken(raw), mib(quantileBytes(raw.private, 0.50)), raw.loadStart, raw.loadEnd,
		raw.selfCPU.Round(time.Millisecond), float64(raw.selfCPU.Microseconds())/float64(max(tokens(raw), 1)),
		rate(pool)/rate(raw), float64(quantile(pool.overhead, 0.50))/float64(quantile(raw.overhead, 0.50)),
		float64(quantile(pool.overhead, 0.99))/float64(quantile(raw.overhead, 0.99)), perToken(pool)/perToken(raw))
	for _, err := range raw.errs[:min(len(raw.errs), 5)] {
		fmt.Fprintf(os.Stderr, "  raw failed: %v\n", err)
	}
}
