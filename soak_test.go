package claudepool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// The soak runs only when asked: `make soak` sets CLAUDEPOOL_SOAK=1.
// CLAUDEPOOL_SOAK_CHATS, CLAUDEPOOL_SOAK_CALLERS and CLAUDEPOOL_SOAK_SEED
// change its size and its random choices.
const (
	soakSize     = 4
	soakMaxProcs = 6
)

// soakFault is a fault a soak chat asks the fake for, and the outcome it
// must end with.
type soakFault struct {
	mode   string // fakecli mode, as a marker in the user text
	weight int
	want   string // outcome kind, or kinds separated by |
	hangs  bool   // the chat runs with hangDeadline
	// slash starts the user text with a CLI command, which must reach
	// the model as text and change nothing.
	slash bool
	// model is the chat's Request.Model.
	model string
}

// name is the fault's name in the soak's report.
func (f soakFault) name() string {
	switch {
	case f.slash:
		return "slash-command"
	case f.model != "":
		return "rejected-model"
	}
	return f.mode
}

var soakFaults = []soakFault{
	{fakecli.ModeNormal, 40, "ok", false, false, ""},
	{fakecli.ModeGarbage, 6, "ok", false, false, ""},
	{fakecli.ModeGrandchild, 6, "ok", false, false, ""},
	{fakecli.ModeRetry, 6, "ok", false, false, ""},
	{fakecli.ModeUnknownLines, 6, "ok", false, false, ""},
	{fakecli.ModeCrash, 8, "exit", false, false, ""},
	{fakecli.ModeErrorResult, 8, "result", false, false, ""},
	// On a process whose earlier turn left a grandchild holding stdout,
	// closing stdout does not end the output: the CLI is alive and
	// silent, a hang that only the caller's deadline ends.
	{fakecli.ModeCloseStdout, 5, "exit|deadline", true, false, ""},
	{fakecli.ModeHuge, 5, "line-too-long", false, false, ""},
	{fakecli.ModeHang, 5, "deadline", true, false, ""},
	{fakecli.ModeHangMid, 5, "deadline", true, false, ""},
	{mode: fakecli.ModeNormal, weight: 5, want: "ok", slash: true},
	{mode: fakecli.ModeNormal, weight: 4, want: "result", model: "claude-" + fakecli.RejectedModel + "-9"},
}

// soakResetFaults are the ways a reset between two chats can fail.
var soakResetFaults = []string{fakecli.ResetExit, fakecli.ResetHang, fakecli.ResetNoReset,
	fakecli.ResetSameSession, fakecli.ResetGarbage}

func pickFault(r *rand.Rand) soakFault {
	total := 0
	for _, f := range soakFaults {
		total += f.weight
	}
	n := r.IntN(total)
	for _, f := range soakFaults {
		if n < f.weight {
			return f
		}
		n -= f.weight
	}
	panic("unreachable")
}

// classify names the kind of a chat's error; "other" is a failure.
func classify(err error) string {
	var ee *ExitError
	var re *ResultError
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, ErrLineTooLong):
		return "line-too-long"
	case errors.Is(err, ErrNotReady):
		return "not-ready"
	case errors.Is(err, ErrClosed):
		return "closed"
	case errors.As(err, &re):
		return "result"
	case errors.As(err, &ee):
		return "exit"
	}
	return "other"
}

func envInt(t *testing.T, name string, def int64) int64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	require.NoError(t, err, name)
	return n
}

// soakResult is the end of one chat.
type soakResult struct {
	fault    soakFault
	canceled bool
	kind     string // classify of the error; "ok" needs the full reply
	atStart  bool   // StreamChat itself failed
	err      error
	problem  string // why the outcome is wrong, "" if it is right
}

// TestSoak runs thousands of chats through a pool of 4 (MaxProcs 6) from
// more concurrent callers than MaxProcs, with random faults in turns and
// in the resets between them, and random cancels. Processes serve up to
// 50 chats each. Every chat must end with its full reply or a typed error
// and see no text of another chat, the live processes must never exceed
// MaxProcs, and the pool must be back to at least Size ready processes,
// with nothing left after Close.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak skipped with -short")
	}
	if os.Getenv("CLAUDEPOOL_SOAK") != "1" {
		t.Skip("soak runs with CLAUDEPOOL_SOAK=1 (make soak)")
	}
	chats := int(envInt(t, "CLAUDEPOOL_SOAK_CHATS", 2000))
	callers := int(envInt(t, "CLAUDEPOOL_SOAK_CALLERS", 10))
	seed := uint64(envInt(t, "CLAUDEPOOL_SOAK_SEED", time.Now().UnixNano()))
	t.Logf("soak: %d chats, %d callers, pool Size %d MaxProcs %d, seed %d (CLAUDEPOOL_SOAK_SEED)",
		chats, callers, soakSize, soakMaxProcs, seed)

	fds := fdBaseline(t)
	start := time.Now()
	// The fake echoes every user text of its conversation since the last
	// reset: a chat that saw another chat's text fails its reply check.
	fp := newFakePool(t, Config{Size: soakSize, MaxProcs: soakMaxProcs, PartialMessages: true,
		StopGrace: 50 * time.Millisecond, ReadyTimeout: 2 * time.Second, MaxLineBytes: 1 << 20, MaxUses: 50},
		fakecli.EnvChunks+"=4", fakecli.EnvHugeBytes+"=2000000", fakecli.EnvEchoHistory+"=1")
	a := NewAdapter(fp.Pool)
	require.NoError(t, fp.WaitReady(testCtx(t)))

	// Watch the live processes: the pool's count, and this process's
	// children in /proc.
	var maxLive, maxChildren atomic.Int64
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			raise(&maxLive, int64(fp.Stats().Live))
			raise(&maxChildren, int64(liveChildren()))
			select {
			case <-stopWatch:
				return
			case <-tick.C:
			}
		}
	}()

	jobs := make(chan int)
	results := make([]soakResult, chats)
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				results[i] = soakChat(a, i, rand.New(rand.NewPCG(seed, uint64(i))))
			}
		}()
	}
	for i := range chats {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(stopWatch)
	<-watched

	// The pool is back to at least Size ready processes.
	require.NoError(t, fp.WaitReady(testCtx(t)))
	st := fp.Stats()
	elapsed := time.Since(start)

	faults := map[string]int{}
	outcomes := map[string]int{}
	var canceled, atStart int
	var problems []string
	for i, r := range results {
		faults[r.fault.name()]++
		outcomes[r.kind]++
		if r.canceled {
			canceled++
		}
		if r.atStart {
			atStart++
		}
		if r.problem != "" {
			problems = append(problems, fmt.Sprintf("chat %d (%s, canceled %v, at StreamChat %v): %s", i, r.fault.name(), r.canceled, r.atStart, r.problem))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "soak: %d chats in %v (%.0f chats/s), %d callers, seed %d\n", chats, elapsed.Round(time.Millisecond),
		float64(chats)/elapsed.Seconds(), callers, seed)
	fmt.Fprintf(&b, "  faults injected: %s\n", counts(faults))
	fmt.Fprintf(&b, "  outcomes:        %s\n", counts(outcomes))
	fmt.Fprintf(&b, "  random cancels:  %d; errors at StreamChat: %d; wrong outcomes: %d\n", canceled, atStart, len(problems))
	fmt.Fprintf(&b, "  max live: %d (pool), %d (children in /proc); MaxProcs %d\n", maxLive.Load(), maxChildren.Load(), soakMaxProcs)
	fmt.Fprintf(&b, "  pool: warm %d, cold %d, spawn failures %d, dead idle %d, slot timeouts %d, malformed lines %d, idle %d, live %d\n",
		st.WarmAcquires, st.ColdAcquires, st.SpawnFailures, st.DeadIdle, st.SlotTimeouts, st.MalformedLines, st.Idle, st.Live)
	retired := map[string]int{}
	for _, r := range []RetireReason{RetireMaxUses, RetireMemory, RetireResetFailed, RetireUnclean,
		RetireIdle, RetireEvicted, RetireSurplus, RetireSpare, RetireClosed} {
		retired[string(r)] = int(st.Retired[r])
	}
	fmt.Fprintf(&b, "  reuse: %d reuses, %d resets (p50 %v), uses per process p50 %d max %d; retired: %s\n",
		st.Reuses, st.Resets.Count, st.Resets.P50, st.UsesPerProcess.P50, st.UsesPerProcess.Max, counts(retired))
	t.Log(b.String())

	for i, p := range problems {
		if i == 20 {
			t.Errorf("... and %d more", len(problems)-20)
			break
		}
		t.Error(p)
	}
	require.Equal(t, chats, len(results))
	require.LessOrEqual(t, maxLive.Load(), int64(soakMaxProcs), "live processes exceeded MaxProcs")
	require.LessOrEqual(t, maxChildren.Load(), int64(soakMaxProcs), "child processes exceeded MaxProcs")
	require.GreaterOrEqual(t, st.Idle, soakSize)
	require.LessOrEqual(t, st.Live, soakMaxProcs)
	require.Positive(t, st.Reuses)
	require.Zero(t, st.SpawnFailures)

	requireClean(t, fp, fds)
	t.Logf("soak: leaks after Close: none (processes, process groups, file descriptors, goroutines)")
}

// soakChat runs chat i: a random fault, sometimes a cancel after a random
// number of events. It never fails the test itself: it reports what went
// wrong.
func soakChat(a *Adapter, i int, r *rand.Rand) (res soakResult) {
	res.fault = pickFault(r)
	text := fmt.Sprintf("chat %d %s", i, fakecli.Marker(res.fault.mode))
	if res.fault.slash {
		text = "/model claude-haiku-5-5 " + text
	}
	if r.IntN(20) == 0 {
		// The reset after this chat fails: its process must not serve
		// another chat.
		text += " " + fakecli.ResetMarker(soakResetFaults[r.IntN(len(soakResetFaults))])
	}
	timeout := time.Minute
	if res.fault.hangs {
		timeout = hangDeadline
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cancelAfter := -1
	if r.IntN(10) == 0 {
		res.canceled = true
		cancelAfter = r.IntN(4)
	}

	req := userMsg(text)
	req.Model = res.fault.model
	s, err := a.StreamChat(ctx, req)
	if err != nil {
		res.atStart, res.err, res.kind = true, err, classify(err)
		res.problem = checkSoakOutcome(res, "", "")
		return res
	}
	var reply string
	for n := 0; ; n++ {
		if n == cancelAfter {
			cancel()
		}
		if !s.Next() {
			break
		}
		switch ev := s.Event(); {
		case ev.Type == EventAssistant:
			reply = ev.Text()
		case ev.Type == EventInit && ev.Init.Model != fakecli.DefaultModel:
			// No chat's text may have switched a process's model.
			res.problem = "the turn ran on " + ev.Init.Model
		}
	}
	res.err = s.Err()
	res.kind = classify(res.err)
	if res.problem != "" {
		_ = s.Close()
		return res
	}
	if err := s.Close(); err != nil {
		res.problem = "Close: " + err.Error()
		return res
	}
	var result string
	if rs := s.Result(); rs != nil {
		result = rs.Text
	}
	if res.kind == "ok" && reply != result {
		res.problem = "the assistant text differs from the result"
		return res
	}
	if strings.Count(reply, "chat ") > 1 || strings.Count(result, "chat ") > 1 {
		res.problem = fmt.Sprintf("saw another chat's text: %.120q", result)
		return res
	}
	res.problem = checkSoakOutcome(res, "echo: "+text, result)
	return res
}

// checkSoakOutcome says what is wrong with a chat's outcome, or "".
func checkSoakOutcome(res soakResult, want, got string) string {
	switch {
	case res.kind == "other":
		return fmt.Sprintf("untyped error %T: %v", res.err, res.err)
	case res.kind == "ok" && got != want:
		return fmt.Sprintf("reply %.60q, want %.60q", got, want)
	case slices.Contains(strings.Split(res.fault.want, "|"), res.kind):
		return ""
	case res.canceled && res.kind == "canceled":
		return ""
	}
	return fmt.Sprintf("outcome %s (%v), want %s", res.kind, res.err, res.fault.want)
}

func raise(max *atomic.Int64, v int64) {
	for {
		cur := max.Load()
		if v <= cur || max.CompareAndSwap(cur, v) {
			return
		}
	}
}

// liveChildren counts this process's children that all exist at one
// moment: a scan of /proc is not a snapshot, so the count keeps only the
// children still there once the scan has ended.
func liveChildren() int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	var kids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(data), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(self) {
			kids = append(kids, pid)
		}
	}
	n := 0
	for _, pid := range kids {
		if syscall.Kill(pid, 0) == nil {
			n++
		}
	}
	return n
}

// counts formats a map of counts, largest first.
func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
