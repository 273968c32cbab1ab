package claudepool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Pool keeps CLI processes started ahead of time. It is safe for
// concurrent use. Create it with NewPool and end it with Close.
type Pool struct {
	cfg  Config
	path string
	argv []string
	env  []string
	dir  string
	// ownDir is true when dir was created by the pool.
	ownDir bool
	log    *slog.Logger

	// ready holds warm processes. It may also hold processes that expired
	// or died while idle; Acquire skips those (their state is no longer
	// idle). Its capacity leaves room for such stale entries.
	ready chan *Process
	// wake asks the filler to look at the deficit again.
	wake chan struct{}
	// closing is closed when Close starts.
	closing chan struct{}
	// abandon is closed when Close's ctx ends: a stream whose caller
	// stopped reading gives up its pending events, so that Close can join
	// its reader.
	abandon chan struct{}
	// slots is a semaphore of MaxProcs; nil when there is no cap.
	slots chan struct{}

	mu sync.Mutex // guards the fields below
	// live holds every process that has not been reaped yet.
	live     map[*Process]struct{}
	closed   bool
	starting int
	// deferred counts replacements postponed until the chat that took a
	// warm process has started (see holdRefill).
	deferred int
	// changed is closed and replaced whenever idle or live changes.
	changed chan struct{}
	// consecutiveFailures counts spawn failures since the last success.
	consecutiveFailures int
	nextAttempt         time.Time
	lastSpawnErr        error

	idle atomic.Int64 // processes in stateIdle
	busy atomic.Int64 // acquired processes not yet reaped

	counters counters
	lat      latencies

	wg        sync.WaitGroup // every goroutine the pool starts
	closeOnce sync.Once
	closeErr  error
	seq       atomic.Uint64 // request IDs for control requests
}

// NewPool validates cfg and returns a pool that starts filling itself in
// the background. Use WaitReady to wait for the warm processes.
func NewPool(cfg Config) (*Pool, error) {
	if cfg.Size < 0 || cfg.MaxProcs < 0 {
		return nil, errors.New("claudepool: Size and MaxProcs must not be negative")
	}
	if cfg.MaxProcs > 0 && cfg.MaxProcs < cfg.Size {
		return nil, fmt.Errorf("claudepool: MaxProcs (%d) is less than Size (%d)", cfg.MaxProcs, cfg.Size)
	}
	if cfg.MaxIdle < 0 || cfg.ReadyTimeout < 0 || cfg.StopGrace < 0 || cfg.SpawnBackoff < 0 || cfg.MaxLineBytes < 0 {
		return nil, errors.New("claudepool: durations and MaxLineBytes must not be negative")
	}
	for _, kv := range cfg.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("claudepool: Env entry %q is not KEY=VALUE", kv)
		}
	}
	if sp := cfg.Prompt; sp != nil {
		if !utf8.ValidString(sp.System) || !utf8.ValidString(sp.AppendSystem) {
			return nil, errors.New("claudepool: Prompt is not valid UTF-8")
		}
		cfg.Prompt = &SystemPrompt{System: sp.System, AppendSystem: sp.AppendSystem}
	}
	if cfg.Command == "" {
		cfg.Command = DefaultCommand
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	if cfg.MaxLineBytes == 0 {
		cfg.MaxLineBytes = DefaultMaxLineBytes
	}
	if cfg.SpawnBackoff == 0 {
		cfg.SpawnBackoff = DefaultSpawnBackoff
	}
	cfg.Args = append([]string(nil), cfg.Args...)
	cfg.Env = append([]string(nil), cfg.Env...)
	cfg.Tools = append([]string(nil), cfg.Tools...)

	path, err := exec.LookPath(cfg.Command)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrCLINotFound, cfg.Command, err)
	}

	p := &Pool{
		cfg:     cfg,
		path:    path,
		env:     childEnv(os.Environ(), cfg.Env),
		dir:     cfg.Dir,
		log:     cfg.Logger,
		ready:   make(chan *Process, 2*cfg.Size),
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		abandon: make(chan struct{}),
		live:    make(map[*Process]struct{}),
		changed: make(chan struct{}),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxProcs > 0 {
		p.slots = make(chan struct{}, cfg.MaxProcs)
	}
	p.argv = append(append([]string(nil), baseArgs...), "--tools", strings.Join(cfg.Tools, ","))
	if cfg.PartialMessages {
		p.argv = append(p.argv, "--include-partial-messages")
	}
	p.argv = append(p.argv, cfg.Args...)
	if p.dir == "" {
		dir, err := os.MkdirTemp("", "claudepool-")
		if err != nil {
			return nil, fmt.Errorf("claudepool: create working directory: %w", err)
		}
		p.dir, p.ownDir = dir, true
	}

	p.wg.Add(1)
	go p.fill()
	p.wakeFill()
	return p, nil
}

// Acquire returns a process for one request. It takes a warm process if
// one is ready, without waiting for one; otherwise it spawns a cold
// process at once (which answers after the CLI's start-up time). With
// MaxProcs reached, it waits for a slot or a warm process until ctx ends
// and then returns an error wrapping ctx.Err(). Every acquire asks the
// pool to refill.
//
// With Config.Prompt set, a warm process has received its initialize
// already and a cold one has not; AcquireInfo.Warm tells which.
//
// The caller owns the process: it must read its output to the end or
// call Stop. ctx bounds only the acquire; it does not stop the process.
func (p *Pool) Acquire(ctx context.Context) (*Process, error) {
	return p.acquire(ctx, time.Now(), true, false)
}

// acquire is Acquire; with warmOK false it skips the ready processes and
// spawns a cold one. With deferRefill, the replacement of a warm process
// it takes waits until releaseRefill(proc) (see holdRefill).
func (p *Pool) acquire(ctx context.Context, start time.Time, warmOK, deferRefill bool) (*Process, error) {
	if p.isClosed() {
		return nil, ErrClosed
	}
	if warmOK {
		if deferRefill {
			p.holdRefill()
		}
		if proc := p.takeReady(start); proc != nil {
			proc.refillHeld.Store(deferRefill)
			return proc, nil
		}
		if deferRefill {
			p.unholdRefill()
		}
		p.wakeFill()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("claudepool: acquire: %w", err)
	}
	return p.acquireCold(ctx, start, warmOK)
}

// holdRefill postpones the replacement of the warm process a chat is
// about to take. The replacement's start-up costs about a CPU-second on
// the real CLI; started at once, it competes with the claimed process for
// the CPU exactly while that one prepares its first answer. The chat's
// stream releases the hold at its first event, its end, or after
// maxRefillDelay, whichever comes first.
func (p *Pool) holdRefill() {
	p.mu.Lock()
	p.deferred++
	p.mu.Unlock()
}

// unholdRefill ends a hold and lets the filler catch up.
func (p *Pool) unholdRefill() {
	p.mu.Lock()
	p.deferred--
	p.mu.Unlock()
	p.wakeFill()
}

// maxRefillDelay bounds how long a chat holds back the replacement of its
// process; the real CLI prints its first event about 50 ms after the user
// line.
const maxRefillDelay = 500 * time.Millisecond

// releaseRefill ends the hold proc's acquire took, once.
func (p *Pool) releaseRefill(proc *Process) {
	if proc.refillHeld.CompareAndSwap(true, false) {
		p.unholdRefill()
	}
}

// promptFor returns the system prompt a request runs with, and whether a
// warm process may serve it: with Config.Prompt set, warm processes carry
// that prompt and cannot take another.
func (p *Pool) promptFor(enc *encodedRequest) (prompt SystemPrompt, warmOK bool) {
	switch {
	case p.cfg.Prompt == nil:
		return enc.prompt, true
	case enc.prompt == SystemPrompt{} || enc.prompt == *p.cfg.Prompt:
		return *p.cfg.Prompt, true
	default:
		p.log.Debug("claudepool: request brings a system prompt other than the pool's; spawning cold")
		return enc.prompt, false
	}
}

// TryAcquire returns a warm process if one is ready and ErrNotAvailable
// otherwise. It never spawns and never blocks.
func (p *Pool) TryAcquire() (*Process, error) {
	start := time.Now()
	if p.isClosed() {
		return nil, ErrClosed
	}
	if proc := p.takeReady(start); proc != nil {
		return proc, nil
	}
	p.wakeFill()
	return nil, ErrNotAvailable
}

// takeReady claims a ready warm process without blocking, or returns nil.
func (p *Pool) takeReady(start time.Time) *Process {
	for {
		select {
		case proc := <-p.ready:
			if proc := p.claim(proc, start); proc != nil {
				return proc
			}
		default:
			return nil
		}
	}
}

// claim turns an idle process taken from the ready channel into a busy one
// owned by the caller. It returns nil for a stale entry.
func (p *Pool) claim(proc *Process, start time.Time) *Process {
	if !proc.state.CompareAndSwap(stateIdle, stateBusy) {
		return nil // expired, died or retired while idle: its owner handles it
	}
	p.idle.Add(-1)
	if proc.idleTimer != nil {
		// Set before the process was published on the channel and never
		// changed after, so reading it needs no lock.
		proc.idleTimer.Stop()
	}
	p.busy.Add(1)
	select {
	case <-proc.done:
		// It died while idle and its reaper has not marked it yet; the
		// reaper accounts for it as a busy process. Nobody reads its
		// output.
		proc.abandonOutput()
		p.counters.deadIdle.Add(1)
		p.wakeFill()
		return nil
	default:
	}
	wait := time.Since(start)
	idleAge := start.Sub(proc.readyAt)
	proc.acquire = AcquireInfo{Warm: true, Wait: wait, IdleAge: idleAge, PID: proc.pid}
	p.counters.warm.Add(1)
	p.lat.warmAcquire.record(wait)
	p.wakeFill()
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.log.Debug("claudepool: acquired process", "warm", true, "wait", wait,
			"idle_age", idleAge, "ready", p.idle.Load(), "pid", proc.pid)
	}
	return proc
}

// acquireCold spawns a process for an acquire that found none ready.
// At the MaxProcs cap it waits for a slot, and takes a warm process that
// becomes ready meanwhile; with warmOK false (the request's system prompt
// is not the one warm processes carry) it retires one idle process instead,
// to free its slot.
func (p *Pool) acquireCold(ctx context.Context, start time.Time, warmOK bool) (*Process, error) {
	ready := p.ready
	var evicted <-chan struct{} // closed once the process retired for a slot is reaped
	if p.slots != nil {
		select {
		case p.slots <- struct{}{}:
		default:
			p.log.Debug("claudepool: MaxProcs reached, waiting for a slot", "max_procs", p.cfg.MaxProcs)
			for got := false; !got; {
				select {
				case p.slots <- struct{}{}:
					got = true
				case proc := <-ready:
					if warmOK {
						if proc := p.claim(proc, start); proc != nil {
							return proc, nil
						}
					} else if p.evict(proc) {
						// Its slot is the one to wait for, unless the
						// refill takes it first: then evict again.
						ready, evicted = nil, proc.done
					}
				case <-evicted:
					ready, evicted = p.ready, nil
				case <-ctx.Done():
					p.counters.slotTimeouts.Add(1)
					return nil, fmt.Errorf("claudepool: waiting for a process slot (MaxProcs %d): %w", p.cfg.MaxProcs, ctx.Err())
				case <-p.closing:
					return nil, ErrClosed
				}
			}
		}
	}
	proc, err := p.spawnDetached()
	if err != nil {
		p.releaseSlot()
		if !errors.Is(err, ErrClosed) {
			p.counters.spawnFailures.Add(1)
		}
		return nil, err
	}
	wait := time.Since(start)
	proc.acquire = AcquireInfo{Warm: false, Wait: wait, PID: proc.pid}
	p.counters.cold.Add(1)
	p.lat.coldAcquire.record(wait)
	if p.log.Enabled(ctx, slog.LevelDebug) {
		p.log.Debug("claudepool: acquired process", "warm", false, "wait", wait,
			"ready", p.idle.Load(), "pid", proc.pid)
	}
	return proc, nil
}

// evict retires an idle process so that its MaxProcs slot, freed once it
// has been reaped, can go to a cold spawn. It returns false for a stale
// entry of the ready channel.
func (p *Pool) evict(proc *Process) bool {
	if !p.retireIdle(proc, "slot for a cold spawn") {
		return false
	}
	if proc.idleTimer != nil {
		proc.idleTimer.Stop()
	}
	return true
}

// spawnDetached starts a cold process from a goroutine of the pool's
// rather than the caller's. On Linux the kernel kills a child when the
// thread that started it exits (Pdeathsig); a caller may run on a thread
// that ends, the pool's goroutines never lock theirs.
func (p *Pool) spawnDetached() (*Process, error) {
	type spawned struct {
		proc *Process
		err  error
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	p.wg.Add(1)
	p.mu.Unlock()
	ch := make(chan spawned, 1)
	go func() {
		defer p.wg.Done()
		proc, err := p.startProcess(false)
		ch <- spawned{proc, err}
	}()
	r := <-ch
	return r.proc, r.err
}

// WaitReady blocks until Size warm processes are ready, ctx ends, or the
// pool is closed. On ctx expiry the error also wraps the last spawn error,
// if any, so that a broken CLI is visible at start-up.
func (p *Pool) WaitReady(ctx context.Context) error {
	for {
		p.mu.Lock()
		closed, changed, lastErr := p.closed, p.changed, p.lastSpawnErr
		p.mu.Unlock()
		if closed {
			return ErrClosed
		}
		if p.idle.Load() >= int64(p.cfg.Size) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("claudepool: waiting for %d ready processes: %w (last spawn error: %w)", p.cfg.Size, ctx.Err(), lastErr)
			}
			return fmt.Errorf("claudepool: waiting for %d ready processes: %w", p.cfg.Size, ctx.Err())
		}
	}
}

// Close shuts the pool down. It stops the refill, retires idle processes
// (close stdin, then SIGTERM, then SIGKILL to the process group), waits for
// busy processes to finish until ctx ends, then kills them, reaps every
// process, and joins every goroutine the pool started. It returns an error
// wrapping ctx.Err() if busy processes had to be killed. A Stream whose
// caller has not read it to the end when ctx ends gives up its pending
// events and ends with an error wrapping ErrClosed. Close is
// idempotent: later calls wait for the first and return its result.
func (p *Pool) Close(ctx context.Context) error {
	p.closeOnce.Do(func() { p.closeErr = p.close(ctx) })
	return p.closeErr
}

func (p *Pool) close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	close(p.closing)
	for proc := range p.live {
		if proc.state.Load() == stateStarting {
			// Abort a readiness probe in flight.
			proc.setReadDeadline(time.Now())
		}
	}
	p.notifyLocked()
	p.mu.Unlock()

	// Retire the idle processes.
	for {
		select {
		case proc := <-p.ready:
			if proc.state.CompareAndSwap(stateIdle, stateRetired) {
				p.idle.Add(-1)
				p.retire(proc, "close")
			}
			continue
		default:
		}
		break
	}

	// Wait for busy processes until ctx ends, then kill the rest.
	var err error
	if n := p.busy.Load(); n > 0 {
		p.log.Debug("claudepool: waiting for busy processes", "count", n)
	}
	if !p.waitLive(ctx.Done()) {
		p.mu.Lock()
		n := len(p.live)
		for proc := range p.live {
			proc.kill()
			proc.abandonOutput()
		}
		p.mu.Unlock()
		p.log.Warn("claudepool: close deadline reached, killed busy processes", "count", n)
		err = fmt.Errorf("claudepool: close: killed %d busy processes: %w", n, ctx.Err())
		p.waitLive(nil)
	}
	// A stream's reader blocks on its caller, who may have stopped reading
	// without closing it, even after its process ended: ctx bounds that
	// wait too.
	stopAbandon := context.AfterFunc(ctx, func() { close(p.abandon) })
	p.wg.Wait()
	stopAbandon()
	if p.ownDir {
		if rmErr := os.RemoveAll(p.dir); rmErr != nil && err == nil {
			err = fmt.Errorf("claudepool: remove working directory: %w", rmErr)
		}
	}
	p.log.Debug("claudepool: pool closed")
	return err
}

// waitLive waits until every process was reaped, or stop is closed.
func (p *Pool) waitLive(stop <-chan struct{}) bool {
	for {
		p.mu.Lock()
		n, changed := len(p.live), p.changed
		p.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-changed:
		case <-stop:
			return false
		}
	}
}

func (p *Pool) isClosed() bool {
	select {
	case <-p.closing:
		return true
	default:
		return false
	}
}

// wakeFill asks the filler to compare the ready processes with Size.
func (p *Pool) wakeFill() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// notifyLocked wakes every WaitReady and waitLive. p.mu must be held.
func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Pool) releaseSlot() {
	if p.slots != nil {
		<-p.slots
	}
}

// track registers a started process and starts its reaper and stderr
// drainer.
func (p *Pool) track(proc *Process) {
	p.mu.Lock()
	p.live[proc] = struct{}{}
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

// reaped is called by a process's reaper once it has exited.
func (p *Pool) reaped(proc *Process) {
	switch proc.state.Swap(stateRetired) {
	case stateIdle:
		p.idle.Add(-1)
		p.counters.deadIdle.Add(1)
		// Nobody will ever read its output.
		proc.abandonOutput()
		p.log.Warn("claudepool: idle process exited", "pid", proc.pid, "err", proc.exitError())
	case stateBusy:
		p.busy.Add(-1)
	}
	p.mu.Lock()
	delete(p.live, proc)
	if proc.idleTimer != nil {
		proc.idleTimer.Stop()
	}
	p.notifyLocked()
	p.mu.Unlock()
	p.releaseSlot()
	p.wakeFill()
}
