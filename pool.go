package claudepool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Pool keeps CLI processes started ahead of time and reuses them from
// chat to chat. It is safe for concurrent use. Create it with NewPool and
// end it with Close.
//
// The pool owns the processes' lifecycle (lifecycle.go): spawning,
// readiness, the idle set, resets between chats and retirement. Taking a
// process is in acquire.go, the refill in refill.go; what a chat does with
// its process is the Adapter's (adapter.go, stream.go).
type Pool struct {
	cfg     Config
	set     *procSettings
	spawner *spawner
	log     *slog.Logger
	dir     string
	ownDir  bool // dir was created by the pool
	// surplusIdle is how long an idle process the pool does not need
	// stays when nothing else bounds them: DefaultSurplusIdle, shorter in
	// tests. Guarded by mu.
	surplusIdle time.Duration
	// configDir is the processes' CLAUDE_CONFIG_DIR, which the pool
	// created and Close removes; "" when the pool made none.
	configDir string
	// gw is the pool's gateway to the API; nil when it runs none.
	gw *gateway

	// ctx ends when Close starts: it cuts short probes, resets and waits
	// for a slot.
	ctx    context.Context
	cancel context.CancelFunc
	// wake asks the filler to look at the deficit again.
	wake chan struct{}
	// killed is closed when Close's ctx ends and Close kills the
	// processes still serving chats.
	killed chan struct{}
	// slots is a semaphore of MaxProcs; nil when there is no cap.
	slots chan struct{}

	mu sync.Mutex // guards the fields below, up to the next blank line, and every process's state
	// live holds the pool's record of every process that has not been
	// reaped yet, by the process.
	live   map[*Process]*pooled
	idle   idleSet
	count  [numStates]int // processes in each state
	closed bool
	// spawning counts warm spawns in flight, from launch to idle or
	// failure.
	spawning int
	// pacing keeps the refill and resets off the start of chats.
	pacing pacer
	// evicting counts processes retired to free a slot for a spare and
	// not reaped yet.
	evicting int
	// changed is closed and replaced whenever a process changes state.
	changed chan struct{}
	// warmFailures counts failed warm spawns since the last successful
	// one; it drives the refill's backoff until nextAttempt.
	warmFailures int
	nextAttempt  time.Time
	// lastSpawnErr is the error of the last failed spawn, warm or cold;
	// nil after a successful one.
	lastSpawnErr error
	// failedSpawns counts failed spawns, warm and cold, since the last
	// successful one: what Stats reports (warmFailures drives the backoff).
	failedSpawns int
	// demand tracks the peak of leased processes for Config.SpareDecay.
	demand demand

	// Safe without mu: atomics, and what synchronizes itself.

	// waiting counts callers waiting for a MaxProcs slot.
	waiting atomic.Int64
	usage   usageCounters

	counters      counters
	conversations conversationCounters
	lat           latencies

	wg        sync.WaitGroup // every goroutine the pool starts
	closeOnce sync.Once
	closeErr  error
}

// NewPool validates cfg and returns a pool that starts filling itself in
// the background. Use WaitReady to wait for the warm processes.
func NewPool(cfg Config) (*Pool, error) {
	cfg, path, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	p := &Pool{
		cfg:     cfg,
		dir:     cfg.Dir,
		log:     cfg.Logger,
		wake:    make(chan struct{}, 1),
		killed:  make(chan struct{}),
		live:    make(map[*Process]*pooled),
		changed: make(chan struct{}),

		surplusIdle: DefaultSurplusIdle,
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxProcs > 0 {
		p.slots = make(chan struct{}, cfg.MaxProcs)
	}
	if p.dir == "" {
		dir, err := os.MkdirTemp("", "claudepool-")
		if err != nil {
			return nil, fmt.Errorf("claudepool: create working directory: %w", err)
		}
		p.dir, p.ownDir = dir, true
	}
	if cfg.ownConfigDir() {
		dir, err := os.MkdirTemp("", "claudepool-config-")
		if err != nil {
			p.removeDirs()
			return nil, fmt.Errorf("claudepool: create configuration directory: %w", err)
		}
		p.configDir = dir
	}
	p.set = &procSettings{
		stopGrace:    cfg.StopGrace,
		readyTimeout: cfg.ReadyTimeout,
		maxLine:      cfg.MaxLineBytes,
		log:          p.log,
		exited:       p.exited,
		tools:        newTools(cfg.GoTools),
	}
	env := cfg.env(os.Environ(), p.configDir)
	up, off, err := cfg.upstream(os.Environ())
	if err == nil && up != nil {
		p.gw, err = newGateway(up, p.log)
	}
	if err != nil {
		p.removeDirs()
		return nil, err
	}
	if p.gw != nil {
		env = withGateway(env, p.gw.url)
		p.log.Debug("claudepool: gateway started", "addr", p.gw.url, "upstream", up.url)
	} else {
		p.log.Debug("claudepool: no gateway", "reason", off)
	}
	p.spawner = newSpawner(path, cfg.argv(), env, p.dir, p.ownDir, p.set)
	p.spawner.gw = p.gw
	p.ctx, p.cancel = context.WithCancel(context.Background())

	p.wg.Add(1)
	go p.fill()
	p.wakeFill()
	return p, nil
}

// WaitReady blocks until Size warm processes are ready, ctx ends, or the
// pool is closed. On ctx expiry the error also wraps the last spawn error,
// if any, so that a broken CLI is visible at start-up.
//
// What it proves: the CLI starts, and each ready process answered a
// control request (mcp_status), and received Config.Prompt and confirmed
// Config.Models when they are set. What it does not: that needs no API
// call (Models aside), so a bad or revoked API key, an unreachable API or
// an exhausted quota all pass WaitReady, and then every chat fails with a
// *ResultError (API status 401, ...). CheckAPI proves those with one
// request; Stats.Health.ConsecutiveAuthFailures watches them afterwards.
func (p *Pool) WaitReady(ctx context.Context) error {
	for {
		p.mu.Lock()
		closed, changed, lastErr := p.closed, p.changed, p.lastSpawnErr
		ready := p.idle.count(p.isSpare)
		p.mu.Unlock()
		if closed {
			return ErrClosed
		}
		if ready >= p.cfg.Size {
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
// chats in flight to finish until ctx ends, then kills their processes,
// reaps every process, and joins every goroutine the pool started. It
// returns an error wrapping ctx.Err() if busy processes had to be killed;
// their streams end with an error wrapping ErrClosed. Close is idempotent:
// later calls wait for the first and return its result.
//
// A stream's events stay readable after Close; Close does not wait for
// streams that nobody reads or closes.
func (p *Pool) Close(ctx context.Context) error {
	p.closeOnce.Do(func() { p.closeErr = p.close(ctx) })
	return p.closeErr
}

func (p *Pool) close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	// Cut short probes, resets and slot waits.
	p.cancel()
	for p.idle.len() > 0 {
		p.retireLocked(p.idle.procs[0], RetireClosed)
	}
	p.dropDeferredLocked()
	p.notifyLocked()
	if n := p.count[stateLeased]; n > 0 {
		p.log.Debug("claudepool: waiting for busy processes", "count", n)
	}
	p.mu.Unlock()

	// Wait for busy processes until ctx ends, then kill the rest.
	var err error
	if !p.waitLive(ctx.Done()) {
		close(p.killed)
		p.mu.Lock()
		busy := p.count[stateLeased]
		for proc := range p.live {
			proc.kill()
			proc.abandonOutput()
		}
		p.mu.Unlock()
		if busy > 0 {
			// Idle and retiring processes are killed too, but only a
			// chat that lost its process is worth an error.
			p.log.Warn("claudepool: close deadline reached, killed busy processes", "count", busy)
			err = fmt.Errorf("claudepool: close: killed %d busy processes: %w", busy, ctx.Err())
		}
		p.waitLive(nil)
	}
	p.wg.Wait()
	p.spawner.stop()
	if p.gw != nil {
		p.gw.close()
	}
	if rmErr := p.removeDirs(); rmErr != nil && err == nil {
		err = rmErr
	}
	p.log.Debug("claudepool: pool closed")
	return err
}

// removeDirs removes the directories the pool created.
func (p *Pool) removeDirs() error {
	var errs []error
	if p.ownDir {
		if err := os.RemoveAll(p.dir); err != nil {
			errs = append(errs, fmt.Errorf("claudepool: remove working directory: %w", err))
		}
	}
	if p.configDir != "" {
		if err := os.RemoveAll(p.configDir); err != nil {
			errs = append(errs, fmt.Errorf("claudepool: remove configuration directory: %w", err))
		}
	}
	return errors.Join(errs...)
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

// goChat runs the goroutines of a chat as the pool's, so that Close joins
// them, or returns ErrClosed.
func (p *Pool) goChat(fns ...func()) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	for _, fn := range fns {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			fn()
		}()
	}
	return nil
}

func (p *Pool) isClosed() bool { return p.ctx.Err() != nil }

// notifyLocked wakes every WaitReady, waitLive and slot waiter. p.mu must
// be held.
func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// killedByClose reports whether Close ran out of time and killed the
// processes that were still serving chats.
func (p *Pool) killedByClose() bool { return isClosed(p.killed) }
