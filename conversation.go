package claudepool

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"sync/atomic"
	"time"
)

// Conversations that stay on their process.
//
// After a chat, its process holds the conversation: the CLI keeps the
// messages it has seen, and the pool records a digest of what the
// backend will send to continue it — the system prompt, the model, the
// request's messages and the reply's text (Result.Text). A later request
// whose messages are exactly that history plus one new user message, with
// the same prompt and model, goes to that process, which receives the new
// message alone: the API then sees the conversation as real turns, and
// its prompt cache holds the earlier ones. Matching is by content, so no
// session id travels; any mismatch (an edited history, another prompt or
// model, a process that is gone, a conversation held by another replica)
// falls back to a process without a conversation and the rendered
// transcript (RenderTranscript).
//
// A held conversation is an idle process with state. It gives way — it
// is reset — for a request that needs a process when nothing else suits
// (giveWay), for the refill when spares run short (giveWayToSpareLocked),
// beyond max(Size, 1) held without MaxProcs, and after
// Config.HoldConversations (expire). This file holds all of it: the keys,
// holding, matching and giving way.

// DefaultHoldConversations is how long an idle process holds the
// conversation of its last chat by default.
const DefaultHoldConversations = 2 * time.Minute

// convKey identifies a conversation as the backend will send it.
type convKey [sha256.Size]byte

// held is a conversation an idle process holds.
type held struct {
	key    convKey // system prompt, model and messages, the reply included
	msgKey convKey // the messages alone, to tell why a continuation missed
	// paused is set when the process holds a turn paused for the
	// caller's tool results: only a request that brings them resumes it.
	paused bool
}

// conversationKeys returns the keys of a conversation: with its system
// prompt and model (the pool's model is ""), and of its messages alone.
func conversationKeys(prompt SystemPrompt, model string, msgs []Message) (key, msgKey convKey) {
	m := sha256.New()
	for _, msg := range msgs {
		writeField(m, string(msg.Role))
		writeField(m, msg.Content)
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(msg.Blocks)))
		m.Write(n[:])
		for i := range msg.Blocks {
			msg.Blocks[i].digest(m)
		}
	}
	copy(msgKey[:], m.Sum(nil))
	k := sha256.New()
	writeField(k, prompt.System)
	writeField(k, prompt.AppendSystem)
	writeField(k, model)
	k.Write(msgKey[:])
	copy(key[:], k.Sum(nil))
	return key, msgKey
}

// writeField writes s with its length, so that no two sequences of fields
// hash alike.
func writeField(w interface{ Write([]byte) (int, error) }, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	_, _ = w.Write(n[:])
	_, _ = w.Write([]byte(s))
}

// continues returns the held conversation a request with these settings
// and messages continues, or nil when it can continue none: it needs at
// least a user message, the assistant's reply and a new user message.
func continues(prompt SystemPrompt, model string, msgs []Message) *held {
	n := len(msgs)
	if n < 3 || msgs[n-2].Role != RoleAssistant {
		return nil
	}
	key, msgKey := conversationKeys(prompt, model, msgs[:n-1])
	return &held{key: key, msgKey: msgKey}
}

// heldAfter returns what a process holds after a chat on msgs that ended
// with r: the conversation up to r's AssistantMessage.
func heldAfter(prompt SystemPrompt, model string, msgs []Message, r *Result) *held {
	all := append(append(make([]Message, 0, len(msgs)+1), msgs...), r.AssistantMessage())
	key, msgKey := conversationKeys(prompt, model, all)
	return &held{key: key, msgKey: msgKey, paused: len(r.ToolCalls) > 0}
}

// conversationCounters count what became of held conversations (see
// Stats.Conversations).
type conversationCounters struct {
	continued    atomic.Int64 // requests that continued a held conversation
	missNotHeld  atomic.Int64 // ... that could have, but no process holds the history
	missSettings atomic.Int64 // ... that could have, but one does with another prompt or model
	expired      atomic.Int64 // holds ended after HoldConversations
	gaveWay      atomic.Int64 // holds ended for another chat or a spare
}

// holdLocked starts the hold of the conversation an idle process just
// took in (proc.life.held): it ends after Config.HoldConversations. Without
// MaxProcs nothing else bounds the processes that hold conversations:
// beyond max(Size, 1), the least recently used gives its conversation
// up. p.mu must be held.
func (p *Pool) holdLocked(proc *pooled, gen int) {
	proc.life.holdTimer = time.AfterFunc(p.cfg.HoldConversations, func() { p.expireHold(proc, gen) })
	if p.slots == nil && p.idle.count(holding) > max(p.cfg.Size, 1) {
		p.conversations.gaveWay.Add(1)
		p.resetLocked(p.idle.oldest(holding))
	}
}

// expireHold resets a process whose conversation was held for
// Config.HoldConversations without a continuation.
func (p *Pool) expireHold(proc *pooled, gen int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if proc.state.Load() == stateIdle && proc.life.idleGen == gen && proc.life.held != nil && !p.closed {
		p.conversations.expired.Add(1)
		p.resetLocked(proc)
	}
}

// continueHeld leases the idle process that holds the conversation c
// continues, and counts the hit or why it missed; nil on a miss.
func (p *Pool) continueHeld(c *chatRequest) *pooled {
	p.mu.Lock()
	defer p.mu.Unlock()
	var proc *pooled
	for _, q := range p.idle.procs {
		// A paused turn resumes only with the caller's tool results, and
		// only a paused turn takes them.
		if q.life.held != nil && q.life.held.key == c.continues.key && q.life.held.paused == c.resumes {
			proc = q
			break
		}
	}
	switch {
	case proc != nil:
		p.claimLocked(proc, c.start)
		p.conversations.continued.Add(1)
	case p.idle.count(func(q *pooled) bool { return q.life.held != nil && q.life.held.msgKey == c.continues.msgKey }) > 0:
		p.conversations.missSettings.Add(1)
	default:
		p.conversations.missNotHeld.Add(1)
	}
	return proc
}

// heldWithLocked returns the least recently used idle process that holds
// a conversation with system prompt want, or nil: it can serve another
// request with want once it gave way. p.mu must be held.
func (p *Pool) heldWithLocked(want SystemPrompt) *pooled {
	return p.idle.oldest(func(q *pooled) bool { return q.life.held != nil && *q.life.prompt == want })
}

// giveWay resets a leased process that held a conversation before it
// serves another chat; a process whose reset fails is retired.
func (p *Pool) giveWay(ctx context.Context, proc *pooled) error {
	p.conversations.gaveWay.Add(1)
	err := p.resetConversation(ctx, proc)
	if err != nil {
		p.log.Warn("claudepool: reset failed", "pid", proc.pid, "err", err)
		p.mu.Lock()
		p.retireLocked(proc, RetireResetFailed)
		p.mu.Unlock()
	}
	return err
}

// giveWayToSpareLocked resets the least recently used held conversation
// that would be a spare once reset (it carries the pool's default prompt),
// for the refill at the MaxProcs cap: a reset costs a fraction of a spawn.
// It reports whether there was one. p.mu must be held.
func (p *Pool) giveWayToSpareLocked() bool {
	h := p.idle.oldest(func(q *pooled) bool { return q.life.held != nil && !p.isForeign(q) })
	if h == nil {
		return false
	}
	p.conversations.gaveWay.Add(1)
	p.resetLocked(h)
	return true
}

// holding reports whether an idle process holds a conversation.
func holding(proc *pooled) bool { return proc.life.held != nil }
