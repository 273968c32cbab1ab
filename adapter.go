package claudepool

import (
	"context"
	"slices"
	"time"
)

// Adapter answers chat requests with processes from a Pool. It is safe for
// concurrent use; its zero value is not usable, create it with NewAdapter.
//
// The Adapter is the chat layer: it decides which system prompt and model
// a request runs with, leases a process that suits it from the pool,
// applies the settings the process lacks, and streams the turn. What
// happens to the process afterwards is the pool's business.
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
// any process is taken, and a ctx that has already ended returns its
// error. Otherwise StreamChat leases a process without blocking: an idle
// one that carries the request's system prompt (it served such a chat
// before), else a fresh warm one, else a cold spawn (see Config.Prompt
// and Config.MaxProcs). At the MaxProcs cap it waits for a slot until ctx
// ends; beyond Config.MaxWaiting waiting callers or after Config.MaxWait
// it returns an error wrapping ErrOverloaded instead. Then, in the background, it applies what the
// process lacks — an initialize control request with the system prompt
// if the process has none yet, set_model when Model differs from the
// process's — each awaited within Config.ReadyTimeout, and writes the
// user line. A process found dead before the user line was written is
// replaced, since nothing was lost.
//
// The stream ends at the turn's result line. If the turn ended cleanly,
// the pool then resets the process's conversation in the background and
// keeps it for a later chat (Config.MaxUses); the next chat never sees
// this one's messages.
//
// ctx covers the whole stream: when it ends, the turn is interrupted
// (SIGINT, then SIGTERM and SIGKILL to the process group if the CLI does
// not exit within Config.StopGrace), the process is retired, Next returns
// false and Err returns ctx.Err(). The caller must Close the Stream.
func (a *Adapter) StreamChat(ctx context.Context, req Request) (*Stream, error) {
	start := time.Now()
	c, err := req.encode()
	if err != nil {
		return nil, err
	}
	if err := a.pool.knowsTools(&req); err != nil {
		return nil, err
	}
	c.canUseTool = req.CanUseTool
	if c.canUseTool == nil {
		c.canUseTool = a.pool.cfg.CanUseTool
	}
	if a.pool.gw != nil {
		c.api = newAPITurn(&req)
	} else if req.apiParams() {
		return nil, ErrNoGateway
	}
	a.settle(c, start)
	proc, pause, err := a.pool.lease(ctx, c)
	if err != nil {
		return nil, err
	}
	if p := a.pool.cfg.Prompt; p != nil && c.prompt != *p && !proc.life.acquire.Warm {
		a.pool.counters.promptCold.Add(1)
	}
	return newStream(ctx, a.pool, c, proc, pause)
}

// settle decides what an encoded request runs with: its system prompt
// (its own, else the pool's Config.Prompt, else the empty prompt), the
// model to switch to ("" when the pool's model serves it), and the held
// conversation it may continue.
func (a *Adapter) settle(c *chatRequest, start time.Time) {
	c.start = start
	if c.prompt == (SystemPrompt{}) && a.pool.cfg.Prompt != nil {
		c.prompt = *a.pool.cfg.Prompt
	}
	if c.model == a.pool.cfg.Model {
		c.model = ""
	}
	if a.pool.cfg.HoldConversations > 0 {
		c.continues = continues(c.prompt, c.model, c.msgs)
	}
}

// chatRequest is one request on its way from StreamChat to a process's stdin:
// validated and encoded before any process is taken, then given the
// system prompt and model it runs with and the keys of the held
// conversation it may continue (Adapter.StreamChat).
type chatRequest struct {
	// prompt is the request's own system prompt, zero when it has none,
	// until the adapter sets the one the turn runs with.
	prompt SystemPrompt
	// model is the request's model until the adapter sets the one to
	// switch to: "" for the pool's.
	model string
	msgs  []Message // the conversation, copied
	user  []byte    // the user line: the rendered conversation
	// last is the user line with the last message alone, for a process
	// that holds the conversation before it.
	last []byte
	// continues is the held conversation it continues; nil when it
	// continues none.
	continues *held
	start     time.Time // when StreamChat began
	// api is the chat at the pool's gateway; nil without one.
	api *apiTurn
	// canUseTool answers the CLI's permission requests; nil denies them.
	canUseTool permissionFunc
	// resumes is set when the last message is the caller's tool results
	// alone, which resume a turn paused for them; results holds them by
	// the id of the call they answer.
	resumes bool
	results map[string]Block
}

// encode validates r and encodes it. It runs before any process is taken,
// so a bad request costs nothing.
func (r *Request) encode() (*chatRequest, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	c := &chatRequest{prompt: SystemPrompt{System: r.System, AppendSystem: r.AppendSystem},
		model: r.Model, msgs: slices.Clone(r.Messages)}
	var err error
	if c.user, err = encodeUserBlocks(renderBlocks(r.Messages)); err != nil {
		return nil, err
	}
	c.resumes, c.results = toolResults(r.Messages[len(r.Messages)-1])
	if len(r.Messages) > 1 {
		if c.last, err = encodeUserBlocks(messageBlocks(r.Messages[len(r.Messages)-1])); err != nil {
			return nil, err
		}
	} else {
		c.last = c.user
	}
	return c, nil
}
