package claudepool

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
)

// ConversationKey returns a routing key for the conversation req belongs
// to: 32 lowercase hexadecimal digits, the first 16 bytes of a SHA-256 over
// the request's system prompt (System and AppendSystem) and its messages
// up to and including the first user message. Every turn of one
// conversation yields the same key, since a backend sends the whole
// history each time and the start of it never changes; two conversations
// that start differently, with another prompt or another first message,
// yield different keys. The key is the same in every process, on every
// machine and in every version of this package, so that clients, replicas
// and load balancers can compute it independently. In another language:
// hash, in this order, the text "claudepool conversation key v1", System,
// AppendSystem, then the role and the content of each message through the
// first user message, each of them UTF-8 and preceded by its length in
// bytes as an 8-byte big-endian integer.
//
// The model is left out: a conversation that switches models stays on its
// replica. The key says where a conversation should run, not whose it is:
// conversations that start alike (the same prompt and the same "Hello")
// share a key and a replica, which costs nothing, since a process
// continues a conversation only when its whole history matches (see
// Config.HoldConversations). It is neither a secret nor an authorization.
//
// Several replicas of a backend each own a pool, and a process holds a
// conversation only on its own replica: a turn continues on its process
// only when it reaches that replica. Clients send the key with every
// turn, the first included, in a header (X-Conversation-Key, say), and the
// load balancer in front of the replicas routes on it with consistent
// hashing, which keeps each key on one replica and moves only the keys of
// a replica that leaves or joins:
//
//	# HAProxy
//	backend chat
//	    balance hdr(X-Conversation-Key)
//	    hash-type consistent
//	# nginx
//	upstream chat { hash $http_x_conversation_key consistent; ... }
//	# Envoy: a route hash_policy on the header, with a ring_hash or maglev cluster
//
// A replica that receives a request without the header computes the key
// itself and returns it in the response header, for clients that do not
// compute it; their first turn is routed by the balancer's fallback (round
// robin in HAProxy), so such a conversation may move once, at its second
// turn, which is then served from the rendered history. When a replica
// goes away, its conversations move to others the same way: their next
// turn misses (Stats.Conversations.MissNotHeld) and the turns after it
// continue there.
func ConversationKey(req Request) string {
	h := sha256.New()
	keyField(h, "claudepool conversation key v1")
	keyField(h, req.System)
	keyField(h, req.AppendSystem)
	for _, m := range req.Messages {
		keyField(h, string(m.Role))
		keyField(h, m.Content)
		if m.Role == RoleUser {
			break
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// keyField writes s to h after its length, so that no two sequences of
// fields hash alike. It is ConversationKey's own: the key must not change
// when other hashes of the package do.
func keyField(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}
