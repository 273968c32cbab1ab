//go:build unix

package claudepool

// Benchmarks of the real CLI against claudepooltest answering at a real
// API's pace (benchFirstByteDelay before the first byte of every Messages
// response). Both find the CLI as the e2e suite does, and skip with
// CLAUDEPOOL_SKIP_E2E=1.
//
// Each chat's user text carries a unique marker, "[chat N]", so that the
// chat can be matched with the request the CLI sent for it. The mock
// records when that request arrived (Request.Time) and when its response
// began (Request.FirstByte); FirstByte minus Time is the API's own time to
// first byte, and a chat's overhead is its time to first text minus that:
// what the pool and the CLI add to what the API costs anyway, before the
// request (acquire, initialize, set_model and its probe, the CLI's own
// work on the user line) and after the first byte (parsing and forwarding
// the stream).

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
)

// benchFirstByteDelay is the mock API's time to first byte in the real-CLI
// benchmarks: about what the Messages API takes to begin a short reply.
const benchFirstByteDelay = 500 * time.Millisecond

// benchSystem is the system prompt of every chat in the real-CLI
// benchmarks.
const benchSystem = "You are a test."

// loadConfig is the pool BenchmarkE2ELoad runs, the configuration its
// targets are stated for, with the pool's model given at spawn as a
// backend would. PartialMessages makes the first text the first text
// delta, as a streaming backend sees it.
func loadConfig() Config {
	cfg := Config{Size: 2, MaxProcs: 4, Prompt: &SystemPrompt{System: benchSystem}, Model: "sonnet", PartialMessages: true}
	if v := os.Getenv(loadMaxUses); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			panic(fmt.Sprintf("%s=%q: want a number of chats", loadMaxUses, v))
		}
		cfg.MaxUses = n
	}
	return cfg
}

// loadMaxUses is the environment variable that sets the Config.MaxUses of
// the load benchmarks' pools (DefaultMaxUses when unset).
const loadMaxUses = "CLAUDEPOOL_LOAD_MAX_USES"

// loadSeconds is the environment variable with the length of one
// BenchmarkE2ELoad run in seconds.
const loadSeconds = "CLAUDEPOOL_LOAD_SECONDS"

// loadDuration returns the length of one BenchmarkE2ELoad run: loadSeconds,
// 20 s by default.
func loadDuration(b *testing.B) time.Duration {
	v := os.Getenv(loadSeconds)
	if v == "" {
		return 20 * time.Second
	}
	s, err := strconv.ParseFloat(v, 64)
	if err != nil || s <= 0 {
		b.Fatalf("%s=%q: want a positive number of seconds", loadSeconds, v)
	}
	return time.Duration(s * float64(time.Second))
}

// BenchmarkE2ELoad runs K callers that chat back to back for
// CLAUDEPOOL_LOAD_SECONDS (default 20) through one pool (loadConfig)
// against a mock API. One iteration is one whole
// run: use -benchtime 1x. Metrics: chats/s; warm-% and reused-%, the
// shares of chats on a warm process and on one that served an earlier
// chat; first-event p50 and p99 and first-text p50, from the start of
// StreamChat; overhead-p50-ms, first text minus the API's own time to
// first byte for that chat's request; and child-cpu-ms/chat, the CPU time
// of every CLI process the run started (the start-ups of all of them
// included, warm spares and replacements too) divided by the chats,
// measured with getrusage(RUSAGE_CHILDREN) once Close has reaped them all.
// Any failed chat fails the benchmark.
//
// Beside each pool run, in the same iteration, the raw CLI runs the same
// load driven directly, one process a caller (runRaw), and the pool's
// figures are reported over its: chats/s-vs-raw, overhead-vs-raw and
// child-cpu-vs-raw, with the raw figures as raw-.... CLAUDEPOOL_LOAD_RAW=0
// skips it.
//
// It runs against two APIs: one that answers at once (API=instant), which
// shows what the pool and the CLI cost, and one with a realistic first
// byte (API=500ms), which shows what a user feels; and once more with one
// caller, the realistic API and held conversations off (hold=off), where
// every chat's process is reset as it comes back; and, to show what the
// pool's gateway changes, with one and four callers on pools without it
// (gateway=off).
func BenchmarkE2ELoad(b *testing.B) {
	d := loadDuration(b)
	type loadCase struct {
		name      string
		callers   int
		firstByte time.Duration
		cfg       Config
		noRaw     bool // no raw baseline for this case
	}
	var cases []loadCase
	for _, api := range []struct {
		name      string
		firstByte time.Duration
	}{{"instant", 0}, {"500ms", benchFirstByteDelay}} {
		for _, callers := range []int{1, 4, 8} {
			cases = append(cases, loadCase{fmt.Sprintf("API=%s/K=%d", api.name, callers), callers, api.firstByte, loadConfig(), false})
		}
	}
	holdOff := loadConfig()
	holdOff.HoldConversations = -1
	cases = append(cases, loadCase{"API=500ms/K=1/hold=off", 1, benchFirstByteDelay, holdOff, false})
	// The pool without its gateway (the processes call the API
	// themselves), as before the gateway: the same run shows what it
	// changes. The raw baseline of the same load is in the cases above.
	direct := loadConfig()
	direct.NoGateway = true
	cases = append(cases,
		loadCase{"API=instant/K=1/gateway=off", 1, 0, direct, true},
		loadCase{"API=500ms/K=1/gateway=off", 1, benchFirstByteDelay, direct, true},
		loadCase{"API=500ms/K=4/gateway=off", 4, benchFirstByteDelay, direct, true})
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var total, raw loadResult
			withRaw := rawBaseline() && !c.noRaw
			b.ResetTimer()
			for range b.N {
				// The raw CLI first, then the pool, in each round: the
				// same machine in the same minute.
				if withRaw {
					raw.add(runRaw(b, c.callers, d, c.firstByte, c.cfg))
				}
				total.add(runLoad(b, c.callers, d, c.firstByte, c.cfg))
			}
			b.StopTimer()
			total.report(b, c.callers, d, c.firstByte, c.cfg)
			if withRaw {
				reportRaw(b, &total, &raw, c.callers, d, c.firstByte)
			}
		})
	}
}

// loadResult is what one or more load runs measured.
type loadResult struct {
	mu       sync.Mutex // guards chats and errs while callers record
	chats    []benchChat
	api      []chatAPI // per chat, in the order of chats
	elapsed  time.Duration
	childCPU time.Duration
	selfCPU  time.Duration // the test process's, while the callers ran
	started  int64         // CLI processes started
	errs     []error
}

func (r *loadResult) add(o *loadResult) {
	r.chats = append(r.chats, o.chats...)
	r.api = append(r.api, o.api...)
	r.elapsed += o.elapsed
	r.childCPU += o.childCPU
	r.selfCPU += o.selfCPU
	r.started += o.started
	r.errs = append(r.errs, o.errs...)
}

// runLoad starts a pool, waits until it is ready, runs callers that chat
// back to back until d has passed (chats in flight then finish), closes
// the pool and returns what it measured. The benchmark timer runs during
// the chats only; the CPU count covers the pool's whole life.
func runLoad(b *testing.B, callers int, d, firstByte time.Duration, cfg Config) *loadResult {
	b.StopTimer()
	e := newE2E(b, claudepooltest.Config{FirstByteDelay: firstByte})
	ctx, cancel := context.WithTimeout(context.Background(), d+5*time.Minute)
	defer cancel()
	cpuBefore := childCPU(b)
	p, _ := e.pool(b, cfg)
	if err := p.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	a := NewAdapter(p)

	res := &loadResult{}
	var wg sync.WaitGroup
	selfBefore := selfCPU(b)
	start := time.Now()
	deadline := start.Add(d)
	b.StartTimer()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				res.record(runBenchChat(ctx, a, "hello", ""))
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	b.StopTimer()
	res.selfCPU = selfCPU(b) - selfBefore

	st := p.Stats()
	res.started = st.SpawnToReady.Count + st.ColdAcquires
	closeCtx, closeCancel := context.WithTimeout(context.Background(), time.Minute)
	defer closeCancel()
	if err := p.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	// Close has reaped every process the pool started.
	res.finish(b, e, cpuBefore)
	return res
}

// record adds a chat a caller finished. Callers run concurrently.
func (r *loadResult) record(c benchChat) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chats = append(r.chats, c)
	if c.err != nil {
		r.errs = append(r.errs, fmt.Errorf("%s: %w", c.marker, c.err))
	}
}

// finish completes a run once every process it started was reaped: the
// child CPU since cpuBefore, and each chat's timings at the mock of e.
func (r *loadResult) finish(b *testing.B, e *e2eEnv, cpuBefore time.Duration) {
	r.childCPU = childCPU(b) - cpuBefore
	if len(r.errs) == 0 {
		api, err := matchChats(e.mock.ChatRequests(), r.chats)
		if err != nil {
			b.Fatal(err)
		}
		r.api = api
	}
}

func (r *loadResult) report(b *testing.B, callers int, d, firstByte time.Duration, cfg Config) {
	n := len(r.chats)
	if len(r.errs) > 0 {
		b.ReportMetric(float64(len(r.errs)), "errors")
		shown := r.errs[:min(len(r.errs), 5)]
		b.Fatalf("%d of %d chats failed; first ones: %v", len(r.errs), n, shown)
	}
	if n == 0 {
		b.Fatal("no chat completed")
	}
	var warm, reused int
	var firstEvent, firstText []time.Duration
	for _, c := range r.chats {
		if c.acq.Warm {
			warm++
		}
		if c.acq.Reused {
			reused++
		}
		firstEvent = append(firstEvent, c.lat.FirstEvent)
		firstText = append(firstText, c.lat.FirstText)
	}
	overhead, toRequest, afterFirstByte, api := r.apiSplit()
	pct := func(k int) float64 { return 100 * float64(k) / float64(n) }
	chatsPerSec := float64(n) / r.elapsed.Seconds()
	cpuPerChat := r.childCPU / time.Duration(n)

	b.ReportMetric(chatsPerSec, "chats/s")
	b.ReportMetric(pct(warm), "warm-%")
	b.ReportMetric(pct(reused), "reused-%")
	b.ReportMetric(ms(quantile(firstEvent, 0.50)), "first-event-p50-ms")
	b.ReportMetric(ms(quantile(firstEvent, 0.99)), "first-event-p99-ms")
	b.ReportMetric(ms(quantile(firstText, 0.50)), "first-text-p50-ms")
	b.ReportMetric(ms(quantile(overhead, 0.50)), "overhead-p50-ms")
	b.ReportMetric(ms(cpuPerChat), "child-cpu-ms/chat")
	// The benchmark's own summary, on stderr so that it shows without -v.
	hold := "off"
	switch {
	case cfg.HoldConversations == 0:
		hold = DefaultHoldConversations.String()
	case cfg.HoldConversations > 0:
		hold = cfg.HoldConversations.String()
	}
	fmt.Fprintf(os.Stderr, "E2ELoad K=%d, %v a run, pool {Size %d, MaxProcs %d, Prompt %q, Model %q, HoldConversations %s, PartialMessages}, mock API first byte %v:\n"+
		"  %d chats in %v (%.2f/s), warm %.0f%%, reused %.0f%%, %d CLI processes started\n"+
		"  first event p50 %v p99 %v; first text p50 %v; API first byte p50 %v; overhead p50 %v (to request p50 %v, first byte to first text p50 %v)\n"+
		"  child CPU %v in all, %v a chat\n",
		callers, d, cfg.Size, cfg.MaxProcs, cfg.Prompt.System, cfg.Model, hold, firstByte,
		n, r.elapsed.Round(time.Millisecond), chatsPerSec, pct(warm), pct(reused), r.started,
		rnd(quantile(firstEvent, 0.50)), rnd(quantile(firstEvent, 0.99)), rnd(quantile(firstText, 0.50)),
		rnd(quantile(api, 0.50)), rnd(quantile(overhead, 0.50)), rnd(quantile(toRequest, 0.50)), rnd(quantile(afterFirstByte, 0.50)),
		rnd(r.childCPU), rnd(cpuPerChat))
}

// apiSplit returns, per chat, the overhead, its two parts, and the API's
// own time to first byte.
func (r *loadResult) apiSplit() (overhead, toRequest, afterFirstByte, api []time.Duration) {
	for _, a := range r.api {
		overhead = append(overhead, a.overhead)
		toRequest = append(toRequest, a.toRequest)
		afterFirstByte = append(afterFirstByte, a.afterFirstByte)
		api = append(api, a.apiFirstByte)
	}
	return overhead, toRequest, afterFirstByte, api
}

// childCPU returns the user and system CPU time of the process's reaped
// children so far.
func childCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkE2E compares kinds of chat on the real CLI against a mock
// API with benchFirstByteDelay: cold (a process spawned for the chat),
// warm (a fresh process from the pool, primed when the prompt is the
// pool's), reused (a process that served an earlier chat and was reset)
// and warm-model (a fresh process, with a Model named in the request:
// set_model, and the CLI's confirmation of the model, which the gateway
// answers), all through the pool's gateway; and warm-direct and
// reused-direct, the same as warm and reused on pools without the gateway
// (NoGateway), so that one run shows the gateway's effect. One op is one chat of each kind, interleaved, each
// after every pool has settled (no spawn, reset or exit in progress).
// With the system prompt in each request (prompt=request) and as the
// pool's Config.Prompt (prompt=pool). Metrics, medians in ms:
// KIND-first-text-ms from the start of StreamChat, and KIND-overhead-ms,
// first text minus the API's own time to first byte for the chat's
// request.
func BenchmarkE2E(b *testing.B) {
	for _, bc := range []struct {
		name     string
		poolWide bool
	}{
		{"prompt=request", false},
		{"prompt=pool", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			e := newE2E(b, claudepooltest.Config{FirstByteDelay: benchFirstByteDelay})
			var prompt *SystemPrompt
			system := benchSystem
			if bc.poolWide {
				prompt, system = &SystemPrompt{System: benchSystem}, ""
			}
			// MaxUses 1: every chat on these gets a process of its own.
			// A primed process has its prompt already (the CLI takes one
			// only once): with the prompt in each request, the fresh
			// pool runs unprimed (NoPriming), as such a pool must.
			cold, _ := e.pool(b, Config{Prompt: prompt, MaxUses: 1, PartialMessages: true})
			fresh, _ := e.pool(b, Config{Size: 1, Prompt: prompt, MaxUses: 1, PartialMessages: true, NoPriming: !bc.poolWide})
			// No spares: its only process is the one that served the
			// chat before, reset in between. Room for every chat of the
			// run, under MaxUses less its up to 10% jitter.
			reused, _ := e.pool(b, Config{Prompt: prompt, MaxUses: 2*b.N + 10, PartialMessages: true})
			// The same, with the processes calling the API themselves.
			freshDirect, _ := e.pool(b, Config{Size: 1, Prompt: prompt, MaxUses: 1, PartialMessages: true, NoGateway: true})
			reusedDirect, _ := e.pool(b, Config{Prompt: prompt, MaxUses: 2*b.N + 10, PartialMessages: true, NoGateway: true})

			isWarm := func(a AcquireInfo) bool { return a.Warm && !a.Reused }
			isReused := func(a AcquireInfo) bool { return a.Warm && a.Reused }
			kinds := []*e2eKind{
				{name: "cold", pool: cold, isKind: func(a AcquireInfo) bool { return !a.Warm }},
				{name: "warm", pool: fresh, isKind: isWarm},
				{name: "reused", pool: reused, isKind: isReused},
				{name: "warm-model", pool: fresh, model: "sonnet", isKind: isWarm},
				{name: "warm-direct", pool: freshDirect, isKind: isWarm},
				{name: "reused-direct", pool: reusedDirect, isKind: isReused},
			}
			settled := []poolWant{{cold, 0}, {fresh, 1}, {reused, 1}, {freshDirect, 1}, {reusedDirect, 1}}
			// The reused pools' processes: spawned cold for this chat, kept.
			for _, pool := range []*Pool{reused, reusedDirect} {
				if c := runBenchChat(ctx, NewAdapter(pool), "hello", system); c.err != nil {
					b.Fatal(c.err)
				}
			}

			b.ResetTimer()
			for range b.N {
				for _, k := range kinds {
					b.StopTimer()
					settle(b, settled)
					b.StartTimer()
					c := runBenchChat(ctx, NewAdapter(k.pool), "hello", system, k.model)
					b.StopTimer()
					if c.err != nil {
						b.Fatalf("%s chat: %v", k.name, c.err)
					}
					if !k.isKind(c.acq) {
						b.Fatalf("%s chat got a process acquired as %+v", k.name, c.acq)
					}
					k.chats = append(k.chats, c)
				}
			}
			b.StopTimer()

			reqs := e.mock.ChatRequests()
			for _, k := range kinds {
				api, err := matchChats(reqs, k.chats)
				if err != nil {
					b.Fatal(err)
				}
				var firstEvent, firstText, result, overhead, toRequest, afterFirstByte []time.Duration
				for i, c := range k.chats {
					firstEvent = append(firstEvent, c.lat.FirstEvent)
					firstText = append(firstText, c.lat.FirstText)
					result = append(result, c.lat.Result)
					overhead = append(overhead, api[i].overhead)
					toRequest = append(toRequest, api[i].toRequest)
					afterFirstByte = append(afterFirstByte, api[i].afterFirstByte)
				}
				b.ReportMetric(ms(quantile(firstText, 0.5)), k.name+"-first-text-ms")
				b.ReportMetric(ms(quantile(overhead, 0.5)), k.name+"-overhead-ms")
				if k.pool.gw != nil {
					// The overhead as the pool itself measures it, at
					// its gateway (StreamLatency.Overhead).
					var own []time.Duration
					for _, c := range k.chats {
						own = append(own, c.lat.Overhead)
					}
					b.ReportMetric(ms(quantile(own, 0.5)), k.name+"-pool-overhead-ms")
				}
				fmt.Fprintf(os.Stderr, "real CLI, %s, mock API first byte %v, %d chats, %-10s medians: first event %v, first text %v, result %v; overhead %v (to request %v, first byte to first text %v)\n",
					bc.name, benchFirstByteDelay, len(k.chats), k.name,
					rnd(quantile(firstEvent, 0.5)), rnd(quantile(firstText, 0.5)), rnd(quantile(result, 0.5)),
					rnd(quantile(overhead, 0.5)), rnd(quantile(toRequest, 0.5)), rnd(quantile(afterFirstByte, 0.5)))
			}
		})
	}
}

// e2eKind is one kind of chat in BenchmarkE2E.
type e2eKind struct {
	name   string
	pool   *Pool
	model  string
	isKind func(AcquireInfo) bool // the acquire that makes a chat of this kind
	chats  []benchChat
}

// poolWant is a pool and the number of idle processes it holds once
// settled.
type poolWant struct {
	pool *Pool
	idle int
}

// settle waits until every pool holds exactly its idle processes and
// nothing else: no spawn, chat or reset in progress, every retired
// process reaped.
func settle(b *testing.B, pools []poolWant) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		settled := true
		for _, w := range pools {
			if !waitPool(b, w.pool, deadline, func(st Stats) bool { return quietStats(st) && st.Idle == w.idle }) {
				settled = false
			}
		}
		// A pool waited for may have settled before another did; all must
		// hold at once.
		if settled {
			return
		}
	}
}

// quiet waits until nothing is in progress in p: no spawn, chat or reset,
// every retired process reaped.
func quiet(b *testing.B, p *Pool) {
	waitPool(b, p, time.Now().Add(2*time.Minute), quietStats)
}

// quietStats reports whether a snapshot has nothing in progress.
func quietStats(st Stats) bool {
	return st.Starting == 0 && st.Busy == 0 && st.Resetting == 0 && st.Idle == st.Live
}

// waitPool waits on p's change signal until ok holds for its Stats, and
// fails b at deadline. It reports whether ok held without waiting.
func waitPool(b testing.TB, p *Pool, deadline time.Time, ok func(Stats) bool) (already bool) {
	b.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for already = true; ; already = false {
		// The signal is taken before the snapshot, so that no change
		// between the two goes unnoticed.
		p.mu.Lock()
		changed := p.changed
		p.mu.Unlock()
		st := p.Stats()
		if ok(st) {
			return already
		}
		select {
		case <-changed:
		case <-timer.C:
			b.Fatalf("the pool did not settle by its deadline: starting %d busy %d resetting %d idle %d live %d",
				st.Starting, st.Busy, st.Resetting, st.Idle, st.Live)
		}
	}
}

// benchChat is one chat of a benchmark.
type benchChat struct {
	marker string // unique in the user text; finds the chat's API request
	start  time.Time
	lat    StreamLatency
	acq    AcquireInfo
	err    error
}

// benchChatSeq numbers the chats of the benchmarks for their markers.
var benchChatSeq atomic.Int64

// runBenchChat runs one chat whose user text is text followed by a unique
// marker, with the given system prompt and optional model, and reads it
// to the end.
func runBenchChat(ctx context.Context, a *Adapter, text, system string, model ...string) benchChat {
	req := Request{System: system, Messages: []Message{{Role: RoleUser, Content: text}}}
	if len(model) > 0 {
		req.Model = model[0]
	}
	return runBenchRequest(ctx, a, req)
}

// runBenchRequest runs req, its last message's text followed by a unique
// marker, and reads it to the end.
func runBenchRequest(ctx context.Context, a *Adapter, req Request) benchChat {
	c := benchChat{marker: fmt.Sprintf("[chat %d]", benchChatSeq.Add(1))}
	msgs := slices.Clone(req.Messages)
	msgs[len(msgs)-1].Content += " " + c.marker
	req.Messages = msgs
	c.start = time.Now()
	s, err := a.StreamChat(ctx, req)
	if err != nil {
		c.err = err
		return c
	}
	defer s.Close()
	for s.Next() {
	}
	c.err, c.lat, c.acq = s.Err(), s.Latency(), s.Acquire()
	if c.err == nil && c.lat.FirstText == 0 {
		c.err = fmt.Errorf("the chat ended without text")
	}
	return c
}

// chatAPI places a chat's API request on the chat's clock.
type chatAPI struct {
	// toRequest is from the chat's start to the request's arrival at the
	// mock (Request.Time).
	toRequest time.Duration
	// apiFirstByte is the API's own time to first byte: Request.FirstByte
	// minus Request.Time, benchFirstByteDelay and a little.
	apiFirstByte time.Duration
	// afterFirstByte is from the response's first byte to the chat's
	// first text.
	afterFirstByte time.Duration
	// overhead is the chat's first text minus apiFirstByte: toRequest
	// plus afterFirstByte.
	overhead time.Duration
}

var chatMarker = regexp.MustCompile(`\[chat \d+\]`)

// matchChats finds each chat's request among the mock's chat requests by
// the marker in its user text (the first request that carries it, should
// the CLI have sent more than one) and returns the timings, in the order
// of chats.
func matchChats(reqs []claudepooltest.Request, chats []benchChat) ([]chatAPI, error) {
	byMarker := make(map[string]claudepooltest.Request, len(reqs))
	for _, r := range reqs {
		m := chatMarker.FindString(r.LastUserText())
		if m == "" {
			// The user's text is not the last text block: look in the
			// whole body, which after a reset holds no earlier chat.
			found := chatMarker.FindAllString(string(r.Body), -1)
			if len(found) == 0 || slices.ContainsFunc(found, func(f string) bool { return f != found[0] }) {
				continue
			}
			m = found[0]
		}
		if _, seen := byMarker[m]; !seen {
			byMarker[m] = r
		}
	}
	out := make([]chatAPI, len(chats))
	for i, c := range chats {
		r, ok := byMarker[c.marker]
		if !ok {
			return nil, fmt.Errorf("no API request carries the marker of chat %s", c.marker)
		}
		if r.FirstByte.IsZero() {
			return nil, fmt.Errorf("the API request of chat %s has no first byte", c.marker)
		}
		api := r.FirstByte.Sub(r.Time)
		out[i] = chatAPI{
			toRequest:      r.Time.Sub(c.start),
			apiFirstByte:   api,
			afterFirstByte: c.lat.FirstText - r.FirstByte.Sub(c.start),
			overhead:       c.lat.FirstText - api,
		}
	}
	return out, nil
}

// ms converts a duration to milliseconds for b.ReportMetric.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// rnd rounds a duration for printing.
func rnd(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
