//go:build linux

package claudepool

// BenchmarkE2EStreamLoad: replies that stream for seconds, dozens of
// chats at once, on the real CLI.
//
// The mock API answers each chat after benchFirstByteDelay (500 ms) with
// a reply of 300 to 800 output tokens paced at 60 to 100 tokens/s
// (claudepooltest's pacing, one text delta per token), so that a reply
// streams for 3 to 13 s. Length and pace vary by chat and are the same in
// every run: both come from a hash of the chat's caller, conversation and
// turn, which its user text names.
//
// C callers each run conversations: a new conversation, then 0 to 3
// continued turns, each sending the whole history plus the last reply
// (Result.Text), as a backend does, so that the pool continues them on the
// processes that hold them. Each caller thinks 1 to 5 s before every turn
// but its first, whose start is spread over the first 5 s: users do not
// arrive at once. The turn counts and think times come from a
// pseudo-random generator seeded by the caller's number: the same in
// every run.
//
// The pool (streamLoadConfig) is sized by Little's law. A turn takes
// about S = 0.5 s (first byte) + 0.2 s (the CLI and the pool) + 550
// tokens x E[1/rate] (ln(100/60)/40 s per token, so 7.0 s) = 7.7 s, and a
// caller thinks Z = 3 s on average between turns: each caller sends a
// turn every S+Z = 10.7 s, λ = C/10.7 turns/s. Processes serving chats:
// λS = 0.72 C. Processes holding a conversation whose next turn is coming:
// 1.5 of a conversation's 2.5 turns continue it, so λ x 0.6 x Z = 0.17 C.
// Each caller needs at most one process at any time (its chat's, or the
// one that holds its conversation while it thinks), so C processes cover
// every caller. On top of them come spares for the new conversations,
// which arrive at λ/2.5 = C/27 per second, each spare replaced within
// about 3 s (a reset of a held conversation, or a spawn of about a
// CPU-second on a loaded machine): C/27 x 3 s = C/9 spares. So Size =
// ceil(C/8) and MaxProcs = C + Size, which keeps the spares from taking
// the place of conversations the callers are about to continue, at
// about 170 MB a process.
//
// The clock starts on a warm pool, as a backend's after its first minutes:
// C chats are held open at once (streamWarmSpawns starting at a time) so
// that the pool starts C processes, plus its Size spares, before the
// clock; their start-up CPU is left out of the run's (see runStreamLoad).
// The load then runs for CLAUDEPOOL_STREAM_LOAD_SECONDS (default 60); no
// turn starts after that and the turns in flight finish.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
)

// The environment variables of BenchmarkE2EStreamLoad: the caller counts
// of its sub-benchmarks, comma-separated, and the length of each run in
// seconds.
const (
	streamLoadCallersEnv = "CLAUDEPOOL_STREAM_LOAD_CALLERS"
	streamLoadSecondsEnv = "CLAUDEPOOL_STREAM_LOAD_SECONDS"
	// streamLoadCoalesceEnv sets the pool's Config.CoalesceDeltas, a
	// duration such as 200ms ("" keeps the default, -1ms turns it off).
	streamLoadCoalesceEnv = "CLAUDEPOOL_STREAM_LOAD_COALESCE"
)

// The shape of the load.
const (
	// streamMinTokens and streamMaxTokens bound a reply's output tokens.
	streamMinTokens, streamMaxTokens = 300, 800
	// streamMinRate and streamMaxRate bound its pace, in tokens/s.
	streamMinRate, streamMaxRate = 60, 100
	// streamMinThink and streamMaxThink bound a caller's think time
	// before a turn.
	streamMinThink, streamMaxThink = 1 * time.Second, 5 * time.Second
	// streamMaxContinued is the most turns that continue a conversation.
	streamMaxContinued = 3
	// streamSeed seeds every caller's generator, with the caller's
	// number.
	streamSeed = 0x5eed
	// streamWarmSpawns is how many warm-up chats start at once: each
	// spawns a CLI, about a CPU-second.
	streamWarmSpawns = 4
	// streamAPITimeout is the CLI's API_TIMEOUT_MS: the mock's default
	// (5 s) is for failure tests, shorter than the longest reply here.
	streamAPITimeout = 2 * time.Minute
	// streamWarmText begins the user text of a warm-up chat.
	streamWarmText = "Warm-up chat"
)

// streamLoadCallers returns the caller counts of BenchmarkE2EStreamLoad's
// sub-benchmarks: streamLoadCallersEnv, "8,32,64" by default.
func streamLoadCallers(b *testing.B) []int {
	v := os.Getenv(streamLoadCallersEnv)
	if v == "" {
		v = "8,32,64"
	}
	var out []int
	for f := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("%s=%q: want positive caller counts separated by commas", streamLoadCallersEnv, v)
		}
		out = append(out, n)
	}
	return out
}

// streamLoadDuration returns the length of one run: streamLoadSecondsEnv,
// 60 s by default.
func streamLoadDuration(b *testing.B) time.Duration {
	v := os.Getenv(streamLoadSecondsEnv)
	if v == "" {
		return time.Minute
	}
	s, err := strconv.ParseFloat(v, 64)
	if err != nil || s <= 0 {
		b.Fatalf("%s=%q: want a positive number of seconds", streamLoadSecondsEnv, v)
	}
	return time.Duration(s * float64(time.Second))
}

// streamLoadConfig is the pool for callers callers: loadConfig's prompt,
// model and partial messages, with Size and MaxProcs from Little's law
// (see the top of this file).
func streamLoadConfig(callers int) Config {
	cfg := loadConfig()
	cfg.Size = max(1, (callers+7)/8)
	cfg.MaxProcs = callers + cfg.Size
	if v := os.Getenv(streamLoadCoalesceEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			panic(fmt.Sprintf("%s=%q: %v", streamLoadCoalesceEnv, v, err))
		}
		cfg.CoalesceDeltas = d
	}
	return cfg
}

// BenchmarkE2EStreamLoad runs C callers holding conversations for
// CLAUDEPOOL_STREAM_LOAD_SECONDS (default 60) through one pool against a
// mock API whose replies stream for seconds (see the top of this file),
// once for each C of CLAUDEPOOL_STREAM_LOAD_CALLERS (default "8,32,64",
// sub-benchmarks C=8, C=32, C=64). One iteration is one whole run: use
// -benchtime 1x. Metrics:
//
//   - chats/s and tokens/s: turns completed, and output tokens streamed,
//     per second of the run (its turns in flight at the end included);
//   - failures: turns that failed; 0 in a clean run (they are reported,
//     with the first ones on stderr, and the run goes on);
//   - overhead-p50-ms and overhead-p99-ms: each turn's first text minus
//     the API's own time to first byte for that turn's request, found by
//     the turn's marker as matchChats does;
//   - child-cpu-ms/chat and child-cpu-us/token: the CPU time of the CLI
//     processes (getrusage RUSAGE_CHILDREN once Close has reaped them,
//     less what the processes of the warm-up had used when the clock
//     started) per turn and per output token streamed;
//   - pss-p50-MiB, pss-max-MiB, private-p50-MiB and private-max-MiB: the
//     memory of each live CLI process (Pss, and Private_Dirty, of
//     /proc/PID/smaps_rollup), sampled halfway through
//     the run and at its end;
//   - pool-cpu-ms/chat and pool-cpu-us/token: the test process's own CPU
//     time over the run (getrusage RUSAGE_SELF): the pool and its gateway,
//     but also the mock API and the callers, which run in it too; an upper
//     bound of the pool's;
//   - heap-inuse-MiB: the test process's HeapInuse at the end of the run;
//   - continued-%: the share of continued turns the pool served on the
//     process that held the conversation (Stats.Conversations.Continued).
func BenchmarkE2EStreamLoad(b *testing.B) {
	d := streamLoadDuration(b)
	for _, callers := range streamLoadCallers(b) {
		b.Run(fmt.Sprintf("C=%d", callers), func(b *testing.B) {
			cfg := streamLoadConfig(callers)
			withRaw := os.Getenv(streamLoadRawEnv) != "0"
			var total, raw streamLoadResult
			b.ResetTimer()
			for range b.N {
				total.add(runStreamLoad(b, callers, d, cfg))
				if withRaw {
					raw.add(runRawStreamLoad(b, callers, d, cfg))
				}
			}
			b.StopTimer()
			total.report(b, callers, d, cfg)
			if withRaw {
				reportStreamRaw(b, &total, &raw, callers, d)
			}
		})
	}
}

// streamChat is one turn of BenchmarkE2EStreamLoad.
type streamChat struct {
	benchChat
	continues bool // a turn that continues a conversation
	tokens    int  // output tokens of the reply (the result's usage)
}

// streamLoadResult is what one or more runs measured.
type streamLoadResult struct {
	mu    sync.Mutex // guards chats and errs while callers record
	chats []streamChat
	errs  []error

	// Per successful turn: its first text minus the API's first byte,
	// that overhead's two parts (to the request, and from the first
	// byte to the first text), and the API's first byte.
	overhead, toRequest, afterFirstByte, apiFirstByte []time.Duration
	elapsed, warmup                                   time.Duration
	// settle is how long the processes took to settle after the warm-up
	// (settleProcs).
	settle            time.Duration
	childCPU, selfCPU time.Duration
	heapInuse         uint64
	pss, private      []int64 // bytes, one a live CLI process a sample
	// From the pool's Stats, over the run: processes started (warm and
	// cold), cold acquires, held conversations continued, continuations
	// that found none, and held conversations reset for other chats.
	started, cold, continued, missNotHeld, gaveWay int64
	// Processes live after the warm-up, and at the end.
	warmProcs, live int
	// The machine's load averages over 1 minute when the clock started
	// and at the end, from /proc/loadavg: anything else that ran shows.
	loadStart, loadEnd []string
}

func (r *streamLoadResult) add(o *streamLoadResult) {
	r.chats = append(r.chats, o.chats...)
	r.errs = append(r.errs, o.errs...)
	r.overhead = append(r.overhead, o.overhead...)
	r.toRequest = append(r.toRequest, o.toRequest...)
	r.afterFirstByte = append(r.afterFirstByte, o.afterFirstByte...)
	r.apiFirstByte = append(r.apiFirstByte, o.apiFirstByte...)
	r.elapsed += o.elapsed
	r.warmup += o.warmup
	r.settle += o.settle
	r.childCPU += o.childCPU
	r.selfCPU += o.selfCPU
	r.heapInuse = max(r.heapInuse, o.heapInuse)
	r.pss = append(r.pss, o.pss...)
	r.private = append(r.private, o.private...)
	r.started += o.started
	r.cold += o.cold
	r.continued += o.continued
	r.missNotHeld += o.missNotHeld
	r.gaveWay += o.gaveWay
	r.warmProcs = max(r.warmProcs, o.warmProcs)
	r.live = max(r.live, o.live)
	r.loadStart = append(r.loadStart, o.loadStart...)
	r.loadEnd = append(r.loadEnd, o.loadEnd...)
}

// record adds a turn a caller finished. Callers run concurrently.
func (r *streamLoadResult) record(c streamChat) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chats = append(r.chats, c)
	if c.err != nil {
		r.errs = append(r.errs, fmt.Errorf("%s: %w", c.marker, c.err))
	}
}

// runStreamLoad starts a pool, warms it up, runs callers for d (the
// turns in flight then finish), closes the pool and returns what it
// measured. The benchmark timer runs during the turns only.
//
// The child CPU of the run is RUSAGE_CHILDREN after Close, less its value
// when the clock started and less the CPU time the live processes had
// used by then (/proc/PID/stat, their own and their reaped children's):
// the start-ups of the warm-up are left out; those of processes started
// during the run (replacements, cold spawns) count.
func runStreamLoad(b *testing.B, callers int, d time.Duration, cfg Config) *streamLoadResult {
	b.StopTimer()
	release := make(chan struct{})
	e := newE2E(b, claudepooltest.Config{
		Reply:          streamReply(release),
		FirstByteDelay: benchFirstByteDelay,
		APITimeout:     streamAPITimeout,
	})
	ctx, cancel := context.WithTimeout(context.Background(), d+15*time.Minute)
	defer cancel()
	warmStart := time.Now()
	p, _ := e.pool(b, cfg)
	if err := p.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	a := NewAdapter(p)
	warmStreamPool(b, ctx, a, callers, release)
	quiet(b, p)
	res := &streamLoadResult{warmup: time.Since(warmStart), warmProcs: p.Stats().Live}
	res.settle = settleProcs(ctx, func() []int { return poolPIDs(p) })

	before := p.Stats()
	childBefore := res.run(b, ctx, callers, d, func() []int { return poolPIDs(p) },
		func(int) streamTurns { return poolTurns(ctx, a) })
	after := p.Stats()
	res.started = after.SpawnToReady.Count + after.ColdAcquires - before.SpawnToReady.Count - before.ColdAcquires
	res.cold = after.ColdAcquires - before.ColdAcquires
	res.continued = after.Conversations.Continued - before.Conversations.Continued
	res.missNotHeld = after.Conversations.MissNotHeld - before.Conversations.MissNotHeld
	res.gaveWay = after.Conversations.GaveWay - before.Conversations.GaveWay
	res.live = after.Live

	closeCtx, closeCancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer closeCancel()
	if err := p.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	// Close has reaped every process the pool started.
	res.finish(b, e, childBefore)
	return res
}

// run runs callers callers for d from now, caller i with turns(i), on
// the processes pids names, with the benchmark timer on, and records the
// run's length, the test process's CPU and heap, the machine's load, and
// the processes' memory halfway and at the end. It returns the CPU time
// of the reaped children and the live processes when the clock started,
// for finish.
func (r *streamLoadResult) run(b *testing.B, ctx context.Context, callers int, d time.Duration, pids func() []int, turns func(i int) streamTurns) (childBefore time.Duration) {
	childBefore = childCPU(b) + procsCPU(pids())
	selfBefore := selfCPU(b)
	r.loadStart = append(r.loadStart, loadAverage())
	start := time.Now()
	deadline := start.Add(d)
	mid := make(chan []memUsage, 1)
	go func() {
		t := time.NewTimer(d / 2)
		defer t.Stop()
		select {
		case <-t.C:
			mid <- procsMemory(pids())
		case <-ctx.Done():
			mid <- nil
		}
	}()
	b.StartTimer()
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.caller(ctx, turns(i), i, deadline)
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	b.StopTimer()
	r.selfCPU = selfCPU(b) - selfBefore
	r.loadEnd = append(r.loadEnd, loadAverage())

	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	r.heapInuse = mem.HeapInuse
	for _, m := range append(<-mid, procsMemory(pids())...) {
		r.pss = append(r.pss, m.pss)
		r.private = append(r.private, m.private)
	}
	return childBefore
}

// finish completes a run once every process it started was reaped: the
// child CPU since childBefore (run's), and each turn's timings at the
// mock of e.
func (r *streamLoadResult) finish(b *testing.B, e *e2eEnv, childBefore time.Duration) {
	r.childCPU = childCPU(b) - childBefore
	api, err := matchStreamChats(e.mock.ChatRequests(), r.chats)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range api {
		r.overhead = append(r.overhead, c.overhead)
		r.toRequest = append(r.toRequest, c.toRequest)
		r.afterFirstByte = append(r.afterFirstByte, c.afterFirstByte)
		r.apiFirstByte = append(r.apiFirstByte, c.apiFirstByte)
	}
}

// warmStreamPool holds n chats open at once, starting streamWarmSpawns
// at a time, so that the pool starts a process for each; once all of
// them have their first text it closes release, which lets the mock
// finish their replies, and waits for them to end.
func warmStreamPool(b *testing.B, ctx context.Context, a *Adapter, n int, release chan struct{}) {
	b.Helper()
	starting := make(chan struct{}, streamWarmSpawns)
	errs := make(chan error, n)
	var up, done sync.WaitGroup
	up.Add(n)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			starting <- struct{}{}
			begun := false
			began := func() {
				if !begun {
					begun = true
					<-starting
					up.Done()
				}
			}
			defer began()
			s, err := a.StreamChat(ctx, Request{Messages: []Message{{Role: RoleUser, Content: fmt.Sprintf("%s %d.", streamWarmText, i)}}})
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			for s.Next() {
				if s.Latency().FirstText > 0 {
					began()
				}
			}
			if err := s.Err(); err != nil {
				errs <- err
			}
		}()
	}
	up.Wait()
	close(release)
	done.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("warm-up chat: %v", err)
	}
}

// streamTurns is how a caller of the load chats: the pool's, or the raw
// CLI's (e2e_stream_raw_bench_test.go).
type streamTurns struct {
	// turn sends history and a user message of text followed by a unique
	// marker, and reads the reply to the end. It returns the turn, the
	// messages it sent and the reply's text.
	turn func(history []Message, text string) (c streamChat, msgs []Message, reply string)
	// endConversation runs after a conversation's last turn; nil for
	// nothing.
	endConversation func() error
}

// poolTurns are the turns of a caller of the pool behind a.
func poolTurns(ctx context.Context, a *Adapter) streamTurns {
	return streamTurns{turn: func(history []Message, text string) (streamChat, []Message, string) {
		return runStreamTurn(ctx, a, history, text)
	}}
}

// caller runs caller i's conversations until deadline: no turn starts
// after it.
func (r *streamLoadResult) caller(ctx context.Context, t streamTurns, i int, deadline time.Time) {
	rng := rand.New(rand.NewPCG(streamSeed, uint64(i)))
	think := func() time.Duration {
		return streamMinThink + time.Duration(rng.Int64N(int64(streamMaxThink-streamMinThink)))
	}
	// The first turn of each caller within the longest think time.
	wait := time.Duration(rng.Int64N(int64(streamMaxThink)))
	for conv := 0; ; conv++ {
		continued := rng.IntN(streamMaxContinued + 1)
		var history []Message
		for turn := 0; turn <= continued; turn++ {
			if !sleepBefore(ctx, wait, deadline) {
				return
			}
			wait = think()
			text := fmt.Sprintf("Tell me more, please (caller %d, conversation %d, turn %d).", i, conv, turn)
			c, msgs, reply := t.turn(history, text)
			c.continues = turn > 0
			if want, _ := streamReplyShape(i, conv, turn); c.err == nil && len(reply) != streamReplyLen(want) {
				c.err = fmt.Errorf("a reply of %d characters, want %d (%d tokens)", len(reply), streamReplyLen(want), want)
			}
			r.record(c)
			if c.err != nil {
				break // the next conversation
			}
			history = append(msgs, Message{Role: RoleAssistant, Content: reply})
		}
		if t.endConversation != nil {
			if err := t.endConversation(); err != nil {
				r.record(streamChat{benchChat: benchChat{marker: fmt.Sprintf("[end of caller %d, conversation %d]", i, conv), err: err}})
				return
			}
		}
	}
}

// sleepBefore waits for wait and reports true, or reports false at once
// when that would end at or after deadline, or when ctx ends first.
func sleepBefore(ctx context.Context, wait time.Duration, deadline time.Time) bool {
	if !time.Now().Add(wait).Before(deadline) {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// runStreamTurn sends history and a user message of text followed by a
// unique marker, and reads the reply to the end. It returns the turn, the
// messages it sent and the reply's text.
func runStreamTurn(ctx context.Context, a *Adapter, history []Message, text string) (c streamChat, msgs []Message, reply string) {
	c.marker = fmt.Sprintf("[chat %d]", benchChatSeq.Add(1))
	msgs = append(slices.Clip(history), Message{Role: RoleUser, Content: text + " " + c.marker})
	c.start = time.Now()
	s, err := a.StreamChat(ctx, Request{Messages: msgs})
	if err != nil {
		c.err = err
		return c, msgs, ""
	}
	defer s.Close()
	for s.Next() {
	}
	c.err, c.lat, c.acq = s.Err(), s.Latency(), s.Acquire()
	if c.err == nil {
		switch res := s.Result(); {
		case res == nil:
			c.err = errors.New("the chat ended without a result")
		case c.lat.FirstText == 0:
			c.err = errors.New("the chat ended without text")
		default:
			reply, c.tokens = res.Text, res.Usage.OutputTokens
		}
	}
	return c, msgs, reply
}

// streamTurnTag finds the caller, conversation and turn a user text names.
var streamTurnTag = regexp.MustCompile(`caller (\d+), conversation (\d+), turn (\d+)`)

// streamReply answers the turns of the load with streamReplyShape's
// replies, warm-up chats with a short reply held after its first chunk
// until release is closed, and anything else with a short reply.
func streamReply(release <-chan struct{}) claudepooltest.ReplyFunc {
	return func(r claudepooltest.Request) claudepooltest.Reply {
		// The turn's own tag is the last one: a history rendered into
		// one message (a continuation that missed) names earlier turns
		// before it.
		tags := streamTurnTag.FindAllStringSubmatch(r.LastUserText(), -1)
		if len(tags) == 0 {
			tags = streamTurnTag.FindAllStringSubmatch(string(r.Body), -1)
		}
		if len(tags) == 0 {
			if bytes.Contains(r.Body, []byte(streamWarmText)) {
				return claudepooltest.Reply{Text: "Ready.", Hold: release}
			}
			return claudepooltest.Reply{Text: "OK."}
		}
		t := tags[len(tags)-1]
		caller, _ := strconv.Atoi(t[1])
		conv, _ := strconv.Atoi(t[2])
		turn, _ := strconv.Atoi(t[3])
		tokens, rate := streamReplyShape(caller, conv, turn)
		return claudepooltest.Reply{Text: streamReplyText(tokens, uint64(caller)), TokensPerSecond: rate}
	}
}

// streamReplyShape returns the output tokens and the pace (tokens/s) of
// the reply to a turn: spread over their ranges by a hash of the turn.
func streamReplyShape(caller, conv, turn int) (tokens int, rate float64) {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d/%d", caller, conv, turn)
	v := h.Sum64()
	tokens = streamMinTokens + int(v%(streamMaxTokens-streamMinTokens+1))
	rate = float64(streamMinRate + int((v>>32)%(streamMaxRate-streamMinRate+1)))
	return tokens, rate
}

// streamReplyLen is the length of a reply of tokens output tokens: the
// mock counts 1 + characters/4.
func streamReplyLen(tokens int) int { return 4 * (tokens - 1) }

// streamWords make up the replies.
var streamWords = strings.Fields(`a pool keeps processes warm so that the reply
	starts soon and streams at the pace of the model while the user reads
	every word of it and thinks about what to ask next in the same
	conversation which the process holds until the next turn arrives`)

// streamReplyText returns a reply of tokens output tokens: words from
// streamWords, starting at one chosen by seed, ending with a period.
func streamReplyText(tokens int, seed uint64) string {
	n := streamReplyLen(tokens)
	var sb strings.Builder
	sb.Grow(n + 16)
	for i := int(seed % uint64(len(streamWords))); sb.Len() < n; i++ {
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(streamWords[i%len(streamWords)])
	}
	return sb.String()[:n-1] + "."
}

// matchStreamChats finds the API request of each successful turn of
// chats, the first request whose body carries the turn's marker (later
// turns of its conversation carry it too, in their history), and returns
// their timings, in the order of the successful turns.
func matchStreamChats(reqs []claudepooltest.Request, chats []streamChat) ([]chatAPI, error) {
	first := make(map[string]claudepooltest.Request, len(reqs))
	for _, r := range reqs {
		for _, m := range chatMarker.FindAllString(string(r.Body), -1) {
			if _, seen := first[m]; !seen {
				first[m] = r
			}
		}
	}
	var out []chatAPI
	for _, c := range chats {
		if c.err != nil {
			continue
		}
		r, ok := first[c.marker]
		if !ok {
			return nil, fmt.Errorf("no API request carries the marker of chat %s", c.marker)
		}
		if r.FirstByte.IsZero() {
			return nil, fmt.Errorf("the API request of chat %s has no first byte", c.marker)
		}
		api := r.FirstByte.Sub(r.Time)
		out = append(out, chatAPI{
			toRequest:      r.Time.Sub(c.start),
			apiFirstByte:   api,
			afterFirstByte: c.lat.FirstText - r.FirstByte.Sub(c.start),
			overhead:       c.lat.FirstText - api,
		})
	}
	return out, nil
}

// poolProcsCPU returns the CPU time p's live processes have used so far,
// their own and that of their reaped children (/proc/PID/stat).
func poolProcsCPU(p *Pool) time.Duration { return procsCPU(poolPIDs(p)) }

// procsCPU returns the CPU time processes pids have used so far, their
// own and that of their reaped children (/proc/PID/stat).
func procsCPU(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parens.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 15 {
			continue
		}
		// utime, stime, cutime and cstime, in clock ticks of 1/100 s
		// (USER_HZ on Linux).
		for _, s := range f[11:15] {
			ticks, _ := strconv.ParseInt(s, 10, 64)
			total += time.Duration(ticks) * 10 * time.Millisecond
		}
	}
	return total
}

// poolPIDs returns the process IDs of p's live processes.
func poolPIDs(p *Pool) []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	pids := make([]int, 0, len(p.live))
	for proc := range p.live {
		pids = append(pids, proc.pid)
	}
	return pids
}

// loadAverage returns the machine's load average over the last minute,
// "?" when /proc/loadavg cannot be read.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// selfCPU returns the user and system CPU time of the test process.
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// quantileBytes is quantile for byte counts.
func quantileBytes(samples []int64, q float64) int64 {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	return samples[int(q*float64(len(samples)-1)+0.5)]
}

// mib converts bytes to MiB.
func mib[T int64 | uint64](n T) float64 { return float64(n) / (1 << 20) }

func (r *streamLoadResult) report(b *testing.B, callers int, d time.Duration, cfg Config) {
	n := len(r.chats)
	if n == 0 {
		b.Fatal("no chat completed")
	}
	var continuations, convs int
	var tokens int64
	var firstText []time.Duration
	for _, c := range r.chats {
		if c.continues {
			continuations++
		} else {
			convs++
		}
		if c.err == nil {
			tokens += int64(c.tokens)
			firstText = append(firstText, c.lat.FirstText)
		}
	}
	secs := r.elapsed.Seconds()
	perChat := func(t time.Duration) float64 { return ms(t) / float64(n) }
	perToken := func(t time.Duration) float64 { return float64(t.Microseconds()) / float64(max(tokens, 1)) }
	continuedPct := 0.0
	if continuations > 0 {
		continuedPct = 100 * float64(r.continued) / float64(continuations)
	}

	b.ReportMetric(float64(n)/secs, "chats/s")
	b.ReportMetric(float64(tokens)/secs, "tokens/s")
	b.ReportMetric(float64(len(r.errs)), "failures")
	b.ReportMetric(ms(quantile(r.overhead, 0.50)), "overhead-p50-ms")
	b.ReportMetric(ms(quantile(r.overhead, 0.99)), "overhead-p99-ms")
	b.ReportMetric(perChat(r.childCPU), "child-cpu-ms/chat")
	b.ReportMetric(perToken(r.childCPU), "child-cpu-us/token")
	b.ReportMetric(mib(quantileBytes(r.pss, 0.50)), "pss-p50-MiB")
	b.ReportMetric(mib(quantileBytes(r.pss, 1)), "pss-max-MiB")
	b.ReportMetric(mib(quantileBytes(r.private, 0.50)), "private-p50-MiB")
	b.ReportMetric(mib(quantileBytes(r.private, 1)), "private-max-MiB")
	b.ReportMetric(perChat(r.selfCPU), "pool-cpu-ms/chat")
	b.ReportMetric(perToken(r.selfCPU), "pool-cpu-us/token")
	b.ReportMetric(mib(r.heapInuse), "heap-inuse-MiB")
	b.ReportMetric(continuedPct, "continued-%")

	// The benchmark's own summary, on stderr so that it shows without -v.
	fmt.Fprintf(os.Stderr, "E2EStreamLoad C=%d, %v a run, pool {Size %d, MaxProcs %d, Prompt %q, Model %q, PartialMessages, CoalesceDeltas %v}, "+
		"mock API first byte %v, replies of %d-%d tokens at %d-%d tokens/s, think %v-%v, 0-%d continued turns:\n"+
		"  warm-up to %d processes took %v, and %v to settle; machine load average %s at the start, %s at the end\n"+
		"  %d turns in %v (%.2f/s) in %d conversations, %d tokens streamed (%.0f/s), %d failed\n"+
		"  first text p50 %v p99 %v; API first byte p50 %v; overhead p50 %v p99 %v (to request p50 %v p99 %v, first byte to first text p50 %v p99 %v)\n"+
		"  CLI CPU %v in all (%.2f cores), %.0f ms a turn, %.0f µs a token; %d processes started in the run, %d cold acquires, %d live at the end\n"+
		"  CLI memory (%d samples): Pss p50 %.0f MiB max %.0f MiB, private p50 %.0f MiB max %.0f MiB\n"+
		"  test process (pool, gateway, mock API, callers): CPU %v (%.2f cores), %.1f ms a turn, %.1f µs a token; heap in use %.1f MiB\n"+
		"  continued turns: %d of %d on the process that held them (%.0f%%), %d missed, %d held conversations gave way\n",
		callers, d, cfg.Size, cfg.MaxProcs, cfg.Prompt.System, cfg.Model, coalesceWindow(cfg),
		benchFirstByteDelay, streamMinTokens, streamMaxTokens, streamMinRate, streamMaxRate, streamMinThink, streamMaxThink, streamMaxContinued,
		r.warmProcs, r.warmup.Round(time.Second), r.settle.Round(time.Second), strings.Join(r.loadStart, ","), strings.Join(r.loadEnd, ","),
		n, r.elapsed.Round(time.Millisecond), float64(n)/secs, convs, tokens, float64(tokens)/secs, len(r.errs),
		rnd(quantile(firstText, 0.50)), rnd(quantile(firstText, 0.99)), rnd(quantile(r.apiFirstByte, 0.50)),
		rnd(quantile(r.overhead, 0.50)), rnd(quantile(r.overhead, 0.99)),
		rnd(quantile(r.toRequest, 0.50)), rnd(quantile(r.toRequest, 0.99)),
		rnd(quantile(r.afterFirstByte, 0.50)), rnd(quantile(r.afterFirstByte, 0.99)),
		r.childCPU.Round(time.Millisecond), r.childCPU.Seconds()/secs, perChat(r.childCPU), perToken(r.childCPU), r.started, r.cold, r.live,
		len(r.pss), mib(quantileBytes(r.pss, 0.50)), mib(quantileBytes(r.pss, 1)), mib(quantileBytes(r.private, 0.50)), mib(quantileBytes(r.private, 1)),
		r.selfCPU.Round(time.Millisecond), r.selfCPU.Seconds()/secs, perChat(r.selfCPU), perToken(r.selfCPU), mib(r.heapInuse),
		r.continued, continuations, continuedPct, r.missNotHeld, r.gaveWay)
	for _, err := range r.errs[:min(len(r.errs), 5)] {
		fmt.Fprintf(os.Stderr, "  failed: %v\n", err)
	}
}

// coalesceWindow describes cfg's CoalesceDeltas as the pool applies it.
func coalesceWindow(cfg Config) string {
	switch {
	case cfg.CoalesceDeltas < 0:
		return "off"
	case cfg.CoalesceDeltas == 0:
		return DefaultCoalesceDeltas.String() + " (default)"
	}
	return cfg.CoalesceDeltas.String()
}

// The settling of the processes after the warm-up: a CLI keeps working
// for some seconds after it is ready, and dozens started in a row load
// the machine for a while after the last one. A backend's processes were
// started long before its busy minute, so the clock starts once the
// processes' CPU over settleWindow is under settleCores, or after
// settleMax.
const (
	settleWindow = 2 * time.Second
	settleCores  = 0.6
	settleMax    = time.Minute
)

// settleProcs waits until the processes pids names use less than
// settleCores over settleWindow, at most settleMax, and returns how long
// it waited.
func settleProcs(ctx context.Context, pids func() []int) time.Duration {
	start := time.Now()
	for time.Since(start) < settleMax {
		before := procsCPU(pids())
		t := time.NewTimer(settleWindow)
		select {
		case <-ctx.Done():
			t.Stop()
			return time.Since(start)
		case <-t.C:
		}
		if used := procsCPU(pids()) - before; used.Seconds()/settleWindow.Seconds() < settleCores {
			break
		}
	}
	return time.Since(start)
}
