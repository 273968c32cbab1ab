package claudepool

import (
	"context"
	"time"
)

// Adapter answers chat requests with processes from a Pool. It is safe for
// concurrent use; its zero value is not usable, create it with NewAdapter.
type Adapter struct {
	pool *Pool
}

// NewAdapter returns an Adapter that takes its processes from pool. It
// panics if pool is nil.
func NewAdapter(pool *Pool) *Adapter {
	if pool == nil {
		panic("claudepool: NewAdapter with a nil Pool")
	}
	return &Adapter{pool: pool}
}

// Pool returns the adapter's pool.
func (a *Adapter) Pool() *Pool { return a.pool }

// StreamChat starts answering req and returns at once with a Stream that
// delivers the CLI's events as they arrive.
//
// A malformed request returns an error wrapping ErrInvalidRequest before
// any process is taken. Otherwise StreamChat acquires a process the pool's
// way (a ready one without blocking, else a cold spawn) and then, in the
// background, applies the request's settings on it — an initialize control
// request carrying the system prompt unless the process already has it
// (see Config.Prompt), set_model when Model is set, each awaited within
// Config.ReadyTimeout — writes the user line and closes stdin.
//
// ctx covers the whole stream: when it ends, the turn is interrupted
// (SIGINT, then SIGTERM and SIGKILL to the process group if the CLI does
// not exit within Config.StopGrace), Next returns false and Err returns
// ctx.Err(). The caller must Close the Stream.
func (a *Adapter) StreamChat(ctx context.Context, req Request) (*Stream, error) {
	start := time.Now()
	enc, err := req.encode()
	if err != nil {
		return nil, err
	}
	prompt, warmOK := a.pool.promptFor(enc)
	proc, err := a.pool.acquire(ctx, start, warmOK, true)
	if err != nil {
		return nil, err
	}
	if !warmOK {
		a.pool.counters.promptCold.Add(1)
	}
	return a.pool.startStream(ctx, proc, enc, prompt, start)
}
