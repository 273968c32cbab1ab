// Command demo streams a reply from the Claude Code CLI through a warm
// claudepool, then measures cold, warm and reused chats and prints the
// table.
//
// By default it needs nothing configured: it starts claudepooltest, a mock
// of the Messages API, in-process and points the CLI at it. With -real it
// talks to the real service instead (ANTHROPIC_API_KEY set, or a logged-in
// CLI).
//
//	make demo                  # installs the pinned CLI, then runs this
//	go run ./examples/demo -cli .cli/node_modules/.bin/claude -real
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/claudepooltest"
)

func main() {
	cli := flag.String("cli", envOr("CLAUDEPOOL_CLI", "claude"), "the claude executable")
	real := flag.Bool("real", false, "talk to the real API (needs ANTHROPIC_API_KEY or a logged-in CLI)")
	prompt := flag.String("prompt", "Say hello to a Go developer in one sentence.", "the prompt to stream")
	rounds := flag.Int("n", 3, "cold and warm chats to measure")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *cli, *real, *prompt, *rounds); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, cli string, real bool, prompt string, rounds int) error {
	var env []string
	var mock *claudepooltest.Server
	dir, err := os.MkdirTemp("", "claudepool-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if !real {
		// The streamed reply comes in visible chunks; the measured chats
		// below get theirs at once, so that the table shows the CLI's
		// own latency.
		mock = claudepooltest.NewServer(claudepooltest.Config{
			Reply: func(r claudepooltest.Request) claudepooltest.Reply {
				return claudepooltest.Reply{Text: claudepooltest.EchoPrefix + r.LastUserText(), Chunks: 12, ChunkDelay: 40 * time.Millisecond}
			},
		})
		defer mock.Close()
		// A private HOME: the CLI keeps its state there.
		env = append(mock.Env(), "HOME="+dir)
		fmt.Printf("mock Messages API at %s\n", mock.URL())
	}

	newPool := func(size, maxUses int) (*claudepool.Pool, error) {
		return claudepool.NewPool(claudepool.Config{
			Command: cli, Size: size, MaxUses: maxUses, Env: env, PartialMessages: true,
			// Warm processes get the prompt before a request arrives.
			Prompt: &claudepool.SystemPrompt{System: "You are a concise assistant."},
		})
	}
	// Three pools, one per kind of chat: cold spawns a process for each
	// chat, warm takes a process started ahead of time that has served
	// nothing yet, reused takes one that served earlier chats and was reset.
	reusePool, err := newPool(1, 0)
	if err != nil {
		return err
	}
	defer closePool(reusePool)
	warmPool, err := newPool(1, 1)
	if err != nil {
		return err
	}
	defer closePool(warmPool)
	coldPool, err := newPool(0, 1)
	if err != nil {
		return err
	}
	defer closePool(coldPool)

	start := time.Now()
	if err := reusePool.WaitReady(ctx); err != nil {
		return err
	}
	fmt.Printf("pool ready in %v\n\n> %s\n", time.Since(start).Round(time.Millisecond), prompt)

	// Stream one reply to the terminal as it arrives.
	lat, err := chat(ctx, claudepool.NewAdapter(reusePool), prompt, true)
	if err != nil {
		return err
	}
	fmt.Printf("\n\n(warm: first text after %v)\n\n", lat.FirstText.Round(time.Millisecond))

	// Measure the three kinds of chat in turn, in the same run.
	if mock != nil {
		mock.SetReply(claudepooltest.Echo)
	}
	var cold, warm, reused []claudepool.StreamLatency
	for i := 0; i < rounds; i++ {
		l, err := chat(ctx, claudepool.NewAdapter(coldPool), "ping", false)
		if err != nil {
			return err
		}
		cold = append(cold, l)
		if err := warmPool.WaitReady(ctx); err != nil {
			return err
		}
		if l, err = chat(ctx, claudepool.NewAdapter(warmPool), "ping", false); err != nil {
			return err
		}
		warm = append(warm, l)
		if l, err = chat(ctx, claudepool.NewAdapter(reusePool), "ping", false); err != nil {
			return err
		}
		reused = append(reused, l)
	}
	printTable(rounds, cold, warm, reused)
	return nil
}

// chat runs one request and returns its timings; with show, it prints the
// reply's text deltas as they arrive.
func chat(ctx context.Context, a *claudepool.Adapter, prompt string, show bool) (claudepool.StreamLatency, error) {
	s, err := a.StreamChat(ctx, claudepool.Request{
		Messages: []claudepool.Message{{Role: claudepool.RoleUser, Content: prompt}},
	})
	if err != nil {
		return claudepool.StreamLatency{}, err
	}
	defer s.Close()
	for s.Next() {
		if ev := s.Event(); show && ev.Type == claudepool.EventPartial {
			fmt.Print(ev.Text())
		}
	}
	return s.Latency(), s.Err()
}

func printTable(n int, cold, warm, reused []claudepool.StreamLatency) {
	fmt.Printf("median of %d chats each  (cold: spawned per request; warm: started ahead of time; reused: reset after an earlier chat)\n", n)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tacquire\tfirst event\tfirst text\tresult\t")
	row := func(name string, ls []claudepool.StreamLatency) [4]time.Duration {
		med := [4]time.Duration{
			median(ls, func(l claudepool.StreamLatency) time.Duration { return l.Acquire }),
			median(ls, func(l claudepool.StreamLatency) time.Duration { return l.FirstEvent }),
			median(ls, func(l claudepool.StreamLatency) time.Duration { return l.FirstText }),
			median(ls, func(l claudepool.StreamLatency) time.Duration { return l.Result }),
		}
		fmt.Fprintf(tw, "%s\t%v\t%v\t%v\t%v\t\n", name, med[0].Round(time.Microsecond),
			med[1].Round(time.Millisecond), med[2].Round(time.Millisecond), med[3].Round(time.Millisecond))
		return med
	}
	c, w, r := row("cold", cold), row("warm", warm), row("reused", reused)
	fmt.Fprintf(tw, "warm/cold\t\t%.0f%%\t%.0f%%\t%.0f%%\t\n", pct(w[1], c[1]), pct(w[2], c[2]), pct(w[3], c[3]))
	fmt.Fprintf(tw, "reused/cold\t\t%.0f%%\t%.0f%%\t%.0f%%\t\n", pct(r[1], c[1]), pct(r[2], c[2]), pct(r[3], c[3]))
	tw.Flush()
}

func median(ls []claudepool.StreamLatency, f func(claudepool.StreamLatency) time.Duration) time.Duration {
	ds := make([]time.Duration, len(ls))
	for i, l := range ls {
		ds[i] = f(l)
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func pct(a, b time.Duration) float64 { return 100 * float64(a) / float64(b) }

func closePool(p *claudepool.Pool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		log.Print(err)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
