package claudepool

import (
	"log/slog"
	"time"
)

// Defaults for the zero values of Config fields.
const (
	DefaultCommand      = "claude"
	DefaultReadyTimeout = 30 * time.Second
	DefaultStopGrace    = 2 * time.Second
	DefaultMaxLineBytes = 64 << 20
	DefaultSpawnBackoff = 250 * time.Millisecond
	// MaxSpawnBackoff caps the delay between spawn attempts while spawns
	// keep failing.
	MaxSpawnBackoff = 30 * time.Second
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

// SystemPrompt is a system prompt setting, with the meaning of
// Request.System and Request.AppendSystem: System replaces the CLI's own
// prompt, AppendSystem is added to it (or to System), and both empty
// give an empty prompt.
type SystemPrompt struct {
	System       string
	AppendSystem string
}

// initialize returns the initialize control request that applies sp.
func (sp SystemPrompt) initialize() map[string]any {
	req := map[string]any{"subtype": "initialize"}
	switch {
	case sp.System != "":
		req["systemPrompt"] = []string{sp.System}
	case sp.AppendSystem == "":
		// Only the first initialize of a process sets its system prompt,
		// so the empty prompt must be chosen here, explicitly.
		req["systemPrompt"] = []string{""}
	}
	if sp.AppendSystem != "" {
		req["appendSystemPrompt"] = sp.AppendSystem
	}
	return req
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
	// --verbose --no-session-persistence --tools ...). Settings that can
	// only be set at spawn time (permission mode, MCP config, settings
	// files, --max-turns) go here; a pool serves one such combination.
	Args []string

	// Dir is the working directory of every process. Default: a private,
	// empty directory the pool creates and removes on Close. The CLI
	// lists the files of its working directory on every prompt, so keep
	// it small.
	Dir string

	// Env holds extra KEY=VALUE entries for the processes, added on top of
	// the parent's environment filtered through an allowlist (see
	// package documentation). Entries here win.
	Env []string

	// Size is the number of warm processes to keep ready. 0 means every
	// acquire spawns a cold process.
	Size int

	// MaxProcs caps the processes alive at once, warm and busy together.
	// 0 means no cap. It must be 0 or at least Size. When the cap is
	// reached, Acquire waits for a slot until its context ends.
	MaxProcs int

	// MaxIdle retires a warm process that has been idle this long (each
	// process gets up to 10% less, so that processes started together do
	// not expire together) and spawns a fresh one. 0 means never.
	MaxIdle time.Duration

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
	// or sets them to Prompt's, gets this prompt on a warm process. A
	// Request with another prompt is served by a cold process, because
	// only the first initialize of a process sets its prompt.
	//
	// Nil, the default, leaves warm processes unspecialized: each request
	// applies its own prompt at claim time and may differ from the last.
	Prompt *SystemPrompt

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
}
