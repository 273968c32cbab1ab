package claudepool

import (
	"sync"
	"time"
)

// Pacing keeps the pool's background work off the start of a chat.
//
// A chat that takes a warm process spends its first tens of milliseconds
// in the CLI, preparing its API request; on a small machine, work started
// in that window — the start-up of the replacement (about a CPU-second on
// the real CLI) or a reset (30-40 ms of CPU) — delays that request. So:
//
//   - the refill pauses: the replacement of the process a chat took waits
//     for the chat's pause to end (see refillPause);
//   - a reset waits: the reset of a process that a chat gave back, when a
//     spare is ready for the next caller anyway, is deferred until every
//     chat that started after it has ended its pause, resetDeferral at
//     most.
//
// Neither ever makes a caller wait: a caller that finds no idle process it
// can take as it is ends every pause and starts every deferred reset
// (Pool.endPauses). Close drops what is deferred.
//
// The pacer is guarded by the pool's mutex; a pause's own timer fields by
// the pause's.
type pacer struct {
	pauses map[*refillPause]struct{}
	// seq numbers the pauses; since is its value when the oldest
	// deferred reset was deferred.
	seq, since uint64
	// deferred has the processes whose reset waits; timer bounds that
	// wait.
	deferred []*pooled
	timer    *time.Timer
}

// maxPause bounds how long a chat pauses the refill; the real CLI prints
// its first event about 20 ms after the user line.
const maxPause = 500 * time.Millisecond

// pauseGrace is how long a pause lasts past the chat's first event. The
// real CLI (2.1.330) prints system/init 15-20 ms after the user line and
// sends its API request 15-25 ms later. After the request the CLI waits
// on the API and the CPU is free.
const pauseGrace = 30 * time.Millisecond

// resetDeferral is how long the reset of a process a chat gave back waits
// for the next chat to start, when a spare is ready.
const resetDeferral = 100 * time.Millisecond

// refillPause postpones the replacement of a warm process a chat took. It
// ends at the first of: end, pauseGrace after settle, maxPause after it
// began, or Pool.endPauses. All its methods are safe on a nil
// *refillPause, which pauses nothing.
type refillPause struct {
	p       *Pool
	once    sync.Once
	mu      sync.Mutex // guards timer, which the timer's own call may read, and settled
	timer   *time.Timer
	settled bool
	seq     uint64 // the pacer's seq when it began
}

// pauseRefill starts a pause of the refill.
func (p *Pool) pauseRefill() *refillPause {
	r := &refillPause{p: p}
	// r.mu until the timer is set: endPauses may find r as soon as it is
	// registered.
	r.mu.Lock()
	defer r.mu.Unlock()
	p.mu.Lock()
	pc := &p.pacing
	if pc.pauses == nil {
		pc.pauses = make(map[*refillPause]struct{})
	}
	pc.seq++
	r.seq = pc.seq
	pc.pauses[r] = struct{}{}
	p.mu.Unlock()
	r.timer = time.AfterFunc(maxPause, r.end)
	return r
}

// end ends the pause now. It is idempotent.
func (r *refillPause) end() {
	if r == nil {
		return
	}
	r.once.Do(func() {
		r.mu.Lock()
		r.timer.Stop()
		r.mu.Unlock()
		p := r.p
		p.mu.Lock()
		delete(p.pacing.pauses, r)
		if r.seq > p.pacing.since {
			// A chat that started after the deferred resets is under
			// way: they need not wait any more.
			p.startDeferredLocked(false)
		}
		p.mu.Unlock()
		p.wakeFill()
	})
}

// settle ends the pause pauseGrace from its first call, unless it ends
// sooner. The chat calls it at each event.
func (r *refillPause) settle() {
	if r == nil {
		return
	}
	r.mu.Lock()
	if !r.settled {
		r.settled = true
		r.timer.Reset(pauseGrace) // after end, its second call does nothing
	}
	r.mu.Unlock()
}

// pausedLocked is the number of chats pausing the refill: each counts as
// a spare on its way. p.mu must be held.
func (p *Pool) pausedLocked() int { return len(p.pacing.pauses) }

// endPauses ends every pause and starts the deferred resets: a caller
// found no idle process it could take as it is, so neither the refill nor
// a reset may wait for other chats.
func (p *Pool) endPauses() {
	p.mu.Lock()
	pauses := make([]*refillPause, 0, len(p.pacing.pauses))
	for r := range p.pacing.pauses {
		pauses = append(pauses, r)
	}
	p.mu.Unlock()
	for _, r := range pauses {
		r.end()
	}
	p.mu.Lock()
	p.startDeferredLocked(true)
	p.mu.Unlock()
}

// deferResetLocked defers the reset of a process a chat gave back, in the
// resetting state, until the next chat has sent its API request, or
// resetDeferral has passed without one. p.mu must be held.
func (p *Pool) deferResetLocked(proc *pooled) {
	pc := &p.pacing
	if len(pc.deferred) == 0 {
		// A new batch: it waits resetDeferral at most, however many
		// processes join it.
		pc.since = pc.seq
		if pc.timer == nil {
			pc.timer = time.AfterFunc(resetDeferral, p.startDeferred)
		} else {
			pc.timer.Reset(resetDeferral)
		}
	}
	pc.deferred = append(pc.deferred, proc)
}

// startDeferred starts the deferred resets, unless a chat that started
// after them is still preparing its API request: the end of its pause
// starts them then.
func (p *Pool) startDeferred() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.startDeferredLocked(false)
}

// startDeferredLocked starts the resets that were deferred; unless force,
// not while a chat that started after them pauses the refill. A process
// that exited meanwhile goes through its reset too, which fails and
// retires it. p.mu must be held.
func (p *Pool) startDeferredLocked(force bool) {
	pc := &p.pacing
	if len(pc.deferred) == 0 {
		return
	}
	if !force {
		for r := range pc.pauses {
			if r.seq > pc.since {
				return
			}
		}
	}
	if pc.timer != nil {
		pc.timer.Stop()
	}
	// Close empties the deferred list and nothing is deferred once the
	// pool is closed, so the pool is open here.
	for _, proc := range pc.deferred {
		p.wg.Add(1)
		go p.reset(proc)
	}
	pc.deferred = nil
}

// dropDeferredLocked retires the processes whose reset waits, for Close.
// p.mu must be held.
func (p *Pool) dropDeferredLocked() {
	pc := &p.pacing
	for _, proc := range pc.deferred {
		p.retireLocked(proc, RetireClosed)
	}
	pc.deferred = nil
	if pc.timer != nil {
		pc.timer.Stop()
	}
}
