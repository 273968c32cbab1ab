// Package claudepool answers chat requests through the Claude Code CLI
// (`claude`, print mode) without paying the CLI's start-up cost on every
// request.
//
// A Pool keeps processes started ahead of time; an Adapter takes one for
// each request and streams the CLI's reply as typed events:
//
//	pool, err := claudepool.NewPool(claudepool.Config{Size: 2, PartialMessages: true})
//	if err != nil { ... }                    // errors.Is(err, claudepool.ErrCLINotFound)
//	defer pool.Close(context.Background())
//
//	s, err := claudepool.NewAdapter(pool).StreamChat(ctx, claudepool.Request{
//		System:   "You are a helpful assistant.",
//		Messages: []claudepool.Message{{Role: claudepool.RoleUser, Content: "Hello"}},
//	})
//	if err != nil { ... }
//	defer s.Close()
//	for s.Next() {
//		if ev := s.Event(); ev.Type == claudepool.EventPartial {
//			fmt.Print(ev.Text())
//		}
//	}
//	if err := s.Err(); err != nil { ... }
//
// # Lifecycle
//
// The CLI starts in about 0.6 to 0.9 seconds and a second of CPU. The pool
// spawns each process with --input-format stream-json, the only input
// mode in which an idle CLI waits on stdin without a time limit (text mode
// gives up after 3 seconds), and counts it as ready once it has answered
// a harmless mcp_status control request.
//
// A process then lives through spawn, probe, specialize, idle, leased,
// reset, idle again, and so on until it is retired (lifecycle.go). A chat
// leases a process; once the chat's result has arrived, the pool clears
// the conversation in the background with the CLI's own /clear, confirmed
// by a conversation_reset line and a new session id, puts the model back,
// and keeps the process for the next chat. One process so serves up to
// Config.MaxUses chats (100 by default) at about a tenth of the CPU of a
// start-up each; a chat that did not end cleanly (a cancel, a crash, a
// protocol error), a reset that was not confirmed, Config.MaxRSS, Config.MaxPrivate and
// Config.MaxIdle retire a process instead. A reset process carries nothing
// of the chat before: the next chat's API request holds none of its text.
//
// Acquire and StreamChat take an idle process without blocking, and spawn
// a cold one at once when none suits; every acquire is timed with
// time.Since and wakes the refill, which keeps Config.Size processes
// ready, is event-driven, and backs off exponentially while spawns fail.
//
// Only the first initialize of a process sets its system prompt, so a
// process keeps its prompt for life. StreamChat takes, in this order, an
// idle process that carries the request's prompt, a fresh warm process
// (which then receives the prompt), or a cold spawn; at the MaxProcs cap
// the least recently used idle process of another prompt makes room. A
// backend with one system prompt sets Config.Prompt: warm processes
// receive it before any request, and a chat on them starts with the user
// line. Config.Model is given at spawn; a request for another model
// switches its process with set_model for that chat. Settings the CLI
// only takes at spawn time (tools, permission mode, MCP servers,
// --max-turns, environment) need a pool each, configured through
// Config.Args and Config.Env.
//
// A process whose chat ended cleanly holds that conversation for a while
// (Config.HoldConversations, 2 minutes by default) instead of being reset
// at once. A later request that continues it — its messages are that
// chat's, the reply's text (Result.Text) and one new user message, with
// the same system prompt and model — goes to that process, which receives
// the new message alone: the API sees real turns, and the earlier ones
// stay in its prompt cache. Matching is by content, so no session id
// travels; any other request is served as sent, its history rendered into
// one message (RenderTranscript). A held conversation gives way, reset,
// when a process is needed and none other suits.
//
// A chat's text is data. Every user line the pool writes for a chat is
// marked as text nobody typed at the CLI's prompt ("text_not_typed"), so
// that a message starting with "/" reaches the API as that text instead
// of running as one of the CLI's commands (/model, /config, /compact,
// ...); the pool's own /clear is the one line without the mark. A reset
// proves the process is back to the pool's model: the new conversation's
// system/init must name it, or set_model must put it back; a process that
// cannot prove it is retired.
//
// The CLI retries failed API requests itself, ten times over about three
// minutes by default. The pool sets Config.MaxRetries (2 by default) for
// statuses that may succeed on retry (see Retryable); a status that never
// does (400, 401, 403, 404, 413) ends the chat at the CLI's first retry
// notice, with an interrupt that keeps the process. A Request.Model the
// API does not know fails that chat with a *ResultError carrying the
// API's status and keeps the process too.
//
// # The gateway
//
// Each pool runs a gateway on 127.0.0.1 between its processes and the
// Messages API: the processes get its address as ANTHROPIC_BASE_URL and a
// token of their own instead of the API key, which only the gateway holds
// (Config.APIKey, else ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN from
// Config.Env or the environment). The gateway sets a chat's API parameters
// (Request.MaxTokens, Temperature, TopP, TopK, StopSequences, UserID,
// APIFields) and its own key (Request.APIKey) on the chat's API calls;
// removes the CLI's note of the pool's /clear, so that what the model sees
// is the caller's chat; answers the CLI's model confirmations, a fresh
// process's priming chat (see Config.NoPriming) and the calls the CLI
// makes on its own after a reply ended (after max_tokens or a refusal),
// so that the chat ends with the API's reply, its usage and its stop
// reason (Result.StopReason, Result.StopSequence). An API error reaches
// the chat's *ResultError verbatim (ResultError.API, an *APIError); an
// EventMessageStart carries the input tokens as soon as the API sends
// them; StreamLatency.APIFirstByte and Overhead split a chat's time
// between the API and the rest. It joins the text, thinking and
// tool-input deltas of a streamed reply that arrive within
// Config.CoalesceDeltas (50 ms by default) before the CLI reads them: the
// first delta of each content block passes at once, the rest comes whole
// and in order in fewer pieces, and the CLI, which spends its CPU per
// delta, streams a reply for about a third less CPU. Config.NoGateway turns it
// off; it is off by itself for Bedrock, Vertex and Foundry, and without
// an API key.
//
// The replacement of a warm process that StreamChat took starts 30 ms
// after the chat's first event, about when the CLI has sent its API
// request (within 500 ms at most), or at once when a caller finds no idle
// process: the CLI's start-up takes a CPU-second and a reset tens of
// milliseconds, and on a small machine either would otherwise slow the
// chat that is just beginning.
//
// # Content blocks and tools
//
// A Message carries, beside its text, content blocks (Message.Blocks):
// images, PDFs and plain-text documents (ImageBlock, DocumentBlock, ...),
// validated before a process is taken, and sent as blocks in first
// messages, held continuations and rendered transcripts alike.
// Request.Thinking and Request.OutputSchema set extended thinking and
// structured output per chat, through the gateway.
//
// Config.GoTools are tools written in Go, served to every process as an
// in-process MCP server over the control protocol; the chat's reader runs
// a call's Handler while the turn waits, and events name the tools by
// their own names (Event.ToolCalls, Event.ToolResults). A Tool without a
// Handler is the caller's to answer: the chat ends with Result.ToolCalls
// while its process holds the turn, paused, and the request that brings
// the results (ToolResultBlock after Result.AssistantMessage) resumes that
// turn on that process. Config.Tools, MCPServers, PermissionMode,
// AllowedTools and CanUseTool (or Request.CanUseTool) give the CLI its own
// tools and decide their permissions; Stream.Interrupt stops a turn and
// keeps its process.
//
// Each process works in a directory of its own inside Config.Dir, which
// every reset empties; a reset also kills whatever the chat started that
// outlived it, found by its process group, its parents and a mark each
// process leaves in the environment of what it starts. A process whose
// reset cannot prove this is retired.
//
// Processes run in their own process group, with --no-session-persistence,
// and with no tools unless Config.Tools lists some. They run lean and hermetic: --bare,
// --setting-sources "" and --strict-mcp-config keep the settings, hooks,
// MCP servers and CLAUDE.md of the account the backend runs as away from
// them, and the CLI's telemetry and non-essential traffic are off; a
// backend that authenticates the CLI with an OAuth login rather than
// ANTHROPIC_API_KEY sets Config.UserSettings. Their environment is the
// parent's filtered through an allowlist — PATH, HOME, USER, LOGNAME,
// SHELL, LANG, LC_*, TZ, TMPDIR, TERM, XDG_*, ANTHROPIC_*, CLAUDE_CODE_*
// (except the nested session markers CLAUDECODE, CLAUDE_CODE_SESSION_ID,
// CLAUDE_CODE_CHILD_SESSION and CLAUDE_CODE_ENTRYPOINT), AWS_* and the
// Google Vertex variables, proxy and CA variables, and a few CLI settings
// (API_TIMEOUT_MS, CLAUDE_CONFIG_DIR, ...) — plus Config.Env. A backend's
// own secrets, such as DATABASE_URL, never reach the CLI. Unless
// Config.UserSettings is set, CLAUDE_CONFIG_DIR is a directory of the
// pool's own, so that nothing the processes write lands in the account's
// $HOME/.claude.
//
// Without MaxProcs, MaxIdle or SpareDecay to bound them, idle processes
// the pool does not need for Config.Size are retired after
// DefaultSurplusIdle.
//
// # Shutdown
//
// Pool.Close stops the refill, retires idle processes (close stdin, then
// SIGTERM to the process group after Config.StopGrace, then SIGKILL),
// waits for chats in flight until its context ends, kills those left (their
// streams end with an error wrapping ErrClosed), reaps every process and
// joins every goroutine. A stream's events stay readable after Close, and
// Close never waits for a caller who stopped reading. Stream.Close, and
// the end of a StreamChat context, interrupt a running turn with SIGINT
// (the CLI ends it cleanly), escalating the same way; an interrupted
// process never goes back to the pool. On Linux each process also gets
// SIGKILL if the backend dies: the pool forks from one OS thread that it
// keeps for its whole life, so no other goroutine's thread can take the
// processes with it.
//
// # Errors
//
// Errors are meant for errors.Is and errors.As. Sentinels: ErrCLINotFound
// (executable missing or not runnable), ErrClosed, ErrNotAvailable (from
// TryAcquire), ErrInvalidRequest (a malformed Request, rejected before a
// process is taken), ErrNoGateway (an API parameter on a pool without the
// gateway), ErrLineTooLong (a stdout line over
// Config.MaxLineBytes), ErrNotReady (no answer to a control request within
// Config.ReadyTimeout), ErrStreamClosed (Stream.Close ended the stream
// before its result), ErrOverloaded (a caller shed by Config.MaxWaiting
// or Config.MaxWait). Typed errors from Stream.Err: *ResultError when
// the result line has is_error set (API errors, authentication failures;
// decided on is_error alone, never on the subtype; APIErrorStatus holds
// the API's status, and with the gateway it wraps the API's *APIError),
// or the CLI refused Request.Model, and *ExitError when
// the CLI exits without a result (exit code, signal, stderr tail). When
// the context ends, Stream.Err returns the context's error. Stdout lines
// that are not JSON are skipped and counted (Stats.MalformedLines); they
// never stall later lines.
//
// # Latency
//
// Pool.Stats returns a snapshot, plain data in fields grouped by subject:
// idle, busy, starting, resetting, held and live processes, taken
// together; warm and cold acquires, reuses, retirements by reason and the
// chats each retired process served; spawn failures; held conversations
// continued, missed and ended (Stats.Conversations); and a Latency (count,
// p50, p90, p99, max, from a fixed-bucket histogram) for spawn-to-ready,
// resets, and, per warm and cold (Stats.Warm, Stats.Cold), the acquire
// wait and the time from StreamChat to the first event, the first text and
// the result. Stream.Latency and Stream.Acquire give the same for one
// request. Stats marshals to JSON for a status or metrics endpoint.
//
// # Operating
//
// Each Latency in Stats also holds its histogram whole (Latency.Histogram:
// cumulative counts over the fixed bounds of HistogramBounds, with the
// count and the sum), so that a monitoring system gets real histograms;
// Stats also counts stream outcomes by kind (Outcome), tokens and cost
// from the results; callers waiting for a MaxProcs slot; and health
// (Stats.Health): the last spawn error, consecutive spawn failures and
// consecutive authentication failures (API status 401 or 403). The module
// github.com/claudepool/claudepool/prom exports every field of it as a
// Prometheus collector. Config.OnStreamEnd is called as each
// stream ends, with its outcome, latencies and usage, for tracing or
// OpenTelemetry's GenAI metrics.
//
// WaitReady proves that the CLI starts and answers; it makes no API call,
// so a bad API key passes it. Pool.CheckAPI makes one minimal chat to
// prove the credentials, at the price of one API call.
//
// Under overload, Config.MaxWaiting and Config.MaxWait shed callers that
// would wait for a slot with an error wrapping ErrOverloaded, and
// Config.SpareDecay lets the warm spares grow toward the recent demand,
// up to MaxProcs, and shrink back to Size after a quiet period.
package claudepool
