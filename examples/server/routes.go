package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Versions of the API (anthropic-version) the server takes.
const (
	version20230101 = "2023-01-01" // the first; the Messages API behaves as in 2023-06-01
	version20230601 = "2023-06-01"
	// version20261021 removes temperature, top_p and top_k from Messages
	// and count_tokens requests, and refuses citations on the text
	// blocks of user turns (and document blocks in assistant turns,
	// which the server refuses in every version).
	version20261021 = "2026-10-21"
)

// apiVersions are the versions the API takes, in the order it published
// them.
var apiVersions = []string{version20230101, version20230601, version20261021}

// openPaths are reachable without a client key (-client-keys): the probes
// and the metrics, for load balancers, orchestrators and Prometheus.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// route is the public listener's handler below the access log: CORS
// (a preflight is answered here), then the client key, then the routes.
func (s *server) route(w http.ResponseWriter, r *http.Request) {
	if s.cors.apply(w, r) {
		return
	}
	if !openPaths[r.URL.Path] {
		if e := s.clientKeys.check(r); e != nil {
			s.log.Info("client key refused", "request_id", requestID(r.Context()), "reason", e.msg)
			writeAPIError(w, r, *e)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// writeAPIError answers with e in the API's error shape, the request id in
// its body and in the Request-Id header; on the OpenAI paths (/v1/chat/...)
// in OpenAI's shape.
func writeAPIError(w http.ResponseWriter, r *http.Request, e apiError) {
	if strings.HasPrefix(r.URL.Path, "/v1/chat/") {
		writeOpenAIError(w, r, e)
		return
	}
	messagesFormat{}.writeError(w, r, e)
}

// anthropic wraps a handler of the Messages API's paths: a request needs
// an anthropic-version the API takes, as with the API.
func anthropic(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, e := apiVersion(r); e != nil {
			writeAPIError(w, r, *e)
			return
		}
		h(w, r)
	}
}

// apiVersion returns the request's anthropic-version, or the API's 400
// when it has none or one the API does not know. Several headers are one
// value, joined, as the API reads them.
func apiVersion(r *http.Request) (string, *apiError) {
	v := strings.Join(r.Header.Values("Anthropic-Version"), ", ")
	switch {
	case v == "":
		e := badRequest("anthropic-version: header is required")
		return "", &e
	case !slices.Contains(apiVersions, v):
		q, _ := json.Marshal(v)
		e := badRequest(fmt.Sprintf("anthropic-version: %s is not a valid version", q))
		return "", &e
	}
	return v, nil
}

// probeMethods are the methods unrouted tries on a path to fill the Allow
// header of a 405.
var probeMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// unrouted answers what no route takes, in the API's error shape: a 405
// with Allow when the path has routes for other methods, else a 404. It
// is the mux's "/" pattern, so that net/http's plain-text 404 and 405
// never answer.
func (s *server) unrouted(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range probeMethods {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := s.mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		writeAPIError(w, r, apiError{http.StatusNotFound, errNotFound, "Not found: " + r.Method + " " + r.URL.Path})
		return
	}
	if s.cors.enabled() {
		allow = append(allow, http.MethodOptions)
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeAPIError(w, r, apiError{http.StatusMethodNotAllowed, errInvalidRequest,
		fmt.Sprintf("Method not allowed: %s %s takes %s", r.Method, r.URL.Path, strings.Join(allow, ", "))})
}
