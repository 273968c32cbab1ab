package main

import (
	"expvar"
	"fmt"
	"net/http"
	"net/http/pprof"

	"github.com/claudepool/claudepool"
)

// adminHandler serves what must not be public, on its own listener (-admin):
// expvar's /debug/vars, whose cmdline holds the -system prompt and whose
// memstats describe the process, with the pool's Stats under "claudepool";
// pprof under /debug/pprof/; /stats, the pool's Stats as JSON, which
// holds the last spawn error (it may quote the CLI's stderr); and /metrics
// as on the public listener.
func adminHandler(pool *claudepool.Pool) http.Handler {
	api := &server{pool: pool}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/vars", func(w http.ResponseWriter, _ *http.Request) {
		// expvar.Handler's output plus the pool, without expvar.Publish:
		// its registry is global, and a name can be published once only.
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprint(w, "{\n")
		expvar.Do(func(kv expvar.KeyValue) { fmt.Fprintf(w, "%q: %s,\n", kv.Key, kv.Value) })
		stats, _ := marshal(pool.Stats())
		fmt.Fprintf(w, "%q: %s\n}\n", "claudepool", stats)
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /stats", api.stats)
	mux.HandleFunc("GET /metrics", api.metrics)
	return mux
}
