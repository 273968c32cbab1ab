package claudepool

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every turn of a conversation, sent with the whole history, gets the key
// of its first turn.
func TestConversationKeySameForEveryTurn(t *testing.T) {
	const system = "You are a concise assistant."
	msgs := []Message{{Role: RoleUser, Content: "Tell me about the number 7."}}
	first := ConversationKey(Request{System: system, Messages: msgs})
	require.Regexp(t, regexp.MustCompile(`^[0-9a-f]{32}$`), first)
	for turn := 2; turn <= 6; turn++ {
		msgs = append(msgs,
			Message{Role: RoleAssistant, Content: "A reply to turn " + string(rune('0'+turn-1))},
			Message{Role: RoleUser, Content: "And turn " + string(rune('0'+turn)) + "?"})
		// The model is not part of the key: a switch keeps the replica.
		model := []string{"", "sonnet", "opus"}[turn%3]
		require.Equal(t, first, ConversationKey(Request{System: system, Model: model, Messages: msgs}), "turn %d", turn)
	}
}

// Conversations that start differently get different keys.
func TestConversationKeyDiffersByStart(t *testing.T) {
	base := Request{System: "S", Messages: []Message{{Role: RoleUser, Content: "hello"}}}
	variants := map[string]Request{
		"base":            base,
		"first message":   {System: "S", Messages: []Message{{Role: RoleUser, Content: "hello!"}}},
		"system prompt":   {System: "T", Messages: base.Messages},
		"no system":       {Messages: base.Messages},
		"append system":   {System: "S", AppendSystem: "more", Messages: base.Messages},
		"system moved":    {AppendSystem: "S", Messages: base.Messages},
		"field boundary":  {System: "Shel", Messages: []Message{{Role: RoleUser, Content: "lo"}}},
		"assistant first": {System: "S", Messages: []Message{{Role: RoleAssistant, Content: "Hi!"}, {Role: RoleUser, Content: "hello"}}},
		"other greeting":  {System: "S", Messages: []Message{{Role: RoleAssistant, Content: "Hey!"}, {Role: RoleUser, Content: "hello"}}},
	}
	seen := map[string]string{}
	for name, req := range variants {
		k := ConversationKey(req)
		require.NotContains(t, seen, k, "%s has the key of %s", name, seen[k])
		seen[k] = name
	}
}

// The key never changes across runs, processes and versions: replicas and
// load balancers compute it independently. A change here moves every open
// conversation to another replica at the next deploy.
func TestConversationKeyGolden(t *testing.T) {
	req := Request{System: "You are a concise assistant.", Messages: []Message{
		{Role: RoleUser, Content: "Tell me about the number 7."},
		{Role: RoleAssistant, Content: "It is prime."},
		{Role: RoleUser, Content: "And 8?"},
	}}
	require.Equal(t, "44c2c8f10abf00118513e4473ce9258e", ConversationKey(req))
	// An empty request still has a key: a replica answers it with an
	// error, and the balancer may route it anywhere.
	require.Equal(t, "3d82a264fe8d8cb4920ffaa9573e70ca", ConversationKey(Request{}))
}
