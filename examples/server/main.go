// Command server is a chat backend over HTTP that owns a claudepool.Pool for
// its whole life: the pool starts with the server, POST /chat streams replies
// as server-sent events, and SIGINT or SIGTERM drain the chats in flight
// before the pool is closed.
//
//	go run ./examples/server -mock -cli "$CLAUDEPOOL_CLI"
//	curl -N localhost:8080/chat -d '{"messages":[{"role":"user","content":"Hello"}]}'
package main

import (
	"context"
	"errors"
	"expvar"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/claudepool/claudepool"
)

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "localhost:8080", "listen address")
	flag.StringVar(&o.cli, "cli", cliDefault(), "the claude executable, a path or a name in PATH ($CLAUDEPOOL_CLI sets the default)")
	flag.IntVar(&o.size, "size", 2, "warm processes to keep ready")
	flag.DurationVar(&o.startup, "startup", time.Minute, "how long the pool may take to get its warm processes ready")
	flag.DurationVar(&o.drain, "drain", 30*time.Second, "on shutdown, how long chats in flight may take to finish")
	flag.DurationVar(&o.timeout, "timeout", defaultChatTimeout, "longest a single chat may take")
	flag.BoolVar(&o.mock, "mock", false, "answer from a local mock of the Messages API instead of Anthropic's")
	flag.StringVar(&o.system, "system", "", "the pool's system prompt, given to warm processes ahead of requests (a request's own \"system\" is then served cold)")
	flag.BoolVar(&o.verbose, "v", false, "log every acquire")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}

type options struct {
	addr, cli, system       string
	size                    int
	startup, drain, timeout time.Duration
	mock, verbose           bool
}

func cliDefault() string {
	if p := os.Getenv("CLAUDEPOOL_CLI"); p != "" {
		return p
	}
	return claudepool.DefaultCommand
}

func run(o options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	cfg := claudepool.Config{
		Command:         o.cli,
		Size:            o.size,
		PartialMessages: true, // text deltas, streamed as they arrive
		Logger:          log,
	}
	if o.system != "" {
		cfg.Prompt = &claudepool.SystemPrompt{System: o.system}
	}
	if o.mock {
		env, stopMock, err := startMock()
		if err != nil {
			return err
		}
		defer stopMock() // after the pool's Close: deferred calls run last-first
		cfg.Env = env
	}
	pool, err := claudepool.NewPool(cfg)
	if err != nil {
		return err
	}
	defer func() {
		// Busy processes are gone by now, unless the drain ran out.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := pool.Close(ctx); err != nil {
			log.Warn("close pool", "err", err)
		}
		log.Info("pool closed", "live", pool.Stats().Live())
	}()
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, o.startup)
	defer cancel()
	if err := pool.WaitReady(wctx); err != nil {
		return fmt.Errorf("pool not ready: %w", err)
	}
	log.Info("pool ready", "size", o.size, "took", time.Since(start).Round(time.Millisecond))

	api := newServer(pool)
	api.chatTimeout = o.timeout
	api.log = log
	expvar.Publish("claudepool", expvar.Func(func() any { return pool.Stats() }))
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle("GET /debug/vars", expvar.Handler())

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	// No WriteTimeout: a streamed reply may take minutes; chatTimeout
	// bounds it instead.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	stop() // a second signal kills the server at once
	log.Info("shutting down", "in_flight", pool.Stats().Busy())
	sctx, cancel := context.WithTimeout(context.Background(), o.drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Chats still running after the drain: closing their connections
		// cancels their requests' contexts, which stops their processes.
		log.Warn("drain deadline passed", "err", err)
		_ = srv.Close()
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
