package main

import (
	"os"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
)

// startMock starts claudepooltest's local mock of the Messages API, which
// echoes each message in a few chunks, and returns the environment that
// points the CLI at it. The CLI also gets a HOME of its own, so that it
// stays away from your login and settings. stop ends the mock and removes
// that HOME; call it after the pool is closed.
func startMock() (env []string, stop func(), err error) {
	home, err := os.MkdirTemp("", "claudepool-example-home-")
	if err != nil {
		return nil, nil, err
	}
	api := claudepooltest.NewServer(claudepooltest.Config{Chunks: 8, ChunkDelay: 60 * time.Millisecond})
	stop = func() {
		api.Close()
		_ = os.RemoveAll(home)
	}
	return append(api.Env(), "HOME="+home), stop, nil
}
