package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/claudepool/claudepool"
)

// verbatimError returns the error the Messages API answered for a failed
// turn, as the API sent it, when the pool's gateway received it (re.API)
// in the API's shape: its status, its type and its message, unchanged. It
// is the API's own text, about the request, which a client of the API
// would have got; no address of the server's is in it. A body in another
// shape (a proxy's page, say) is not the API's error: upstreamError
// handles the turn then.
func verbatimError(re *claudepool.ResultError) (apiError, bool) {
	a := re.API
	if a == nil || a.Type == "" {
		return apiError{}, false
	}
	var body struct {
		Type  string `json:"type"`
		Error struct {
			Type    *string `json:"type"`
			Message *string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(a.Body, &body) != nil || body.Type != "error" || body.Error.Type == nil || *body.Error.Type != a.Type ||
		body.Error.Message == nil || *body.Error.Message != a.Message {
		return apiError{}, false
	}
	// An error event inside a streamed reply came with status 200: its
	// type says what status the API gives that error.
	status := a.Status
	if status < 400 || status > 599 {
		status = re.APIErrorStatus
	}
	if status < 400 || status > 599 {
		status = statusOfKind(a.Type)
	}
	return apiError{status, a.Type, a.Message}, true
}

// statusOfKind is the HTTP status the Messages API answers an error type
// with.
func statusOfKind(kind string) int {
	switch kind {
	case errInvalidRequest:
		return http.StatusBadRequest
	case errAuthentication:
		return http.StatusUnauthorized
	case "billing_error":
		return http.StatusPaymentRequired
	case errPermission:
		return http.StatusForbidden
	case errNotFound:
		return http.StatusNotFound
	case errTooLarge:
		return http.StatusRequestEntityTooLarge
	case errRateLimit:
		return http.StatusTooManyRequests
	case errTimeout:
		return http.StatusGatewayTimeout
	case errOverloaded:
		return 529
	}
	return http.StatusInternalServerError
}

// upstreamError maps a failed turn's result to what the client is told
// when the API's own error is not known (verbatimError), or reports false
// when the result is no error of the upstream API.
//
// The CLI's texts about the upstream name its address: "API Error: 500
// ... check your inference gateway (127.0.0.1:18083)", ENOTFOUND for the
// host of ANTHROPIC_BASE_URL. A client must learn neither where the
// server's API traffic goes nor that it goes through a gateway, so:
//   - a 5xx or a connection failure gets a fixed message of the API's
//     kind, as the API's own 5xx messages are ("Internal server error");
//   - a 4xx keeps its text, which says what was wrong with the request,
//     with every URL and host:port in it replaced.
func (s *server) upstreamError(re *claudepool.ResultError) (apiError, bool) {
	status, msg := re.APIErrorStatus, strings.TrimSpace(re.Message)
	switch {
	case promptTooLong(status, msg):
		// The API's answer to a conversation over the context window is a
		// 400; the CLI does not always pass its status on.
		return badRequest(s.scrubber.scrub(msg)), true
	case status >= 500 && status <= 599:
		return apiError{status, kindOfStatus(status), upstreamText(status)}, true
	case status >= 400:
		return apiError{status, kindOfStatus(status), orDefault(s.scrubber.scrub(msg), http.StatusText(status))}, true
	case status != 0:
		return apiError{}, false
	case connectionFailed(re):
		// 502: the server, a gateway to the API, could not reach it. The
		// SDKs retry it like any 5xx.
		return apiError{http.StatusBadGateway, errAPI, "upstream API unavailable"}, true
	case strings.HasPrefix(msg, "Request timed out"):
		return apiError{http.StatusGatewayTimeout, errTimeout, "the upstream API did not answer in time"}, true
	}
	return apiError{}, false
}

// promptTooLong reports the CLI's result for a conversation longer than
// the model's context window: "Prompt is too long", with
// api_error_status 400 or null.
func promptTooLong(status int, msg string) bool {
	return (status == 0 || status == http.StatusBadRequest) && strings.HasPrefix(msg, "Prompt is too long")
}

// connectionFailed reports a turn that failed because the CLI could not
// reach the API: api_error "connection_failed" (2.1.330), or an
// "API Error: " text without a status.
func connectionFailed(re *claudepool.ResultError) bool {
	if re.Result != nil && re.Result.APIErrorType == "connection_failed" {
		return true
	}
	return re.TerminalReason == "api_error" && strings.HasPrefix(re.Message, "API Error: ")
}

// upstreamText is the message of an upstream 5xx: the API's own for the
// statuses it uses.
func upstreamText(status int) string {
	switch status {
	case http.StatusInternalServerError:
		return "Internal server error"
	case 529:
		return "Overloaded"
	case http.StatusGatewayTimeout:
		return "Request timed out"
	}
	return "upstream API error: " + strings.ToLower(orDefault(http.StatusText(status), "status "+strconv.Itoa(status)))
}

// Addresses in a message: URLs, bracketed IPv6 and IPv4 addresses with
// or without a port, and host names with a port. A host name without a
// port is left alone, as API messages name fields such as
// "messages.0.content"; the upstream's own host is scrubbed by name
// (newScrubber).
var (
	urlPattern      = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s()<>"'\x60]+`)
	ipv6Pattern     = regexp.MustCompile(`\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\](:\d{1,5})?`)
	ipv4Pattern     = regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}(:\d{1,5})?\b`)
	hostPortPattern = regexp.MustCompile(`\b([A-Za-z0-9-]+\.)*[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*:\d{1,5}\b`)
)

// redacted replaces an address in a message to a client.
const redacted = "[upstream]"

// scrubber removes upstream addresses from messages to clients.
type scrubber struct {
	hosts *regexp.Regexp // the upstream's host names, nil if none known
}

// newScrubber returns a scrubber that also removes the hosts of the base
// URLs among env (KEY=value entries, the pool's environment and the
// server's), which the CLI may name without a port.
func newScrubber(env ...[]string) *scrubber {
	seen := map[string]bool{}
	var alts []string
	for _, list := range env {
		for _, kv := range list {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "ANTHROPIC_BASE_URL", "ANTHROPIC_BEDROCK_BASE_URL", "ANTHROPIC_VERTEX_BASE_URL":
			default:
				continue
			}
			u, err := url.Parse(v)
			if err != nil || u.Hostname() == "" {
				continue
			}
			h := strings.ToLower(u.Hostname())
			if net.ParseIP(h) == nil && !seen[h] { // addresses match the patterns
				seen[h] = true
				alts = append(alts, regexp.QuoteMeta(h))
			}
		}
	}
	if len(alts) == 0 {
		return &scrubber{}
	}
	return &scrubber{hosts: regexp.MustCompile(`(?i)\b(` + strings.Join(alts, "|") + `)\b`)}
}

// scrub returns msg with every address replaced.
func (s *scrubber) scrub(msg string) string {
	for _, re := range []*regexp.Regexp{urlPattern, ipv6Pattern, ipv4Pattern, hostPortPattern, s.hosts} {
		if re != nil {
			msg = re.ReplaceAllLiteralString(msg, redacted)
		}
	}
	return msg
}
