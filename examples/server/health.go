package main

import (
	"fmt"
	"net/http"
)

// healthz is liveness: the process is up and serving HTTP. It never looks
// at the pool, so that a pool that cannot spawn does not get the server
// restarted in a loop; /readyz takes it out of rotation instead.
func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// readyz is readiness: 200 "ready" while the server should get traffic,
// else 503 with the reason. See ready.
func (s *server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if reason := s.notReady(); reason != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, reason)
		return
	}
	fmt.Fprintln(w, "ready")
}

// notReady returns why the server should get no traffic, or "" when it
// should: the drain has begun, the pool has no process that finished
// starting (idle, busy or being reset between chats), or its health is
// bad (healthReason; with -forward-key, the API refusing keys is the
// clients' business, not the server's).
func (s *server) notReady() string {
	if s.draining.Load() {
		return "draining"
	}
	st := s.pool.Stats()
	if st.Idle+st.Busy+st.Resetting == 0 {
		return "no warm process"
	}
	if s.forwardKey {
		// Chats pay with their clients' keys: a client's bad key says
		// nothing of the server's.
		st.Health.ConsecutiveAuthFailures = 0
	}
	if st.Health.ConsecutiveAuthFailures >= authFailuresUnready {
		s.recheckAPI()
	}
	return healthReason(st)
}

// startDrain turns readiness off; the caller then stops the listener.
func (s *server) startDrain() { s.draining.Store(true) }
