package main

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// corsPolicy lets browsers on some origins call the server (-cors-origins):
// the SDKs in a browser (dangerouslyAllowBrowser) and web pages. A nil
// policy, the default, sends no CORS header: a browser then refuses to
// let a page of another origin read any answer.
type corsPolicy struct {
	any     bool            // "*": every origin
	origins map[string]bool // scheme://host[:port], lower case
}

// corsHeaders are the request headers a preflight may ask for: the API's,
// and those the official SDKs send (their x-stainless-* headers too, by
// prefix: corsAllowHeaders).
var corsHeaders = []string{
	"accept", "content-type", "authorization", "x-api-key", "x-request-id",
	"anthropic-version", "anthropic-beta", "anthropic-dangerous-direct-browser-access",
	"anthropic-workspace-id", "anthropic-user-profile-id", "anthropic-organization-id",
	"x-stainless-arch", "x-stainless-lang", "x-stainless-os", "x-stainless-package-version",
	"x-stainless-retry-count", "x-stainless-runtime", "x-stainless-runtime-version",
	"x-stainless-timeout", "x-stainless-helper", "x-stainless-helper-method",
}

// corsMethods are the methods of the server's routes.
const corsMethods = "GET, POST, OPTIONS"

// corsExposed are the response headers a page may read: the request ids
// (the SDKs read request-id), and Retry-After.
const corsExposed = "Request-Id, X-Request-Id, Retry-After"

// corsMaxAge is how long, in seconds, a browser may keep a preflight's
// answer.
const corsMaxAge = "3600"

// parseCORSOrigins reads -cors-origins: "" for none, "*" for every origin,
// or origins separated by commas, each scheme://host[:port] with no path,
// as browsers send them in Origin.
func parseCORSOrigins(list string) (*corsPolicy, error) {
	list = strings.TrimSpace(list)
	if list == "" {
		return nil, nil
	}
	if list == "*" {
		return &corsPolicy{any: true}, nil
	}
	p := &corsPolicy{origins: map[string]bool{}}
	for o := range strings.SplitSeq(list, ",") {
		o = strings.TrimSpace(o)
		u, err := url.Parse(o)
		if o == "*" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("%q: want * alone, or origins such as https://app.example.com or http://localhost:3000, separated by commas", o)
		}
		p.origins[strings.ToLower(o)] = true
	}
	return p, nil
}

// enabled reports a policy that lets some origin in.
func (p *corsPolicy) enabled() bool { return p != nil }

// allows reports whether a request from origin may read the answer.
func (p *corsPolicy) allows(origin string) bool {
	return p != nil && origin != "" && (p.any || p.origins[strings.ToLower(origin)])
}

// apply sets the CORS headers of a request from an allowed origin, and
// answers a preflight (OPTIONS with Access-Control-Request-Method): 204
// with the methods and headers allowed, or 403 in the API's error shape
// for an origin that is not. It reports whether it answered. Preflights
// carry no key, so they come before the key check.
func (p *corsPolicy) apply(w http.ResponseWriter, r *http.Request) bool {
	if p == nil {
		return false
	}
	origin := r.Header.Get("Origin")
	preflight := r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != ""
	h := w.Header()
	h.Add("Vary", "Origin")
	if !p.allows(origin) {
		if preflight {
			writeAPIError(w, r, apiError{http.StatusForbidden, errPermission, "origin " + origin + " is not allowed by this server's -cors-origins"})
		}
		return preflight
	}
	if p.any {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
	}
	if !preflight {
		h.Set("Access-Control-Expose-Headers", corsExposed)
		return false
	}
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	h.Set("Access-Control-Allow-Methods", corsMethods)
	h.Set("Access-Control-Allow-Headers", corsAllowHeaders(r.Header.Values("Access-Control-Request-Headers")))
	h.Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
	return true
}

// corsAllowHeaders is the Access-Control-Allow-Headers of a preflight:
// corsHeaders, and the x-stainless-* headers it asks for that the list
// does not name (newer SDKs add some).
func corsAllowHeaders(requested []string) string {
	allowed := slices.Clone(corsHeaders)
	for _, v := range requested {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.ToLower(strings.TrimSpace(name))
			if strings.HasPrefix(name, "x-stainless-") && validKey(name) && !slices.Contains(allowed, name) {
				allowed = append(allowed, name)
			}
		}
	}
	return strings.Join(allowed, ", ")
}
