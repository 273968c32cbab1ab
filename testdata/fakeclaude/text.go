package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"
)

// textMode mimics `claude -p` with the prompt on stdin: it gives up when no
// byte arrives within the text timeout, which is why such a process cannot
// be kept warm. It returns the exit code.
func textMode(cfg *config, sigs <-chan os.Signal) int {
	type chunk struct {
		data []byte
		err  error
	}
	first := make(chan chunk, 1)
	go func() {
		buf := make([]byte, 1)
		n, err := os.Stdin.Read(buf)
		first <- chunk{buf[:n], err}
	}()

	var c chunk
	select {
	case c = <-first:
	case <-time.After(cfg.textTimeout):
		fmt.Fprintf(os.Stderr, "Warning: no stdin data received in %s, proceeding without it. "+
			"If piping from a slow command, redirect stdin explicitly: < /dev/null to skip, or wait longer.\n",
			cfg.textTimeout)
		return inputMissing()
	case sig := <-sigs:
		return signalExit(sig)
	}
	if len(c.data) == 0 {
		return inputMissing()
	}
	rest, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		return 1
	}
	text := strings.TrimSpace(string(c.data) + string(rest))
	if text == "" {
		return inputMissing()
	}
	reply := "echo: " + text
	if cfg.reply != nil {
		reply = *cfg.reply
	}
	fmt.Println(reply)
	return 0
}

func inputMissing() int {
	fmt.Fprintln(os.Stderr, "Error: Input must be provided either through stdin or as a prompt argument when using --print")
	return 1
}

// signalExit is the exit code of the real CLI after sig when no turn is
// in flight.
func signalExit(sig os.Signal) int {
	if sig == syscall.SIGTERM {
		return 143
	}
	return 0
}
