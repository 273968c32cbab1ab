package claudepool

import (
	"sync"
	"time"
)

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
// Size counts the idle processes that can serve a request without a
// prompt of its own (fresh ones, and those with the pool's default
// prompt), spawns in flight, processes being reset (most come back idle
// within tens of milliseconds), held replacements and processes retired
// to free a slot.
func (p *Pool) launchSpawns() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0
	}
	if wait := time.Until(p.nextAttempt); wait > 0 {
		return wait
	}
	deficit := p.cfg.Size - p.idle.count(p.isSpare) - p.spawning - p.count[stateResetting] - p.held - p.evicting
	if p.consecutiveFailures > 0 {
		deficit = min(deficit, 1-p.spawning)
	}
	for ; deficit > 0; deficit-- {
		if p.slots != nil {
			select {
			case p.slots <- struct{}{}:
			default:
				// At the cap, a held conversation with the default
				// prompt gives way (a reset costs a fraction of a
				// spawn), or else a process kept for another prompt
				// gives its place to a spare; a reaped process wakes the
				// filler.
				if h := p.idle.oldest(p.holdsDefault); h != nil {
					p.counters.holdsTaken.Add(1)
					p.resetLocked(h)
					continue
				}
				if old := p.idle.oldestForeign(p.isForeign); old != nil {
					old.life.evictedForSpare = true
					p.evicting++
					p.retireLocked(old, RetireEvicted)
					continue
				}
				return 0
			}
		}
		p.spawning++
		p.wg.Add(1)
		go p.spawnWarm()
	}
	return 0
}

// wakeFill asks the filler to compare the ready processes with Size.
func (p *Pool) wakeFill() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// maxRefillDelay bounds how long a chat holds back the replacement of its
// process; the real CLI prints its first event about 50 ms after the user
// line.
const maxRefillDelay = 500 * time.Millisecond

// holdRefill postpones the replacement of a warm process a chat is about
// to take. The replacement's start-up costs about a CPU-second on the real
// CLI; started at once, it competes with the claimed process for the CPU
// exactly while that one prepares its first answer. The returned release
// ends the hold; it is idempotent, and runs by itself after
// maxRefillDelay.
func (p *Pool) holdRefill() (release func()) {
	p.mu.Lock()
	p.held++
	p.mu.Unlock()
	var once sync.Once
	var mu sync.Mutex // guards timer, which the timer's own call may read
	var timer *time.Timer
	release = func() {
		once.Do(func() {
			mu.Lock()
			timer.Stop()
			mu.Unlock()
			p.mu.Lock()
			p.held--
			p.mu.Unlock()
			p.wakeFill()
		})
	}
	mu.Lock()
	timer = time.AfterFunc(maxRefillDelay, release)
	mu.Unlock()
	return release
}
