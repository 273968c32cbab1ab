package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/claudepool/claudepool"
)

// options is the server's configuration, from flags and the environment.
type options struct {
	addr, admin, cli, system, model string
	tools                           string // a file of tool definitions
	clientKeys                      string // a file of the keys clients must send
	corsOrigins                     string
	cors                            *corsPolicy // from corsOrigins
	models                          []string    // Config.Models
	size, maxProcs, maxOutputTokens int
	maxBody                         int64
	maxWaiting                      int
	maxWait, spareDecay             time.Duration
	checkAPI, forwardKey            bool
	startup, timeout, heartbeat     time.Duration
	readyDelay, drain, closeTimeout time.Duration
	mock, verbose                   bool

	// The public listener's limits (listener.go).
	readHeaderTimeout, readTimeout, idleTimeout time.Duration
	maxHeaderBytes, maxConns                    int

	// Hooks for tests: started is called once the listeners are up,
	// onDrain once readiness is off, before the drain goes on.
	started func(api *server, public, admin string)
	onDrain func()
}

// envNames maps each flag to the environment variable that sets it.
var envNames = map[string]string{
	"addr":                "CLAUDEPOOL_ADDR",
	"admin":               "CLAUDEPOOL_ADMIN_ADDR",
	"cli":                 "CLAUDEPOOL_CLI",
	"size":                "CLAUDEPOOL_SIZE",
	"max-procs":           "CLAUDEPOOL_MAX_PROCS",
	"model":               "CLAUDEPOOL_MODEL",
	"max-output-tokens":   "CLAUDEPOOL_MAX_OUTPUT_TOKENS",
	"max-waiting":         "CLAUDEPOOL_MAX_WAITING",
	"max-wait":            "CLAUDEPOOL_MAX_WAIT",
	"check-api":           "CLAUDEPOOL_CHECK_API",
	"forward-key":         "CLAUDEPOOL_FORWARD_KEY",
	"spare-decay":         "CLAUDEPOOL_SPARE_DECAY",
	"system":              "CLAUDEPOOL_SYSTEM",
	"tools":               "CLAUDEPOOL_TOOLS",
	"client-keys":         "CLAUDEPOOL_CLIENT_KEYS",
	"cors-origins":        "CLAUDEPOOL_CORS_ORIGINS",
	"models":              "CLAUDEPOOL_MODELS",
	"startup":             "CLAUDEPOOL_STARTUP",
	"timeout":             "CLAUDEPOOL_TIMEOUT",
	"heartbeat":           "CLAUDEPOOL_HEARTBEAT",
	"ready-delay":         "CLAUDEPOOL_READY_DELAY",
	"drain":               "CLAUDEPOOL_DRAIN",
	"close-timeout":       "CLAUDEPOOL_CLOSE_TIMEOUT",
	"read-header-timeout": "CLAUDEPOOL_READ_HEADER_TIMEOUT",
	"read-timeout":        "CLAUDEPOOL_READ_TIMEOUT",
	"idle-timeout":        "CLAUDEPOOL_IDLE_TIMEOUT",
	"max-header-bytes":    "CLAUDEPOOL_MAX_HEADER_BYTES",
	"max-body":            "CLAUDEPOOL_MAX_BODY",
	"max-conns":           "CLAUDEPOOL_MAX_CONNS",
	"mock":                "CLAUDEPOOL_MOCK",
	"v":                   "CLAUDEPOOL_VERBOSE",
}

// parseOptions reads the flags in args and the environment through getenv.
// A flag given on the command line wins over its environment variable,
// which wins over the default. A malformed value of either is an error.
func parseOptions(args []string, getenv func(string) string, usage io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.StringVar(&o.addr, "addr", "localhost:8080", "public listen address: chats, /healthz, /readyz, /metrics")
	fs.StringVar(&o.admin, "admin", "", "admin listen address for expvar, pprof and /stats, e.g. 127.0.0.1:6060; empty: off")
	fs.StringVar(&o.cli, "cli", claudepool.DefaultCommand, "the claude executable, a path or a name in PATH")
	fs.IntVar(&o.size, "size", 2, "warm processes to keep ready")
	fs.IntVar(&o.maxProcs, "max-procs", 0, "cap on live processes, warm and busy; a chat beyond it waits for a slot (0: 4 × size, at least 8)")
	fs.StringVar(&o.model, "model", "", "the pool's model, given to each process at spawn (a request naming another is switched per chat)")
	var models string
	fs.StringVar(&models, "models", "", "further models requests may name, separated by commas: each warm process confirms each once before it is ready (Config.Models); GET /v1/models lists them after -model")
	fs.IntVar(&o.maxWaiting, "max-waiting", 0, "chats that may wait for a slot at -max-procs at once; more get a 529 (0: as many as -max-procs)")
	fs.DurationVar(&o.maxWait, "max-wait", 10*time.Second, "longest a chat waits for a slot at -max-procs before it gets a 529")
	fs.DurationVar(&o.spareDecay, "spare-decay", 0, "let warm spares grow with demand up to -max-procs and shrink after this long without it, e.g. 1m; 0: always -size spares")
	fs.BoolVar(&o.checkAPI, "check-api", false, "at start-up, send one minimal chat and fail the start when the API refuses it (costs one API call)")
	fs.IntVar(&o.maxOutputTokens, "max-output-tokens", 0, "the max_tokens of API calls whose request sets none: POST /chat's, and every call when the pool runs no gateway (the CLI's CLAUDE_CODE_MAX_OUTPUT_TOKENS); 0: the CLI's default. A Messages request's own max_tokens wins")
	fs.BoolVar(&o.forwardKey, "forward-key", false, "send each chat's API calls with the client's own API key (x-api-key, or Authorization: Bearer), so that each tenant pays for its chats; a request without one gets a 401. Off: the client's key is ignored and the server's pays. Not with -client-keys")
	fs.StringVar(&o.clientKeys, "client-keys", "", "a file of the keys clients must send, one a line (# comments): every path but /healthz, /readyz and /metrics then needs one in x-api-key or Authorization: Bearer, else a 401. Empty: no key is checked. Not with -forward-key")
	fs.StringVar(&o.corsOrigins, "cors-origins", "", "origins whose pages may call the server from a browser, separated by commas (https://app.example.com), or *; empty: none")
	fs.StringVar(&o.system, "system", "", "the pool's system prompt, given to warm processes ahead of requests (a request's own system prompt is then served cold)")
	fs.StringVar(&o.tools, "tools", "", "a JSON file of Messages API tool definitions, [{\"name\", \"description\", \"input_schema\"}, ...]: the tools a request may offer the model, which its client answers (needs the pool's gateway)")
	fs.DurationVar(&o.startup, "startup", time.Minute, "how long the pool may take to get its warm processes ready")
	fs.DurationVar(&o.timeout, "timeout", defaultChatTimeout, "longest a single chat may take")
	fs.DurationVar(&o.heartbeat, "heartbeat", defaultHeartbeat, "interval of SSE heartbeats while a streamed reply is quiet")
	fs.DurationVar(&o.readyDelay, "ready-delay", 2*time.Second, "on shutdown, how long /readyz reports 503 while new requests are still served, for load balancers to notice")
	fs.DurationVar(&o.drain, "drain", 20*time.Second, "on shutdown, then how long chats in flight may take to finish")
	fs.DurationVar(&o.closeTimeout, "close-timeout", 5*time.Second, "on shutdown, then how long closing the pool may take")
	fs.DurationVar(&o.readHeaderTimeout, "read-header-timeout", defaultReadHeaderTimeout, "longest a client may take to send a request's headers")
	fs.DurationVar(&o.readTimeout, "read-timeout", defaultReadTimeout, "longest a client may take to send a whole request, headers and body (not the reply, which -timeout bounds)")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", defaultIdleTimeout, "how long a keep-alive connection may wait for its next request")
	fs.IntVar(&o.maxHeaderBytes, "max-header-bytes", defaultMaxHeaderBytes, "largest request header block, in bytes; more gets a 431")
	fs.Int64Var(&o.maxBody, "max-body", defaultMaxBody, "largest request body, in bytes, images and documents included (base64); more gets a 413")
	fs.IntVar(&o.maxConns, "max-conns", 0, "cap on open connections to the public listener; more wait in the kernel's accept queue (0: from the open-file limit, see README)")
	fs.BoolVar(&o.mock, "mock", false, "answer from a local mock of the Messages API instead of Anthropic's")
	fs.BoolVar(&o.verbose, "v", false, "log every acquire")
	for name, env := range envNames {
		f := fs.Lookup(name)
		f.Usage += " ($" + env + ")"
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, env := range envNames {
		v := getenv(env)
		if v == "" || set[name] {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return o, fmt.Errorf("$%s: %w", env, err)
		}
	}
	if o.size < 1 {
		return o, fmt.Errorf("-size %d: want at least 1", o.size)
	}
	if o.clientKeys != "" && o.forwardKey {
		// Forwarded keys are the API's to check; keys of the server's own
		// would be refused upstream.
		return o, errors.New("-client-keys and -forward-key: set one or the other: with -forward-key the API checks each client's key, with -client-keys the server does and pays with its own")
	}
	var err error
	if o.cors, err = parseCORSOrigins(o.corsOrigins); err != nil {
		return o, fmt.Errorf("-cors-origins: %w", err)
	}
	for m := range strings.SplitSeq(models, ",") {
		if m = strings.TrimSpace(m); m != "" {
			o.models = append(o.models, m)
		}
	}
	if o.maxProcs == 0 {
		o.maxProcs = max(4*o.size, 8)
	}
	if o.maxProcs < o.size {
		return o, fmt.Errorf("-max-procs %d is below -size %d", o.maxProcs, o.size)
	}
	if o.maxWaiting == 0 {
		o.maxWaiting = o.maxProcs
	}
	if o.maxWaiting < 0 || o.maxWait < 0 || o.spareDecay < 0 {
		return o, fmt.Errorf("-max-waiting %d, -max-wait %v, -spare-decay %v: want 0 or more", o.maxWaiting, o.maxWait, o.spareDecay)
	}
	if o.maxOutputTokens < 0 {
		return o, fmt.Errorf("-max-output-tokens %d: want 0 or more", o.maxOutputTokens)
	}
	if o.heartbeat <= 0 {
		return o, fmt.Errorf("-heartbeat %v: want a positive interval", o.heartbeat)
	}
	// A zero timeout would mean none at all, which is what lets slow
	// clients hold connections for ever: not an option.
	if o.readHeaderTimeout <= 0 || o.readTimeout <= 0 || o.idleTimeout <= 0 {
		return o, fmt.Errorf("-read-header-timeout %v, -read-timeout %v, -idle-timeout %v: want positive durations",
			o.readHeaderTimeout, o.readTimeout, o.idleTimeout)
	}
	if o.maxHeaderBytes <= 0 || o.maxBody <= 0 {
		return o, fmt.Errorf("-max-header-bytes %d, -max-body %d: want positive sizes", o.maxHeaderBytes, o.maxBody)
	}
	if o.maxConns < 0 {
		return o, fmt.Errorf("-max-conns %d: want 0 or more", o.maxConns)
	}
	if o.maxConns == 0 {
		limit, known := openFileLimit()
		o.maxConns = defaultMaxConns(limit, known, o.maxProcs)
	}
	return o, nil
}
