package claudepool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Acquire returns a process for one request. It takes a warm process if
// one is ready, without waiting for one; otherwise it spawns a cold
// process at once (which answers after the CLI's start-up time). With
// MaxProcs reached, it waits for a slot or a warm process until ctx ends
// and then returns an error wrapping ctx.Err(); beyond Config.MaxWaiting
// waiting callers, or after Config.MaxWait, it returns an error wrapping
// ErrOverloaded instead. Every acquire asks the pool to refill.
//
// A warm process from Acquire has no conversation. With Config.Prompt it
// has that prompt already; without it, it has received no initialize, or
// the empty system prompt of an earlier chat, like every process the pool
// counts as a spare (Process.SystemPrompt tells which). AcquireInfo.Warm
// tells a warm process from a cold one, which has received nothing.
//
// The caller owns the process: it must read its output to the end or
// call Stop. It never goes back to the pool. ctx bounds only the acquire;
// it does not stop the process.
func (p *Pool) Acquire(ctx context.Context) (*Process, error) {
	want := p.defaultPrompt()
	proc, _, err := p.acquire(ctx, time.Now(), &want, false)
	if err != nil {
		return nil, err
	}
	return proc.handOver(), nil
}

// TryAcquire returns a warm process if one is ready and ErrNotAvailable
// otherwise: one of the spares WaitReady waits for, as Acquire would take
// it. It never spawns and never blocks.
func (p *Pool) TryAcquire() (*Process, error) {
	start := time.Now()
	if p.isClosed() {
		return nil, ErrClosed
	}
	want := p.defaultPrompt()
	p.mu.Lock()
	proc := p.idle.best(&want)
	if proc != nil {
		p.claimLocked(proc, start)
	}
	p.mu.Unlock()
	if proc == nil {
		p.endPauses()
	}
	p.wakeFill()
	if proc == nil {
		return nil, ErrNotAvailable
	}
	p.logAcquire(proc)
	return proc.handOver(), nil
}

// handOver gives the process to a caller of Acquire, for good: the pool
// tells it what the process is, and never uses it again.
func (proc *pooled) handOver() *Process {
	proc.handed = handout{acquire: proc.life.acquire, prompt: proc.life.prompt}
	return proc.Process
}

// acquire takes the idle process that suits a request with system prompt
// want (one that carries it, else a fresh one; see idleSet.best), or
// spawns a cold one. With pause, the replacement of a warm process it
// takes waits for the returned pause (see refillPause), which is nil
// without one.
func (p *Pool) acquire(ctx context.Context, start time.Time, want *SystemPrompt, pause bool) (*pooled, *refillPause, error) {
	if p.isClosed() {
		return nil, nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		// A caller that is gone must not use up a warm process.
		return nil, nil, fmt.Errorf("claudepool: acquire: %w", err)
	}
	p.mu.Lock()
	proc, dirty := p.takeLocked(want, start)
	p.mu.Unlock()
	if proc == nil || dirty {
		p.endPauses()
	}
	if dirty && p.giveWay(ctx, proc) != nil {
		proc = nil
	}
	var hr *refillPause
	if proc != nil && pause {
		hr = p.pauseRefill()
	}
	p.wakeFill()
	if proc != nil {
		p.logAcquire(proc)
		return proc, hr, nil
	}
	proc, err := p.acquireCold(ctx, start, want)
	return proc, hr, err
}

// takeLocked leases the idle process that suits a request with prompt
// want: one without a conversation (see idleSet.best), else the least
// recently used one that holds a conversation with want, which the caller
// must then reset (dirty; see giveWay). p.mu must be held.
func (p *Pool) takeLocked(want *SystemPrompt, start time.Time) (proc *pooled, dirty bool) {
	proc = p.idle.best(want)
	if proc == nil && want != nil {
		proc = p.heldWithLocked(*want)
		dirty = proc != nil
	}
	if proc != nil {
		proc.life.held = nil // given way: the chat continues nothing
		p.claimLocked(proc, start)
	}
	return proc, dirty
}

// lease takes a process for a chat: the one that holds the conversation
// the chat continues, else as acquire does, pausing the refill.
func (p *Pool) lease(ctx context.Context, c *chatRequest) (*pooled, *refillPause, error) {
	if c.continues != nil && !p.isClosed() && ctx.Err() == nil {
		if proc := p.continueHeld(c); proc != nil {
			p.logAcquire(proc)
			return proc, nil, nil
		}
	}
	return p.acquire(ctx, c.start, &c.prompt, true)
}

// acquireCold spawns a process for an acquire that found none idle. At
// the MaxProcs cap it waits for a slot, and takes an idle process that
// suits it if one comes back meanwhile; it retires the least recently
// used idle process of another prompt to free a slot.
func (p *Pool) acquireCold(ctx context.Context, start time.Time, want *SystemPrompt) (*pooled, error) {
	if p.slots != nil {
		select {
		case p.slots <- struct{}{}:
		default:
			p.log.Debug("claudepool: MaxProcs reached, waiting for a slot", "max_procs", p.cfg.MaxProcs)
			if proc, err := p.waitSlot(ctx, start, want); proc != nil || err != nil {
				return proc, err
			}
		}
	}
	cp, err := p.spawner.spawn()
	if err != nil {
		p.freeSlot()
		if !errors.Is(err, ErrClosed) {
			p.counters.spawnFailures.Add(1)
			p.mu.Lock()
			p.failedSpawns++
			p.lastSpawnErr = err
			p.mu.Unlock()
		}
		return nil, err
	}
	p.mu.Lock()
	p.failedSpawns, p.lastSpawnErr = 0, nil
	p.mu.Unlock()
	proc := p.newPooled(cp, false)
	proc.life.uses = 1
	wait := time.Since(start)
	proc.life.acquire = AcquireInfo{Warm: false, Uses: 1, Wait: wait, PID: proc.pid}
	p.track(proc, stateLeased)
	p.counters.cold.Add(1)
	p.lat.coldAcquire.record(wait)
	if p.cfg.SpareDecay > 0 {
		p.wakeFill() // the demand grew
	}
	p.logAcquire(proc)
	return proc, nil
}

// waitSlot waits at the MaxProcs cap. It returns with a slot reserved
// (nil, nil), with an idle process that came back (proc, nil), or with an
// error.
func (p *Pool) waitSlot(ctx context.Context, start time.Time, want *SystemPrompt) (*pooled, error) {
	if n := p.waiting.Add(1); p.cfg.MaxWaiting > 0 && n > int64(p.cfg.MaxWaiting) {
		p.waiting.Add(-1)
		p.counters.overloaded.Add(1)
		return nil, fmt.Errorf("%w: %d callers are waiting for a process slot already (MaxProcs %d, MaxWaiting %d)",
			ErrOverloaded, n-1, p.cfg.MaxProcs, p.cfg.MaxWaiting)
	}
	defer p.waiting.Add(-1)
	var maxWait <-chan time.Time
	if p.cfg.MaxWait > 0 {
		t := time.NewTimer(p.cfg.MaxWait - time.Since(start))
		defer t.Stop()
		maxWait = t.C
	}
	var evicted <-chan struct{} // closed once the process retired for a slot is reaped
	for {
		p.mu.Lock()
		changed := p.changed
		if proc, dirty := p.takeLocked(want, start); proc != nil {
			p.mu.Unlock()
			if dirty && p.giveWay(ctx, proc) != nil {
				continue
			}
			p.wakeFill()
			p.logAcquire(proc)
			return proc, nil
		}
		// A reset deferred since this caller came must not keep it
		// waiting.
		p.startDeferredLocked(true)
		if evicted == nil {
			if old := p.idle.oldestExcept(want); old != nil {
				// Its slot is the one to wait for, unless the refill
				// takes it first: then evict again.
				p.retireLocked(old, RetireEvicted)
				evicted = old.done
			}
		}
		p.mu.Unlock()
		select {
		case p.slots <- struct{}{}:
			return nil, nil
		case <-changed:
		case <-evicted:
			evicted = nil
		case <-ctx.Done():
			p.counters.slotTimeouts.Add(1)
			return nil, fmt.Errorf("claudepool: waiting for a process slot (MaxProcs %d): %w", p.cfg.MaxProcs, ctx.Err())
		case <-maxWait:
			p.counters.slotTimeouts.Add(1)
			p.counters.overloaded.Add(1)
			return nil, fmt.Errorf("%w: no process slot within MaxWait %v (MaxProcs %d)", ErrOverloaded, p.cfg.MaxWait, p.cfg.MaxProcs)
		case <-p.ctx.Done():
			return nil, ErrClosed
		}
	}
}

func (p *Pool) logAcquire(proc *pooled) {
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		a := proc.life.acquire
		p.log.Debug("claudepool: acquired process", "warm", a.Warm, "reused", a.Reused, "uses", a.Uses,
			"wait", a.Wait, "idle_age", a.IdleAge, "pid", proc.pid)
	}
}

func (p *Pool) freeSlot() {
	if p.slots != nil {
		<-p.slots
	}
}
