// Command fakeclaude is a stand-in for the Claude Code CLI (`claude`) in
// tests. It speaks the CLI's print-mode protocol: text mode, and stream-json
// input and output with control requests, turns, partial messages, signals
// and exit codes as measured on the real CLI. Environment variables select
// its replies and faults; see package internal/fakecli for their names.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
)

// config is what the command line and the environment ask for.
type config struct {
	streamJSON   bool     // --input-format stream-json
	partials     bool     // --include-partial-messages
	tools        []string // from --tools; the real default list when absent
	model        string   // from --model, resolved
	mode         string
	reply        *string // nil: echo the user text
	chunks       int
	chunkDelay   time.Duration
	startupDelay time.Duration
	exitCode     *int // nil: the mode's default
	textTimeout  time.Duration
	ignoreSignal bool
	recordDir    string
	hugeBytes    int
	errorText    string
	apiStatus    int
	retries      int
	maxRetries   int           // CLAUDE_CODE_MAX_RETRIES, default 10
	retryDelay   time.Duration // first wait of ModeErrorResult's retries
	echoHistory  bool          // echo every user text since the last reset
	resetMode    string        // the fault of every /clear
	growBytes    int           // bytes kept per user turn
	sdkServers   []string      // SDK MCP servers of --mcp-config, in order
	allowedTools []string      // from --allowedTools; recorded, not enforced
}

// defaultTools is the tool list of the real CLI when --tools is not given.
var defaultTools = []string{"Task", "Bash", "Edit", "Read", "WebFetch", "WebSearch", "Write"}

var modes = map[string]bool{
	fakecli.ModeNormal: true, fakecli.ModeExitEarly: true, fakecli.ModeNoReady: true,
	fakecli.ModeCrash: true, fakecli.ModeHang: true, fakecli.ModeHangMid: true,
	fakecli.ModeGarbage: true, fakecli.ModeHuge: true, fakecli.ModeErrorResult: true,
	fakecli.ModeRetry: true, fakecli.ModeGrandchild: true, fakecli.ModeGrandchildUnasked: true, fakecli.ModeCloseStdout: true,
	fakecli.ModeSleeper: true, fakecli.ModeUnknownLines: true, fakecli.ModeRejectInit: true,
}

var resetModes = map[string]bool{
	fakecli.ResetNormal: true, fakecli.ResetExit: true, fakecli.ResetHang: true,
	fakecli.ResetNoReset: true, fakecli.ResetSameSession: true, fakecli.ResetGarbage: true,
	fakecli.ResetOtherModel: true, fakecli.ResetStuckModel: true,
}

func main() {
	cfg, err := loadConfig(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "fakeclaude: %v\n", err)
		os.Exit(2)
	}
	if cfg.mode == fakecli.ModeSleeper {
		for {
			time.Sleep(time.Hour)
		}
	}
	if cfg.recordDir != "" {
		args := strings.Join(os.Args, "\n") + "\n"
		path := fmt.Sprintf("%s/%d.args", cfg.recordDir, os.Getpid())
		if err := os.WriteFile(path, []byte(args), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "fakeclaude: %v\n", err)
			os.Exit(2)
		}
	}
	if cfg.mode == fakecli.ModeExitEarly {
		fmt.Fprintln(os.Stderr, "fatal: fake start-up failure")
		os.Exit(cfg.exit(1))
	}
	// A hung turn blocks every goroutine on a channel; this timer keeps
	// the runtime from calling that a deadlock and exiting, so that the
	// fake hangs like the real CLI until a signal ends it.
	go func() {
		for {
			time.Sleep(time.Hour)
		}
	}()
	sigs := make(chan os.Signal, 4)
	if cfg.ignoreSignal {
		signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	}
	if !cfg.streamJSON {
		os.Exit(textMode(cfg, sigs))
	}
	s := newSession(cfg, sigs)
	os.Exit(s.run())
}

// exit returns the exit code asked for with FAKE_EXIT_CODE, else def.
func (c *config) exit(def int) int {
	if c.exitCode != nil {
		return *c.exitCode
	}
	return def
}

// loadConfig reads the flags the fake cares about (unknown flags are
// ignored, like values of flags it does not know) and the FAKE_* variables.
func loadConfig(args []string) (*config, error) {
	cfg := &config{tools: defaultTools, model: fakecli.DefaultModel, mode: fakecli.ModeNormal,
		chunks: 3, textTimeout: 3 * time.Second, hugeBytes: 10_000_000,
		errorText: fakecli.DefaultErrorText, apiStatus: 401, retries: 2,
		maxRetries: 10, retryDelay: 100 * time.Millisecond,
		resetMode: fakecli.ResetNormal}
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(args[i], "=")
		next := func() string {
			if hasValue {
				return value
			}
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		switch name {
		case "--input-format":
			cfg.streamJSON = next() == "stream-json"
		case "--include-partial-messages":
			cfg.partials = true
		case "--tools":
			cfg.tools = []string{}
			for _, t := range strings.Split(next(), ",") {
				if t = strings.TrimSpace(t); t != "" {
					cfg.tools = append(cfg.tools, t)
				}
			}
		case "--model":
			cfg.model = resolveModel(next())
		case "--mcp-config", "--allowedTools", "--allowed-tools":
			// Both take one or more values, as on the real CLI: every
			// following argument up to the next flag.
			values := []string{next()}
			for !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
				values = append(values, args[i])
			}
			if name != "--mcp-config" {
				cfg.allowedTools = append(cfg.allowedTools, splitList(values)...)
				continue
			}
			for _, v := range values {
				names, err := sdkServers(v)
				if err != nil {
					return nil, fmt.Errorf("--mcp-config: %w", err)
				}
				for _, n := range names {
					if !slices.Contains(cfg.sdkServers, n) {
						cfg.sdkServers = append(cfg.sdkServers, n)
					}
				}
			}
		}
	}

	var err error
	env := func(name string, parse func(string) error) {
		if v, ok := os.LookupEnv(name); ok && err == nil {
			if e := parse(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	}
	duration := func(d *time.Duration) func(string) error {
		return func(v string) (e error) { *d, e = time.ParseDuration(v); return e }
	}
	integer := func(n *int) func(string) error {
		return func(v string) (e error) { *n, e = strconv.Atoi(v); return e }
	}
	env(fakecli.EnvMode, func(v string) error {
		if !modes[v] {
			return fmt.Errorf("unknown mode")
		}
		cfg.mode = v
		return nil
	})
	env(fakecli.EnvReply, func(v string) error { cfg.reply = &v; return nil })
	env(fakecli.EnvChunks, integer(&cfg.chunks))
	env(fakecli.EnvChunkDelay, duration(&cfg.chunkDelay))
	env(fakecli.EnvStartupDelay, duration(&cfg.startupDelay))
	env(fakecli.EnvExitCode, func(v string) error {
		n, e := strconv.Atoi(v)
		cfg.exitCode = &n
		return e
	})
	env(fakecli.EnvTextTimeout, duration(&cfg.textTimeout))
	env(fakecli.EnvIgnoreSIGTERM, func(v string) error { cfg.ignoreSignal = v == "1"; return nil })
	env(fakecli.EnvRecordDir, func(v string) error { cfg.recordDir = v; return nil })
	env(fakecli.EnvHugeBytes, integer(&cfg.hugeBytes))
	env(fakecli.EnvErrorText, func(v string) error { cfg.errorText = v; return nil })
	env(fakecli.EnvAPIStatus, integer(&cfg.apiStatus))
	env(fakecli.EnvRetries, integer(&cfg.retries))
	env(fakecli.EnvEchoHistory, func(v string) error { cfg.echoHistory = v == "1"; return nil })
	env(fakecli.EnvResetMode, func(v string) error {
		if !resetModes[v] {
			return fmt.Errorf("unknown reset mode")
		}
		cfg.resetMode = v
		return nil
	})
	env(fakecli.EnvGrowBytes, integer(&cfg.growBytes))
	env("CLAUDE_CODE_MAX_RETRIES", integer(&cfg.maxRetries))
	env(fakecli.EnvRetryDelay, duration(&cfg.retryDelay))
	if cfg.chunks < 1 {
		cfg.chunks = 1
	}
	return cfg, err
}

// splitList splits values at commas and white space, as the real CLI
// splits --allowedTools.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		out = append(out, strings.FieldsFunc(v, func(r rune) bool {
			return r == ',' || r == ' ' || r == '\t' || r == '\n'
		})...)
	}
	return out
}

// resolveModel maps the CLI's model aliases to model ids.
func resolveModel(m string) string {
	switch m {
	case "", "default", "opus":
		return fakecli.DefaultModel
	case "sonnet":
		return "claude-sonnet-5-5"
	}
	return m
}

// startGrandchild starts this executable as a sleeper that inherits stdout
// and stderr, and leaves it running.
func startGrandchild() {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fakeclaude: %v\n", err)
		os.Exit(2)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fakecli.EnvMode+"="+fakecli.ModeSleeper)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "fakeclaude: %v\n", err)
		os.Exit(2)
	}
	// Record the grandchild as the sleeper does not record itself, before
	// the turn goes on: tests find it by then.
	if dir := os.Getenv(fakecli.EnvRecordDir); dir != "" {
		path := fmt.Sprintf("%s/%d.args", dir, cmd.Process.Pid)
		_ = os.WriteFile(path, []byte(self+"\n"), 0o644)
	}
	_ = cmd.Process.Release()
}
