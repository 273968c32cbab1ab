package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/claudepool/claudepool"
)

// Defaults of a server's limits.
const (
	defaultMaxBody     = 1 << 20 // bytes of a POST /chat body
	defaultChatTimeout = 5 * time.Minute
)

// server answers the HTTP API with processes from one pool.
type server struct {
	pool    *claudepool.Pool
	adapter *claudepool.Adapter
	mux     *http.ServeMux
	log     *slog.Logger // one line per chat

	maxBody     int64         // largest POST /chat body accepted
	chatTimeout time.Duration // bounds one chat, stalled API streams included
}

// newServer returns the HTTP handler of the example. It does not own pool:
// the caller closes it after the server has stopped.
func newServer(pool *claudepool.Pool) *server {
	s := &server{
		pool:        pool,
		adapter:     claudepool.NewAdapter(pool),
		mux:         http.NewServeMux(),
		log:         slog.New(slog.DiscardHandler),
		maxBody:     defaultMaxBody,
		chatTimeout: defaultChatTimeout,
	}
	s.mux.HandleFunc("POST /chat", s.chat)
	s.mux.HandleFunc("GET /stats", s.stats)
	s.mux.HandleFunc("GET /metrics", s.metrics)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// chatRequest is the body of POST /chat.
type chatRequest struct {
	Messages []struct {
		Role    claudepool.Role `json:"role"` // "user" or "assistant"
		Content string          `json:"content"`
	} `json:"messages"`
	System string `json:"system,omitempty"`
	Model  string `json:"model,omitempty"`
}

// resultEvent is the data of the final "result" event.
type resultEvent struct {
	Text        string  `json:"text"`
	IsError     bool    `json:"is_error"`
	StopReason  string  `json:"stop_reason,omitempty"`
	Usage       usage   `json:"usage"`
	CostUSD     float64 `json:"cost_usd"`
	Warm        bool    `json:"warm"`          // the process came ready from the pool
	AcquireMS   float64 `json:"acquire_ms"`    // time to take the process
	FirstTextMS float64 `json:"first_text_ms"` // time to the first text
}

type usage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
}

// chat streams the reply to a conversation as server-sent events:
// "delta" events with text as it arrives, then one "result" event, or an
// "error" event when the turn ended without a result.
func (s *server) chat(w http.ResponseWriter, r *http.Request) {
	var body chatRequest
	r.Body = http.MaxBytesReader(w, r.Body, s.maxBody)
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			err = fmt.Errorf("body larger than %d bytes", mbe.Limit)
		}
		jsonError(w, http.StatusBadRequest, "malformed request: "+err.Error())
		return
	}
	req := claudepool.Request{System: body.System, Model: body.Model}
	for _, m := range body.Messages {
		req.Messages = append(req.Messages, claudepool.Message{Role: m.Role, Content: m.Content})
	}

	// The request's context ends when the client goes away: the stream then
	// interrupts the CLI, and Close below reaps it.
	ctx, cancel := context.WithTimeout(r.Context(), s.chatTimeout)
	defer cancel()
	stream, err := s.adapter.StreamChat(ctx, req)
	if errors.Is(err, claudepool.ErrInvalidRequest) {
		// Validation runs before a process is taken.
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		jsonError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer stream.Close()
	defer func() {
		info, lat := stream.Acquire(), stream.Latency()
		s.log.Info("chat", "warm", info.Warm, "pid", info.PID, "acquire", info.Wait,
			"first_text", lat.FirstText, "result", lat.Result, "err", stream.Err())
	}()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(event string, data any) {
		fmt.Fprintf(w, "event: %s\ndata: ", event)
		enc := json.NewEncoder(w) // one line, ended by a newline
		enc.SetEscapeHTML(false)
		_ = enc.Encode(data)
		fmt.Fprint(w, "\n")
		_ = rc.Flush() // a gone client shows up as ctx's end
	}

	var deltas bool
	for stream.Next() {
		if text := replyText(stream.Event(), &deltas); text != "" {
			send("delta", map[string]string{"text": text})
		}
	}
	res := stream.Result()
	if res == nil {
		send("error", map[string]string{"error": stream.Err().Error()})
		return
	}
	info, lat := stream.Acquire(), stream.Latency()
	send("result", resultEvent{
		Text:       res.Text,
		IsError:    res.IsError,
		StopReason: res.StopReason,
		Usage: usage{
			InputTokens:              res.Usage.InputTokens,
			OutputTokens:             res.Usage.OutputTokens,
			CacheCreationInputTokens: res.Usage.CacheCreationInputTokens,
			CacheReadInputTokens:     res.Usage.CacheReadInputTokens,
		},
		CostUSD:     res.TotalCostUSD,
		Warm:        info.Warm,
		AcquireMS:   ms(info.Wait),
		FirstTextMS: ms(lat.FirstText),
	})
}

// replyText returns the text of ev to show. With partial messages on, the
// CLI sends a reply twice: as text deltas, then as one whole assistant
// message. deltas remembers whether the current message came as deltas, so
// that its whole copy is skipped.
func replyText(ev claudepool.Event, deltas *bool) string {
	switch ev.Type {
	case claudepool.EventPartial:
		if t := ev.Text(); t != "" {
			*deltas = true
			return t
		}
	case claudepool.EventAssistant:
		if *deltas {
			*deltas = false
			return ""
		}
		return ev.Text()
	}
	return ""
}

func (s *server) stats(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.pool.Stats())
}

func jsonError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
