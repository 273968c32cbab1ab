// Command mockapi runs claudepooltest's mock of the Messages API for the
// cluster demo: one upstream for every replica, as Anthropic's API is for
// a real deployment. It writes the environment that points a CLI at it to
// -env-file (KEY=VALUE lines) and serves until SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
)

func main() {
	envFile := flag.String("env-file", "", "where to write the CLI's environment (required)")
	delay := flag.Duration("first-byte-delay", 100*time.Millisecond, "pause before each reply's first byte, as a real API takes")
	tps := flag.Float64("tokens-per-second", 200, "output pace of a reply (0: as fast as possible)")
	flag.Parse()
	if *envFile == "" {
		fmt.Fprintln(os.Stderr, "mockapi: -env-file is required")
		os.Exit(2)
	}
	api := claudepooltest.NewServer(claudepooltest.Config{FirstByteDelay: *delay, TokensPerSecond: *tps,
		// The CLI's own API timeout: long enough for a 2-core machine
		// running three replicas.
		APITimeout: 60 * time.Second})
	defer api.Close()
	// Written whole, then renamed: a reader never sees half of it.
	tmp := *envFile + ".tmp"
	err := os.WriteFile(tmp, []byte(strings.Join(api.Env(), "\n")+"\n"), 0o600)
	if err == nil {
		err = os.Rename(tmp, *envFile)
	}
	if err != nil {
		api.Close()
		fmt.Fprintln(os.Stderr, "mockapi:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "mockapi: listening on", api.URL())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	fmt.Fprintf(os.Stderr, "mockapi: %d requests, %d of them chats\n", len(api.Requests()), len(api.ChatRequests()))
}
