package claudepool_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/internal/fakecli"
)

// The examples run against the fake CLI the tests build; a program uses
// the real one: leave Config.Command empty to run "claude" from PATH.
func fakeCommand() string { return claudepool.FakeCLI() }

func Example() {
	command := fakeCommand()
	ctx := context.Background()

	pool, err := claudepool.NewPool(claudepool.Config{Command: command, Size: 1, PartialMessages: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close(ctx)
	if err := pool.WaitReady(ctx); err != nil {
		fmt.Println(err)
		return
	}

	s, err := claudepool.NewAdapter(pool).StreamChat(ctx, claudepool.Request{
		System:   "You are terse.",
		Messages: []claudepool.Message{{Role: claudepool.RoleUser, Content: "hello"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	for s.Next() {
		if ev := s.Event(); ev.Type == claudepool.EventPartial {
			fmt.Print(ev.Text()) // the reply, as it arrives
		}
	}
	fmt.Println()
	if err := s.Err(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("warm:", s.Acquire().Warm)
	fmt.Println("turns:", s.Result().NumTurns)
	// Output:
	// echo: hello
	// warm: true
	// turns: 1
}

func ExampleStream_Events() {
	command := fakeCommand()
	ctx := context.Background()
	pool, _ := claudepool.NewPool(claudepool.Config{Command: command})
	defer pool.Close(ctx)

	s, err := claudepool.NewAdapter(pool).StreamChat(ctx, claudepool.Request{
		Messages: []claudepool.Message{
			{Role: claudepool.RoleUser, Content: "Name a colour."},
			{Role: claudepool.RoleAssistant, Content: "Blue."},
			{Role: claudepool.RoleUser, Content: "Another one."},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	for ev, err := range s.Events() {
		if err != nil {
			fmt.Println("error:", err)
			break
		}
		fmt.Println(ev.Type)
	}
	// Output:
	// init
	// assistant
	// result
}

func ExampleResultError() {
	command := fakeCommand()
	ctx := context.Background()
	// This fake CLI answers like the real one with an invalid API key:
	// it would retry the 401 ten times over minutes, and the pool ends
	// the chat at the first.
	pool, _ := claudepool.NewPool(claudepool.Config{
		Command: command,
		Env:     []string{fakecli.EnvMode + "=" + fakecli.ModeErrorResult},
	})
	defer pool.Close(ctx)

	s, err := claudepool.NewAdapter(pool).StreamChat(ctx, claudepool.Request{
		Messages: []claudepool.Message{{Role: claudepool.RoleUser, Content: "hi"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	for s.Next() {
	}
	var re *claudepool.ResultError
	if errors.As(s.Err(), &re) {
		fmt.Println("API status:", re.APIErrorStatus)
		fmt.Println("message:", re.Message)
	}
	// Output:
	// API status: 401
	// message: API error 401 Unauthorized (authentication_failed), which no retry can change
}

func ExamplePool_Stats() {
	command := fakeCommand()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, _ := claudepool.NewPool(claudepool.Config{Command: command, Size: 1})
	defer pool.Close(ctx)
	_ = pool.WaitReady(ctx)

	warm, _ := pool.Acquire(ctx) // takes the ready process
	cold, _ := pool.Acquire(ctx) // none ready: spawns one
	_ = warm.Stop(ctx)
	_ = cold.Stop(ctx)

	st := pool.Stats()
	fmt.Println("warm acquires:", st.WarmAcquires)
	fmt.Println("cold acquires:", st.ColdAcquires)
	fmt.Println("warm waits recorded:", st.Warm.Acquire.Count)
	// Output:
	// warm acquires: 1
	// cold acquires: 1
	// warm waits recorded: 1
}

func ExampleNewPool_notFound() {
	_, err := claudepool.NewPool(claudepool.Config{Command: "no-such-claude"})
	fmt.Println(errors.Is(err, claudepool.ErrCLINotFound))
	// Output:
	// true
}
