package claudepool

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// A process's life in the pool:
//
//	spawn → probe → specialize → idle → leased → reset → idle → ...
//	                               ↘       ↘        ↘
//	                                         retired
//
// A warm process is spawned and probed (an mcp_status answer proves it
// ready), given Config.Prompt when the pool has one, its baseline of
// processes recorded (procgroup.go), and put in the idle set. A chat
// leases it; when the chat ends cleanly the pool kills what the chat
// started and clears its conversation in the background (the CLI's
// /clear), puts its model back, and returns it to the idle set for the
// next chat with the same prompt.
// Anything else retires it: a chat that did not end cleanly, a reset that
// was not confirmed, Config.MaxUses, Config.MaxRSS, Config.MaxIdle, an
// eviction for a slot, Close. A cold process starts leased.
//
// Every state change happens under the pool's mutex, in this file, and
// moves the process between the pool's counts; an exit (the reaper) can
// come at any time and wins over whatever else was about to happen.
const (
	stateStarting  int32 = iota // spawned, being probed or specialized
	stateIdle                   // ready, in the idle set
	stateLeased                 // serving a caller
	stateResetting              // its conversation is being cleared
	stateRetired                // being stopped, or gone
	numStates
)

// pooled is the pool's record of one of its processes: the CLI process,
// its place in the lifecycle and its life so far. The CLI floor (Process,
// control.go) knows nothing of it.
type pooled struct {
	*Process
	// state changes only under the pool's mutex; it is atomic so that a
	// lock-free read sees a recent value.
	state atomic.Int32
	life  life
}

// life is what the pool knows of one process. The fields are guarded by
// the pool's mutex while the process is idle; its leaseholder owns them
// while it is leased or resetting.
type life struct {
	warm   bool          // started ahead of time
	prompt *SystemPrompt // set by its first initialize; nil while fresh
	model  string        // last model set with set_model; "" is the pool's
	// baseModel is the model id the pool's model resolves to on this
	// process, from the first system/init it printed on the pool's model
	// or set_model's answer for it; "" until known. A reset proves the
	// process runs it again.
	baseModel string
	session   string      // session id of its current conversation
	uses      int         // chats served
	maxUses   int         // its share of Config.MaxUses, with jitter
	mem       memUsage    // its memory after its last reset; zeros unknown
	readyAt   time.Time   // when it last became idle
	idleTimer *time.Timer // MaxIdle expiry of the current idle period
	held      *held       // the conversation it holds while idle; nil when reset
	idleGen   int         // counts its idle periods, so that a late timer of an earlier one does nothing
	holdTimer *time.Timer // ends the hold after Config.HoldConversations
	acquire   AcquireInfo // how its current leaseholder got it
	// baseline is its process group and descendants when it became
	// ready, which its resets keep (procgroup.go); nil until taken, and
	// without /proc.
	baseline procSet
	// toolsAsked is set when a chat since its last reset asked for a
	// tool (a tool_use block, or a request of the CLI to the pool): only
	// then can a chat have started processes, and its reset looks for
	// them (endLeftovers).
	toolsAsked bool
	// retired is set when the pool retires it; a process can also end
	// on its own.
	retired bool
	// evictedForSpare is set when the refill retired it to free a slot
	// for a spare.
	evictedForSpare bool
}

// memUsage is what a process costs in memory, in bytes (processMemory).
type memUsage struct {
	rss     int64 // resident, shared pages included
	pss     int64 // proportional: private plus a share of the shared pages
	private int64 // the pages it wrote (Private_Dirty)
}

// RetireReason says why the pool stopped a process.
type RetireReason string

// The reasons the pool retires a process.
const (
	RetireMaxUses     RetireReason = "max_uses"     // served Config.MaxUses chats
	RetireMemory      RetireReason = "memory"       // grew past Config.MaxRSS or Config.MaxPrivate
	RetireResetFailed RetireReason = "reset_failed" // its reset was not confirmed
	RetireUnclean     RetireReason = "unclean"      // its chat ended in a cancel, a crash or a protocol error
	RetireIdle        RetireReason = "idle"         // idle longer than Config.MaxIdle
	RetireEvicted     RetireReason = "evicted"      // gave its place to a request with another prompt
	RetireSurplus     RetireReason = "surplus"      // kept for another prompt beyond what the pool keeps, or idle for DefaultSurplusIdle in an unbounded pool
	RetireSpare       RetireReason = "spare"        // a spare beyond Size kept for a demand that has passed (Config.SpareDecay, or DefaultSurplusIdle in an unbounded pool)
	RetireClosed      RetireReason = "closed"       // the pool was closed
)

// setStateLocked moves proc to state s and keeps the counts. p.mu must be
// held.
func (p *Pool) setStateLocked(proc *pooled, s int32) {
	p.count[proc.state.Swap(s)]--
	p.count[s]++
}

// track registers a started process and starts its reaper and stderr
// drainer.
func (p *Pool) track(proc *pooled, state int32) {
	p.mu.Lock()
	p.live[proc.Process] = proc
	proc.state.Store(state)
	p.count[state]++
	p.noteDemandLocked()
	p.mu.Unlock()
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		proc.drainStderr()
	}()
	go func() {
		defer p.wg.Done()
		proc.reap()
	}()
}

// newPooled is the pool's record of a process it just spawned.
func (p *Pool) newPooled(proc *Process, warm bool) *pooled {
	l := life{warm: warm, maxUses: p.cfg.MaxUses}
	if l.maxUses > 1 {
		// Up to 10% fewer, so that processes started together are not
		// all recycled together.
		l.maxUses -= rand.IntN(l.maxUses/10 + 1)
	}
	return &pooled{Process: proc, life: l}
}

// spawnWarm starts one process, probes it, specializes it, and makes it
// idle. The refill has counted it in p.spawning and reserved its slot.
func (p *Pool) spawnWarm() {
	defer p.wg.Done()
	defer p.wakeFill()
	var proc *pooled
	cp, err := p.spawner.spawn()
	if err == nil {
		proc = p.newPooled(cp, true)
		p.track(proc, stateStarting)
		p.log.Debug("claudepool: process started", "pid", proc.pid, "warm", true)
		err = proc.probe(p.ctx)
		if err == nil && len(p.cfg.MCPServers) > 0 {
			err = p.awaitServers(proc)
		}
		if err == nil && len(p.cfg.Models) > 0 {
			err = p.confirmModels(proc)
		}
		if err == nil && p.cfg.Prompt != nil {
			err = proc.initialize(p.ctx, *p.cfg.Prompt)
			if err == nil {
				proc.life.prompt = p.cfg.Prompt
			}
		}
		if err == nil && p.gw != nil && !p.cfg.NoPriming {
			err = p.prime(proc)
		}
		if err == nil {
			// Ready: what runs with it now (its MCP servers) is its own
			// for life; anything started later is a chat's.
			proc.life.baseline = takeBaseline(proc.pid)
			proc.life.mem = processMemory(proc.pid)
		}
	}

	p.mu.Lock()
	p.spawning--
	if err != nil {
		backoff := p.spawnFailedLocked(err)
		failures, closed := p.warmFailures, p.closed
		if proc != nil && proc.state.Load() == stateStarting {
			p.setStateLocked(proc, stateRetired)
		}
		p.mu.Unlock()
		if proc == nil {
			p.freeSlot()
		} else {
			proc.kill()
			proc.abandonOutput()
		}
		if !closed {
			p.log.Warn("claudepool: spawn failed", "err", err, "consecutive_failures", failures, "retry_in", backoff)
		}
		return
	}
	p.warmFailures, p.failedSpawns = 0, 0
	p.lastSpawnErr = nil
	p.nextAttempt = time.Time{}
	if proc.state.Load() != stateStarting {
		// It exited after answering; the reaper has accounted for it.
		p.notifyLocked()
		p.mu.Unlock()
		return
	}
	ready := time.Since(proc.spawnedAt)
	p.lat.spawnToReady.record(ready)
	p.toIdleLocked(proc)
	p.mu.Unlock()
	p.log.Debug("claudepool: process ready", "pid", proc.pid, "spawn_to_ready", ready)
}

// prime runs one chat on a fresh process, answered by the gateway with no
// API call, and resets it. The CLI's path from a user line to its API
// request is slow the first time it runs (about 100 ms more); a primed
// process serves its first real chat as fast as a reused one. It sets the
// pool's default system prompt on a process that has none yet.
func (p *Pool) prime(proc *pooled) error {
	ctx := p.ctx
	if proc.life.prompt == nil {
		sp := p.defaultPrompt()
		if err := proc.initialize(ctx, sp); err != nil {
			return err
		}
		proc.life.prompt = &sp
	}
	t := &apiTurn{prime: true}
	p.gw.bind(proc.token, t)
	defer p.gw.unbind(proc.token, t)
	line, err := encodeUserLine(primeText)
	if err != nil {
		return err
	}
	if err := proc.WriteLine(line); err != nil {
		return proc.exitedBefore("the priming chat", err)
	}
	if err := proc.primed(ctx); err != nil {
		return err
	}
	return p.resetConversation(ctx, proc)
}

// primeText is the user text of a priming chat.
const primeText = "hi"

// primed reads a priming chat's turn up to its result.
func (proc *pooled) primed(ctx context.Context) error {
	defer proc.exchange(ctx)()
	for {
		line, err := proc.ReadLine()
		if err != nil {
			return proc.readErr(ctx, "the priming chat", err)
		}
		ev, _, perr := parseLine(line)
		if perr == nil {
			if err := proc.answerIfAsked(ctx, ev); err != nil {
				return proc.exitedBefore("the priming chat", err)
			}
		}
		switch {
		case perr != nil:
			proc.set.malformed.Add(1)
		case ev.Type == EventInit:
			proc.life.session = ev.SessionID
			if proc.life.baseModel == "" && proc.life.model == "" && ev.Init != nil {
				proc.life.baseModel = ev.Init.Model
			}
		case ev.Type == EventResult || (ev.Type == EventUnknown && ev.Subtype == "result"):
			if ev.Result == nil || ev.Result.IsError {
				return fmt.Errorf("claudepool: process %d failed its priming chat: %s", proc.pid, line)
			}
			return nil
		}
	}
}

// confirmModels switches a starting process to each of Config.Models and
// back: the CLI confirms a model with the API the first time a process
// switches to it, and this keeps that off the chats' path.
func (p *Pool) confirmModels(proc *pooled) error {
	for _, m := range p.cfg.Models {
		if m == p.cfg.Model {
			continue
		}
		if _, err := proc.setModel(p.ctx, m); err != nil {
			return err
		}
	}
	base, err := proc.setModel(p.ctx, p.cfg.poolModel())
	proc.life.baseModel = base
	return err
}

// awaitServers waits until the CLI is done connecting the caller's MCP
// servers (Config.MCPServers), so that the processes they run are in the
// process's baseline and survive its resets. The CLI reports a server
// "pending" while it connects; one still pending after ReadyTimeout is
// left to finish on its own, and whatever it starts afterwards goes at the
// process's first reset.
func (p *Pool) awaitServers(proc *pooled) error {
	deadline := time.Now().Add(p.cfg.ReadyTimeout)
	for poll := time.Millisecond; ; poll = min(2*poll, 50*time.Millisecond) {
		resp, err := proc.control(p.ctx, map[string]any{"subtype": "mcp_status"})
		if err != nil {
			return err
		}
		pending := pendingServers(resp, p.cfg.MCPServers)
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			p.log.Warn("claudepool: MCP servers still connecting when the process became ready", "pid", proc.pid, "servers", pending)
			return nil
		}
		t := time.NewTimer(poll)
		select {
		case <-p.ctx.Done():
			t.Stop()
			return p.ctx.Err()
		case <-t.C:
		}
	}
}

// pendingServers returns the servers of an mcp_status answer that are in
// servers and still connecting.
func pendingServers(resp json.RawMessage, servers map[string]json.RawMessage) []string {
	var st struct {
		MCPServers []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
		} `json:"mcpServers"`
	}
	_ = json.Unmarshal(resp, &st)
	var pending []string
	for _, s := range st.MCPServers {
		if _, ok := servers[s.Name]; ok && s.Status == "pending" {
			pending = append(pending, s.Name)
		}
	}
	return pending
}

// spawnFailedLocked records a failed spawn and schedules the next attempt.
func (p *Pool) spawnFailedLocked(err error) (backoff time.Duration) {
	p.warmFailures++
	backoff = p.cfg.SpawnBackoff << min(p.warmFailures-1, 20)
	backoff = min(backoff, MaxSpawnBackoff)
	if p.closed {
		backoff = 0
	} else {
		p.counters.spawnFailures.Add(1)
		p.failedSpawns++
	}
	p.nextAttempt = time.Now().Add(backoff)
	p.lastSpawnErr = err
	p.notifyLocked()
	return backoff
}

// toIdleLocked puts a process in the idle set, or retires it when the pool
// is closed or keeps enough idle processes of other prompts. p.mu must be
// held.
func (p *Pool) toIdleLocked(proc *pooled) {
	if p.closed {
		p.retireLocked(proc, RetireClosed)
		return
	}
	proc.life.readyAt = time.Now()
	proc.life.idleGen++
	gen := proc.life.idleGen
	switch {
	case p.cfg.MaxIdle > 0:
		ttl := p.cfg.MaxIdle - time.Duration(rand.Int64N(int64(p.cfg.MaxIdle)/10+1))
		proc.life.idleTimer = time.AfterFunc(ttl, func() { p.expire(proc, gen) })
	case p.slots == nil && p.cfg.SpareDecay == 0 && proc.life.held == nil:
		// Nothing else bounds the idle processes: one the pool does
		// not need for Size goes after surplusIdle.
		proc.life.idleTimer = time.AfterFunc(p.surplusIdle, func() { p.shrink(proc, gen) })
	}
	p.setStateLocked(proc, stateIdle)
	p.idle.add(proc)
	if proc.life.held != nil {
		p.holdLocked(proc, gen)
	}
	if p.slots == nil && p.isForeign(proc) {
		// Without MaxProcs nothing else bounds the processes kept for
		// prompts that may never come back.
		if n := p.idle.count(p.isForeign); n > max(p.cfg.Size, 1) {
			p.retireLocked(p.idle.oldest(p.isForeign), RetireSurplus)
		}
	}
	p.notifyLocked()
}

// isForeign reports whether an idle process carries a prompt other than
// the pool's default (Config.Prompt, or the empty prompt a request without
// one gets): such a process serves only requests with its own prompt.
// p.mu must be held.
func (p *Pool) isForeign(proc *pooled) bool {
	return proc.life.prompt != nil && *proc.life.prompt != p.defaultPrompt()
}

// defaultPrompt is the system prompt of a request that brings none.
func (p *Pool) defaultPrompt() SystemPrompt {
	if p.cfg.Prompt != nil {
		return *p.cfg.Prompt
	}
	return SystemPrompt{}
}

// isSpare reports whether an idle process counts toward Config.Size: it
// holds no conversation and can serve a request without a prompt of its
// own.
func (p *Pool) isSpare(proc *pooled) bool { return proc.life.held == nil && !p.isForeign(proc) }

// leaveIdleLocked takes an idle process out of the idle set and stops its
// timers. p.mu must be held.
func (p *Pool) leaveIdleLocked(proc *pooled) {
	p.idle.remove(proc)
	for _, t := range []**time.Timer{&proc.life.idleTimer, &proc.life.holdTimer} {
		if *t != nil {
			(*t).Stop()
			*t = nil
		}
	}
}

// claimLocked leases an idle process to a caller. A process that holds a
// conversation is leased to continue it. p.mu must be held.
func (p *Pool) claimLocked(proc *pooled, start time.Time) {
	p.leaveIdleLocked(proc)
	p.setStateLocked(proc, stateLeased)
	p.noteDemandLocked()
	proc.life.uses++
	wait := time.Since(start)
	proc.life.acquire = AcquireInfo{Warm: true, Reused: proc.life.uses > 1, Uses: proc.life.uses,
		Continued: proc.life.held != nil, Wait: wait, IdleAge: start.Sub(proc.life.readyAt), PID: proc.pid}
	proc.life.held = nil
	p.counters.warm.Add(1)
	if proc.life.uses > 1 {
		p.counters.reuses.Add(1)
	}
	p.lat.warmAcquire.record(wait)
}

// retireLocked takes proc out of service and stops it in the background.
// p.mu must be held.
func (p *Pool) retireLocked(proc *pooled, reason RetireReason) {
	if proc.life.retired {
		return
	}
	proc.life.retired = true
	p.counters.retired[reasonIndex(reason)].Add(1)
	p.lat.uses.record(time.Duration(proc.life.uses))
	prev := proc.state.Load()
	if prev == stateRetired {
		return // it exited on its own: nothing to stop
	}
	if prev == stateIdle {
		p.leaveIdleLocked(proc)
	}
	p.setStateLocked(proc, stateRetired)
	p.log.Debug("claudepool: retiring process", "pid", proc.pid, "reason", string(reason), "uses", proc.life.uses)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_ = proc.Stop(context.Background())
	}()
}

func reasonIndex(r RetireReason) int {
	for i, x := range retireReasonsArray {
		if x == r {
			return i
		}
	}
	panic("claudepool: unknown retire reason " + string(r))
}

// giveBack ends a chat's lease. A process whose chat ended cleanly holds
// the chat's conversation (h) for its continuation, or, without one, is
// reset for the next chat in the background, unless it has served its
// share of Config.MaxUses; any other end retires it.
func (p *Pool) giveBack(proc *pooled, clean bool, h *held) {
	// A process that holds its conversation, or is deferred, is no
	// spare: at the MaxProcs cap the refill then resets the least
	// recently used held conversation to restore Size, off any chat's
	// path.
	defer p.wakeFill()
	// A process grown past MaxRSS or MaxPrivate holds nothing: its reset
	// retires it.
	// /proc is read before the lock, which no caller should wait on.
	hold := h != nil && p.cfg.HoldConversations > 0 && !p.outgrown(proc)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case proc.state.Load() != stateLeased:
		// It exited during its chat.
		p.retireLocked(proc, RetireUnclean)
	case !clean:
		p.retireLocked(proc, RetireUnclean)
	case p.closed:
		p.retireLocked(proc, RetireClosed)
	case proc.life.uses >= proc.life.maxUses:
		p.retireLocked(proc, RetireMaxUses)
	case hold:
		proc.life.held = h
		p.toIdleLocked(proc)
	case p.idle.count(p.isSpare) > 0:
		// A spare is ready for the next caller: the reset waits so as
		// not to compete with a chat's start for the CPU (pacing.go).
		p.setStateLocked(proc, stateResetting)
		p.deferResetLocked(proc)
	default:
		p.resetLocked(proc)
	}
}

// resetLocked starts the reset of a process that is leased, or idle and
// holding a conversation. p.mu must be held.
func (p *Pool) resetLocked(proc *pooled) {
	if proc.state.Load() == stateIdle {
		p.leaveIdleLocked(proc)
	}
	proc.life.held = nil
	p.setStateLocked(proc, stateResetting)
	p.wg.Add(1)
	go p.reset(proc)
}

// reset clears a process's conversation, puts its model back, and checks
// its memory; then it goes back to the idle set, or is retired.
func (p *Pool) reset(proc *pooled) {
	defer p.wg.Done()
	defer p.wakeFill()
	start := time.Now()
	err := p.resetConversation(p.ctx, proc)
	var mem memUsage
	if err == nil {
		mem = processMemory(proc.pid)
	}
	rss := mem.rss
	// A reset that Close cut short says nothing about the process.
	closing := err != nil && p.isClosed()
	if err != nil && !closing {
		p.log.Warn("claudepool: reset failed", "pid", proc.pid, "err", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case closing:
		p.retireLocked(proc, RetireClosed)
	case err != nil || proc.state.Load() != stateResetting:
		p.retireLocked(proc, RetireResetFailed)
	case p.cfg.MaxRSS > 0 && rss > p.cfg.MaxRSS:
		p.log.Debug("claudepool: process outgrew MaxRSS", "pid", proc.pid, "rss", rss, "max_rss", p.cfg.MaxRSS)
		p.retireLocked(proc, RetireMemory)
	case p.cfg.MaxPrivate > 0 && mem.private > p.cfg.MaxPrivate:
		p.log.Debug("claudepool: process outgrew MaxPrivate", "pid", proc.pid, "private", mem.private, "max_private", p.cfg.MaxPrivate)
		p.retireLocked(proc, RetireMemory)
	default:
		took := time.Since(start)
		p.lat.reset.record(took)
		proc.life.mem = mem
		p.toIdleLocked(proc)
		p.log.Debug("claudepool: process reset", "pid", proc.pid, "uses", proc.life.uses, "took", took, "rss", rss)
	}
}

// outgrown reports whether a process's memory exceeds Config.MaxRSS or
// Config.MaxPrivate; it then goes through a reset, which retires it.
func (p *Pool) outgrown(proc *pooled) bool {
	switch {
	case p.cfg.MaxPrivate > 0:
		m := processMemory(proc.pid)
		return m.private > p.cfg.MaxPrivate || (p.cfg.MaxRSS > 0 && m.rss > p.cfg.MaxRSS)
	case p.cfg.MaxRSS > 0:
		return processRSS(proc.pid) > p.cfg.MaxRSS
	}
	return false
}

// resetConversation ends what the chat started (the processes outside
// the process's baseline, procgroup.go), empties its working directory,
// clears its conversation and proves that it runs the pool's model again:
// the new conversation's system/init must name the process's base model.
// When a chat switched the model, or the init names another one,
// set_model puts the pool's model back and its answer must name the base
// model. A process that cannot prove it is not reused.
func (p *Pool) resetConversation(ctx context.Context, proc *pooled) error {
	if err := p.endLeftovers(ctx, proc); err != nil {
		return err
	}
	if err := emptyDir(proc.workDir); err != nil {
		return fmt.Errorf("%w: process %d: %w", errResetUnconfirmed, proc.pid, err)
	}
	l := &proc.life
	session, model, err := proc.clearConversation(ctx, l.session)
	if err != nil {
		return err
	}
	l.session = session
	if p.gw != nil {
		p.gw.cleared(proc.token)
	}
	if l.model == "" && (l.baseModel == "" || model == l.baseModel) {
		// Nothing switched it since spawn: the init of a process whose
		// model was never learned names its base model.
		if l.baseModel == "" {
			l.baseModel = model
		}
		return nil
	}
	got, err := proc.setModel(ctx, p.cfg.poolModel())
	if err != nil {
		return err
	}
	if l.baseModel == "" {
		l.baseModel = got
	}
	if got != l.baseModel {
		return fmt.Errorf("%w: process %d runs %q after its reset, not %q", errResetUnconfirmed, proc.pid, got, l.baseModel)
	}
	l.model = ""
	return nil
}

// endLeftovers kills the processes of proc's group and its descendants
// that are not in its baseline, and proves they are gone. A process
// without a baseline (a cold one at its first reset, or a warm one at
// the reset of its priming chat) takes it now and kills nothing.
//
// A chat starts processes only through a tool, so the look at /proc
// (a read of every process's stat and environ, milliseconds of CPU on
// the reset's path) is made only after chats that asked for one, and
// always when the CLI reads the user's settings, whose hooks run on
// every prompt (Config.UserSettings).
func (p *Pool) endLeftovers(ctx context.Context, proc *pooled) error {
	if proc.life.baseline == nil {
		proc.life.baseline = takeBaseline(proc.pid)
		return nil
	}
	if !proc.life.toolsAsked && !p.cfg.UserSettings {
		return nil
	}
	n, err := killLeftovers(ctx, proc.pid, proc.life.baseline, p.cfg.StopGrace)
	if n > 0 {
		p.log.Debug("claudepool: killed processes a chat left", "pid", proc.pid, "killed", n)
	}
	if err != nil {
		return fmt.Errorf("%w: process %d: %w", errResetUnconfirmed, proc.pid, err)
	}
	proc.life.toolsAsked = false
	return nil
}

// emptyDir removes everything in dir, and proves it is empty: what a chat
// wrote there (its tools' files) must not reach the next one. "" is no
// directory.
func emptyDir(dir string) error {
	if dir == "" {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("empty the working directory: %w", err)
		}
	}
	if left, err := os.ReadDir(dir); err != nil || len(left) > 0 {
		return fmt.Errorf("the working directory %s is not empty after the reset (%d entries, %v)", dir, len(left), err)
	}
	return nil
}

// expire retires a process that stayed idle longer than MaxIdle.
func (p *Pool) expire(proc *pooled, gen int) {
	p.mu.Lock()
	if proc.state.Load() == stateIdle && proc.life.idleGen == gen {
		p.retireLocked(proc, RetireIdle)
		p.notifyLocked()
	}
	p.mu.Unlock()
	p.wakeFill()
}

// shrink retires a process that stayed idle for surplusIdle, in a pool
// whose idle processes nothing else bounds, when the pool does not need
// it: a spare while there are more than Size, or a process kept for
// another prompt.
func (p *Pool) shrink(proc *pooled, gen int) {
	p.mu.Lock()
	if proc.state.Load() == stateIdle && proc.life.idleGen == gen && !p.closed {
		switch {
		case p.isSpare(proc) && p.idle.count(p.isSpare) > p.cfg.Size:
			p.retireLocked(proc, RetireSpare)
			p.notifyLocked()
		case p.isForeign(proc):
			p.retireLocked(proc, RetireSurplus)
			p.notifyLocked()
		}
	}
	p.mu.Unlock()
}

// exited is called by a process's reaper once it has exited.
func (p *Pool) exited(cp *Process) {
	// Nothing can be written to it any more: release the pipe.
	_ = cp.CloseStdin()
	p.mu.Lock()
	proc := p.live[cp]
	if proc.state.Load() == stateIdle {
		p.leaveIdleLocked(proc)
		p.counters.deadIdle.Add(1)
		// Nobody will ever read its output.
		proc.abandonOutput()
		p.log.Warn("claudepool: idle process exited", "pid", proc.pid, "err", proc.exitError())
	}
	if proc.life.evictedForSpare {
		p.evicting--
	}
	p.setStateLocked(proc, stateRetired)
	delete(p.live, cp)
	if p.gw != nil {
		p.gw.forget(cp.token)
	}
	if cp.workDir != "" {
		if err := os.RemoveAll(cp.workDir); err != nil {
			p.log.Warn("claudepool: remove a process's working directory", "pid", cp.pid, "err", err)
		}
	}
	p.notifyLocked()
	p.mu.Unlock()
	p.freeSlot()
	p.wakeFill()
}
