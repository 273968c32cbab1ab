// Command capacity measures what CAPACITY.md's sizing rules are made of, on
// the real CLI against claudepooltest's mock (which answers at once, so that
// every CPU-second counted is the CLI's or the pool's):
//
//   - RSS (VmRSS) of a fresh idle process, of a process reused for -chats
//     chats, and of a process holding a -turns-turn conversation;
//   - CPU per spawn (spawn to ready with the pool's prompt) and per chat
//     (a reused process, its reset included; a held conversation's turn);
//   - chats per second with -callers callers for -seconds, and the CPU they
//     took, hence chats per second per core.
//
// CPU is read from /proc/PID/stat for live processes and getrusage
// (RUSAGE_CHILDREN) for reaped ones.
//
//	go run ./examples/cluster/capacity -cli "$CLAUDEPOOL_CLI"
package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/claudepooltest"
)

const system = "You are a concise assistant."

func main() {
	cli := flag.String("cli", os.Getenv("CLAUDEPOOL_CLI"), "the claude executable")
	chats := flag.Int("chats", 30, "chats on one reused process")
	turns := flag.Int("turns", 10, "turns of the held conversation")
	callers := flag.Int("callers", 4, "concurrent callers for the throughput run")
	seconds := flag.Int("seconds", 20, "length of the throughput run")
	flag.Parse()
	if err := run(*cli, *chats, *turns, *callers, time.Duration(*seconds)*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "capacity:", err)
		os.Exit(1)
	}
}

func run(cli string, chats, turns, callers int, dur time.Duration) error {
	api := claudepooltest.NewServer(claudepooltest.Config{})
	defer api.Close()
	home, err := os.MkdirTemp("", "claudepool-capacity-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	base := claudepool.Config{Command: cli, Env: append(api.Env(), "HOME="+home),
		Prompt: &claudepool.SystemPrompt{System: system}}
	if cli == "" {
		base.Command = claudepool.DefaultCommand
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("machine: %d cores, load average %s", runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Println()

	// 1. Spawns: three warm processes, each from spawn to ready with the
	// pool's prompt; their CPU so far is the spawn's.
	cfg := base
	cfg.Size, cfg.MaxProcs, cfg.HoldConversations = 3, 3, -1
	p, err := claudepool.NewPool(cfg)
	if err != nil {
		return err
	}
	if err := p.WaitReady(ctx); err != nil {
		return err
	}
	settle(p, 3)
	var spawnCPU []time.Duration
	var idleRSS []int64
	for _, pid := range children() {
		spawnCPU = append(spawnCPU, cpuOf(pid))
		idleRSS = append(idleRSS, rssOf(pid))
	}
	fmt.Printf("spawn to ready (prompt applied), CPU per process: %s  (p50 of %d; spawn-to-ready p50 %s)\n",
		median(spawnCPU), len(spawnCPU), p.Stats().SpawnToReady.P50)
	fmt.Printf("RSS of a fresh idle process: %s\n", mib(medianInt(idleRSS)))

	// 2. One process reused for many chats, each a new conversation; the
	// reset after each chat is counted in its CPU.
	a := claudepool.NewAdapter(p)
	spawns0 := p.Stats().SpawnToReady.Count + p.Stats().ColdAcquires
	c0 := cpuMark()
	var pid int
	uses := map[int]int{}
	var growth []string
	var measured time.Duration
	for i := range chats {
		s, err := chat(ctx, a, []claudepool.Message{{Role: claudepool.RoleUser,
			Content: fmt.Sprintf("Chat %d: tell me about the number %d.", i, i)}})
		if err != nil {
			return err
		}
		pid = s.Acquire().PID
		uses[pid]++
		settle(p, 3) // the reset done: its CPU is in this chat's share
		if n := uses[pid]; n == 1 && i == 0 || n == 10 || n == 30 || n == 60 || n == 90 {
			m := cpuMark()
			measured += m.sub(c0)
			growth = append(growth, fmt.Sprintf("%d chats %s", n, mib(rssOf(pid))))
			c0 = cpuMark() // reading /proc is not the CLI's
		}
	}
	perChat := (measured + cpuMark().sub(c0)) / time.Duration(chats)
	st := p.Stats()
	fmt.Printf("CPU per chat on a reused process (its reset included): %s  (%d chats, %d reuses, %d spawns to replace processes retired after MaxUses, included)\n",
		perChat, chats, st.Reuses, st.SpawnToReady.Count+st.ColdAcquires-spawns0)
	var reusedRSS []int64
	for _, c := range children() {
		reusedRSS = append(reusedRSS, rssOf(c))
	}
	fmt.Printf("RSS of a reused process after: %s\n", strings.Join(growth, ", "))
	fmt.Printf("RSS after %d chats on the pool's 3 processes: %s (chats per process %v); Stats.IdleRSS %s\n",
		chats, joinMiB(reusedRSS), slices.Sorted(maps.Values(uses)), mib(p.Stats().IdleRSS))
	if err := p.Close(ctx); err != nil {
		return err
	}

	// 3. A held conversation: each turn continues on the process that holds
	// the turns before it.
	cfg = base
	cfg.Size, cfg.MaxProcs, cfg.HoldConversations = 1, 2, time.Minute
	p, err = claudepool.NewPool(cfg)
	if err != nil {
		return err
	}
	defer p.Close(context.Background())
	if err := p.WaitReady(ctx); err != nil {
		return err
	}
	a = claudepool.NewAdapter(p)
	settle(p, 1)
	var msgs []claudepool.Message
	var turnCPU time.Duration
	var heldRSS []string
	for k := range turns {
		msgs = append(msgs, claudepool.Message{Role: claudepool.RoleUser,
			Content: fmt.Sprintf("Turn %d: and what about the number %d? %s", k+1, k+1, strings.Repeat("Some context. ", 20))})
		m := cpuMark()
		s, err := chat(ctx, a, msgs)
		if err != nil {
			return err
		}
		settle(p, 2)
		if k > 0 {
			if !s.Acquire().Continued {
				return fmt.Errorf("turn %d did not continue its conversation", k+1)
			}
			turnCPU += cpuMark().sub(m)
		}
		msgs = append(msgs, claudepool.Message{Role: claudepool.RoleAssistant, Content: s.Result().Text})
		if k == 0 || k == turns-1 || k == turns/2-1 {
			heldRSS = append(heldRSS, fmt.Sprintf("after turn %d %s", k+1, mib(rssOf(s.Acquire().PID))))
		}
	}
	fmt.Printf("CPU per held turn (turns 2-%d, continued): %s\n", turns, turnCPU/time.Duration(turns-1))
	fmt.Printf("RSS of the process holding the conversation: %s; Stats.Held %d\n", strings.Join(heldRSS, ", "), p.Stats().Held)
	if err := p.Close(ctx); err != nil {
		return err
	}

	// 4. Throughput: callers chatting back to back, single-turn chats.
	cfg = base
	cfg.Size, cfg.MaxProcs, cfg.HoldConversations = callers, callers+1, -1
	p, err = claudepool.NewPool(cfg)
	if err != nil {
		return err
	}
	defer p.Close(context.Background())
	if err := p.WaitReady(ctx); err != nil {
		return err
	}
	settle(p, callers)
	a = claudepool.NewAdapter(p)
	var done, failed atomic.Int64
	m := cpuMark()
	self0 := selfCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Since(start) < dur; i++ {
				_, err := chat(ctx, a, []claudepool.Message{{Role: claudepool.RoleUser,
					Content: fmt.Sprintf("Caller %d, chat %d: hello.", w, i)}})
				if err != nil {
					failed.Add(1)
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	cliCPU := cpuMark().sub(m)
	self := selfCPU() - self0
	rate := float64(done.Load()) / wall.Seconds()
	cores := (cliCPU + self).Seconds() / wall.Seconds()
	fmt.Printf("throughput, %d callers for %s: %d chats (%d failed), %.1f chats/s; CPU: CLI %.2f + backend and mock %.2f cores busy\n",
		callers, wall.Round(time.Second), done.Load(), failed.Load(), rate, cliCPU.Seconds()/wall.Seconds(), self.Seconds()/wall.Seconds())
	fmt.Printf("chats per second per core: %.1f (chats/s over cores busy); %.1f per core of this %d-core machine\n",
		rate/cores, rate/float64(runtime.NumCPU()), runtime.NumCPU())
	st = p.Stats()
	fmt.Printf("  warm %d, cold %d, reuses %d, first event p50 warm %s, result p50 warm %s\n",
		st.WarmAcquires, st.ColdAcquires, st.Reuses, st.Warm.FirstEvent.P50, st.Warm.Result.P50)
	return nil
}

func chat(ctx context.Context, a *claudepool.Adapter, msgs []claudepool.Message) (*claudepool.Stream, error) {
	s, err := a.StreamChat(ctx, claudepool.Request{System: system, Messages: msgs})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	for s.Next() {
	}
	return s, s.Err()
}

// settle waits until the pool has idle processes and nothing in flight:
// resets and spawns done, so that their CPU is counted where it belongs.
func settle(p *claudepool.Pool, idle int) {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		st := p.Stats()
		if st.Idle >= idle && st.Busy == 0 && st.Resetting == 0 && st.Starting == 0 {
			time.Sleep(100 * time.Millisecond) // the last output lines
			return
		}
	}
}

// children lists this process's children (the pool's CLI processes).
func children() []int {
	var out []int
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

// clockTick is USER_HZ, 100 on Linux.
const clockTick = 10 * time.Millisecond

// cpuOf returns the user and system CPU of a live process.
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields from the state on: utime and stime are the 12th and 13th.
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * clockTick
}

func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// mark is the CPU of the CLI processes at one moment: those reaped so far
// (getrusage) and those alive.
type mark struct {
	reaped time.Duration
	live   map[int]time.Duration
}

func cpuMark() mark {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	m := mark{reaped: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), live: map[int]time.Duration{}}
	for _, pid := range children() {
		m.live[pid] = cpuOf(pid)
	}
	return m
}

// sub returns the CLI CPU between an earlier mark o and m. A process alive
// at o and reaped since is in m.reaped whole, so its CPU at o comes off.
func (m mark) sub(o mark) time.Duration {
	d := m.reaped - o.reaped
	for _, c := range m.live {
		d += c
	}
	for _, c := range o.live {
		d -= c
	}
	return d
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func medianInt(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func joinMiB(xs []int64) string {
	var s []string
	for _, x := range xs {
		s = append(s, mib(x))
	}
	return strings.Join(s, ", ")
}
