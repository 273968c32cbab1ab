// Command chat streams a reply from Claude Code to the terminal as it
// arrives. With -i it holds a conversation, sending the whole history with
// each message, while a warm process waits for the next one.
//
//	go run ./examples/chat "Why is the sky blue?"
//	echo "Why is the sky blue?" | go run ./examples/chat -model haiku
//	go run ./examples/chat -i -v -system "Answer in one sentence."
//	go run ./examples/chat -mock -cli "$CLAUDEPOOL_CLI" hello
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/claudepooltest"
)

type options struct {
	interactive, verbose bool
	model, system        string
}

func main() {
	var o options
	flag.BoolVar(&o.interactive, "i", false, "interactive: read one message a line and keep the history")
	flag.StringVar(&o.model, "model", "", "model, e.g. sonnet, opus, haiku (default: the CLI's)")
	flag.StringVar(&o.system, "system", "", "system prompt (default: none)")
	flag.BoolVar(&o.verbose, "v", false, "print the acquire and the time to first text to stderr")
	cli := flag.String("cli", cliDefault(), "the claude executable, a path or a name in PATH ($CLAUDEPOOL_CLI sets the default)")
	mock := flag.Bool("mock", false, "answer from a local mock of the Messages API instead of Anthropic's")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: chat [flags] [message]   (no message: read it from stdin)\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	in := io.Reader(os.Stdin)
	if !o.interactive && flag.NArg() > 0 {
		in = strings.NewReader(strings.Join(flag.Args(), " "))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, *cli, *mock, in); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

func cliDefault() string {
	if p := os.Getenv("CLAUDEPOOL_CLI"); p != "" {
		return p
	}
	return claudepool.DefaultCommand
}

// run sets up the pool and chats.
func run(ctx context.Context, o options, cli string, mock bool, in io.Reader) error {
	cfg := claudepool.Config{Command: cli, PartialMessages: true}
	if o.system != "" {
		// One prompt for the whole session: warm processes get it ahead.
		cfg.Prompt = &claudepool.SystemPrompt{System: o.system}
	}
	if o.interactive {
		// One process warms up while you type; a one-shot run has nothing
		// to hide the start-up behind, so it spawns cold.
		cfg.Size = 1
	}
	if mock {
		env, stopMock, err := claudepooltest.Sandbox(claudepooltest.Config{Chunks: 8, ChunkDelay: 60 * time.Millisecond})
		if err != nil {
			return err
		}
		defer stopMock() // after the pool's Close: deferred calls run last-first
		cfg.Env = env
	}
	pool, err := claudepool.NewPool(cfg)
	if err != nil {
		return err
	}
	defer pool.Close(context.Background())
	return chat(ctx, claudepool.NewAdapter(pool), o, in, os.Stdout, os.Stderr)
}

// chat answers the message in in, or with o.interactive every line of in
// as one turn of a conversation.
func chat(ctx context.Context, a *claudepool.Adapter, o options, in io.Reader, out, errOut io.Writer) error {
	if !o.interactive {
		msg, err := io.ReadAll(in)
		if err != nil {
			return err
		}
		_, err = turn(ctx, a, o, []claudepool.Message{{Role: claudepool.RoleUser, Content: strings.TrimSpace(string(msg))}}, out, errOut)
		return err
	}
	var history []claudepool.Message
	sc := bufio.NewScanner(in)
	for fmt.Fprint(errOut, "> "); sc.Scan(); fmt.Fprint(errOut, "> ") {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		history = append(history, claudepool.Message{Role: claudepool.RoleUser, Content: line})
		reply, err := turn(ctx, a, o, history, out, errOut)
		if err != nil {
			return err
		}
		history = append(history, claudepool.Message{Role: claudepool.RoleAssistant, Content: reply})
	}
	fmt.Fprintln(errOut)
	return sc.Err()
}

// turn streams the reply to msgs to out and returns its whole text.
func turn(ctx context.Context, a *claudepool.Adapter, o options, msgs []claudepool.Message, out, errOut io.Writer) (string, error) {
	s, err := a.StreamChat(ctx, claudepool.Request{Messages: msgs, Model: o.model})
	if err != nil {
		return "", err
	}
	defer s.Close()

	// With partial messages the reply comes twice: as text deltas, then as
	// a whole assistant message. Print the deltas, skip the copy.
	var deltas bool
	for s.Next() {
		switch ev := s.Event(); ev.Type {
		case claudepool.EventPartial:
			if t := ev.Text(); t != "" {
				deltas = true
				fmt.Fprint(out, t)
			}
		case claudepool.EventAssistant:
			if !deltas {
				fmt.Fprint(out, ev.Text())
			}
			deltas = false
		}
	}
	fmt.Fprintln(out)

	if o.verbose {
		info, lat := s.Acquire(), s.Latency()
		kind := "cold"
		switch {
		case info.Continued:
			kind = "continued"
		case info.Reused:
			kind = "reused"
		case info.Warm:
			kind = "warm"
		}
		fmt.Fprintf(errOut, "[%s acquire in %v (pid %d), first text after %v, result after %v]\n",
			kind, round(info.Wait), info.PID, round(lat.FirstText), round(lat.Result))
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	return s.Result().Text, nil
}

func round(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(time.Millisecond)
}
