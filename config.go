package claudepool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults for the zero values of Config fields.
const (
	DefaultCommand      = "claude"
	DefaultReadyTimeout = 30 * time.Second
	DefaultStopGrace    = 2 * time.Second
	DefaultMaxLineBytes = 64 << 20
	DefaultSpawnBackoff = 250 * time.Millisecond
	// DefaultMaxUses is how many chats a process serves before it is
	// retired. The real CLI's memory grows by about 0.8 MB a chat (about
	// 160 MiB idle, 230-240 MiB after 90 chats); a fresh process costs
	// about a CPU-second.
	DefaultMaxUses = 100
	// DefaultCoalesceDeltas is the gateway's window for joining a
	// streamed reply's deltas (Config.CoalesceDeltas): at most 20 pieces
	// of text a second per content block reach the CLI.
	DefaultCoalesceDeltas = 50 * time.Millisecond
	// MaxSpawnBackoff caps the delay between spawn attempts while spawns
	// keep failing.
	MaxSpawnBackoff = 30 * time.Second
	// DefaultMaxRetries is how often the CLI retries an API request that
	// failed with a status that may succeed on retry, as the Anthropic
	// SDKs do by default. The CLI's own default is 10, about three
	// minutes of waiting.
	DefaultMaxRetries = 2
	// DefaultSurplusIdle is how long an idle spare beyond Size stays when
	// nothing else bounds the idle processes (see Config.MaxIdle).
	DefaultSurplusIdle = time.Minute
)

// baseArgs select the only input mode that can be pooled: with stream-json
// input the CLI waits on stdin without a time limit, while text mode gives
// up after 3 seconds. --no-session-persistence keeps a busy backend from
// writing a transcript file per request.
var baseArgs = []string{
	"-p",
	"--input-format", "stream-json",
	"--output-format", "stream-json",
	"--verbose",
	"--no-session-persistence",
}

// leanArgs keep a pooled process to what a chat needs, and away from the
// settings of the account the backend runs as: no settings files (hooks,
// MCP servers, a model of the user's choosing), no MCP servers but those
// named with --mcp-config, and --bare, which skips hooks, LSP, plugin
// sync, auto-memory, CLAUDE.md discovery, background prefetches and
// keychain reads. Config.UserSettings turns them off.
var leanArgs = []string{
	"--bare",
	"--setting-sources", "",
	"--strict-mcp-config",
}

// leanEnv turns off the CLI's traffic that serves no chat. Config.Env
// wins over it; Config.UserSettings drops it.
var leanEnv = []string{
	"DISABLE_TELEMETRY=1",
	"DISABLE_ERROR_REPORTING=1",
	"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
}

// Config configures a Pool. The zero value is usable: it runs "claude"
// from PATH with no warm processes, no tools, and no limits.
// NewPool copies the Config; changing it afterwards has no effect.
type Config struct {
	// Command is the CLI executable, a name looked up in PATH or a path.
	// Default "claude". NewPool returns ErrCLINotFound if it is missing.
	Command string

	// Args are extra spawn-time flags, appended after the ones the pool
	// sets (-p --input-format stream-json --output-format stream-json
	// --verbose --no-session-persistence --tools ..., --bare
	// --setting-sources "" --strict-mcp-config without UserSettings,
	// --model with Model, --include-partial-messages with
	// PartialMessages). Settings that can only be set at spawn time
	// (permission mode, MCP config, settings files, --max-turns) go here;
	// a pool serves one such combination.
	Args []string

	// Dir holds the processes' working directories: each process works
	// in a directory of its own inside it ("proc-..."), which every reset
	// empties and the process's exit removes, so that nothing a chat's
	// tools write there reaches the next chat. Default: a private, empty
	// directory the pool creates and removes on Close. NewPool returns an
	// error if Dir does not exist; a private directory that disappears
	// while the pool runs (a temp cleaner) is made again. To let the
	// CLI's tools work on files elsewhere, give it their directory with
	// --add-dir in Args.
	Dir string

	// Env holds extra KEY=VALUE entries for the processes, added on top of
	// the parent's environment filtered through an allowlist (see
	// package documentation). Entries here win.
	Env []string

	// Size is the number of warm spares to keep ready: idle processes
	// that hold no conversation and carry the pool's prompt (Prompt) or
	// none yet. Processes that come back from chats are reused on top of
	// it. 0 means no spares: a chat that finds no idle process spawns a
	// cold one.
	Size int

	// MaxProcs caps the processes alive at once: spares, busy, resetting
	// and those holding conversations together. 0 means no cap. It must
	// be 0 or at least Size. When the cap is reached, Acquire waits for a
	// slot or a process coming back until its context ends, or until
	// MaxWait; MaxWaiting bounds the callers waiting at once.
	MaxProcs int

	// MaxUses is the most chats one process serves; after each chat that
	// ended cleanly the pool resets the process's conversation in the
	// background (the CLI's /clear, confirmed by a new session id) and
	// keeps it for the next chat with the same system prompt. Each process
	// gets up to 10% fewer, so that processes started together are not
	// recycled together. 1 turns reuse off: every chat gets a process of
	// its own. Default DefaultMaxUses.
	MaxUses int

	// MaxRSS retires a process whose resident memory (VmRSS), read after
	// each reset, exceeds this many bytes. 0 means no bound. It is read
	// from /proc and has no effect on systems without it. Resident memory
	// counts the CLI executable's pages, which every process shares
	// (about 75-85 MiB of 2.1.330's); MaxPrivate bounds what one process
	// alone costs.
	MaxRSS int64
	// MaxPrivate retires a process whose private memory
	// (Private_Dirty in /proc/PID/smaps_rollup: the pages it wrote,
	// which no other process shares and its exit frees), read after
	// each reset, exceeds this many bytes. 0 means no bound. This is the
	// measure to size a machine by (see the README's Sizing); like
	// MaxRSS it has no effect without /proc.
	MaxPrivate int64

	// HoldConversations is how long a process keeps the conversation of
	// its last chat for a request that continues it (see StreamChat): the
	// request's messages are that chat's plus its reply (Result.Text) and
	// one new user message, with the same system prompt and model. After
	// that time, or sooner when a process is needed for another chat, the
	// pool resets the process. 0 means DefaultHoldConversations; a
	// negative value turns holding off, and every chat is then reset at
	// once.
	HoldConversations time.Duration

	// MaxIdle retires a warm process that has been idle this long (each
	// process gets up to 10% less, so that processes started together do
	// not expire together) and spawns a fresh one. 0 means no such limit;
	// then, unless MaxProcs or SpareDecay bounds the processes, a spare
	// beyond Size (left over from a burst of chats) is retired once idle
	// for DefaultSurplusIdle, and the pool shrinks back to Size.
	MaxIdle time.Duration

	// MaxRetries is how often the CLI retries an API request that failed
	// with a status that may succeed on retry (429, 5xx, 529 overloaded,
	// a connection error), waiting longer each time (about 0.6, 1, 2, 5 s,
	// ...). Every retry arrives as an EventRetry. A status that can never
	// succeed on retry (400, 401, 403, 404, 413; see Retryable) ends the
	// chat at once whatever this says: the pool interrupts the CLI's
	// retries and keeps the process. 0 means DefaultMaxRetries; a
	// negative value means none. It is passed as CLAUDE_CODE_MAX_RETRIES,
	// which Env may override.
	MaxRetries int

	// ReadyTimeout bounds how long a new process may take to answer its
	// first control request: the readiness probe of a warm process, the
	// first request line of a cold one. Default 30s.
	ReadyTimeout time.Duration

	// StopGrace is how long a stop waits after each step (close stdin or
	// SIGINT, then SIGTERM) before the next, harsher one. Default 2s.
	StopGrace time.Duration

	// MaxLineBytes caps the length of one stdout line. Default 64 MiB.
	MaxLineBytes int

	// Tools lists the CLI tools the processes may use. Nil or empty means
	// none (--tools ""): a chat backend forwards text from its users and
	// should not hand them a shell. The pool never widens this on its own.
	Tools []string

	// Prompt, when set, is the system prompt of the pool's warm
	// processes: each one receives it (an initialize control request) as
	// soon as it is ready, so that a chat on it skips that round trip at
	// claim time, about a third of a warm chat's time to its first event
	// on the real CLI. A Request that leaves System and AppendSystem empty,
	// or sets them to Prompt's, gets this prompt.
	//
	// Only the first initialize of a process sets its prompt, so a process
	// keeps its prompt for life. A request takes, in this order, an idle
	// process that carries its prompt (one that served such a chat
	// before), a fresh warm process (only when Prompt is nil), or a cold
	// spawn. At the MaxProcs cap the least recently used idle process of
	// another prompt is retired to make room. Without MaxProcs the pool
	// keeps at most max(Size, 1) idle processes of prompts other than
	// Prompt.
	//
	// Nil, the default, leaves warm processes unspecialized: the first
	// chat on each applies its own prompt at claim time.
	Prompt *SystemPrompt

	// Model is the model the pool's processes run by default, given at
	// spawn (--model), e.g. "sonnet" or a full model ID. A request that
	// names no model, or this one, sends no set_model. A request for
	// another model switches its process with set_model before the user
	// line: a round trip of about 10-20 ms on every such chat, plus, the
	// first time a process meets the model, the CLI's confirmation of it
	// with the API unless the model is in Models. The pool puts the model
	// back after the chat, off the next chat's path. Empty: the CLI's
	// default model.
	Model string

	// Models lists further models that requests may name. Each warm
	// process switches to each of them and back once before it counts as
	// ready, so that the CLI's one-time confirmation of a model never
	// falls on a chat's path.
	Models []string

	// UserSettings lets the processes read the settings of the user the
	// backend runs as, as an interactive CLI would: settings files
	// (hooks, MCP servers, model), CLAUDE.md, plugins, the OAuth login
	// and the keychain. By default (false) they run lean and hermetic:
	// --bare --setting-sources "" --strict-mcp-config, with the CLI's
	// telemetry, error reporting and non-essential traffic turned off,
	// and a configuration directory of the pool's own (CLAUDE_CONFIG_DIR,
	// created by NewPool and removed by Close, unless Env sets it), so
	// that nothing the processes write lands in the backend account's
	// $HOME/.claude.
	// Without UserSettings the CLI authenticates with ANTHROPIC_API_KEY
	// (or an apiKeyHelper given with --settings in Args) only; set it
	// for a CLI logged in with OAuth.
	UserSettings bool

	// PartialMessages makes the CLI stream partial messages (text deltas)
	// as EventPartial events (--include-partial-messages).
	PartialMessages bool

	// SpawnBackoff is the delay after a failed spawn before the next
	// attempt; it doubles with each consecutive failure up to
	// MaxSpawnBackoff. Default 250ms.
	SpawnBackoff time.Duration

	// Logger receives the pool's logs: every acquire at Debug, spawn
	// failures at Warn. Nil means silent.
	Logger *slog.Logger

	// MaxWaiting bounds the callers that wait for a MaxProcs slot at once.
	// A caller that would wait beyond it gets an error wrapping
	// ErrOverloaded at once, instead of piling up. 0 means no bound. It
	// has no effect without MaxProcs, where nobody waits.
	MaxWaiting int

	// MaxWait bounds how long a caller waits for a MaxProcs slot; it then
	// gets an error wrapping ErrOverloaded (its context may end sooner,
	// with the context's error). 0 means no bound but the context.
	MaxWait time.Duration

	// SpareDecay makes the warm spares follow demand. Size stays the
	// floor; the refill keeps as many idle spares as the peak number of
	// processes serving chats at once (leased) seen recently, up to
	// MaxProcs (spares beyond Size are spawned only into free slots,
	// never by evicting a process). The peak is remembered for one to two
	// periods of SpareDecay: after that long without such concurrency,
	// the spares beyond it are retired (RetireSpare) down to Size.
	//
	// A spare costs the CLI's memory (about 190 MB for the real CLI), and
	// without MaxProcs nothing bounds the spares but the peak: set
	// MaxProcs with it. 0, the default, keeps Size spares whatever the
	// demand; DefaultSpareDecay is a reasonable period.
	SpareDecay time.Duration

	// OnStreamEnd, when set, is called once for every stream that
	// StreamChat returned, when it has ended (its result, error, context
	// end or Close), with its outcome, latencies and result (usage and
	// cost): the place to feed tracing or metrics such as OpenTelemetry's
	// GenAI conventions. It runs on the stream's own goroutine, holding
	// no lock of the pool, after the outcome is final; Stream.Close and
	// Pool.Close wait for it, so it must return quickly and must not
	// block on the stream's consumer.
	OnStreamEnd func(StreamEnd)

	// GoTools are tools written in Go that the model may call in every
	// chat of the pool (see Tool). Each process offers them from its
	// spawn, as an in-process MCP server named "claudepool" that the pool
	// serves over the CLI's control protocol; the CLI may call them
	// without asking for permission. A chat's stream runs the calls in
	// its own goroutine, while the turn waits. A process from Acquire
	// gets them too, and its caller must then answer the CLI's control
	// requests itself.
	GoTools []Tool

	// MCPServers are MCP servers of the caller's that the processes offer
	// in every chat, by name. Each value is the server's configuration
	// object as the CLI's --mcp-config takes it, e.g.
	// {"type":"stdio","command":"/usr/local/bin/tickets","args":["--ro"]}
	// or {"type":"http","url":"https://mcp.example.com/mcp"}. The pool
	// passes them to the CLI in one --mcp-config with its own server
	// ("claudepool", which serves GoTools). A name is letters, digits,
	// '_' and '-', and not "claudepool" (in any case). The CLI names their
	// tools mcp__NAME__TOOL, and, unlike GoTools, they need permission:
	// allow them with AllowedTools ("mcp__NAME" for every tool of a
	// server, "mcp__NAME__TOOL" for one) or decide them with CanUseTool.
	//
	// The CLI starts a stdio server with each process. What the servers
	// run when a warm process is ready stays for the process's life;
	// anything they, or the CLI, start after that is a chat's, and the
	// reset after the chat kills it (a cold process keeps what runs at
	// its first reset).
	MCPServers map[string]json.RawMessage

	// CanUseTool decides the tool calls the CLI asks permission for: the
	// calls of Config.Tools and of the MCPServers' tools that
	// PermissionMode and AllowedTools do not allow already (the pool's
	// GoTools are always allowed). It runs on the chat's reader while the
	// turn waits; Request.CanUseTool replaces it for one chat. Nil denies
	// every such call. With any Tools or MCPServers, the CLI is started
	// with --permission-prompt-tool stdio so that it asks.
	CanUseTool func(context.Context, PermissionRequest) Permission
	// PermissionMode is the CLI's --permission-mode ("default",
	// "acceptEdits", "bypassPermissions", "plan"); "" leaves the CLI's.
	PermissionMode string
	// AllowedTools are tool calls the CLI runs without asking
	// (--allowedTools), e.g. "Read" or "Bash(git status:*)".
	AllowedTools []string

	// NoGateway turns the pool's gateway off: the processes then call the
	// API themselves, with the credentials of their environment, and a
	// Request's API parameters (MaxTokens, APIKey, ...) fail with
	// ErrNoGateway.
	//
	// By default each pool runs a gateway on 127.0.0.1 between its
	// processes and the Messages API (see the package documentation): the
	// processes get its address as ANTHROPIC_BASE_URL and a token of
	// their own instead of the API key, which only the gateway holds. It
	// is off by itself for the providers it cannot speak for: when
	// CLAUDE_CODE_USE_BEDROCK, CLAUDE_CODE_USE_VERTEX or
	// CLAUDE_CODE_USE_FOUNDRY is set (in Env or the environment), and
	// when there is no API key (APIKey, ANTHROPIC_API_KEY or
	// ANTHROPIC_AUTH_TOKEN) for it to use.
	NoGateway bool
	// NoPriming turns off the priming of warm processes. With the
	// gateway, each warm process runs one chat that the gateway answers
	// (no API call), and a reset, before it counts as ready: the CLI's
	// path from a user line to its API request is slow the first time it
	// runs, and a primed process serves its first real chat as fast as a
	// reused one. Priming gives the process its system prompt (the pool's
	// Config.Prompt, else the empty one), which the CLI takes only once: a
	// request with a prompt of its own then takes an idle process that
	// carries it, else a cold spawn. A pool whose requests bring many
	// prompts of their own may keep fresh warm processes open to them
	// with NoPriming, and pay the slow first chat instead.
	NoPriming bool
	// CoalesceDeltas is the window within which the gateway joins a
	// streamed reply's deltas before the CLI reads them: the CLI then
	// gets at most one text, thinking or tool-input delta per content
	// block per window. The first delta of a block passes at once, so the
	// first text comes as soon as the API sends it; the rest of the reply
	// comes in the same order and whole, in fewer and larger pieces
	// (EventPartial events with PartialMessages), each at most this much
	// later than the API sent it. The CLI spends most of its CPU on a
	// streaming reply per delta, and the API sends one every token or
	// few: joined, the pool's CLI processes spent 0.55-0.68 of the raw
	// CLI's CPU a token streamed (BenchmarkE2EStreamLoad). 0 means DefaultCoalesceDeltas; a negative
	// value passes every delta as the API sent it. Without the gateway it
	// has no effect.
	CoalesceDeltas time.Duration
	// APIURL is the Messages API the gateway forwards to. "" means
	// ANTHROPIC_BASE_URL from Env, else from the environment, else
	// https://api.anthropic.com.
	APIURL string
	// APIKey is the gateway's upstream API key. "" means
	// ANTHROPIC_API_KEY from Env, else from the environment, else
	// ANTHROPIC_AUTH_TOKEN (sent as a bearer token) from either.
	APIKey string
}

// defaultAPIURL is the Messages API's address.
const defaultAPIURL = "https://api.anthropic.com"

// credentialEnv are the variables that carry the API's address and
// credentials: with the gateway on, no process gets them but from the
// gateway.
var credentialEnv = []string{"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "CLAUDE_CODE_OAUTH_TOKEN"}

// upstream decides whether the pool runs a gateway and where it forwards:
// nil, with the reason, when it runs none. parent is the environment the
// pool starts in.
func (cfg *Config) upstream(parent []string) (*upstreamAPI, string, error) {
	lookup := func(name string) string {
		for i := len(cfg.Env) - 1; i >= 0; i-- {
			if v, ok := strings.CutPrefix(cfg.Env[i], name+"="); ok {
				return v
			}
		}
		for i := len(parent) - 1; i >= 0; i-- {
			if v, ok := strings.CutPrefix(parent[i], name+"="); ok {
				return v
			}
		}
		return ""
	}
	if cfg.NoGateway {
		return nil, "Config.NoGateway", nil
	}
	for _, name := range []string{"CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY"} {
		if v := lookup(name); v != "" && v != "0" && v != "false" {
			return nil, name + " is set", nil
		}
	}
	up := &upstreamAPI{url: cfg.APIURL, key: cfg.APIKey, window: max(cfg.CoalesceDeltas, 0)}
	if up.url == "" {
		up.url = lookup("ANTHROPIC_BASE_URL")
	}
	if up.url == "" {
		up.url = defaultAPIURL
	}
	if up.key == "" {
		up.key = lookup("ANTHROPIC_API_KEY")
	}
	if up.key == "" {
		up.key, up.bearer = lookup("ANTHROPIC_AUTH_TOKEN"), true
	}
	if up.key == "" {
		return nil, "no API key", nil
	}
	u, err := url.Parse(up.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, "", fmt.Errorf("claudepool: API URL %q is not an http(s) URL", up.url)
	}
	return up, "", nil
}

// DefaultSpareDecay is a reasonable Config.SpareDecay: spares grown for a
// burst stay about one to two minutes after it.
const DefaultSpareDecay = time.Minute

// normalize validates a Config, fills in the defaults and copies what the
// caller could change later. It returns the CLI's absolute path.
func (cfg Config) normalize() (Config, string, error) {
	if cfg.Size < 0 || cfg.MaxProcs < 0 || cfg.MaxUses < 0 || cfg.MaxRSS < 0 || cfg.MaxPrivate < 0 {
		return cfg, "", errors.New("claudepool: Size, MaxProcs, MaxUses, MaxRSS and MaxPrivate must not be negative")
	}
	if cfg.MaxProcs > 0 && cfg.MaxProcs < cfg.Size {
		return cfg, "", fmt.Errorf("claudepool: MaxProcs (%d) is less than Size (%d)", cfg.MaxProcs, cfg.Size)
	}
	if cfg.MaxWaiting < 0 || cfg.MaxWait < 0 || cfg.SpareDecay < 0 {
		return cfg, "", errors.New("claudepool: MaxWaiting, MaxWait and SpareDecay must not be negative")
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = DefaultMaxRetries
	}
	if cfg.MaxIdle < 0 || cfg.ReadyTimeout < 0 || cfg.StopGrace < 0 || cfg.SpawnBackoff < 0 || cfg.MaxLineBytes < 0 {
		return cfg, "", errors.New("claudepool: durations and MaxLineBytes must not be negative")
	}
	for _, kv := range cfg.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return cfg, "", fmt.Errorf("claudepool: Env entry %q is not KEY=VALUE", kv)
		}
		if strings.ContainsRune(kv, 0) {
			return cfg, "", fmt.Errorf("claudepool: Env entry %q contains a NUL byte", kv)
		}
	}
	for _, a := range cfg.Args {
		if strings.ContainsRune(a, 0) {
			return cfg, "", fmt.Errorf("claudepool: Args entry %q contains a NUL byte", a)
		}
	}
	if err := validateTools(cfg.GoTools); err != nil {
		return cfg, "", err
	}
	servers, err := normalizeServers(cfg.MCPServers)
	if err != nil {
		return cfg, "", err
	}
	cfg.MCPServers = servers
	for _, m := range append([]string{cfg.Model}, cfg.Models...) {
		if !utf8.ValidString(m) || strings.ContainsAny(m, " \t\r\n\x00") {
			return cfg, "", fmt.Errorf("claudepool: model %q is not a model name", m)
		}
	}
	if sp := cfg.Prompt; sp != nil {
		if !utf8.ValidString(sp.System) || !utf8.ValidString(sp.AppendSystem) {
			return cfg, "", errors.New("claudepool: Prompt is not valid UTF-8")
		}
		cfg.Prompt = &SystemPrompt{System: sp.System, AppendSystem: sp.AppendSystem}
	}
	if cfg.Dir != "" {
		fi, err := os.Stat(cfg.Dir)
		if err != nil {
			return cfg, "", fmt.Errorf("claudepool: working directory: %w", err)
		}
		if !fi.IsDir() {
			return cfg, "", fmt.Errorf("claudepool: working directory %s is not a directory", cfg.Dir)
		}
		abs, err := filepath.Abs(cfg.Dir)
		if err != nil {
			return cfg, "", fmt.Errorf("claudepool: working directory: %w", err)
		}
		cfg.Dir = abs
	}
	if cfg.Command == "" {
		cfg.Command = DefaultCommand
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	if cfg.MaxLineBytes == 0 {
		cfg.MaxLineBytes = DefaultMaxLineBytes
	}
	if cfg.SpawnBackoff == 0 {
		cfg.SpawnBackoff = DefaultSpawnBackoff
	}
	if cfg.MaxUses == 0 {
		cfg.MaxUses = DefaultMaxUses
	}
	if cfg.HoldConversations == 0 {
		cfg.HoldConversations = DefaultHoldConversations
	}
	if cfg.CoalesceDeltas == 0 {
		cfg.CoalesceDeltas = DefaultCoalesceDeltas
	}
	cfg.Args = append([]string(nil), cfg.Args...)
	cfg.Env = append([]string(nil), cfg.Env...)
	cfg.Tools = append([]string(nil), cfg.Tools...)
	cfg.Models = append([]string(nil), cfg.Models...)
	cfg.GoTools = append([]Tool(nil), cfg.GoTools...)
	cfg.AllowedTools = append([]string(nil), cfg.AllowedTools...)

	path, err := exec.LookPath(cfg.Command)
	if err != nil {
		return cfg, "", fmt.Errorf("%w: %q: %w", ErrCLINotFound, cfg.Command, err)
	}
	// exec resolves a relative path against the child's working
	// directory, which is not the caller's.
	if path, err = filepath.Abs(path); err != nil {
		return cfg, "", fmt.Errorf("%w: %q: %w", ErrCLINotFound, cfg.Command, err)
	}
	return cfg, path, nil
}

// argv returns the CLI's arguments.
func (cfg *Config) argv() []string {
	argv := append(append([]string(nil), baseArgs...), "--tools", strings.Join(cfg.Tools, ","))
	if !cfg.UserSettings {
		argv = append(argv, leanArgs...)
	}
	if cfg.Model != "" {
		argv = append(argv, "--model", cfg.Model)
	}
	if cfg.PartialMessages {
		argv = append(argv, "--include-partial-messages")
	}
	argv = append(argv, cfg.toolArgs()...)
	if len(cfg.Tools) > 0 || len(cfg.MCPServers) > 0 {
		argv = append(argv, "--permission-prompt-tool", "stdio")
	}
	if cfg.PermissionMode != "" {
		argv = append(argv, "--permission-mode", cfg.PermissionMode)
	}
	return append(argv, cfg.Args...)
}

// env returns the processes' environment: the parent's through the
// allowlist, the lean defaults with the pool's configuration directory
// (configDir, "" for none), the retry policy, then Config.Env.
func (cfg *Config) env(parent []string, configDir string) []string {
	var extra []string
	if !cfg.UserSettings {
		extra = append(extra, leanEnv...)
		if configDir != "" {
			extra = append(extra, "CLAUDE_CONFIG_DIR="+configDir)
		}
	}
	extra = append(extra, "CLAUDE_CODE_MAX_RETRIES="+strconv.Itoa(max(cfg.MaxRetries, 0)))
	return childEnv(parent, append(extra, cfg.Env...))
}

// toolArgs are the spawn flags that declare the MCP servers to the CLI
// (the pool's in-process one for its Go tools, and the caller's
// Config.MCPServers, in one --mcp-config) and the tools it runs without
// asking.
func (cfg *Config) toolArgs() []string {
	allowed := append([]string(nil), cfg.AllowedTools...)
	for _, t := range cfg.GoTools {
		allowed = append(allowed, toolPrefix+t.Name)
	}
	var args []string
	if len(cfg.GoTools) > 0 || len(cfg.MCPServers) > 0 {
		args = append(args, "--mcp-config", cfg.mcpConfig())
	}
	if len(allowed) > 0 {
		args = append(args, "--allowedTools", strings.Join(allowed, ","))
	}
	return args
}

// mcpConfig is the --mcp-config JSON: the pool's server when it has Go
// tools, then the caller's servers by name.
func (cfg *Config) mcpConfig() string {
	var servers []string
	if len(cfg.GoTools) > 0 {
		servers = append(servers, fmt.Sprintf(`%q:{"type":"sdk","name":%q}`, toolServer, toolServer))
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.MCPServers)) {
		// A valid name needs no escaping (normalizeServers).
		servers = append(servers, fmt.Sprintf(`%q:%s`, name, cfg.MCPServers[name]))
	}
	return `{"mcpServers":{` + strings.Join(servers, ",") + `}}`
}

// normalizeServers validates Config.MCPServers and returns a copy of it
// with each configuration compacted onto one line.
func normalizeServers(servers map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	if len(servers) == 0 {
		return nil, nil
	}
	out := make(map[string]json.RawMessage, len(servers))
	for name, conf := range servers {
		if !validServerName(name) {
			return nil, fmt.Errorf("claudepool: MCP server name %q: use letters, digits, '_' and '-'", name)
		}
		if strings.EqualFold(name, toolServer) {
			return nil, fmt.Errorf("claudepool: MCP server name %q is the pool's own", name)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, conf); err != nil {
			return nil, fmt.Errorf("claudepool: MCP server %q: its configuration is not JSON: %w", name, err)
		}
		if !bytes.HasPrefix(b.Bytes(), []byte("{")) {
			return nil, fmt.Errorf("claudepool: MCP server %q: its configuration is not a JSON object", name)
		}
		out[name] = b.Bytes()
	}
	return out, nil
}

// validServerName reports whether name is a usable MCP server name:
// letters, digits, '_' and '-', as in the tool names mcp__NAME__TOOL.
func validServerName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// withGateway rewrites a child environment for a gateway at url: the
// API's address and credentials give way to the gateway's address (each
// process gets its own token at spawn).
func withGateway(env []string, url string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(credentialEnv, name) {
			out = append(out, kv)
		}
	}
	return append(out, "ANTHROPIC_BASE_URL="+url)
}

// ownConfigDir reports whether the pool makes a configuration directory
// of its own for the processes: unless they read the user's settings or
// Env names one.
func (cfg *Config) ownConfigDir() bool {
	if cfg.UserSettings {
		return false
	}
	for _, kv := range cfg.Env {
		if strings.HasPrefix(kv, "CLAUDE_CONFIG_DIR=") {
			return false
		}
	}
	return true
}

// poolModel is what set_model puts a process back to.
func (cfg *Config) poolModel() string {
	if cfg.Model != "" {
		return cfg.Model
	}
	return "default"
}
