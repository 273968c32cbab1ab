// Command replica is one replica of the cluster demo: a minimal chat
// backend over its own claudepool.Pool.
//
//	POST /chat    {"system": "...", "model": "...", "messages": [{"role": "user", "content": "..."}]}
//	              → {"reply": "...", "replica": "r1", "key": "...", "continued": true, ...}
//	GET  /stats   the pool's Stats as JSON
//	GET  /healthz 200 while the replica serves, 503 once it drains
//
// /chat reads the conversation's routing key from the X-Conversation-Key
// header, computes it with claudepool.ConversationKey when the header is
// missing, and sets it on the response, so that a client can send it
// back with the next turn and a load balancer can hash on it. The reply
// comes whole, not streamed: a load balancer can then retry a turn that a
// dying replica never answered.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/claudepool/claudepool"
)

// KeyHeader carries a conversation's routing key.
const KeyHeader = "X-Conversation-Key"

type options struct {
	name, addr, cli, envFile, system string
	size, maxProcs                   int
	hold, timeout                    time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.name, "name", "r1", "the replica's name, returned with each reply")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:18081", "listen address")
	flag.StringVar(&o.cli, "cli", os.Getenv("CLAUDEPOOL_CLI"), "the claude executable ($CLAUDEPOOL_CLI)")
	flag.StringVar(&o.envFile, "env-file", "", "KEY=VALUE lines for the CLI's environment, e.g. from mockapi")
	flag.StringVar(&o.system, "system", "", "the pool's system prompt (Config.Prompt)")
	flag.IntVar(&o.size, "size", 1, "Config.Size: warm processes kept ready")
	flag.IntVar(&o.maxProcs, "maxprocs", 3, "Config.MaxProcs: live processes at most")
	flag.DurationVar(&o.hold, "hold", claudepool.DefaultHoldConversations, "Config.HoldConversations")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "longest a chat may take")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("replica", o.name)
	if err := run(o, log); err != nil {
		log.Error("replica failed", "err", err)
		os.Exit(1)
	}
}

func run(o options, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env, err := readEnv(o.envFile)
	if err != nil {
		return err
	}
	// A HOME of its own keeps the CLI away from the login's settings.
	home, err := os.MkdirTemp("", "claudepool-replica-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	cfg := claudepool.Config{Command: o.cli, Size: o.size, MaxProcs: o.maxProcs,
		HoldConversations: o.hold, Env: append(env, "HOME="+home), Logger: log}
	if o.cli == "" {
		cfg.Command = claudepool.DefaultCommand
	}
	if o.system != "" {
		cfg.Prompt = &claudepool.SystemPrompt{System: o.system}
	}
	pool, err := claudepool.NewPool(cfg)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = pool.Close(cctx)
	}()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := pool.WaitReady(wctx); err != nil {
		return fmt.Errorf("pool not ready: %w", err)
	}

	s := &server{name: o.name, pool: pool, chat: claudepool.NewAdapter(pool), timeout: o.timeout, log: log}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "size", o.size, "maxprocs", o.maxProcs)
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	s.draining.Store(true)
	sctx, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-served
	return nil
}

// readEnv reads KEY=VALUE lines; a missing name means none.
func readEnv(name string) ([]string, error) {
	if name == "" {
		return nil, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var env []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && strings.Contains(line, "=") {
			env = append(env, line)
		}
	}
	return env, sc.Err()
}

type server struct {
	name     string
	pool     *claudepool.Pool
	chat     *claudepool.Adapter
	timeout  time.Duration
	log      *slog.Logger
	draining atomic.Bool
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /chat", s.handleChat)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.pool.Stats())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if s.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// chatRequest is the body of POST /chat.
type chatRequest struct {
	System   string `json:"system"`
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
}

// ChatReply is the answer of POST /chat.
type ChatReply struct {
	Reply        string  `json:"reply"`
	Replica      string  `json:"replica"`
	Key          string  `json:"key"`
	Continued    bool    `json:"continued"` // the turn continued a conversation its process held
	Warm         bool    `json:"warm"`
	PID          int     `json:"pid"`
	FirstEventMS float64 `json:"first_event_ms"`
	ResultMS     float64 `json:"result_ms"`
}

func (s *server) handleChat(w http.ResponseWriter, r *http.Request) {
	var body chatRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<20)).Decode(&body); err != nil {
		http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	req := claudepool.Request{System: body.System, Model: body.Model}
	for _, m := range body.Messages {
		req.Messages = append(req.Messages, claudepool.Message{Role: claudepool.Role(m.Role), Content: m.Content})
	}
	key := r.Header.Get(KeyHeader)
	if key == "" {
		key = claudepool.ConversationKey(req)
	}
	w.Header().Set(KeyHeader, key)
	w.Header().Set("X-Replica", s.name)

	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	st, err := s.chat.StreamChat(ctx, req)
	if err != nil {
		status := http.StatusServiceUnavailable // let the balancer try another replica
		if errors.Is(err, claudepool.ErrInvalidRequest) {
			status = http.StatusBadRequest
		}
		http.Error(w, err.Error(), status)
		return
	}
	defer st.Close()
	for st.Next() {
	}
	if err := st.Err(); err != nil {
		s.log.Warn("chat failed", "err", err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	lat := st.Latency()
	writeJSON(w, http.StatusOK, ChatReply{Reply: st.Result().Text, Replica: s.name, Key: key,
		Continued: st.Acquire().Continued, Warm: st.Acquire().Warm, PID: st.Acquire().PID,
		FirstEventMS: ms(lat.FirstEvent), ResultMS: ms(lat.Result)})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
