// Command server is a chat backend over HTTP that owns a claudepool.Pool for
// its whole life: the pool starts with the server; POST /chat streams replies
// as server-sent events in the server's own format and POST /v1/messages
// speaks the Messages API; SIGINT or SIGTERM turn readiness off, drain the
// chats in flight and close the pool within a 30 s grace period.
//
// The pool's gateway sets a Messages request's max_tokens, temperature,
// top_p, top_k, stop_sequences, metadata.user_id, thinking and
// output_config (structured output and effort) on the chat's API calls,
// and the reply carries the API's stop_reason and stop_sequence, the
// model's thinking when the request asked for it, and, when the API
// refuses a call, its error as it sent it. Requests may carry images and
// documents (PDFs, plain text) in their user turns, and, with -tools,
// offer the model tools that the client answers: tool_use blocks out,
// tool_result blocks in, on the process that holds the paused turn.
// POST /v1/messages/count_tokens is counted by the upstream API, and GET
// /v1/models lists the pool's models. The server's key pays for every
// chat; -client-keys makes clients send a key of the server's list,
// unless -forward-key sends each chat with its client's own API key
// (x-api-key or Authorization: Bearer), for a backend that bills each
// tenant's key. -cors-origins lets browsers on those origins call it.
//
//	go run ./examples/server -mock -cli "$CLAUDEPOOL_CLI"
//	curl -N localhost:8080/chat -d '{"messages":[{"role":"user","content":"Hello"}]}'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/claudepooltest"
)

func main() {
	o, err := parseOptions(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the server at once
	}()
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(ctx, o, log); err != nil {
		log.Error("server stopped", "err", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then shuts down in three steps that fit a
// 30 s grace period with the defaults: /readyz turns 503 while requests are
// still served for o.readyDelay (2 s), the listener closes and chats in
// flight get o.drain (20 s) to finish, and the pool is closed within
// o.closeTimeout (5 s), which kills what is left.
func run(ctx context.Context, o options, log *slog.Logger) error {
	cfg := claudepool.Config{
		Command:         o.cli,
		Size:            o.size,
		MaxProcs:        o.maxProcs,
		Model:           o.model,
		Models:          o.models,
		PartialMessages: true, // text and thinking deltas, streamed as they arrive
		Logger:          log,
	}
	if o.system != "" {
		cfg.Prompt = &claudepool.SystemPrompt{System: o.system}
	}
	var tools *toolSet
	if o.tools != "" {
		var err error
		if tools, err = loadTools(o.tools); err != nil {
			return fmt.Errorf("-tools: %w", err)
		}
		// The CLI lists the pool's tools once, at spawn: they are the
		// server's for its life. The clients answer them.
		cfg.GoTools = tools.goTools()
	}
	var keys *keySet
	if o.clientKeys != "" {
		var err error
		if keys, err = loadClientKeys(o.clientKeys); err != nil {
			return fmt.Errorf("-client-keys: %w", err)
		}
	}
	configureShedding(&cfg, o)
	if o.mock {
		env, stopMock, err := claudepooltest.Sandbox(claudepooltest.Config{Chunks: 8, ChunkDelay: 60 * time.Millisecond})
		if err != nil {
			return err
		}
		defer stopMock() // after the pool's Close: deferred calls run last-first
		cfg.Env = env
	}
	if o.maxOutputTokens > 0 {
		cfg.Env = append(cfg.Env, "CLAUDE_CODE_MAX_OUTPUT_TOKENS="+strconv.Itoa(o.maxOutputTokens))
	}
	pool, err := claudepool.NewPool(cfg)
	if err != nil {
		return err
	}
	defer func() {
		// Busy processes are gone by now, unless the drain ran out.
		ctx, cancel := context.WithTimeout(context.Background(), o.closeTimeout)
		defer cancel()
		if err := pool.Close(ctx); err != nil {
			log.Warn("close pool", "err", err)
		}
		log.Info("pool closed", "live", pool.Stats().Live)
	}()
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, o.startup)
	defer cancel()
	if err := pool.WaitReady(wctx); err != nil {
		return fmt.Errorf("pool not ready: %w", err)
	}
	log.Info("pool ready", "size", o.size, "max_procs", o.maxProcs, "took", time.Since(start).Round(time.Millisecond))
	if o.checkAPI {
		// WaitReady proves the CLI starts, not that the API takes its key.
		if err := pool.CheckAPI(wctx); err != nil {
			return fmt.Errorf("API check: %w", err)
		}
		log.Info("API check passed")
	}

	api := newServer(pool)
	api.forwardKey = o.forwardKey
	api.clientKeys = keys
	api.cors = o.cors
	api.models = newModelCatalog(o.model, o.models)
	api.tools = tools
	api.chatTimeout = o.timeout
	api.maxBody = o.maxBody
	api.heartbeat = o.heartbeat
	api.log = log
	api.scrubber = newScrubber(os.Environ(), cfg.Env)
	defer api.stop() // before the pool's Close
	if o.forwardKey && !api.hasGateway() {
		// Every chat would fail: the pool cannot apply the clients' keys.
		return errors.New("-forward-key needs the pool's gateway, which is off: it runs with an API key of the server's own (ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN) for the Anthropic API, not Bedrock or Vertex")
	}
	if tools != nil && !api.hasGateway() {
		// Without it every chat would offer the model every tool.
		return errors.New("-tools needs the pool's gateway, which is off: it offers each chat the tools its request lists, and runs with an API key of the server's own (ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN) for the Anthropic API, not Bedrock or Vertex")
	}
	if api.hasGateway() {
		// count_tokens goes where the gateway forwards, with its key.
		api.upstream = resolveUpstream(cfg, os.Environ())
	}

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	ln = publicListener(ln, o)
	// Timeouts for reading requests, none for writing replies: see
	// publicServer.
	srv := publicServer(o, api, log)
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "max_conns", o.maxConns)

	adminAddr := ""
	if o.admin != "" {
		aln, err := net.Listen("tcp", o.admin)
		if err != nil {
			_ = srv.Close()
			<-serveErr
			return err
		}
		adminSrv := &http.Server{Handler: adminHandler(pool), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := adminSrv.Serve(aln); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("admin listener: %w", err)
			}
		}()
		defer adminSrv.Close() // pprof profiles may be running: no drain
		adminAddr = aln.Addr().String()
		log.Info("admin listening", "addr", adminAddr)
	}
	if o.started != nil {
		o.started(api, ln.Addr().String(), adminAddr)
	}

	select {
	case err := <-serveErr:
		_ = srv.Close()
		return err
	case <-ctx.Done():
	}
	api.startDrain()
	log.Info("draining: readiness off", "in_flight", pool.Stats().Busy, "ready_delay", o.readyDelay)
	if o.onDrain != nil {
		o.onDrain()
	}
	if o.readyDelay > 0 {
		t := time.NewTimer(o.readyDelay)
		select {
		case <-t.C:
		case err := <-serveErr:
			t.Stop()
			return err
		}
	}
	log.Info("shutting down", "in_flight", pool.Stats().Busy, "drain", o.drain)
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
