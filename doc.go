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
// a harmless mcp_status control request. Ready processes wait in a
// buffered channel.
//
// Acquire takes a ready process without blocking (select with default),
// and spawns a cold one at once when none is ready; every acquire is timed
// with time.Since and wakes the refill, which is event-driven and backs
// off exponentially while spawns fail. A process serves one request and is
// never reused: StreamChat sends initialize (carrying the request's system
// prompt; only the first initialize of a process sets it, which is why the
// probe is not initialize), set_model when the request names a model, the
// user line, and closes stdin. So one pool of identical processes serves
// any system prompt and model; settings the CLI only takes at spawn time
// (tools, permission mode, MCP servers, --max-turns, environment) need a
// pool each, configured through Config.Args and Config.Env.
//
// A backend with one system prompt sets Config.Prompt instead: each warm
// process then receives it right after its probe, and a chat on it starts
// with the user line, which takes about a third off a warm chat's time to
// its first event. A request with another prompt is then served cold.
//
// The replacement of a process that StreamChat took starts once the chat's
// first event has arrived (within 500 ms at most): the CLI's start-up
// takes a CPU-second, and on a small machine it would otherwise slow the
// chat that is just beginning.
//
// Processes run in their own process group, in a private working
// directory, with --no-session-persistence, and with no tools unless
// Config.Tools lists some. Their environment is the parent's filtered
// through an allowlist — PATH, HOME, USER, LOGNAME, SHELL, LANG, LC_*, TZ,
// TMPDIR, TERM, XDG_*, ANTHROPIC_*, CLAUDE_CODE_* (except the nested
// session markers CLAUDECODE, CLAUDE_CODE_SESSION_ID,
// CLAUDE_CODE_CHILD_SESSION and CLAUDE_CODE_ENTRYPOINT), AWS_* and the
// Google Vertex variables, proxy and CA variables, and a few CLI settings
// (API_TIMEOUT_MS, CLAUDE_CONFIG_DIR, ...) — plus Config.Env. A backend's
// own secrets, such as DATABASE_URL, never reach the CLI.
//
// # Shutdown
//
// Pool.Close stops the refill, retires idle processes (close stdin, then
// SIGTERM to the process group after Config.StopGrace, then SIGKILL),
// waits for busy ones until its context ends, kills those left, reaps
// every process and joins every goroutine. Stream.Close, and the end of a
// StreamChat context, interrupt a running turn with SIGINT (the CLI ends
// it cleanly), escalating the same way; an interrupted process never goes
// back to the pool. On Linux each process also gets SIGKILL if the thread
// that started it dies.
//
// # Errors
//
// Errors are meant for errors.Is and errors.As. Sentinels: ErrCLINotFound
// (executable missing or not runnable), ErrClosed, ErrNotAvailable (from
// TryAcquire), ErrInvalidRequest (a malformed Request, rejected before a
// process is taken), ErrLineTooLong (a stdout line over
// Config.MaxLineBytes), ErrNotReady (no answer to a control request within
// Config.ReadyTimeout). Typed errors from Stream.Err: *ResultError when
// the result line has is_error set (API errors, authentication failures;
// decided on is_error alone, never on the subtype), and *ExitError when
// the CLI exits without a result (exit code, signal, stderr tail). When
// the context ends, Stream.Err returns the context's error. Stdout lines
// that are not JSON are skipped and counted (Stats.MalformedLines); they
// never stall later lines.
//
// # Latency
//
// Pool.Stats returns a snapshot: idle, busy and live processes; warm and
// cold acquires; spawn failures; and latency summaries (count, p50, p90,
// p99, max, from a fixed-bucket histogram) for warm and cold acquire wait,
// spawn-to-ready, and, per warm and cold, the time from StreamChat to the
// first event, the first text and the result. Stream.Latency and
// Stream.Acquire give the same for one request. Stats marshals to JSON
// for a status or metrics endpoint.
package claudepool
