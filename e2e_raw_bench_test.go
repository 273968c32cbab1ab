//go:build unix

package claudepool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
)

// The raw CLI, driven directly: the floor under the pool's figures.
//
// runRaw drives the same CLI, with the same flags, environment and mock
// API as a pool of loadConfig would, through the package's lowest floor
// alone (spawn.go, process.go, control.go): no pool, no refill, no held
// conversations. Each caller owns one process, started and made ready
// (mcp_status, then initialize with the pool's prompt) before the clock
// starts. There are as many processes as callers, within the pool's
// MaxProcs: callers beyond it wait for a free process, as at the pool's
// cap. A caller chats back to back: it takes a process, writes the chat's
// user line, reads its events up to the result, then clears the
// conversation with the CLI's /clear and its confirmation, on its own
// time, before it frees the process. What the CLI itself costs shows
// here; the pool's figures are reported beside it as ratios.

// loadRaw is the environment variable that turns the raw baseline of
// BenchmarkE2ELoad off when set to 0.
const loadRaw = "CLAUDEPOOL_LOAD_RAW"

// loadRawPause is the environment variable with a pause (a duration such
// as 600ms) each raw caller takes after a chat's /clear before its next
// chat: the CLI then idles between chats as a pool's spare does.
const loadRawPause = "CLAUDEPOOL_LOAD_RAW_PAUSE"

// rawPause returns the pause of loadRawPause, 0 when unset.
func rawPause(b *testing.B) time.Duration {
	v := os.Getenv(loadRawPause)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		b.Fatalf("%s=%q: want a duration", loadRawPause, v)
	}
	return d
}

// rawBaseline reports whether BenchmarkE2ELoad runs the raw CLI beside
// each pool run.
func rawBaseline() bool { return os.Getenv(loadRaw) != "0" }

// runRaw runs callers processes of the raw CLI for d against a mock with
// firstByte, with cfg's flags and prompt, and returns what it measured.
func runRaw(b *testing.B, callers int, d, firstByte time.Duration, cfg Config) *loadResult {
	b.StopTimer()
	e := newE2E(b, claudepooltest.Config{FirstByteDelay: firstByte})
	ctx, cancel := context.WithTimeout(context.Background(), d+5*time.Minute)
	defer cancel()
	cpuBefore := childCPU(b)

	n := callers
	if cfg.MaxProcs > 0 {
		n = min(n, cfg.MaxProcs)
	}
	procs, stop := startRaw(b, ctx, e, n, cfg)
	defer stop()
	pause := rawPause(b)

	res := &loadResult{}
	selfBefore := selfCPU(b)
	start := time.Now()
	deadline := start.Add(d)
	b.StartTimer()
	free := make(chan *Process, len(procs))
	for _, p := range procs {
		free <- p
	}
	var callersWG sync.WaitGroup
	for range callers {
		callersWG.Add(1)
		go func() {
			defer callersWG.Done()
			for time.Now().Before(deadline) {
				// The chat's clock runs from before the wait for a free
				// process, as StreamChat's does at the pool's cap.
				start := time.Now()
				p := <-free
				c, session, _ := rawChat(ctx, p, "hello", start)
				if c.err == nil {
					_, _, c.err = p.clearConversation(ctx, session)
				}
				free <- p
				res.record(c)
				if c.err != nil || (pause > 0 && !sleepBefore(ctx, pause, deadline)) {
					return
				}
			}
		}()
	}
	callersWG.Wait()
	res.elapsed = time.Since(start)
	b.StopTimer()
	res.selfCPU = selfCPU(b) - selfBefore
	res.started = int64(len(procs))

	stop()
	res.finish(b, e, cpuBefore)
	return res
}

// startRaw starts n processes of the raw CLI with cfg's flags, prompt
// and environment against e's mock, rawSpawns at a time, each made ready
// (mcp_status, then initialize with the prompt) before the next ones
// start. stop stops them and waits until they are reaped; it may be
// called more than once.
func startRaw(b *testing.B, ctx context.Context, e *e2eEnv, n int, cfg Config) (procs []*Process, stop func()) {
	b.Helper()
	cfg.Command, cfg.Dir = e.cli, e.dir
	cfg.Env = append(e.mock.Env(), "HOME="+e.home)
	cfg, path, err := cfg.normalize()
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	set := &procSettings{stopGrace: cfg.StopGrace, readyTimeout: cfg.ReadyTimeout, maxLine: cfg.MaxLineBytes,
		log: slog.New(slog.DiscardHandler), exited: func(*Process) {}}
	sp := newSpawner(path, cfg.argv(), cfg.env(os.Environ(), b.TempDir()), cfg.Dir, false, set)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			for _, p := range procs {
				_ = p.Stop(context.Background())
			}
			wg.Wait()
			sp.stop()
		})
	}
	for len(procs) < n {
		batch := make([]*Process, 0, rawSpawns)
		for range min(rawSpawns, n-len(procs)) {
			p, err := sp.spawn()
			if err != nil {
				stop()
				b.Fatal(err)
			}
			procs = append(procs, p)
			batch = append(batch, p)
			wg.Add(2)
			go func() { defer wg.Done(); p.drainStderr() }()
			go func() { defer wg.Done(); p.reap() }()
		}
		for _, p := range batch {
			err := p.probe(ctx)
			if err == nil && cfg.Prompt != nil {
				err = p.initialize(ctx, *cfg.Prompt)
			}
			if err != nil {
				stop()
				b.Fatal(err)
			}
		}
	}
	return procs, stop
}

// rawSpawns is how many raw processes start at a time: each takes about
// a CPU-second.
const rawSpawns = 4

// rawChat writes one chat's user line, as the pool writes it, to p and
// reads its events up to the result, timed from start. It returns the
// chat, the session its system/init named and its result.
func rawChat(ctx context.Context, p *Process, text string, start time.Time) (c benchChat, session string, res *Result) {
	c = benchChat{marker: fmt.Sprintf("[chat %d]", benchChatSeq.Add(1))}
	line, err := encodeUserLine(text + " " + c.marker)
	if err != nil {
		c.err = err
		return c, "", nil
	}
	c.start = start
	if err := p.WriteLine(line); err != nil {
		c.err = err
		return c, "", nil
	}
	for ctx.Err() == nil {
		out, err := p.ReadLine()
		if err != nil {
			c.err = err
			return c, session, nil
		}
		ev, ctrl, err := parseLine(out)
		if err != nil || ctrl != nil {
			continue
		}
		since := time.Since(c.start)
		if c.lat.FirstEvent == 0 {
			c.lat.FirstEvent = since
		}
		if c.lat.FirstText == 0 && ev.Text() != "" {
			c.lat.FirstText = since
		}
		switch ev.Type {
		case EventInit:
			session = ev.SessionID
		case EventResult:
			c.lat.Result = since
			if ev.Result == nil || ev.Result.IsError {
				c.err = errors.New("the raw chat ended with an error result")
			} else if c.lat.FirstText == 0 {
				c.err = errors.New("the raw chat ended without text")
			}
			return c, session, ev.Result
		}
	}
	c.err = ctx.Err()
	return c, session, nil
}

// reportRaw reports the raw baseline beside a pool run: the raw figures
// (raw-...) and the pool's over them (...-vs-raw), each a ratio of the
// two runs' medians or rates.
func reportRaw(b *testing.B, pool, raw *loadResult, callers int, d, firstByte time.Duration) {
	if len(raw.errs) > 0 {
		b.Fatalf("%d of %d raw chats failed; first ones: %v", len(raw.errs), len(raw.chats), raw.errs[:min(len(raw.errs), 5)])
	}
	if len(raw.chats) == 0 || len(pool.chats) == 0 {
		b.Fatal("no chat completed")
	}
	rate := func(r *loadResult) float64 { return float64(len(r.chats)) / r.elapsed.Seconds() }
	cpu := func(r *loadResult) time.Duration { return r.childCPU / time.Duration(len(r.chats)) }
	text := func(r *loadResult) time.Duration {
		var t []time.Duration
		for _, c := range r.chats {
			t = append(t, c.lat.FirstText)
		}
		return quantile(t, 0.50)
	}
	over := func(r *loadResult) time.Duration {
		o, _, _, _ := r.apiSplit()
		return quantile(o, 0.50)
	}
	event := func(r *loadResult) time.Duration {
		var t []time.Duration
		for _, c := range r.chats {
			t = append(t, c.lat.FirstEvent)
		}
		return quantile(t, 0.50)
	}
	self := func(r *loadResult) time.Duration { return r.selfCPU / time.Duration(len(r.chats)) }
	b.ReportMetric(rate(raw), "raw-chats/s")
	b.ReportMetric(ms(event(raw)), "raw-first-event-p50-ms")
	b.ReportMetric(ms(text(raw)), "raw-first-text-p50-ms")
	b.ReportMetric(ms(over(raw)), "raw-overhead-p50-ms")
	b.ReportMetric(ms(cpu(raw)), "raw-child-cpu-ms/chat")
	b.ReportMetric(ms(self(raw)), "raw-self-cpu-ms/chat")
	b.ReportMetric(rate(pool)/rate(raw), "chats/s-vs-raw")
	b.ReportMetric(ms(event(pool)-event(raw)), "first-event-over-raw-ms")
	b.ReportMetric(float64(over(pool))/float64(over(raw)), "overhead-vs-raw")
	b.ReportMetric(float64(cpu(pool))/float64(cpu(raw)), "child-cpu-vs-raw")
	pause := ""
	if d := rawPause(b); d > 0 {
		pause = fmt.Sprintf(", then a pause of %v", d)
	}
	fmt.Fprintf(os.Stderr, "E2ELoad raw CLI beside it, K=%d, %v a run, %d processes driven directly (/clear after each chat%s), mock API first byte %v:\n"+
		"  %d chats (%.2f/s); first event p50 %v; first text p50 %v; overhead p50 %v; child CPU %v a chat; test process CPU %v a chat (pool's: %v)\n"+
		"  pool / raw: chats/s %.2f, first event p50 %+v, overhead p50 %.2f, child CPU a chat %.2f\n",
		callers, d, raw.started, pause, firstByte,
		len(raw.chats), rate(raw), rnd(event(raw)), rnd(text(raw)), rnd(over(raw)), rnd(cpu(raw)), rnd(self(raw)), rnd(self(pool)),
		rate(pool)/rate(raw), rnd(event(pool)-event(raw)), float64(over(pool))/float64(over(raw)), float64(cpu(pool))/float64(cpu(raw)))
}
