package main

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/claudepool/claudepool"
)

// Errors of a chat that needs the pool's gateway, which is off.
var (
	errNoStopSequences = errors.New("stop_sequences: not supported by this server, whose pool calls the API without its gateway")
	errNoOutputFormat  = errors.New("output_config.format: not supported by this server, whose pool calls the API without its gateway")
	errNoTools         = errors.New("tools: not supported by this server, whose pool calls the API without its gateway, which offers each chat its tools")
	errNoKeyForwarding = errors.New("the server forwards API keys (-forward-key) but its pool runs no gateway, which applies them; the server's log has the details")
)

// startChat starts the chat req. The pool's gateway sets the request's
// Messages API parameters on the chat's API calls. A pool without it
// (Config.NoGateway, Bedrock or Vertex, no API key of its own) refuses
// them with claudepool.ErrNoGateway: the chat then runs without those that
// only tune the reply (max_tokens, temperature, top_p, top_k,
// metadata.user_id, thinking and effort), with the CLI's settings, as the
// API would run it without them; a chat whose stop sequences, output
// format, tools (a server with -tools, which run checks, offers each chat
// its own) or forwarded key would change what the reply is or who pays
// for it fails instead.
func (s *server) startChat(ctx context.Context, req claudepool.Request) (*claudepool.Stream, error) {
	stream, err := s.adapter.StreamChat(ctx, req)
	if !errors.Is(err, claudepool.ErrNoGateway) {
		return stream, err
	}
	switch {
	case req.APIKey != "":
		s.log.Error("-forward-key: the pool runs no gateway (it needs an API key of the server's own, ANTHROPIC_API_KEY, and the Anthropic API)",
			"request_id", requestID(ctx))
		return nil, errNoKeyForwarding
	case len(req.StopSequences) > 0:
		return nil, errNoStopSequences
	case req.OutputSchema != nil:
		return nil, errNoOutputFormat
	case req.GoTools != nil || req.ToolChoice != "":
		return nil, errNoTools
	}
	req.MaxTokens, req.Temperature, req.TopP, req.TopK, req.UserID, req.APIFields = 0, nil, nil, nil, "", nil
	req.Thinking = nil
	return s.adapter.StreamChat(ctx, req)
}

// hasGateway reports whether the pool runs a gateway. It asks StreamChat
// for a chat with an API key whose context has ended: a pool without a
// gateway refuses it with ErrNoGateway, one with a gateway fails to take
// a process for it (a caller that is gone takes none).
func (s *server) hasGateway() bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	stream, err := s.adapter.StreamChat(ctx, claudepool.Request{
		Messages: []claudepool.Message{{Role: claudepool.RoleUser, Content: "gateway probe"}},
		APIKey:   "probe",
	})
	if stream != nil {
		stream.Close()
	}
	return !errors.Is(err, claudepool.ErrNoGateway)
}

// clientKey returns the API key of a request, from x-api-key or else an
// Authorization: Bearer header, or the error that refuses a request
// without a usable one: 401 authentication_error, as the API answers.
func clientKey(r *http.Request) (string, *apiError) {
	key := strings.TrimSpace(r.Header.Get("X-Api-Key"))
	if key == "" {
		auth := strings.TrimSpace(r.Header.Get("Authorization"))
		if scheme, token, ok := strings.Cut(auth, " "); ok && strings.EqualFold(scheme, "Bearer") {
			key = strings.TrimSpace(token)
		}
	}
	if key == "" {
		return "", &apiError{http.StatusUnauthorized, errAuthentication, "x-api-key header is required"}
	}
	for _, c := range []byte(key) {
		if c <= ' ' || c >= 0x7f {
			return "", &apiError{http.StatusUnauthorized, errAuthentication, "invalid x-api-key"}
		}
	}
	return key, nil
}
