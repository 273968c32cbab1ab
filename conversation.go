package claudepool

import (
	"crypto/sha256"
	"encoding/binary"
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
// A held conversation is an idle process with state. It is reset and
// given to a request that needs a process when nothing else suits, to the
// refill when spares run short, and after Config.HoldConversations.

// DefaultHoldConversations is how long an idle process holds the
// conversation of its last chat by default.
const DefaultHoldConversations = 2 * time.Minute

// convKey identifies a conversation as the backend will send it.
type convKey [sha256.Size]byte

// held is a conversation an idle process holds.
type held struct {
	key    convKey // system prompt, model and messages, the reply included
	msgKey convKey // the messages alone, to tell why a continuation missed
}

// conversationKeys returns the keys of a conversation: with its system
// prompt and model (the pool's model is ""), and of its messages alone.
func conversationKeys(prompt SystemPrompt, model string, msgs []Message) (key, msgKey convKey) {
	m := sha256.New()
	for _, msg := range msgs {
		writeField(m, string(msg.Role))
		writeField(m, msg.Content)
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

// continuation returns the keys a held conversation must have for req to
// continue it, and false when req cannot continue one: it needs at least
// a user message, the assistant's reply and a new user message.
func continuation(prompt SystemPrompt, model string, msgs []Message) (key, msgKey convKey, ok bool) {
	n := len(msgs)
	if n < 3 || msgs[n-2].Role != RoleAssistant {
		return key, msgKey, false
	}
	key, msgKey = conversationKeys(prompt, model, msgs[:n-1])
	return key, msgKey, true
}

// heldAfter returns what a process holds after a chat on msgs that ended
// with reply.
func heldAfter(prompt SystemPrompt, model string, msgs []Message, reply string) *held {
	all := append(append(make([]Message, 0, len(msgs)+1), msgs...), Message{Role: RoleAssistant, Content: reply})
	key, msgKey := conversationKeys(prompt, model, all)
	return &held{key: key, msgKey: msgKey}
}
