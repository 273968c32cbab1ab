package main

import (
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Defaults of the public listener's limits.
const (
	defaultReadHeaderTimeout = 10 * time.Second
	// defaultReadTimeout bounds a whole request: headers and a body, at
	// about 35 KB/s at the least for a 1 MiB body of text, 1.1 MB/s for
	// the largest (defaultMaxBody, 32 MiB, images and PDFs).
	defaultReadTimeout = 30 * time.Second
	// defaultIdleTimeout is longer than the 60 s idle timeout of common
	// load balancers, so that the balancer, not the server, closes an
	// idle connection: else a request it sends may race the close.
	defaultIdleTimeout = 2 * time.Minute
	// defaultMaxHeaderBytes is ample for the API's headers (key, version,
	// betas, the SDKs' x-stainless-* headers) and far below net/http's
	// 1 MiB.
	defaultMaxHeaderBytes = 64 << 10
)

// What defaultMaxConns leaves of the open-file limit.
const (
	// fdsPerProcess covers one CLI process: the server keeps its stdin,
	// stdout and stderr pipes and a pidfd, and while it starts the child's
	// ends of those pipes and os/exec's status pipe too.
	fdsPerProcess = 10
	// fdReserve covers the rest: the runtime's poller, the listeners, the
	// admin listener's clients, the log, DNS lookups.
	fdReserve = 64
	// minConns and maxConnsCeiling bound the default. Past the ceiling,
	// connections would only bring chats that are shed (-max-waiting)
	// or idle keep-alives.
	minConns        = 16
	maxConnsCeiling = 1024
	// fallbackMaxConns is the default where the limit is not known.
	fallbackMaxConns = 256
)

// defaultMaxConns is -max-conns when it is not given: what the open-file
// limit leaves once the pool's maxProcs processes and the reserve have
// theirs, between minConns and maxConnsCeiling. With a limit of 1024 and
// -max-procs 8 that is 880; with 160, 16.
func defaultMaxConns(limit uint64, known bool, maxProcs int) int {
	if !known {
		return fallbackMaxConns
	}
	need := uint64(fdReserve + fdsPerProcess*maxProcs)
	if limit <= need+minConns {
		return minConns
	}
	return int(min(limit-need, maxConnsCeiling))
}

// publicListener bounds ln to o.maxConns open connections.
func publicListener(ln net.Listener, o options) net.Listener {
	return newLimitListener(ln, o.maxConns)
}

// publicServer returns the public listener's server. Its timeouts end
// clients that send a request slowly or hold a connection idle, each of
// which holds a connection of -max-conns and its file descriptor.
//
// It sets no WriteTimeout: that deadline would be set once per request,
// when its headers are read, and would cut a streamed reply, which lasts
// seconds to minutes, at the same time for every chat. The chat's own
// timeout (-timeout, chatTimeout) bounds a reply instead, and a client
// that stops reading blocks a write only until then.
//
// ReadTimeout does not cut a reply either: net/http clears the read
// deadline once the body has been read, which serveChat does before the
// chat starts.
func publicServer(o options, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: o.readHeaderTimeout,
		ReadTimeout:       o.readTimeout,
		IdleTimeout:       o.idleTimeout,
		MaxHeaderBytes:    o.maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
