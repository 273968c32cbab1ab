package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/claudepool/claudepool"
)

// upstreamAPI is the Messages API that the pool's gateway forwards to,
// with the server's credential: where POST /v1/messages/count_tokens goes.
type upstreamAPI struct {
	url    string // the base URL, https://api.anthropic.com by default
	key    string
	bearer bool // key goes as Authorization: Bearer (ANTHROPIC_AUTH_TOKEN)
}

// defaultAPIURL is the Messages API's address.
const defaultAPIURL = "https://api.anthropic.com"

// resolveUpstream finds the upstream of a pool with cfg started in the
// environment parent, as the pool's gateway does (Config.APIURL and
// APIKey, else ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY and
// ANTHROPIC_AUTH_TOKEN from cfg.Env, else from parent), or nil when the
// pool runs no gateway: NoGateway, Bedrock, Vertex or Foundry, no key.
func resolveUpstream(cfg claudepool.Config, parent []string) *upstreamAPI {
	lookup := func(name string) string {
		for _, env := range [][]string{cfg.Env, parent} {
			for i := len(env) - 1; i >= 0; i-- {
				if v, ok := strings.CutPrefix(env[i], name+"="); ok {
					return v
				}
			}
		}
		return ""
	}
	if cfg.NoGateway {
		return nil
	}
	for _, name := range []string{"CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY"} {
		if v := lookup(name); v != "" && v != "0" && v != "false" {
			return nil
		}
	}
	up := &upstreamAPI{url: cfg.APIURL, key: cfg.APIKey}
	if up.url == "" {
		up.url = orDefault(lookup("ANTHROPIC_BASE_URL"), defaultAPIURL)
	}
	if up.key == "" {
		up.key = lookup("ANTHROPIC_API_KEY")
	}
	if up.key == "" {
		up.key, up.bearer = lookup("ANTHROPIC_AUTH_TOKEN"), true
	}
	if up.key == "" {
		return nil
	}
	up.url = strings.TrimSuffix(up.url, "/")
	return up
}

// maxCountReply bounds what the server reads of the upstream's answer to
// a count_tokens call: {"input_tokens": N}, or an error.
const maxCountReply = 1 << 20

// errNoCountTokens answers count_tokens on a server without an upstream.
var errNoCountTokens = errors.New("count_tokens: not supported by this server, whose pool calls the API without its gateway and has no API key of its own to count with")

// countTokens is POST /v1/messages/count_tokens. The request is validated
// as a Messages request is (model, messages, system, tools, tool_choice,
// thinking, output_config; a request /v1/messages would refuse is
// refused) and then sent as it came to the upstream API, with the
// server's key (the client's with -forward-key), the client's
// anthropic-version and anthropic-beta. The API's answer comes back as it
// sent it; its errors as with chats. Counting needs the API's tokenizer,
// which only the API has: the server cannot count by itself.
func (s *server) countTokens(w http.ResponseWriter, r *http.Request) {
	version, _ := apiVersion(r) // anthropic() checked it
	body, e := s.readBody(w, r)
	if e == nil {
		e = s.forwardCount(w, r, version, body)
	}
	if e != nil && e.status != statusClientClosed {
		writeAPIError(w, r, *e)
	}
}

// forwardCount validates a count_tokens request and sends it upstream. It
// returns the error to answer, or nil once it answered.
func (s *server) forwardCount(w http.ResponseWriter, r *http.Request, version string, body []byte) *apiError {
	var key string
	if s.forwardKey {
		var e *apiError
		if key, e = clientKey(r); e != nil {
			return e
		}
	}
	if _, err := (messagesFormat{tools: s.tools, version: version}).parseRequest(body, true); err != nil {
		e := badRequest(err.Error())
		return &e
	}
	up := s.upstream
	if up == nil {
		e := badRequest(errNoCountTokens.Error())
		return &e
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.chatTimeout)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, http.MethodPost, up.url+"/v1/messages/count_tokens", bytes.NewReader(body))
	if err != nil {
		s.log.Error("count_tokens: upstream request", "request_id", requestID(ctx), "err", err)
		return &apiError{http.StatusInternalServerError, errAPI, "the server could not build the upstream request (request id " + requestID(ctx) + ")"}
	}
	out.Header.Set("Content-Type", "application/json")
	out.Header.Set("Anthropic-Version", version)
	if betas := r.Header.Values("Anthropic-Beta"); len(betas) > 0 {
		out.Header.Set("Anthropic-Beta", strings.Join(betas, ","))
	}
	switch {
	case key != "":
		out.Header.Set("X-Api-Key", key)
	case up.bearer:
		out.Header.Set("Authorization", "Bearer "+up.key)
	default:
		out.Header.Set("X-Api-Key", up.key)
	}
	start := time.Now()
	resp, err := s.upstreamHTTP.Do(out)
	if err != nil {
		logErr(s.log, ctx, "count_tokens", err)
		switch {
		case r.Context().Err() != nil:
			return &apiError{statusClientClosed, errAPI, "request canceled"}
		case ctx.Err() != nil:
			return &apiError{http.StatusGatewayTimeout, errTimeout, "the upstream API did not answer in time"}
		}
		return &apiError{http.StatusBadGateway, errAPI, "upstream API unavailable"}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxCountReply))
	s.log.Info("count_tokens", "request_id", requestID(ctx), "status", resp.StatusCode, "took", time.Since(start),
		"api_request_id", resp.Header.Get("Request-Id"))
	if err != nil {
		return &apiError{http.StatusBadGateway, errAPI, "upstream API unavailable"}
	}
	if resp.StatusCode != http.StatusOK {
		e := s.countError(resp.StatusCode, data)
		return &e
	}
	var count struct {
		InputTokens *int `json:"input_tokens"`
	}
	if json.Unmarshal(data, &count) != nil || count.InputTokens == nil {
		return &apiError{http.StatusBadGateway, errAPI, "the upstream API's answer had no input_tokens"}
	}
	w.Header().Set("Request-Id", requestID(ctx))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
	return nil
}

// countError is what the client is told of the upstream's error answer
// to a count_tokens call: the API's error as it sent it, when the body is
// in its shape; else what a chat's client is told of such a status
// (upstreamError), without the body, which may name the upstream.
func (s *server) countError(status int, data []byte) apiError {
	var body struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &body) == nil && body.Type == "error" && body.Error.Type != "" && status >= 400 && status <= 599 {
		return apiError{status, body.Error.Type, body.Error.Message}
	}
	if status >= 500 && status <= 599 {
		return apiError{status, kindOfStatus(status), upstreamText(status)}
	}
	if status >= 400 && status <= 499 {
		return apiError{status, kindOfStatus(status), orDefault(http.StatusText(status), "upstream API error")}
	}
	return apiError{http.StatusBadGateway, errAPI, "the upstream API answered an unexpected status"}
}
