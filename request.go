package claudepool

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Role says who wrote a Message.
type Role string

// The roles of a conversation.
const (
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
)

// Message is one turn of a conversation.
type Message struct {
	Role    Role   // RoleUser or RoleAssistant
	Content string // the text of the turn
}

// Request is one chat request. Everything in it applies to one turn on one
// process; settings the CLI only takes at spawn time (tools, permission
// mode, MCP servers, --max-turns, environment variables such as
// API_TIMEOUT_MS, the retry count) belong to the pool's Config instead.
type Request struct {
	// Messages is the conversation, oldest first. It must not be empty and
	// the last message must be the user's. Earlier turns are rendered into
	// the single user line the CLI receives; see RenderTranscript.
	Messages []Message

	// System replaces the CLI's default system prompt. When both System
	// and AppendSystem are empty, the request gets the pool's
	// Config.Prompt, or, when the pool has none, an empty system prompt,
	// as a chat backend usually wants: the CLI's own agent prompt (several
	// thousand characters about coding) is then not sent. Only the first
	// initialize of a process sets its prompt: a prompt other than the
	// pool's is served by an idle process that carries it, else by a fresh
	// one (only without Config.Prompt), else by a cold spawn.
	System string

	// AppendSystem is appended to the system prompt. With System empty it
	// extends the CLI's own default system prompt.
	AppendSystem string

	// Model selects the model for this request, e.g. "sonnet", "opus" or
	// a full model ID. Empty runs the pool's Config.Model (or the CLI's
	// default without one). A model the CLI refuses fails the chat with a
	// *ResultError (see SubtypeModelRejected).
	Model string

	// The Messages API parameters below are set on the chat's API calls
	// by the pool's gateway (see Config.NoGateway), over what the CLI
	// sends. A request that sets any of them on a pool whose gateway is
	// off fails with ErrNoGateway.

	// MaxTokens is the chat's max_tokens. 0 keeps the CLI's (32000 or
	// 128000, by model). A reply cut there ends with Result.StopReason
	// "max_tokens".
	MaxTokens int
	// Temperature, TopP and TopK are the sampling parameters; nil keeps
	// the API's defaults. The API refuses them with extended thinking, so
	// a chat that sets any of them runs without the thinking the CLI asks
	// for.
	Temperature *float64
	TopP        *float64
	TopK        *int
	// StopSequences end the reply where the model writes one of them:
	// Result.StopReason is then "stop_sequence" and Result.StopSequence
	// names it.
	StopSequences []string
	// UserID is the chat's metadata.user_id, an opaque id of the end user
	// for the API's abuse detection. "" keeps the CLI's own (a device
	// hash and its session id).
	UserID string
	// APIFields sets further top-level fields of the Messages API body,
	// each to its JSON value as given (for example
	// {"service_tier": json.RawMessage(`"auto"`)}). They win over the CLI's and over the fields above.
	// The fields the CLI owns, "model", "messages", "system", "stream"
	// and "tools", cannot be set.
	APIFields map[string]json.RawMessage
	// APIKey is the upstream API key of this chat's calls, for a backend
	// that bills each tenant's key. "" uses the pool's (Config.APIKey).
	// The key never reaches the CLI.
	APIKey string
}

// apiParams reports whether r sets any parameter only the gateway can
// apply.
func (r *Request) apiParams() bool {
	return r.MaxTokens != 0 || r.Temperature != nil || r.TopP != nil || r.TopK != nil ||
		len(r.StopSequences) > 0 || r.UserID != "" || len(r.APIFields) > 0 || r.APIKey != ""
}

// cliFields are the body fields the CLI owns: a request cannot set them.
var cliFields = map[string]bool{"model": true, "messages": true, "system": true, "stream": true, "tools": true}

// validateAPI reports a malformed API parameter.
func (r *Request) validateAPI() error {
	switch {
	case r.MaxTokens < 0:
		return fmt.Errorf("%w: MaxTokens %d is negative", ErrInvalidRequest, r.MaxTokens)
	case r.Temperature != nil && (*r.Temperature < 0 || *r.Temperature > 1):
		return fmt.Errorf("%w: Temperature %v is outside [0, 1]", ErrInvalidRequest, *r.Temperature)
	case r.TopP != nil && (*r.TopP < 0 || *r.TopP > 1):
		return fmt.Errorf("%w: TopP %v is outside [0, 1]", ErrInvalidRequest, *r.TopP)
	case r.TopK != nil && *r.TopK < 0:
		return fmt.Errorf("%w: TopK %d is negative", ErrInvalidRequest, *r.TopK)
	case strings.ContainsAny(r.APIKey, " \t\r\n\x00") || !utf8.ValidString(r.APIKey):
		return fmt.Errorf("%w: APIKey contains white space or is not valid UTF-8", ErrInvalidRequest)
	case !utf8.ValidString(r.UserID):
		return fmt.Errorf("%w: UserID is not valid UTF-8", ErrInvalidRequest)
	}
	for i, seq := range r.StopSequences {
		if seq == "" || !utf8.ValidString(seq) {
			return fmt.Errorf("%w: stop sequence %d is empty or not valid UTF-8", ErrInvalidRequest, i)
		}
	}
	for k, v := range r.APIFields {
		if cliFields[k] {
			return fmt.Errorf("%w: APIFields cannot set %q, which the CLI owns", ErrInvalidRequest, k)
		}
		if !json.Valid(v) {
			return fmt.Errorf("%w: APIFields[%q] is not a JSON value", ErrInvalidRequest, k)
		}
	}
	return nil
}

// validate reports a malformed request, wrapping ErrInvalidRequest.
func (r *Request) validate() error {
	if len(r.Messages) == 0 {
		return fmt.Errorf("%w: no messages", ErrInvalidRequest)
	}
	for i, m := range r.Messages {
		switch m.Role {
		case RoleUser, RoleAssistant:
		default:
			return fmt.Errorf("%w: message %d has role %q (want %q or %q)", ErrInvalidRequest, i, m.Role, RoleUser, RoleAssistant)
		}
		if strings.TrimSpace(m.Content) == "" {
			return fmt.Errorf("%w: message %d is empty", ErrInvalidRequest, i)
		}
		if !utf8.ValidString(m.Content) {
			return fmt.Errorf("%w: message %d is not valid UTF-8", ErrInvalidRequest, i)
		}
	}
	if last := r.Messages[len(r.Messages)-1]; last.Role != RoleUser {
		return fmt.Errorf("%w: the last message must be the user's, got %q", ErrInvalidRequest, last.Role)
	}
	for name, v := range map[string]string{"System": r.System, "AppendSystem": r.AppendSystem, "Model": r.Model} {
		if !utf8.ValidString(v) {
			return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidRequest, name)
		}
	}
	if strings.ContainsAny(r.Model, " \t\r\n") {
		return fmt.Errorf("%w: model %q contains white space", ErrInvalidRequest, r.Model)
	}
	return r.validateAPI()
}

// RenderTranscript renders a conversation into the text of the single user
// line the CLI receives when no process holds the conversation before the
// last message (see Config.HoldConversations). A one-message conversation
// is the message itself. Longer ones use this stable format, which the
// model reads as earlier turns followed by the message to answer:
//
//	<conversation_history>
//	<turn role="user">
//	first question
//	</turn>
//	<turn role="assistant">
//	first answer
//	</turn>
//	</conversation_history>
//
//	<current_message>
//	follow-up question
//	</current_message>
//
// In this format, message text is escaped as XML text is (& as &amp;, < as
// &lt;, > as &gt;), so that no message can open or close a turn.
func RenderTranscript(msgs []Message) string {
	if len(msgs) == 0 {
		return ""
	}
	last := msgs[len(msgs)-1]
	if len(msgs) == 1 {
		return last.Content
	}
	var b strings.Builder
	b.WriteString("<conversation_history>\n")
	for _, m := range msgs[:len(msgs)-1] {
		fmt.Fprintf(&b, "<turn role=%q>\n", m.Role)
		transcriptEscaper.WriteString(&b, m.Content)
		b.WriteString("\n</turn>\n")
	}
	b.WriteString("</conversation_history>\n\n<current_message>\n")
	transcriptEscaper.WriteString(&b, last.Content)
	b.WriteString("\n</current_message>")
	return b.String()
}

// transcriptEscaper escapes message text in a rendered transcript.
var transcriptEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")
