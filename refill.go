package claudepool

import "time"

// fill is the refill loop. It is event-driven: it wakes on an acquire, a
// finished spawn, a reaped process, a finished reset or the end of a
// backoff, never on a polling tick.
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
		case <-p.ctx.Done():
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
//
// The target is Size, or with Config.SpareDecay the recent demand (see
// followDemandLocked); only the part up to Size may evict processes at
// the MaxProcs cap. The target counts the idle processes that can serve
// a request without a prompt of its own (fresh ones, and those with the
// pool's default prompt), spawns in flight, processes being reset (most
// come back idle within tens of milliseconds), replacements a chat pauses
// (see pacing.go) and processes retired to free a slot.
func (p *Pool) launchSpawns() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0
	}
	period := p.followDemandLocked()
	if wait := time.Until(p.nextAttempt); wait > 0 {
		return minWait(wait, period)
	}
	have := p.idle.count(p.isSpare) + p.spawning + p.count[stateResetting] + p.pausedLocked() + p.evicting
	deficit := p.spareTargetLocked() - have
	// Below Size, a spare may take the place of an idle process kept for
	// another prompt or a conversation; beyond it, only a free slot.
	floor := p.cfg.Size - have
	if p.warmFailures > 0 {
		deficit = min(deficit, 1-p.spawning)
	}
	for ; deficit > 0; deficit, floor = deficit-1, floor-1 {
		if p.slots != nil {
			select {
			case p.slots <- struct{}{}:
			default:
				if floor <= 0 {
					return period
				}
				// At the cap, a held conversation with the default
				// prompt gives way (a reset costs a fraction of a
				// spawn), or else a process kept for another prompt
				// gives its place to a spare; a reaped process wakes the
				// filler.
				if p.giveWayToSpareLocked() {
					continue
				}
				if old := p.idle.oldest(p.isForeign); old != nil {
					old.life.evictedForSpare = true
					p.evicting++
					p.retireLocked(old, RetireEvicted)
					continue
				}
				return period
			}
		}
		p.spawning++
		p.wg.Add(1)
		go p.spawnWarm()
	}
	return period
}

// minWait is the shorter of two waits, where 0 means none.
func minWait(a, b time.Duration) time.Duration {
	if a == 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// demand remembers the peak number of leased processes for
// Config.SpareDecay, over two periods: the current one and the one
// before.
type demand struct {
	cur, prev int
	start     time.Time // start of the current period
}

// noteDemandLocked records the number of leased processes after it grew.
// p.mu must be held.
func (p *Pool) noteDemandLocked() {
	p.demand.cur = max(p.demand.cur, p.count[stateLeased])
}

// spareTargetLocked is the number of idle spares the refill aims for:
// Size, or with Config.SpareDecay the recent peak of leased processes if
// higher, within MaxProcs. p.mu must be held.
func (p *Pool) spareTargetLocked() int {
	t := p.cfg.Size
	if p.cfg.SpareDecay > 0 {
		t = max(t, p.demand.cur, p.demand.prev)
	}
	if p.cfg.MaxProcs > 0 {
		t = min(t, p.cfg.MaxProcs)
	}
	return t
}

// followDemandLocked makes the spares follow demand (Config.SpareDecay).
// It starts a new period when the current one is over: the peak of the
// period that ended becomes the previous peak, and the current one starts
// at the processes leased now. So a peak counts for one to two periods.
// Then it retires the idle spares beyond what the demand justifies: the
// target, plus the processes of the peak that are not leased now, which
// come back from their chats without making the pool spawn and retire
// on every chat under steady load. It returns how long until the
// refill must look again (0: no need). p.mu must be held.
func (p *Pool) followDemandLocked() time.Duration {
	decay := p.cfg.SpareDecay
	if decay <= 0 {
		return 0
	}
	d := &p.demand
	now := time.Now()
	if d.start.IsZero() || now.Sub(d.start) >= decay {
		d.prev, d.cur, d.start = d.cur, p.count[stateLeased], now
	}
	peak := max(d.cur, d.prev)
	target := p.spareTargetLocked()
	allowed := target + max(peak-p.count[stateLeased], 0)
	retired := false
	for p.idle.count(p.isSpare) > max(allowed, p.cfg.Size) {
		p.retireLocked(p.idle.oldest(p.isSpare), RetireSpare)
		retired = true
	}
	if retired {
		p.log.Debug("claudepool: spares shrink", "target", target)
		p.notifyLocked()
	}
	if peak <= p.cfg.Size {
		return 0 // the target is Size: nothing will change with time
	}
	return decay - now.Sub(d.start)
}

// wakeFill asks the filler to compare the ready processes with Size.
func (p *Pool) wakeFill() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}
