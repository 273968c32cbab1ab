package claudepool

import (
	"context"
	"math/rand/v2"
	"time"
)

// fill is the refill loop. It is event-driven: it wakes on an acquire, a
// finished spawn, a reaped process or the end of a backoff, never on a
// polling tick.
func (p *Pool) fill() {
	defer p.wg.Done()
	var retry *time.Timer
	var retryC <-chan time.Time
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		if d := p.launchSpawns(); d > 0 {
			if retry == nil {
				retry = time.NewTimer(d)
			} else {
				retry.Reset(d)
			}
			retryC = retry.C
		}
		select {
		case <-p.closing:
			return
		case <-p.wake:
		case <-retryC:
			retryC = nil
		}
	}
}

// launchSpawns starts as many warm spawns as the pool lacks. While spawns
// fail it starts one at a time, and no earlier than the backoff allows; it
// then returns how long to wait before trying again.
func (p *Pool) launchSpawns() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0
	}
	if wait := time.Until(p.nextAttempt); wait > 0 {
		return wait
	}
	deficit := p.cfg.Size - int(p.idle.Load()) - p.starting - p.deferred
	if p.consecutiveFailures > 0 {
		deficit = min(deficit, 1-p.starting)
	}
	for ; deficit > 0; deficit-- {
		if p.slots != nil {
			select {
			case p.slots <- struct{}{}:
			default:
				return 0 // a reaped process wakes the filler
			}
		}
		p.starting++
		p.wg.Add(1)
		go p.spawnWarm()
	}
	return 0
}

// spawnWarm starts one process, probes it, and publishes it as ready.
func (p *Pool) spawnWarm() {
	defer p.wg.Done()
	defer p.wakeFill()
	proc, err := p.startProcess(true)
	if err == nil {
		p.log.Debug("claudepool: process started", "pid", proc.pid, "warm", true)
		err = proc.probe()
	}
	if err == nil && p.cfg.Prompt != nil {
		err = proc.specialize(*p.cfg.Prompt)
	}

	p.mu.Lock()
	p.starting--
	if err != nil {
		p.consecutiveFailures++
		backoff := p.cfg.SpawnBackoff << min(p.consecutiveFailures-1, 20)
		backoff = min(backoff, MaxSpawnBackoff)
		if p.closed {
			backoff = 0
		}
		p.nextAttempt = time.Now().Add(backoff)
		p.lastSpawnErr = err
		failures := p.consecutiveFailures
		closed := p.closed
		p.notifyLocked()
		p.mu.Unlock()
		if proc == nil {
			p.releaseSlot()
		} else {
			proc.kill()
			proc.abandonOutput()
		}
		if !closed {
			p.counters.spawnFailures.Add(1)
			p.log.Warn("claudepool: spawn failed", "err", err, "consecutive_failures", failures, "retry_in", backoff)
		}
		return
	}
	p.consecutiveFailures = 0
	p.lastSpawnErr = nil
	p.nextAttempt = time.Time{}
	if p.closed {
		p.mu.Unlock()
		proc.state.Store(stateRetired)
		p.retire(proc, "close")
		return
	}
	proc.readyAt = time.Now()
	ready := proc.readyAt.Sub(proc.spawnedAt)
	p.lat.spawnToReady.record(ready)
	if p.cfg.MaxIdle > 0 {
		ttl := p.cfg.MaxIdle - time.Duration(rand.Int64N(int64(p.cfg.MaxIdle)/10+1))
		proc.idleTimer = time.AfterFunc(ttl, func() { p.expire(proc) })
	}
	proc.state.Store(stateIdle)
	p.idle.Add(1)
	p.push(proc)
	p.notifyLocked()
	p.mu.Unlock()
	p.log.Debug("claudepool: process ready", "pid", proc.pid, "spawn_to_ready", ready)
}

// push adds a ready process to the channel. When stale entries fill the
// channel, it drops them first. p.mu must be held.
func (p *Pool) push(proc *Process) {
	select {
	case p.ready <- proc:
		return
	default:
	}
	for n := len(p.ready); n > 0; n-- {
		select {
		case old := <-p.ready:
			if old.state.Load() == stateIdle {
				p.ready <- old
			}
		default:
		}
	}
	p.ready <- proc
}

// expire retires a process that stayed idle longer than MaxIdle.
func (p *Pool) expire(proc *Process) {
	if !p.retireIdle(proc, "max idle") {
		return
	}
	p.counters.recycled.Add(1)
	p.wakeFill()
}

// retireIdle retires a process that is idle, in the background, or kills
// it when Close is already past retiring idle processes. It returns false
// when the process is no longer idle: someone else owns it.
func (p *Pool) retireIdle(proc *Process, reason string) bool {
	if !proc.state.CompareAndSwap(stateIdle, stateRetired) {
		return false
	}
	p.idle.Add(-1)
	p.mu.Lock()
	if p.closed {
		// Close is past retiring idle processes and waits for this one.
		proc.kill()
	} else {
		p.retireLocked(proc, reason)
		p.notifyLocked()
	}
	p.mu.Unlock()
	return true
}

// retire stops an idle process in the background.
func (p *Pool) retire(proc *Process, reason string) {
	p.mu.Lock()
	p.retireLocked(proc, reason)
	p.mu.Unlock()
}

func (p *Pool) retireLocked(proc *Process, reason string) {
	p.log.Debug("claudepool: retiring process", "pid", proc.pid, "reason", reason)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_ = proc.Stop(context.Background())
	}()
}
