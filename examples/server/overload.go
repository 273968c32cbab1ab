package main

import (
	"context"
	"errors"
	"time"

	"github.com/claudepool/claudepool"
)

// Thresholds and periods of the pool's health.
const (
	// authFailuresUnready results in a row refused with 401 or 403 make
	// the server unready: its key is bad or revoked.
	authFailuresUnready = 3
	// spawnFailuresUnready spawns in a row that failed make it unready.
	spawnFailuresUnready = 3
	// recheckEvery is the least time between two API checks that an
	// unready /readyz starts while authentication is failing.
	recheckEvery = 30 * time.Second
	// recheckTimeout bounds one such check.
	recheckTimeout = 30 * time.Second
)

// isOverloaded reports that the pool shed the request instead of queueing
// it (Config.MaxWaiting, Config.MaxWait).
func isOverloaded(err error) bool { return errors.Is(err, claudepool.ErrOverloaded) }

// configureShedding bounds the callers that wait for a process: at most
// o.maxWaiting at once, each for at most o.maxWait. The others get a 529
// (503 on /chat) at once. With o.spareDecay the warm spares follow demand.
func configureShedding(cfg *claudepool.Config, o options) {
	cfg.MaxWaiting = o.maxWaiting
	cfg.MaxWait = o.maxWait
	cfg.SpareDecay = o.spareDecay
}

// healthReason returns why the pool's health makes the server unready, or
// "". The reasons quote no error: the last spawn error is on /stats, on the
// admin listener.
func healthReason(st claudepool.Stats) string {
	switch {
	case st.Health.ConsecutiveAuthFailures >= authFailuresUnready:
		return "API authentication failing"
	case st.Health.ConsecutiveSpawnFailures >= spawnFailuresUnready:
		return "spawns failing"
	}
	return ""
}

// recheckAPI starts one Pool.CheckAPI in the background, unless one ran
// less than recheckEvery ago or runs now. With authentication failing the
// server gets no traffic, so without such a check nothing would show that
// the key works again (a successful result resets the count).
func (s *server) recheckAPI() {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.bgCtx.Err() != nil || s.checking || (!s.lastCheck.IsZero() && time.Since(s.lastCheck) < recheckEvery) {
		return
	}
	s.checking, s.lastCheck = true, time.Now()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ctx, cancel := context.WithTimeout(s.bgCtx, recheckTimeout)
		defer cancel()
		err := s.pool.CheckAPI(ctx)
		if err != nil {
			s.log.Warn("API check failed", "err", err)
		} else {
			s.log.Info("API check passed: authentication works again")
		}
		s.bgMu.Lock()
		s.checking = false
		s.bgMu.Unlock()
		if s.onRecheck != nil {
			s.onRecheck(err)
		}
	}()
}

// stop ends the server's background work and waits for it. Call it before
// the pool is closed.
func (s *server) stop() {
	s.bgCancel()
	s.bg.Wait()
	if s.upstreamHTTP != nil {
		s.upstreamHTTP.CloseIdleConnections()
	}
}
